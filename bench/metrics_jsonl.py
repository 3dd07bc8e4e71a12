"""Reading a run's metrics.jsonl (one JSON record per line, README "Using it") for bench/ scripts.

read_records(path, program) returns the records in file order, skipping blank lines. A file
that cannot be read or a line that is not JSON ends the program with a message naming `program`,
the file and the line number.
"""
import json
import sys


def read_records(path, program):
    records = []
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"{program}: {path}:{number}: not JSON ({e})")
    except OSError as e:
        sys.exit(f"{program}: cannot read {path}: {e.strerror}")
    return records

#!/usr/bin/env python3
"""Loss curves of language-model runs from their metrics.jsonl files.

  bench/plot_lm.py OUT.png LABEL=runs/a/metrics.jsonl [LABEL=runs/b/metrics.jsonl ...]
      [--title TEXT] [--xz]

Left: training loss (nats per byte) against the optimizer step; right: validation bits per
byte at every evaluation. With --xz the right panel also draws what `xz -9e` needs for the
validation text given the training text (the first run's summary `text.xz_bits_per_byte`)
and 0.85 times that. Needs matplotlib (Debian: python3-matplotlib). Exits non-zero with a
message when a file is missing or has no training records.
"""
import math
import sys

from metrics_jsonl import read_records


def load(path):
    train, evals, summary = [], [], None
    for record in read_records(path, "plot_lm.py"):
        kind = record.get("kind")
        if kind == "train":
            train.append((record["step"], record["loss"]))
        elif kind == "eval" and "bits_per_byte" in record:
            evals.append((record["step"], record["bits_per_byte"]))
        elif kind == "summary":
            summary = record
    if not train:
        sys.exit(f"plot_lm.py: {path} has no training records")
    return train, evals, summary


def main(argv):
    title, xz, runs, out = None, False, [], None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--title":
            if i + 1 >= len(argv):
                sys.exit("plot_lm.py: --title needs a value")
            title = argv[i + 1]
            i += 2
            continue
        if arg == "--xz":
            xz = True
        elif out is None:
            out = arg
        else:
            label, sep, path = arg.partition("=")
            if not sep or not label or not path:
                sys.exit(f"plot_lm.py: expected LABEL=PATH, got '{arg}'")
            runs.append((label, path))
        i += 1
    if out is None or not runs:
        sys.exit(__doc__)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    first_summary = None
    for label, path in runs:
        train, evals, summary = load(path)
        first_summary = first_summary or summary
        left.plot([s for s, _ in train], [l for _, l in train], label=label, linewidth=1)
        if evals:
            right.plot([s for s, _ in evals], [b for _, b in evals], marker="o", label=label)
    left.set_xlabel("step")
    left.set_ylabel("training loss (nats per byte)")
    left.grid(alpha=0.3)
    left.legend()
    right.set_xlabel("step")
    right.set_ylabel("validation bits per byte")
    right.grid(alpha=0.3)
    if xz:
        reference = ((first_summary or {}).get("text") or {}).get("xz_bits_per_byte")
        if reference is None or not math.isfinite(reference):
            sys.exit("plot_lm.py: --xz needs text.xz_bits_per_byte in the first run's summary")
        right.axhline(reference, color="gray", linestyle="--", label=f"xz -9e: {reference:.3f}")
        right.axhline(0.85 * reference, color="gray", linestyle=":",
                      label=f"0.85 x xz: {0.85 * reference:.3f}")
    right.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Bytes against loss: one point per run, read from the runs' metrics.jsonl files.

  bench/plot_tradeoff.py OUT.png GROUP/LABEL=runs/a/metrics.jsonl [GROUP/LABEL=...] \
      [--from STEP] [--title TEXT]

x: bytes a rank handed to the communicator per step (`bytes_sent` of the training records),
averaged from step STEP (default 0, the whole run) to the end, on a log axis; y: the final
validation loss (the summary's `final_test_loss`). Points of one GROUP share a colour and are
joined in the order given (e.g. GROUP "uniform" for uniform settings, "L-GreCo" for alpha values),
so a group that sits below and left of another sends fewer bytes at lower loss. Needs matplotlib
(Debian: python3-matplotlib). Exits non-zero with a message when a file is missing, has no
summary, or logged no training record at or after STEP.
"""
import sys

from metrics_jsonl import read_records


def load(path, start):
    records = read_records(path, "plot_tradeoff.py")
    summary = next((r for r in records if r.get("kind") == "summary"), None)
    if summary is None:
        sys.exit(f"plot_tradeoff.py: {path} has no summary record (did the run finish?)")
    train = [r for r in records if r.get("kind") == "train"]
    # bytes_sent is cumulative: the bytes from `start` on are the last value minus the value at
    # the latest record before or at `start` (0 for start 0).
    before = [r for r in train if r["step"] <= start]
    base_step, base_bytes = (before[-1]["step"], before[-1]["bytes_sent"]) if before else (0, 0)
    if start > 0 and base_step != start:
        sys.exit(f"plot_tradeoff.py: {path} logged no training record at step {start}")
    steps = summary["steps"] - base_step
    if steps <= 0:
        sys.exit(f"plot_tradeoff.py: {path} ends at step {summary['steps']}, not after {start}")
    per_step = (summary["bytes_sent_per_rank"] - base_bytes) / steps
    return per_step, summary["final_test_loss"]


def main(argv):
    start, title, series = 0, None, []
    args = iter(argv[1:])
    out = None
    for arg in args:
        if arg == "--from":
            start = int(next(args, "0"))
        elif arg == "--title":
            title = next(args, None)
        elif out is None:
            out = arg
        else:
            label, sep, path = arg.partition("=")
            group, slash, name = label.partition("/")
            if not sep or not slash or not path:
                sys.exit(f"plot_tradeoff.py: expected GROUP/LABEL=PATH, got '{arg}'")
            series.append((group, name, path))
    if out is None or not series:
        sys.exit(__doc__)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_tradeoff.py: needs matplotlib (Debian: apt-get install python3-matplotlib)")
    groups = {}
    for group, name, path in series:
        groups.setdefault(group, []).append((name,) + load(path, start))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for group, points in groups.items():
        xs = [p[1] for p in points]
        ys = [p[2] for p in points]
        ax.plot(xs, ys, marker="o", label=group)
        for name, x, y in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bytes sent per step per rank" + (f", steps {start}-end" if start else ""))
    ax.set_ylabel("final validation loss")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv)

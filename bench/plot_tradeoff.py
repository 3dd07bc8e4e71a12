#!/usr/bin/env python3
"""Bytes against loss (or accuracy): one point per setting, read from the runs' metrics.jsonl.

  bench/plot_tradeoff.py OUT.png GROUP/LABEL=RUN[,RUN...] [GROUP/LABEL=...] \
      [--from STEP] [--title TEXT] [--metric KEY] [--table]

RUN is a run's metrics.jsonl. x: bytes a rank handed to the communicator per step (`bytes_sent`
of the training records), averaged from step STEP (default 0, the whole run) to the end, on a log
axis; y: the summary's KEY (default `final_test_loss`, the final validation loss; e.g.
`final_test_accuracy`). Several RUNs for one LABEL (the same setting with different seeds) make
one point at their means, with a bar from the lowest to the highest y. Points of one GROUP share
a colour and are joined in the order given (e.g. GROUP "uniform" for uniform settings, "L-GreCo"
for alpha values), so with a loss a group that sits below and left of another sends fewer bytes
at lower loss. --table also prints one Markdown row per point: runs, mean bytes per step, mean,
sample standard deviation and range of y. Needs matplotlib (Debian: python3-matplotlib). Exits
non-zero with a message when a file is missing, has no summary or no KEY, or logged no training
record at or after STEP.
"""
import statistics
import sys

from metrics_jsonl import read_records


def load(path, start, metric="final_test_loss"):
    records = read_records(path, "plot_tradeoff.py")
    summary = next((r for r in records if r.get("kind") == "summary"), None)
    if summary is None:
        sys.exit(f"plot_tradeoff.py: {path} has no summary record (did the run finish?)")
    if metric not in summary:
        sys.exit(f"plot_tradeoff.py: {path}: the summary has no '{metric}' "
                 f"(it has {', '.join(sorted(summary))})")
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
    return per_step, summary[metric]


def aggregate(paths, start, metric="final_test_loss"):
    """Means over the runs of one setting: dict with runs, bytes, y, sd (0 for one run), lo, hi."""
    points = [load(p, start, metric) for p in paths]
    ys = [y for _, y in points]
    return {"runs": len(points), "bytes": statistics.fmean(b for b, _ in points),
            "y": statistics.fmean(ys), "sd": statistics.stdev(ys) if len(ys) > 1 else 0.0,
            "lo": min(ys), "hi": max(ys)}


def table(rows, metric):
    lines = [f"| group | setting | runs | bytes/step | {metric} mean | sd | range |",
             "|---|---|---|---|---|---|---|"]
    for group, name, p in rows:
        lines.append(f"| {group} | {name} | {p['runs']} | {p['bytes']:,.0f} | {p['y']:.4f} | "
                     f"{p['sd']:.4f} | {p['lo']:.4f} to {p['hi']:.4f} |")
    return "\n".join(lines)


def main(argv):
    start, title, metric, want_table, series = 0, None, "final_test_loss", False, []
    args = iter(argv[1:])
    out = None
    for arg in args:
        if arg == "--from":
            start = int(next(args, "0"))
        elif arg == "--title":
            title = next(args, None)
        elif arg == "--metric":
            metric = next(args, metric)
        elif arg == "--table":
            want_table = True
        elif out is None:
            out = arg
        else:
            label, sep, paths = arg.partition("=")
            group, slash, name = label.partition("/")
            paths = [p for p in paths.split(",") if p]
            if not sep or not slash or not paths:
                sys.exit(f"plot_tradeoff.py: expected GROUP/LABEL=PATH[,PATH...], got '{arg}'")
            series.append((group, name, paths))
    if out is None or not series:
        sys.exit(__doc__)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_tradeoff.py: needs matplotlib (Debian: apt-get install python3-matplotlib)")
    rows = [(group, name, aggregate(paths, start, metric)) for group, name, paths in series]
    groups = {}
    for group, name, p in rows:
        groups.setdefault(group, []).append((name, p))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for group, points in groups.items():
        xs = [p["bytes"] for _, p in points]
        ys = [p["y"] for _, p in points]
        err = [[p["y"] - p["lo"] for _, p in points], [p["hi"] - p["y"] for _, p in points]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=group)
        for i, (name, p) in enumerate(points):
            text = name if p["runs"] == 1 else f"{name} ({p['runs']} runs)"
            # Neighbours of a group alternate above and below their point, so labels of close
            # points do not overlap.
            ax.annotate(text, (p["bytes"], p["y"]), textcoords="offset points",
                        xytext=(4, 4 if i % 2 == 0 else -11), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bytes sent per step per rank" + (f", steps {start}-end" if start else ""))
    names = {"final_test_loss": "final validation loss", "final_test_accuracy": "final test accuracy"}
    ax.set_ylabel(names.get(metric, metric))
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    if want_table:
        print(table(rows, metric))


if __name__ == "__main__":
    main(sys.argv)

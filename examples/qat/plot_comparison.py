#!/usr/bin/env python3
"""Loss curves of the QuEST comparison (examples/qat/run_comparison.sh), one PNG per bit width.

  examples/qat/plot_comparison.py RUNS_DIR OUT_DIR

Reads RUNS_DIR/quest_<variant>/metrics.jsonl and writes OUT_DIR/quest_w<b>a<b>.png: the training
loss (nats per byte) of the full-precision run and of that bit width (plus the STE baseline at
4 bits) against the optimizer step, with the final validation losses in the legend. Prints a
Markdown table of the summaries. Needs matplotlib.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    train, final, summary = [], None, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            if record.get("kind") == "train":
                train.append((record["step"], record["loss"]))
            elif record.get("kind") == "eval":
                final = record
            elif record.get("kind") == "summary":
                summary = record
    return train, final, summary


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    runs, out = sys.argv[1], sys.argv[2]
    labels = {"fp": "full precision", "w8a8": "QuEST W8A8", "w4a4": "QuEST W4A4",
              "w4a4_ste": "STE W4A4", "w2a2": "QuEST W2A2", "w1a1": "QuEST W1A1"}
    data = {}
    for variant in labels:
        path = os.path.join(runs, "quest_" + variant, "metrics.jsonl")
        if os.path.exists(path):
            loaded = load(path)
            if loaded[1] is not None and loaded[2] is not None:  # finished runs only
                data[variant] = loaded
    if "fp" not in data:
        sys.exit("plot_comparison.py: no full-precision run in " + runs)
    fpLoss = data["fp"][1]["loss"]
    fpStep = data["fp"][2]["seconds_per_step"]
    print("| run | validation loss | vs FP | bits/byte | s/step | vs FP step | forward+backward s |")
    print("|---|---|---|---|---|---|---|")
    for variant, (train, final, summary) in data.items():
        print(f"| {labels[variant]} | {final['loss']:.4f} | {100 * (final['loss'] / fpLoss - 1):+.2f} % "
              f"| {final['bits_per_byte']:.4f} | {summary['seconds_per_step']:.3f} "
              f"| {summary['seconds_per_step'] / fpStep:.2f}x "
              f"| {summary['times_per_step_s']['forward'] + summary['times_per_step_s']['backward']:.3f} |")
    os.makedirs(out, exist_ok=True)
    for width in ("w8a8", "w4a4", "w2a2", "w1a1"):
        if width not in data:
            continue
        shown = ["fp", width] + (["w4a4_ste"] if width == "w4a4" and "w4a4_ste" in data else [])
        plt.figure(figsize=(6, 4))
        for variant in shown:
            train, final, _ = data[variant]
            plt.plot([s for s, _ in train], [l for _, l in train],
                     label=f"{labels[variant]} (val {final['loss']:.3f})")
        plt.xlabel("optimizer step")
        plt.ylabel("training loss (nats/byte)")
        plt.title(f"text_llama, 4 ranks: {labels[width]} vs full precision")
        plt.ylim(bottom=1.5, top=4.5)
        plt.grid(alpha=0.3)
        plt.legend()
        plt.tight_layout()
        plt.savefig(os.path.join(out, f"quest_{width}.png"), dpi=100)
        plt.close()


if __name__ == "__main__":
    main()

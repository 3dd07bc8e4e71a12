#!/usr/bin/python3
"""Table and curves of the PV-Tuning comparison (examples/pv/run_matrix.sh OUT_DIR).

Reads OUT_DIR/s<seed>_<method>/pv_metrics.jsonl, prints a Markdown table (validation KL to the
full-precision teacher and perplexity per seed and method, plus the ordering checks) and writes
docs/benchmarks/pv_validation_kl.png and docs/benchmarks/pv_changed_codes.png.

    /usr/bin/python3 examples/pv/plot_pv.py OUT_DIR [PNG_DIR]
"""
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHODS = ["rtn", "p_only", "ste", "pv"]
COLOURS = {"rtn": "tab:gray", "p_only": "tab:blue", "ste": "tab:orange", "pv": "tab:green"}


def load(out):
    runs = {}
    for path in sorted(glob.glob(os.path.join(out, "s*_*", "pv_metrics.jsonl"))):
        name = os.path.basename(os.path.dirname(path))
        seed, method = name[1:].split("_", 1)
        records = [json.loads(line) for line in open(path)]
        runs[(int(seed), method)] = records
    return runs


def main():
    out = sys.argv[1]
    png_dir = sys.argv[2] if len(sys.argv) > 2 else "docs/benchmarks"
    os.makedirs(png_dir, exist_ok=True)
    runs = load(out)
    seeds = sorted({s for s, m in runs if m != "rtn"})
    final = {}
    for (seed, method), records in runs.items():
        summary = [r for r in records if r["kind"] == "pv_summary"]
        if summary:
            final[(seed, method)] = summary[-1]
    rtn = next((v for (s, m), v in final.items() if m == "rtn"), None)
    print("| seed | " + " | ".join(f"{m} KL / ppl" for m in METHODS) + " | PV < P-only < RTN |")
    print("|---|" + "---|" * (len(METHODS) + 1))
    ok_all = True
    for seed in seeds:
        row = []
        values = {}
        for m in METHODS:
            rec = rtn if m == "rtn" else final.get((seed, m))
            if rec is None:
                row.append("—")
                continue
            values[m] = rec
            row.append(f"{rec['kl']:.4f} / {rec['perplexity']:.3f}")
        ok = all(k in values for k in ("pv", "p_only", "rtn")) and (
            values["pv"]["kl"] < values["p_only"]["kl"] < values["rtn"]["kl"]
            and values["pv"]["perplexity"] < values["p_only"]["perplexity"] < values["rtn"]["perplexity"])
        ok_all &= ok
        print(f"| {seed} | " + " | ".join(row) + f" | {'yes' if ok else 'no'} |")
    means = {}
    for m in METHODS:
        recs = [rtn] if m == "rtn" and rtn else [final[(s, m)] for s in seeds if (s, m) in final]
        if recs:
            means[m] = (sum(r["kl"] for r in recs) / len(recs),
                        sum(r["perplexity"] for r in recs) / len(recs))
    print("| mean | " + " | ".join(f"{means[m][0]:.4f} / {means[m][1]:.3f}" if m in means else "—"
                                  for m in METHODS) + f" | {'yes' if ok_all else 'no'} |")
    if "pv" in means and "ste" in means:
        print(f"\nPV <= STE on average (KL): {'yes' if means['pv'][0] <= means['ste'][0] else 'no'}"
              f" ({means['pv'][0]:.4f} vs {means['ste'][0]:.4f})")
    worst = {}
    for (seed, method), records in runs.items():
        steps = [r for r in records if r["kind"] == "pv_step"]
        if steps:
            worst[method] = max(worst.get(method, 0.0),
                                max(r["max_layer_changed_fraction"] for r in steps))
    for m in ("p_only", "ste", "pv"):
        if m in worst:
            print(f"largest per-layer changed-code fraction of any step, {m}: {worst[m]:.5f}")

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for (seed, method), records in sorted(runs.items()):
        evals = [r for r in records if r["kind"] == "pv_eval"]
        if method == "rtn":
            for a, key in zip(ax, ("kl", "perplexity")):
                a.axhline(evals[-1][key], color=COLOURS[method], ls="--",
                          label="rtn" if seed == 1 else None)
            continue
        x = [r["step"] for r in evals]
        for a, key in zip(ax, ("kl", "perplexity")):
            a.plot(x, [r[key] for r in evals], color=COLOURS[method], marker="o", ms=3,
                   alpha=0.8, label=method if seed == seeds[0] else None)
    ax[0].set_ylabel("validation KL(teacher || student), nats/byte")
    ax[1].set_ylabel("validation perplexity")
    for a in ax:
        a.set_xlabel("fine-tuning step")
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle("text_llama, 2-bit group-64 codes: RTN init, P-only, STE, PV (3 seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(png_dir, "pv_validation_kl.png"), dpi=110)

    fig, ax = plt.subplots(figsize=(6, 4))
    for (seed, method), records in sorted(runs.items()):
        steps = [r for r in records if r["kind"] == "pv_step"]
        if not steps or method not in ("pv", "ste"):
            continue
        ax.plot([r["step"] for r in steps], [r["max_layer_changed_fraction"] for r in steps],
                color=COLOURS[method], alpha=0.7, label=method if seed == seeds[0] else None)
        tau = steps[-1]["tau"]
    ax.axhline(0.01, color="k", ls=":", label="tau = 0.01")
    ax.set_yscale("log")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("largest per-layer fraction of changed codes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(png_dir, "pv_changed_codes.png"), dpi=110)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Benchmark report: tables, plots and aggregated JSON from a `bench/run.sh` results directory.

Reads RESULTS/matrix.json and RESULTS/<network>/<method>/rep<k>/{metrics.jsonl,failed.txt} in the
shared result format that thinwire, the PyTorch peer and bench/run.sh write (one JSON object per
line; exactly one "summary" record per successful run; failed.txt holds the command on its first
line and the tail of the output) and writes:
  * Markdown (stdout, or --markdown FILE): one table per workload with the median seconds per
    step of the repetitions, their spread, the ratio to the compute-only floor of the same
    network, the median final test accuracy, the exposed communication time and the bytes sent;
    then one line per network naming the fastest method and the PyTorch DDP / thinwire ratio.
  * PNG plots (--plots DIR): per network, train loss and test accuracy against wall-clock time
    and against steps; one stacked-bar chart of the time per step (compute, compress, exposed
    communication).
  * JSON (--json FILE): the aggregated numbers, so that other tools can check claims.

Only the Python standard library and matplotlib (Agg backend, imported only with --plots).
Exit status: 0 on success (failed or missing repetitions are reported, not fatal), 2 when the
directory or matrix.json is missing or malformed.

A matrix may name several workloads with "workloads": [...]; each then has its own tree
RESULTS/<workload>/<network>/<method>/rep<k>. With a single "workload" string the tree is flat.

Example:
  /usr/bin/python3 bench/report.py bench/results/baseline-2024-05-01 \
      --markdown report.md --json report.json --plots plots/
  /usr/bin/python3 bench/report.py bench/results/baseline-2024-05-01   # Markdown on stdout
"""

import argparse
import json
import math
import os
import re
import statistics
import sys

# The methods compared in the per-network "ddp/thinwire" sentence.
THINWIRE_METHOD = "thinwire-fp32"
DDP_METHOD = "ddp-none"

# Longest error excerpt shown in a table cell; the full text stays in failed.txt.
MAX_ERROR_CHARS = 160


class ReportError(Exception):
    """Input the report cannot use (missing or malformed); the message says what and where."""


# ---------------------------------------------------------------------------------------------
# Reading the results tree


def _require(obj, key, kind, where):
    """Returns obj[key] if it has the JSON type `kind`; raises ReportError otherwise."""
    if not isinstance(obj, dict) or key not in obj:
        raise ReportError(f"{where}: missing key '{key}'")
    value = obj[key]
    # bool is an int in Python; a count written as true/false is malformed.
    if isinstance(value, bool) and kind is not bool:
        raise ReportError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        raise ReportError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")
    return value


def _named_entries(matrix, key, where):
    """The list matrix[key] of {"name": ..., "label": ...} objects, names checked unique."""
    entries = _require(matrix, key, list, where)
    if not entries:
        raise ReportError(f"{where}: '{key}' is empty")
    seen = set()
    for i, entry in enumerate(entries):
        name = _require(entry, "name", str, f"{where}: {key}[{i}]")
        if not name or "/" in name or name in (".", ".."):
            raise ReportError(f"{where}: {key}[{i}] has an unusable name {name!r}")
        if name in seen:
            raise ReportError(f"{where}: {key} names '{name}' twice")
        seen.add(name)
    return entries


def load_matrix(results_dir):
    """Reads and validates RESULTS/matrix.json; returns it as a dict.

    Adds "_workloads": the list of workload names. Raises ReportError if the directory or the
    file is missing, is not JSON, or lacks a required key.
    """
    if not os.path.isdir(results_dir):
        raise ReportError(f"results directory not found: {results_dir}")
    path = os.path.join(results_dir, "matrix.json")
    if not os.path.isfile(path):
        raise ReportError(f"{path} not found (is {results_dir} a bench/run.sh results directory?)")
    try:
        with open(path, encoding="utf-8") as f:
            matrix = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(matrix, dict):
        raise ReportError(f"{path}: top level must be a JSON object")
    _require(matrix, "matrix", str, path)
    for key in ("ranks", "steps", "repeats"):
        if _require(matrix, key, int, path) < 1:
            raise ReportError(f"{path}: '{key}' must be >= 1, got {matrix[key]}")
    if "workloads" in matrix:
        workloads = _require(matrix, "workloads", list, path)
        if not workloads or not all(isinstance(w, str) and w and "/" not in w for w in workloads):
            raise ReportError(f"{path}: 'workloads' must be a non-empty list of names")
        matrix["_workloads"] = list(workloads)
    else:
        matrix["_workloads"] = [_require(matrix, "workload", str, path)]
    _named_entries(matrix, "networks", path)
    methods = _named_entries(matrix, "methods", path)
    for i, method in enumerate(methods):
        if "floor" in method and not isinstance(method["floor"], bool):
            raise ReportError(f"{path}: methods[{i}].floor must be true or false")
    return matrix


def _finite(value):
    """value as a float if it is a finite JSON number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _is_command_or_meta(line):
    """Lines of failed.txt that describe the run rather than its output."""
    lowered = line.lower()
    return (lowered.startswith(("command", "cmd:", "$ ", "+ ", "exit status", "exit code",
                                "return code", "rc=", "rc:", "last "))
            or set(line) <= set("-=#* "))


STRONG_ERROR = [
    re.compile(r"\berror\s*:", re.IGNORECASE),  # "thinwire: error: ...", "ERROR: ..."
    re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b"),  # Python exception line
    re.compile(r"what\(\):"),  # std::terminate with an uncaught C++ exception
    re.compile(r"\bsignal \d+\b|\b(Killed|Segmentation fault|core dumped)\b"),  # killed rank
]
WEAK_ERROR = re.compile(
    r"\b(error|exception|failed|failure|aborted|abort|killed|timed out|timeout|"
    r"segmentation fault|core dumped|no such file|not found)\b", re.IGNORECASE)


def first_error_line(text):
    """The line of a failed.txt that best names the error.

    failed.txt holds the command (first line) and the last lines of the run's output. Preference:
    the first line that looks like an error message (`...error: ...`, a Python exception line,
    `what(): ...`), then the first line mentioning an error-like word, then the first output line.
    """
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "empty failed.txt"
    output = [line for line in lines[1:] if not _is_command_or_meta(line)]
    if not output:
        output = lines
    chosen = None
    for pattern in STRONG_ERROR:
        chosen = next((line for line in output if pattern.search(line)), None)
        if chosen:
            break
    if chosen is None:
        chosen = next((line for line in output if WEAK_ERROR.search(line)), output[0])
    if len(chosen) > MAX_ERROR_CHARS:
        chosen = chosen[:MAX_ERROR_CHARS - 1] + "…"
    return chosen


def read_run(rep_dir, rep, display_dir=None):
    """Reads one repetition directory; never raises for bad content.

    display_dir names the directory in messages (default rep_dir).

    Returns a dict: rep, status ("ok" | "failed" | "missing"), error (one line, "" when ok),
    summary (dict or None), train and eval (lists of records).
    """
    display_dir = display_dir or rep_dir
    run = {"rep": rep, "status": "missing", "error": "", "summary": None, "train": [], "eval": []}
    failed_path = os.path.join(rep_dir, "failed.txt")
    metrics_path = os.path.join(rep_dir, "metrics.jsonl")
    if os.path.isfile(failed_path):
        # The harness writes failed.txt only for a run that failed; it wins over partial metrics.
        with open(failed_path, encoding="utf-8", errors="replace") as f:
            run["status"], run["error"] = "failed", first_error_line(f.read())
        return run
    if not os.path.isfile(metrics_path):
        run["error"] = f"no metrics.jsonl or failed.txt in {display_dir}"
        return run
    summaries, bad_lines = [], []
    with open(metrics_path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad_lines.append(number)
                continue
            if not isinstance(record, dict):
                bad_lines.append(number)
                continue
            kind = record.get("kind")
            if kind == "summary":
                summaries.append(record)
            elif kind in ("train", "eval"):
                run[kind].append(record)
    run["status"] = "failed"
    if len(summaries) != 1:
        run["error"] = (f"metrics.jsonl has {len(summaries)} summary records (expected exactly 1)"
                        + (f"; unreadable lines {bad_lines[:5]}" if bad_lines else ""))
        return run
    summary = summaries[0]
    if _finite(summary.get("seconds_per_step")) is None or summary["seconds_per_step"] < 0:
        run["error"] = "summary has no valid seconds_per_step"
        return run
    run["status"], run["summary"] = "ok", summary
    return run


def run_dir(results_dir, matrix, workload, network, method, rep):
    """Directory of one repetition (see the module docstring for the layout)."""
    parts = [results_dir]
    if "workloads" in matrix:
        parts.append(workload)
    parts += [network, method, f"rep{rep}"]
    return os.path.join(*parts)


# ---------------------------------------------------------------------------------------------
# Aggregation


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _times(summary, key):
    times = summary.get("times_per_step_s")
    return _finite(times.get(key)) if isinstance(times, dict) else None


def _bytes_per_step(summary):
    sent, steps = _finite(summary.get("bytes_sent_per_rank")), _finite(summary.get("steps"))
    return sent / steps if sent is not None and steps else None


def aggregate_cell(runs):
    """Per-repetition runs of one (workload, network, method) -> numbers that need no floor."""
    ok = [r for r in runs if r["status"] == "ok"]
    per_step = [r["summary"]["seconds_per_step"] for r in ok]
    cell = {
        "repeats": len(runs),
        "ok": len(ok),
        "failed": sum(r["status"] == "failed" for r in runs),
        "missing": sum(r["status"] == "missing" for r in runs),
        "median_s_per_step": _median(per_step),
        "min_s_per_step": min(per_step) if per_step else None,
        "max_s_per_step": max(per_step) if per_step else None,
        "final_test_accuracy_median":
            _median([_finite(r["summary"].get("final_test_accuracy")) for r in ok]),
        "final_test_loss_median":
            _median([_finite(r["summary"].get("final_test_loss")) for r in ok]),
        # A method that does not report compression spent no time in it.
        "compress_s_per_step": _median([_times(r["summary"], "compress") or 0.0 for r in ok]),
        "bytes_sent_per_rank_per_step": _median([_bytes_per_step(r["summary"]) for r in ok]),
        "plotted_rep": None,
        "runs": [{"rep": r["rep"], "status": r["status"], "error": r["error"],
                  "seconds_per_step": r["summary"]["seconds_per_step"] if r["summary"] else None}
                 for r in runs],
    }
    if ok:
        # The repetition plotted is the one at the median time (lower middle for an even count).
        ranked = sorted(ok, key=lambda r: (r["summary"]["seconds_per_step"], r["rep"]))
        cell["plotted_rep"] = ranked[(len(ranked) - 1) // 2]["rep"]
    return cell


def build_report(results_dir, matrix):
    """Reads every repetition and aggregates. Returns (report dict for --json, runs by key)."""
    floor_methods = [m["name"] for m in matrix["methods"] if m.get("floor")]
    floor_name = floor_methods[0] if floor_methods else None
    cells, networks, runs_by_key = [], [], {}
    for workload in matrix["_workloads"]:
        for network in matrix["networks"]:
            net = network["name"]
            by_method = {}
            for method in matrix["methods"]:
                runs = []
                for k in range(1, matrix["repeats"] + 1):
                    path = run_dir(results_dir, matrix, workload, net, method["name"], k)
                    runs.append(read_run(path, k, os.path.relpath(path, results_dir)))
                runs_by_key[(workload, net, method["name"])] = runs
                cell = {"workload": workload, "network": net, "method": method["name"],
                        "framework": method.get("framework", ""),
                        "floor": bool(method.get("floor"))}
                cell.update(aggregate_cell(runs))
                by_method[method["name"]] = cell
            floor_median = by_method[floor_name]["median_s_per_step"] if floor_name else None
            for cell in by_method.values():
                median = cell["median_s_per_step"]
                cell["floor_median_s_per_step"] = floor_median
                both = median is not None and floor_median
                cell["ratio_to_floor"] = median / floor_median if both else None
                cell["exposed_comm_s_per_step"] = (
                    max(0.0, median - floor_median - cell["compress_s_per_step"]) if both else None)
                cells.append(cell)
            networks.append(_network_summary(workload, network, by_method))
    report = {
        "matrix": matrix["matrix"],
        "workloads": matrix["_workloads"],
        "ranks": matrix["ranks"],
        "steps": matrix["steps"],
        "repeats": matrix["repeats"],
        "machine": matrix.get("machine", ""),
        "started": matrix.get("started", ""),
        "results_dir": os.path.abspath(results_dir),
        "floor_method": floor_name,
        "cells": cells,
        "networks": networks,
    }
    return report, runs_by_key


def _network_summary(workload, network, by_method):
    """Fastest non-floor method and the DDP-no-hook / thinwire-fp32 ratio of one network."""
    candidates = [c for c in by_method.values()
                  if not c["floor"] and c["median_s_per_step"] is not None]
    fastest = min(candidates, key=lambda c: c["median_s_per_step"]) if candidates else None
    thinwire, ddp = by_method.get(THINWIRE_METHOD), by_method.get(DDP_METHOD)
    ratio = None
    if thinwire and ddp and thinwire["median_s_per_step"] and ddp["median_s_per_step"]:
        ratio = ddp["median_s_per_step"] / thinwire["median_s_per_step"]
    return {
        "workload": workload,
        "network": network["name"],
        "label": network.get("label", network["name"]),
        "fastest_method": fastest["method"] if fastest else None,
        "fastest_s_per_step": fastest["median_s_per_step"] if fastest else None,
        "fastest_ratio_to_floor": fastest["ratio_to_floor"] if fastest else None,
        "compared": THINWIRE_METHOD in by_method and DDP_METHOD in by_method,
        "ddp_over_thinwire": ratio,
        "compressed": _compressed_speedups(by_method),
    }


def _compressed_speedups(by_method):
    """For every compressed thinwire method: its ratio to the floor and how many times faster
    it is than each PyTorch DDP method of the same network (DDP median / its median)."""
    rows = []
    for name, cell in by_method.items():
        if (not name.startswith("thinwire-") or name == THINWIRE_METHOD
                or not cell["median_s_per_step"]):
            continue
        faster = {}
        for other, peer in by_method.items():
            if other.startswith("ddp-") and peer["median_s_per_step"]:
                faster[other] = peer["median_s_per_step"] / cell["median_s_per_step"]
        rows.append({"method": name, "ratio_to_floor": cell["ratio_to_floor"],
                     "times_faster_than": faster})
    return rows


# ---------------------------------------------------------------------------------------------
# Markdown


def fmt_seconds(x):
    return "—" if x is None else f"{x:.3e}"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.3f}"


def fmt_accuracy(x):
    return "—" if x is None else f"{x:.4f}"


def fmt_bytes(x):
    """Decimal units (1 kB = 1000 B), as network bandwidths are quoted."""
    if x is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3f} {unit}"
    return f"{x:.1f} B"


def _cell_text(text):
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _one_line(text):
    return " ".join(str(text).split())


def render_markdown(report, matrix):
    """The whole Markdown report as a string."""
    method_labels = {m["name"]: m.get("label", m["name"]) for m in matrix["methods"]}
    workloads = ", ".join(report["workloads"])
    out = [f"# Benchmark `{report['matrix']}`: workload {workloads}, {report['ranks']} ranks, "
           f"{report['steps']} steps, {report['repeats']} repeats; machine: "
           f"{_one_line(report['machine']) or 'unknown'}; started {report['started'] or 'unknown'}",
           ""]
    out.append("Methods: " + "; ".join(f"`{name}` = {label}" for name, label in
                                       method_labels.items()) + ".")
    out.append("")
    repeats = report["repeats"]
    header = ["network", "method", f"s/step (median of {repeats})", "spread (min–max)",
              "ratio to floor", "final test acc (median)", "exposed comm s/step",
              "bytes sent/rank/step", "runs ok"]
    for workload in report["workloads"]:
        out.append(f"## Workload {workload}")
        out.append("")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        problems = []
        for cell in (c for c in report["cells"] if c["workload"] == workload):
            runs_ok = f"{cell['ok']}/{cell['repeats']}"
            row = [_cell_text(cell["network"]), _cell_text(cell["method"])]
            if cell["ok"] == 0:
                failed = [r for r in cell["runs"] if r["status"] == "failed"]
                if failed:
                    status = "failed: " + _cell_text(failed[0]["error"])
                else:
                    status = f"missing: no repetition of {repeats} found"
                row += [status] + ["—"] * 5
            else:
                row += [fmt_seconds(cell["median_s_per_step"]),
                        f"{fmt_seconds(cell['min_s_per_step'])}–"
                        f"{fmt_seconds(cell['max_s_per_step'])}",
                        fmt_ratio(cell["ratio_to_floor"]),
                        fmt_accuracy(cell["final_test_accuracy_median"]),
                        fmt_seconds(cell["exposed_comm_s_per_step"]),
                        fmt_bytes(cell["bytes_sent_per_rank_per_step"])]
            row.append(runs_ok)
            out.append("| " + " | ".join(row) + " |")
            for run in cell["runs"]:
                if run["status"] != "ok":
                    problems.append(f"- {cell['network']} / {cell['method']} / rep{run['rep']}: "
                                    f"{run['status']}: {run['error']}")
        out.append("")
        if report["floor_method"] is None:
            out.append("No floor method in the matrix: ratios and exposed communication are not "
                       "available.")
            out.append("")
        for net in (n for n in report["networks"] if n["workload"] == workload):
            out.append(_network_line(net))
        out.append("")
        if problems:
            out.append("Failed or missing runs:")
            out.append("")
            out += problems
            out.append("")
    out.append("Ratio to floor = method median s/step / floor median s/step of the same network. "
               "Exposed comm = method median − floor median − compress s/step, clipped at 0. "
               "Bytes sent/rank/step = bytes_sent_per_rank / steps (median over repetitions).")
    return "\n".join(out) + "\n"


def _network_line(net):
    text = f"- **{net['network']}** ({net['label']}): "
    if net["fastest_method"] is None:
        text += "no method has a successful run"
    else:
        text += (f"fastest is `{net['fastest_method']}` at "
                 f"{fmt_seconds(net['fastest_s_per_step'])} s/step")
        if net["fastest_ratio_to_floor"] is not None:
            text += f" ({fmt_ratio(net['fastest_ratio_to_floor'])}× the floor)"
    if net["compared"]:
        ratio = net["ddp_over_thinwire"]
        text += f"; {DDP_METHOD}/{THINWIRE_METHOD} s/step = "
        if ratio is None:
            text += "n/a (no successful run of one of them)"
        else:
            verdict = ("thinwire faster" if ratio > 1 else
                       "PyTorch DDP faster" if ratio < 1 else "equal")
            text += f"{fmt_ratio(ratio)} ({verdict})"
    for row in net.get("compressed", []):
        text += f"; `{row['method']}`"
        if row["ratio_to_floor"] is not None:
            text += f" {fmt_ratio(row['ratio_to_floor'])}× the floor"
        for other, times in sorted(row["times_faster_than"].items()):
            text += f", {fmt_ratio(times)}× faster than {other}"
    return text + "."


# ---------------------------------------------------------------------------------------------
# Plots


def _safe_name(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def write_plots(report, matrix, runs_by_key, plots_dir, prefix):
    """Writes the PNG files; returns their paths. Imports matplotlib lazily (Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plots_dir, exist_ok=True)
    methods = [m["name"] for m in matrix["methods"]]
    colors = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(methods)}
    written = []
    many = len(report["workloads"]) > 1
    for workload in report["workloads"]:
        stem = f"{_safe_name(prefix)}" + (f"-{_safe_name(workload)}" if many else "")
        for net in (n for n in report["networks"] if n["workload"] == workload):
            cells = [c for c in report["cells"]
                     if c["workload"] == workload and c["network"] == net["network"]]
            path = os.path.join(plots_dir, f"{stem}-{_safe_name(net['network'])}-curves.png")
            _plot_curves(plt, path, workload, net, cells, runs_by_key, colors)
            written.append(path)
        path = os.path.join(plots_dir, f"{stem}-time-breakdown.png")
        _plot_breakdown(plt, path, workload, report, matrix)
        written.append(path)
    return written


def _plot_curves(plt, path, workload, net, cells, runs_by_key, colors):
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = [(axes[0][0], "train", "elapsed_s", "loss"),
              (axes[0][1], "train", "step", "loss"),
              (axes[1][0], "eval", "elapsed_s", "accuracy"),
              (axes[1][1], "eval", "step", "accuracy")]
    not_plotted = []
    all_losses = []
    for cell in cells:
        if cell["plotted_rep"] is None:
            not_plotted.append(cell["method"])
            continue
        run = runs_by_key[(workload, cell["network"], cell["method"])][cell["plotted_rep"] - 1]
        style = {"color": colors[cell["method"]], "linestyle": "--" if cell["floor"] else "-",
                 "label": f"{cell['method']} (rep{cell['plotted_rep']}, "
                          f"{fmt_seconds(cell['median_s_per_step'])} s/step)"}
        for ax, kind, x_key, y_key in panels:
            points = [(_finite(r.get(x_key)), _finite(r.get(y_key))) for r in run[kind]]
            points = [(x, y) for x, y in points if x is not None and y is not None]
            if not points:
                continue
            xs, ys = zip(*points)
            if y_key == "accuracy":
                ys = [100.0 * y for y in ys]
                ax.plot(xs, ys, marker="o", markersize=5, **style)
            else:
                all_losses += ys
                ax.plot(xs, ys, marker=".", markersize=3, linewidth=1.2, **style)
    for ax, kind, x_key, y_key in panels:
        ax.set_xlabel("wall-clock time since start (s)" if x_key == "elapsed_s" else
                      "optimizer step")
        if y_key == "loss":
            positive = all_losses and min(all_losses) > 0
            if positive:
                ax.set_yscale("log")
            ax.set_ylabel("train loss" + (" (log scale)" if positive else ""))
            ax.set_title(f"train loss vs {'time' if x_key == 'elapsed_s' else 'step'}")
        else:
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"test accuracy vs {'time' if x_key == 'elapsed_s' else 'step'}")
        if not ax.lines:
            ax.text(0.5, 0.5, f"no {kind} records", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        ax.grid(True, which="both", alpha=0.3)
    title = f"{workload} — {net['label']} ({net['network']}): median-time repetition per method"
    if not_plotted:
        title += "\nnot plotted (no successful run): " + ", ".join(not_plotted)
    fig.suptitle(title)
    _figure_legend(fig, axes.flat)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _figure_legend(fig, axes):
    """One legend below the figure with every distinct label of `axes`, first use first."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(3, len(handles)), fontsize=9)


def _plot_breakdown(plt, path, workload, report, matrix):
    networks = [n for n in report["networks"] if n["workload"] == workload]
    fig, axes = plt.subplots(1, len(networks), figsize=(max(6, 4.5 * len(networks)), 6),
                             sharey=True, squeeze=False)
    segments = [("compute (floor s/step)", "#4c72b0"), ("compress", "#dd8452"),
                ("exposed communication", "#c44e52"), ("unattributed (no floor run)", "#bbbbbb")]
    for ax, net in zip(axes[0], networks):
        cells = [c for c in report["cells"] if c["workload"] == workload
                 and c["network"] == net["network"] and not c["floor"]]
        for x, cell in enumerate(cells):
            median = cell["median_s_per_step"]
            if median is None:
                ax.text(x, 0, "failed", ha="center", va="bottom", rotation=90, color="gray")
                continue
            floor = cell["floor_median_s_per_step"]
            if floor is None:
                parts = [0.0, 0.0, 0.0, median]
            else:
                parts = [floor, cell["compress_s_per_step"], cell["exposed_comm_s_per_step"], 0.0]
            bottom = 0.0
            for (label, color), height in zip(segments, parts):
                if height > 0:
                    ax.bar(x, height, bottom=bottom, color=color, label=label, width=0.6)
                bottom += height
            ax.plot([x - 0.35, x + 0.35], [median, median], color="black", linewidth=2,
                    label="measured s/step (median)")
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.margins(y=0.08)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([c["method"] for c in cells], rotation=30, ha="right")
        ax.set_title(f"{net['label']}\n({net['network']})", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel("time per optimizer step (s)")
    _figure_legend(fig, axes[0])
    fig.suptitle(f"{workload}: time per step by part, median of {report['repeats']} "
                 f"repetitions ({report['ranks']} ranks)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Tables, plots and aggregated JSON from a bench/run.sh results directory.")
    parser.add_argument("results_dir", help="directory holding matrix.json")
    parser.add_argument("--markdown", metavar="FILE",
                        help="write the Markdown report here instead of stdout")
    parser.add_argument("--json", metavar="FILE", help="write the aggregated numbers as JSON")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into this directory")
    parser.add_argument("--prefix", metavar="NAME",
                        help="file-name prefix of the plots (default: the matrix name)")
    args = parser.parse_args(argv)
    try:
        matrix = load_matrix(args.results_dir)
        report, runs_by_key = build_report(args.results_dir, matrix)
        markdown = render_markdown(report, matrix)
        if args.markdown:
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write(markdown)
        else:
            sys.stdout.write(markdown)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2, allow_nan=False)
                f.write("\n")
        if args.plots:
            written = write_plots(report, matrix, runs_by_key, args.plots,
                                  args.prefix or matrix["matrix"])
            # Keep stdout pure Markdown when the report goes there.
            stream = sys.stderr if not args.markdown else sys.stdout
            for path in written:
                print(path, file=stream)
    except ReportError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"report.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tests of bench/report.py on a synthetic results tree written here.

Every expected number is computed in this file from the inputs this file writes (statistics.median
over the per-repetition values), never copied from report.py's output.

Run from the repository root: /usr/bin/python3 -B -m unittest discover -s bench -p 'test_report.py'
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(HERE, "report.py")
FIXTURES = os.path.join(HERE, "fixtures")
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import report  # noqa: E402  (the module under test, next to this file)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = 40
REPEATS = 3

NETWORKS = [{"name": "net-a", "label": "no shaping (loopback TCP)"},
            {"name": "net-b", "label": "1 Gbit/s shared fabric"}]
METHODS = [{"name": "thinwire-fp32", "label": "thinwire, uncompressed", "framework": "thinwire"},
           {"name": "ddp-none", "label": "PyTorch DDP (gloo), no hook",
            "framework": "pytorch-ddp"},
           {"name": "ddp-fp16", "label": "PyTorch DDP (gloo), fp16 hook",
            "framework": "pytorch-ddp"},
           {"name": "floor", "label": "compute-only floor", "framework": "thinwire",
            "floor": True}]

# Per (network, method): one entry per repetition. A dict is a successful run (seconds per step,
# compress seconds per step, final accuracy, bytes sent per rank); the string "failed:<text>"
# writes failed.txt with that output; None leaves the repetition directory empty.
RUNS = {
    ("net-a", "floor"): [dict(s=0.010, c=0.0, acc=0.70, b=0),
                         dict(s=0.012, c=0.0, acc=0.72, b=0),
                         dict(s=0.011, c=0.0, acc=0.71, b=0)],
    ("net-a", "thinwire-fp32"): [dict(s=0.020, c=0.0, acc=0.85, b=4.0e6),
                                 dict(s=0.018, c=0.0, acc=0.84, b=4.4e6),
                                 dict(s=0.025, c=0.0, acc=0.86, b=4.2e6)],
    ("net-a", "ddp-none"): [dict(s=0.030, c=0.0, acc=0.83, b=4.0e6),
                            dict(s=0.027, c=0.0, acc=0.85, b=4.0e6),
                            dict(s=0.033, c=0.0, acc=0.84, b=4.0e6)],
    # Partly failed: one success, one failure, one missing repetition.
    ("net-a", "ddp-fp16"): [dict(s=0.022, c=0.002, acc=0.82, b=2.0e6),
                            "failed:thinwire: error: allreduce timed out after 30 s",
                            None],
    ("net-b", "floor"): [dict(s=0.011, c=0.0, acc=0.70, b=0),
                         dict(s=0.010, c=0.0, acc=0.69, b=0),
                         dict(s=0.013, c=0.0, acc=0.71, b=0)],
    # Compress time larger than the gap to the floor: exposed communication clips at 0.
    ("net-b", "thinwire-fp32"): [dict(s=0.050, c=0.050, acc=0.80, b=1.0e6),
                                 dict(s=0.060, c=0.050, acc=0.82, b=1.0e6),
                                 dict(s=0.055, c=0.050, acc=0.81, b=1.0e6)],
    ("net-b", "ddp-none"): [dict(s=0.045, c=0.0, acc=0.80, b=900),
                            dict(s=0.040, c=0.0, acc=0.79, b=900),
                            dict(s=0.050, c=0.0, acc=0.81, b=900)],
    # Every repetition failed; the error text holds a '|' that must be escaped in the table.
    ("net-b", "ddp-fp16"): ["failed:RuntimeError: gloo pair | connection closed by peer"] * 3,
}


def write_tree(root, matrix_overrides=None):
    """Writes matrix.json and every repetition of RUNS under root."""
    matrix = {"matrix": "baseline", "workload": "fmnist-mlp", "ranks": 4, "steps": STEPS,
              "repeats": REPEATS, "machine": "Linux test 6.1 x86_64\n2 cores\n8 GiB",
              "started": "2024-05-01T10:00:00Z", "networks": NETWORKS, "methods": METHODS}
    matrix.update(matrix_overrides or {})
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "matrix.json"), "w") as f:
        json.dump(matrix, f)
    for (network, method), reps in RUNS.items():
        for k, run in enumerate(reps, start=1):
            rep_dir = os.path.join(root, network, method, f"rep{k}")
            os.makedirs(rep_dir, exist_ok=True)
            if run is None:
                continue
            if isinstance(run, str):
                with open(os.path.join(rep_dir, "failed.txt"), "w") as f:
                    f.write(f"command: run {network} {method}\n")
                    f.write("some progress line\n" + run[len("failed:"):] + "\n")
                continue
            with open(os.path.join(rep_dir, "metrics.jsonl"), "w") as f:
                for step in (10, 20, 30, 40):
                    f.write(json.dumps({"kind": "train", "step": step, "loss": 2.0 / step,
                                        "accuracy": 0.5, "lr": 0.1, "samples_per_s": 100.0,
                                        "elapsed_s": step * run["s"], "bytes_sent": 0}) + "\n")
                    if step % 20 == 0:
                        f.write(json.dumps({"kind": "eval", "step": step, "loss": 1.0 / step,
                                            "accuracy": run["acc"] - 0.1 / step,
                                            "elapsed_s": step * run["s"] + 0.01}) + "\n")
                f.write(json.dumps({
                    "kind": "summary", "framework": "x", "method": method, "ranks": 4,
                    "steps": STEPS, "batch_per_rank": 64, "seconds_per_step": run["s"],
                    "warmup_steps_excluded": 5,
                    "times_per_step_s": {"data": 0, "forward": 0, "backward": 0,
                                         "compress": run["c"], "sync_wait": 0, "optimizer": 0},
                    "final_test_accuracy": run["acc"], "final_test_loss": 0.4,
                    "bytes_sent_per_rank": run["b"], "wall_s": 2.0}) + "\n")
    return matrix


def expected(network, method):
    """Independent aggregation of RUNS for one cell."""
    reps = RUNS[(network, method)]
    ok = [r for r in reps if isinstance(r, dict)]
    floor = statistics.median(r["s"] for r in RUNS[(network, "floor")])
    if not ok:
        return {"ok": 0, "median": None, "floor": floor}
    median = statistics.median(r["s"] for r in ok)
    compress = statistics.median(r["c"] for r in ok)
    return {"ok": len(ok), "failed": sum(isinstance(r, str) for r in reps),
            "missing": sum(r is None for r in reps), "median": median,
            "min": min(r["s"] for r in ok), "max": max(r["s"] for r in ok),
            "ratio": median / floor, "acc": statistics.median(r["acc"] for r in ok),
            "exposed": max(0.0, median - floor - compress),
            "bytes": statistics.median(r["b"] / STEPS for r in ok), "floor": floor}


def parse_bytes(text):
    value, unit = text.split()
    return float(value) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


def run_report(*args):
    return subprocess.run([sys.executable, REPORT, *args], capture_output=True, text=True,
                          timeout=120)


class ReportOnSyntheticTreeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="report_test_")
        cls.results = os.path.join(cls.tmp, "results")
        write_tree(cls.results)
        cls.plots = os.path.join(cls.tmp, "plots")
        cls.json_path = os.path.join(cls.tmp, "report.json")
        cls.md_path = os.path.join(cls.tmp, "report.md")
        cls.proc = run_report(cls.results, "--markdown", cls.md_path, "--json", cls.json_path,
                              "--plots", cls.plots, "--prefix", "demo")
        with open(cls.md_path) as f:
            cls.markdown = f.read()
        with open(cls.json_path) as f:
            cls.json = json.load(f)
        # Rows of the table keyed by (network, method); cells split on unescaped pipes.
        cls.rows = {}
        for line in cls.markdown.splitlines():
            if line.startswith("| net-"):
                cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
                cls.rows[(cells[0], cells[1])] = cells

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_succeeds(self):
        self.assertEqual(self.proc.returncode, 0, self.proc.stderr)

    def test_heading_names_matrix_workload_and_machine(self):
        heading = self.markdown.splitlines()[0]
        for text in ("baseline", "fmnist-mlp", "4 ranks", f"{STEPS} steps", f"{REPEATS} repeats",
                     "Linux test 6.1 x86_64 2 cores 8 GiB", "2024-05-01T10:00:00Z"):
            self.assertIn(text, heading)

    def test_table_numbers_match_independent_aggregation(self):
        self.assertEqual(len(self.rows), len(RUNS))
        for (network, method), reps in RUNS.items():
            want = expected(network, method)
            if want["ok"] == 0:
                continue
            with self.subTest(network=network, method=method):
                cells = self.rows[(network, method)]
                self.assertAlmostEqual(float(cells[2]), want["median"], delta=1e-3 * want["median"])
                low, high = cells[3].split("–")
                self.assertAlmostEqual(float(low), want["min"], delta=1e-3 * want["min"])
                self.assertAlmostEqual(float(high), want["max"], delta=1e-3 * want["max"])
                self.assertAlmostEqual(float(cells[4]), want["ratio"], delta=1e-3)
                self.assertAlmostEqual(float(cells[5]), want["acc"], delta=1e-4)
                self.assertAlmostEqual(float(cells[6]), want["exposed"],
                                       delta=1e-3 * max(want["exposed"], 1e-6))
                self.assertAlmostEqual(parse_bytes(cells[7]), want["bytes"],
                                       delta=1e-3 * max(want["bytes"], 1))
                self.assertEqual(cells[8], f"{want['ok']}/{REPEATS}")

    def test_header_states_repeat_count(self):
        self.assertIn(f"| s/step (median of {REPEATS}) |", self.markdown)

    def test_all_failed_row_shows_first_error_line(self):
        cells = self.rows[("net-b", "ddp-fp16")]
        self.assertEqual(cells[2],
                         "failed: RuntimeError: gloo pair \\| connection closed by peer")
        self.assertEqual(cells[-1], f"0/{REPEATS}")

    def test_partly_failed_row_and_listed_failures(self):
        self.assertEqual(self.rows[("net-a", "ddp-fp16")][-1], f"1/{REPEATS}")
        self.assertIn("- net-a / ddp-fp16 / rep2: failed: thinwire: error: allreduce timed out "
                      "after 30 s", self.markdown)
        self.assertRegex(self.markdown, r"- net-a / ddp-fp16 / rep3: missing: no metrics.jsonl")

    def test_exposed_communication_clips_at_zero(self):
        self.assertEqual(expected("net-b", "thinwire-fp32")["exposed"], 0.0)
        self.assertEqual(float(self.rows[("net-b", "thinwire-fp32")][6]), 0.0)

    def test_network_lines_name_fastest_and_ddp_over_thinwire(self):
        for network in ("net-a", "net-b"):
            medians = {m["name"]: expected(network, m["name"])["median"] for m in METHODS
                       if not m.get("floor") and expected(network, m["name"])["median"]}
            fastest = min(medians, key=medians.get)
            ratio = medians["ddp-none"] / medians["thinwire-fp32"]
            line = next(l for l in self.markdown.splitlines() if l.startswith(f"- **{network}**"))
            self.assertIn(f"fastest is `{fastest}`", line)
            match = re.search(r"ddp-none/thinwire-fp32 s/step = ([0-9.]+) \(([^)]*)\)", line)
            self.assertIsNotNone(match, line)
            self.assertAlmostEqual(float(match.group(1)), ratio, delta=1e-3)
            self.assertEqual(match.group(2),
                             "thinwire faster" if ratio > 1 else "PyTorch DDP faster")

    def test_json_holds_aggregated_numbers(self):
        cells = {(c["network"], c["method"]): c for c in self.json["cells"]}
        self.assertEqual(set(cells), set(RUNS))
        for key in RUNS:
            want, got = expected(*key), cells[key]
            with self.subTest(cell=key):
                self.assertEqual(got["ok"], want["ok"])
                self.assertEqual(got["repeats"], REPEATS)
                if want["ok"] == 0:
                    self.assertIsNone(got["median_s_per_step"])
                    self.assertEqual(got["failed"], REPEATS)
                    continue
                self.assertEqual(got["failed"], want["failed"])
                self.assertEqual(got["missing"], want["missing"])
                self.assertAlmostEqual(got["median_s_per_step"], want["median"], places=12)
                self.assertAlmostEqual(got["min_s_per_step"], want["min"], places=12)
                self.assertAlmostEqual(got["max_s_per_step"], want["max"], places=12)
                self.assertAlmostEqual(got["ratio_to_floor"], want["ratio"], places=12)
                self.assertAlmostEqual(got["final_test_accuracy_median"], want["acc"], places=12)
                self.assertAlmostEqual(got["exposed_comm_s_per_step"], want["exposed"], places=12)
                self.assertAlmostEqual(got["bytes_sent_per_rank_per_step"], want["bytes"],
                                       places=6)
        nets = {n["network"]: n for n in self.json["networks"]}
        want_ratio = expected("net-a", "ddp-none")["median"] / expected("net-a",
                                                                        "thinwire-fp32")["median"]
        self.assertAlmostEqual(nets["net-a"]["ddp_over_thinwire"], want_ratio, places=12)

    def test_plots_are_valid_pngs_and_listed(self):
        listed = [l for l in self.proc.stdout.splitlines() if l.endswith(".png")]
        names = sorted(os.path.basename(p) for p in listed)
        self.assertEqual(names, ["demo-net-a-curves.png", "demo-net-b-curves.png",
                                 "demo-time-breakdown.png"])
        for path in listed:
            with open(path, "rb") as f:
                data = f.read()
            self.assertGreater(len(data), 1000, path)
            self.assertEqual(data[:8], PNG_MAGIC, path)

    def test_markdown_on_stdout_by_default(self):
        proc = run_report(self.results)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, self.markdown)


class ReportInputErrorsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="report_test_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_fails_with(self, results_dir, message):
        proc = run_report(results_dir)
        self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
        self.assertIn(message, proc.stderr)
        self.assertEqual(proc.stdout, "")

    def test_missing_directory(self):
        self.assert_fails_with(os.path.join(self.tmp, "nope"), "results directory not found")

    def test_missing_matrix(self):
        self.assert_fails_with(self.tmp, "matrix.json not found")

    def test_matrix_not_json(self):
        with open(os.path.join(self.tmp, "matrix.json"), "w") as f:
            f.write("{\"matrix\": ")
        self.assert_fails_with(self.tmp, "is not valid JSON")

    def test_matrix_without_networks(self):
        write_tree(self.tmp)
        with open(os.path.join(self.tmp, "matrix.json")) as f:
            matrix = json.load(f)
        del matrix["networks"]
        with open(os.path.join(self.tmp, "matrix.json"), "w") as f:
            json.dump(matrix, f)
        self.assert_fails_with(self.tmp, "missing key 'networks'")

    def test_matrix_with_bad_repeats(self):
        write_tree(self.tmp, {"repeats": "three"})
        self.assert_fails_with(self.tmp, "'repeats' must be int")


class ReportLayoutTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="report_test_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_several_workloads_get_one_table_each(self):
        matrix = None
        for workload in ("mlp", "cnn"):
            matrix = write_tree(os.path.join(self.tmp, workload))
        del matrix["workload"]
        matrix["workloads"] = ["mlp", "cnn"]
        with open(os.path.join(self.tmp, "matrix.json"), "w") as f:
            json.dump(matrix, f)
        markdown = os.path.join(self.tmp, "r.md")
        proc = run_report(self.tmp, "--markdown", markdown)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(markdown) as f:
            text = f.read()
        self.assertEqual(re.findall(r"^## Workload (\S+)$", text, re.MULTILINE), ["mlp", "cnn"])
        self.assertEqual(text.count("| net-a | thinwire-fp32 | "), 2)

    def test_run_without_summary_counts_as_failed(self):
        write_tree(self.tmp)
        metrics = os.path.join(self.tmp, "net-a", "ddp-none", "rep2", "metrics.jsonl")
        with open(metrics) as f:
            lines = [l for l in f if '"summary"' not in l]
        with open(metrics, "w") as f:
            f.writelines(lines + ['{"kind": "train", "step": 4'])  # cut off mid-record
        json_path = os.path.join(self.tmp, "r.json")
        proc = run_report(self.tmp, "--json", json_path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("net-a / ddp-none / rep2: failed: metrics.jsonl has 0 summary records",
                      proc.stdout)
        with open(json_path) as f:
            cell = next(c for c in json.load(f)["cells"]
                        if (c["network"], c["method"]) == ("net-a", "ddp-none"))
        ok = [RUNS[("net-a", "ddp-none")][i]["s"] for i in (0, 2)]
        self.assertEqual(cell["ok"], 2)
        self.assertAlmostEqual(cell["median_s_per_step"], statistics.median(ok), places=12)

    def test_matrix_without_floor_reports_no_ratios(self):
        write_tree(self.tmp, {"methods": [m for m in METHODS if not m.get("floor")]})
        proc = run_report(self.tmp)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("No floor method in the matrix", proc.stdout)
        row = next(l for l in proc.stdout.splitlines() if l.startswith("| net-a | ddp-none |"))
        self.assertEqual([c.strip() for c in row.split("|")[5:8]], ["—", "0.8400", "—"])


class FirstErrorLineTest(unittest.TestCase):
    """The failed.txt samples in bench/fixtures/failed_txt and the line a reader needs."""

    def check(self, name, want):
        with open(os.path.join(FIXTURES, "failed_txt", name)) as f:
            self.assertEqual(report.first_error_line(f.read()), want)

    def test_thinwire_error_beats_mpirun_abort_text(self):
        self.check("thinwire_error.txt", "thinwire: error: allreduce on rank 2/4 timed out after "
                   "30 s (bucket 3, 4194304 bytes)")

    def test_python_exception_line_not_traceback_header(self):
        self.check("python_traceback.txt", "RuntimeError: [../third_party/gloo/gloo/transport/tcp/"
                   "pair.cc:598] Connection closed by peer [127.0.0.1]:41322")

    def test_killed_rank(self):
        self.check("mpirun_abort_only.txt", "mpirun noticed that process rank 3 with PID 0 on node "
                   "host exited on signal 9 (Killed).")

    def test_uncaught_cpp_exception(self):
        self.check("uncaught_exception.txt", "what(): cannot open data/fashion-mnist/"
                   "train-images-idx3-ubyte: No such file or directory")

    def test_command_line_is_not_the_error(self):
        self.assertEqual(report.first_error_line("mpirun -n 4 thinwire train --set x=error\n"
                                                 "Segmentation fault (core dumped)\n"),
                         "Segmentation fault (core dumped)")

    def test_empty_file(self):
        self.assertEqual(report.first_error_line("\n\n"), "empty failed.txt")


if __name__ == "__main__":
    unittest.main()


class CompressedSpeedupsTest(unittest.TestCase):
    def test_ratios_of_compressed_methods_to_floor_and_ddp(self):
        cell = lambda s, floor=False, ratio=None: {  # noqa: E731
            "median_s_per_step": s, "floor": floor, "ratio_to_floor": ratio}
        by_method = {
            "floor": cell(0.1, floor=True, ratio=1.0),
            "thinwire-fp32": cell(1.0, ratio=10.0),
            "thinwire-topk-ef": cell(0.125, ratio=1.25),
            "thinwire-sign-ef": cell(None),
            "ddp-none": cell(1.25, ratio=12.5),
            "ddp-fp16": cell(0.75, ratio=7.5),
        }
        rows = report._compressed_speedups(by_method)
        self.assertEqual([r["method"] for r in rows], ["thinwire-topk-ef"])
        self.assertEqual(rows[0]["ratio_to_floor"], 1.25)
        self.assertAlmostEqual(rows[0]["times_faster_than"]["ddp-none"], 10.0)
        self.assertAlmostEqual(rows[0]["times_faster_than"]["ddp-fp16"], 6.0)
        line = report._network_line({
            "network": "n", "label": "l", "fastest_method": "thinwire-topk-ef",
            "fastest_s_per_step": 0.125, "fastest_ratio_to_floor": 1.25, "compared": False,
            "ddp_over_thinwire": None, "compressed": rows})
        self.assertIn("`thinwire-topk-ef` 1.250× the floor, 6.000× faster than ddp-fp16, "
                      "10.000× faster than ddp-none", line)

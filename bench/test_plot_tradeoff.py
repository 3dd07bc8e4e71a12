"""Tests of bench/plot_tradeoff.py on metrics files written here.

Every expected number is computed in this file from the records it writes.

Run from the repository root:
  /usr/bin/python3 -B -m unittest discover -s bench -p 'test_plot_tradeoff.py'
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "plot_tradeoff.py")
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import plot_tradeoff  # noqa: E402  (the module under test)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(directory, name, steps, bytes_per_step, loss, summary=True, accuracy=None):
    """A run that sends bytes_per_step[s] at step s (1-based), logged every 10 steps."""
    path = os.path.join(directory, name + ".jsonl")
    total = 0
    with open(path, "w") as f:
        for step in range(1, steps + 1):
            total += bytes_per_step(step)
            if step % 10 == 0:
                f.write(json.dumps({"kind": "train", "step": step, "loss": 3.0,
                                    "bytes_sent": total}) + "\n")
        if summary:
            record = {"kind": "summary", "steps": steps, "bytes_sent_per_rank": total,
                      "final_test_loss": loss}
            if accuracy is not None:
                record["final_test_accuracy"] = accuracy
            f.write(json.dumps(record) + "\n")
    return path


class PlotTradeoffTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def test_bytes_per_step_over_the_whole_run_and_from_a_step(self):
        # 1000 bytes per step up to step 100, then 250: the whole run and steps 100-300 differ.
        rate = lambda s: 1000 if s <= 100 else 250
        path = write_run(self.dir.name, "a", 300, rate, 2.5)
        whole = sum(rate(s) for s in range(1, 301)) / 300
        after = sum(rate(s) for s in range(101, 301)) / 200
        self.assertAlmostEqual(plot_tradeoff.load(path, 0)[0], whole)
        self.assertAlmostEqual(plot_tradeoff.load(path, 100)[0], after)
        self.assertEqual(plot_tradeoff.load(path, 100)[1], 2.5)

    def test_a_start_step_without_a_record_is_an_error(self):
        path = write_run(self.dir.name, "a", 300, lambda s: 8, 2.5)
        with self.assertRaises(SystemExit):
            plot_tradeoff.load(path, 105)

    def test_an_unfinished_run_is_an_error(self):
        path = write_run(self.dir.name, "a", 50, lambda s: 8, 2.5, summary=False)
        result = subprocess.run([sys.executable, "-B", SCRIPT, os.path.join(self.dir.name, "o.png"),
                                 "g/x=" + path], capture_output=True, text=True)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("no summary", result.stderr)

    def test_several_runs_of_one_setting_are_averaged(self):
        # Three seeds of one setting: different bytes and losses.
        losses = [2.0, 2.3, 2.15]
        rates = [100, 130, 160]
        paths = [write_run(self.dir.name, f"s{i}", 100, lambda s, r=r: r, loss)
                 for i, (r, loss) in enumerate(zip(rates, losses))]
        point = plot_tradeoff.aggregate(paths, 0)
        self.assertEqual(point["runs"], 3)
        self.assertAlmostEqual(point["bytes"], sum(rates) / 3)
        mean = sum(losses) / 3
        self.assertAlmostEqual(point["y"], mean)
        sd = (sum((x - mean) ** 2 for x in losses) / 2) ** 0.5
        self.assertAlmostEqual(point["sd"], sd)
        self.assertEqual((point["lo"], point["hi"]), (2.0, 2.3))
        one = plot_tradeoff.aggregate(paths[:1], 0)
        self.assertEqual((one["runs"], one["sd"], one["y"]), (1, 0.0, 2.0))

    def test_another_summary_metric(self):
        a = write_run(self.dir.name, "a", 100, lambda s: 10, 0.4, accuracy=0.87)
        b = write_run(self.dir.name, "b", 100, lambda s: 10, 0.5, accuracy=0.85)
        point = plot_tradeoff.aggregate([a, b], 0, "final_test_accuracy")
        self.assertAlmostEqual(point["y"], 0.86)
        c = write_run(self.dir.name, "c", 100, lambda s: 10, 0.5)  # no accuracy in its summary
        with self.assertRaises(SystemExit):
            plot_tradeoff.aggregate([a, c], 0, "final_test_accuracy")

    def test_table_and_png_from_comma_separated_runs(self):
        runs = [write_run(self.dir.name, f"u{i}", 100, lambda s: 200, 2.0 + i / 10) for i in range(3)]
        lg = write_run(self.dir.name, "l", 100, lambda s: 50, 2.05)
        out = os.path.join(self.dir.name, "o.png")
        result = subprocess.run([sys.executable, "-B", SCRIPT, out, "uniform/1=" + ",".join(runs),
                                 "L-GreCo/a=" + lg, "--table"], capture_output=True, text=True,
                                check=True)
        rows = [line for line in result.stdout.splitlines() if line.startswith("| uniform")
                or line.startswith("| L-GreCo")]
        self.assertEqual(len(rows), 2)
        self.assertIn("| 3 | 200 | 2.1000 | 0.1000 | 2.0000 to 2.2000 |", rows[0])
        self.assertIn("| 1 | 50 | 2.0500 | 0.0000 |", rows[1])
        with open(out, "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC)

    def test_writes_a_png(self):
        a = write_run(self.dir.name, "a", 100, lambda s: 100, 2.0)
        b = write_run(self.dir.name, "b", 100, lambda s: 30, 2.1)
        out = os.path.join(self.dir.name, "o.png")
        subprocess.run([sys.executable, "-B", SCRIPT, out, "uniform/1=" + a, "L-GreCo/2=" + b,
                        "--from", "10", "--title", "t"], check=True)
        with open(out, "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC)


if __name__ == "__main__":
    unittest.main()

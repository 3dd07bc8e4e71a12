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


def write_run(directory, name, steps, bytes_per_step, loss, summary=True):
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
            f.write(json.dumps({"kind": "summary", "steps": steps, "bytes_sent_per_rank": total,
                                "final_test_loss": loss}) + "\n")
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

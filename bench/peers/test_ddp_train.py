"""Unit tests of bench/peers/ddp_train.py (single process, no process group).

Run from the repository root:  /usr/bin/python3 -m unittest bench/peers/test_ddp_train.py

Every expectation comes from an independent source: published test vectors (std::mt19937_64,
FNV-1a, SplitMix64), torch's own CosineAnnealingLR, closed-form identities, or values printed by a
small C++ program compiled against thinwire's core/data/seeded_random.h (the reference the Python
port must reproduce bit for bit).
"""

import math
import os
import sys
import unittest
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ddp_train  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


class LrScheduleTest(unittest.TestCase):
    def test_warm_up_is_linear_from_zero_to_the_base_rate(self):
        base, warmup = 0.05, 100
        for step in range(warmup):
            # Step s ends the (s+1)-th hundredth of the ramp.
            self.assertAlmostEqual(ddp_train.lr_at(step, base, warmup, 600),
                                   base * (step + 1) / warmup, places=15)
        self.assertAlmostEqual(ddp_train.lr_at(0, base, warmup, 600), 0.0005, places=15)
        self.assertAlmostEqual(ddp_train.lr_at(99, base, warmup, 600), base, places=15)

    def test_cosine_matches_torch_cosine_annealing(self):
        base, warmup, total = 0.05, 100, 600
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=base)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup,
                                                               eta_min=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scheduler.step() before optimizer.step()
            for step in range(warmup, total + 1):
                expected = scheduler.get_last_lr()[0]
                self.assertAlmostEqual(ddp_train.lr_at(step, base, warmup, total), expected,
                                       delta=1e-12, msg=f"step {step}")
                scheduler.step()

    def test_cosine_with_a_floor_follows_the_half_angle_identity(self):
        base, warmup, total, ratio = 0.1, 10, 110, 0.2
        floor = ratio * base
        for step in range(warmup, total + 1):
            progress = (step - warmup) / (total - warmup)
            expected = floor + (base - floor) * math.cos(math.pi * progress / 2) ** 2
            self.assertAlmostEqual(ddp_train.lr_at(step, base, warmup, total, ratio), expected,
                                   places=14)
        self.assertAlmostEqual(ddp_train.lr_at(total, base, warmup, total, ratio), floor, places=15)
        self.assertAlmostEqual(ddp_train.lr_at(total + 50, base, warmup, total, ratio), floor,
                               places=15)

    def test_landmarks(self):
        self.assertEqual(ddp_train.lr_at(0, 0.05, 0, 100), 0.05)  # no warm-up: full rate at once
        self.assertAlmostEqual(ddp_train.lr_at(50, 0.05, 0, 100), 0.025, places=15)  # half-way
        self.assertAlmostEqual(ddp_train.lr_at(100, 0.05, 0, 100), 0.0, places=15)
        # Fewer steps than warm-up (the short checks): the rate stays on the ramp.
        self.assertAlmostEqual(ddp_train.lr_at(59, 0.05, 100, 60), 0.03, places=15)


class SeededRandomTest(unittest.TestCase):
    def test_mt19937_64_ten_thousandth_output(self):
        # C++ standard [rand.predef]: the 10000th output of a default-constructed
        # std::mt19937_64 (seed 5489) is 9981545732273789042.
        engine = ddp_train.MersenneTwister64(5489)
        self.assertEqual(int(engine.take(10000)[-1]), 9981545732273789042)

    def test_mt19937_64_is_one_stream_whatever_the_chunking(self):
        whole = ddp_train.MersenneTwister64(7).take(1000).tolist()
        engine = ddp_train.MersenneTwister64(7)
        pieces = []
        for size in (1, 311, 1, 300, 387):
            pieces.extend(engine.take(size).tolist())
        self.assertEqual(pieces, whole)

    def test_hash_name_is_fnv1a_64(self):
        # Published FNV-1a 64-bit test vectors.
        self.assertEqual(ddp_train.hash_name(""), 0xCBF29CE484222325)
        self.assertEqual(ddp_train.hash_name("a"), 0xAF63DC4C8601EC8C)
        self.assertEqual(ddp_train.hash_name("foobar"), 0x85944171F73967E8)

    def test_mix_bits_is_splitmix64(self):
        # The first output of SplitMix64 seeded with 0.
        self.assertEqual(ddp_train.mix_bits(0), 0xE220A8397B1DCDAF)

    def test_matches_thinwire_reference_streams(self):
        # Printed by a C++ program built against core/data/seeded_random.h: the Fisher-Yates
        # permutation of 60000 for (seed 1, epoch 0) and the first initial weights of
        # "layers.0.weight" (fan-in 784) for seed 1.
        self.assertEqual(ddp_train.mix_seed(1, 0), 3363498033381887526)
        self.assertEqual(ddp_train.hash_name("layers.0.weight"), 8181454434133078233)
        order = ddp_train.SeededRandom(ddp_train.mix_seed(1, 0)).shuffled_range(60000)
        self.assertEqual(order[:8], [44118, 50851, 55301, 40280, 56864, 37267, 19510, 13500])
        self.assertEqual(order[-1], 2733)
        self.assertEqual(sorted(order), list(range(60000)))
        model = ddp_train.Mlp(784, [2048, 2048], 10)
        ddp_train.seeded_init_(model, 1)
        first = model.layers[0].weight.detach().flatten()[:4].tolist()
        expected = [0.0110658286, 0.0288841892, -0.0205145963, -0.0180292483]
        for got, want in zip(first, expected):
            self.assertAlmostEqual(got, want, delta=1e-10)


class SamplerTest(unittest.TestCase):
    def test_shards_are_disjoint_and_tile_the_global_batch(self):
        size, batch, world = 1000, 16, 4
        samplers = [ddp_train.DistributedSampler(size, batch, r, world, 3) for r in range(world)]
        steps = samplers[0].steps_per_epoch
        self.assertEqual(steps, size // (batch * world))
        reference = samplers[0].permutation(0)
        for step in range(steps):
            union = []
            for sampler in samplers:
                union.extend(sampler.indices(step))
            self.assertEqual(union, reference[step * batch * world:(step + 1) * batch * world])
        # The next epoch starts on a fresh permutation.
        self.assertEqual(samplers[1].indices(steps), samplers[1].permutation(1)[batch:2 * batch])
        self.assertNotEqual(samplers[0].permutation(0), samplers[0].permutation(1))

    def test_rejects_a_dataset_smaller_than_one_global_batch(self):
        with self.assertRaises(ValueError):
            ddp_train.DistributedSampler(100, 64, 0, 2, 1)


class ModelTest(unittest.TestCase):
    def test_mlp_has_thinwire_names_and_sizes(self):
        model = ddp_train.make_model("fmnist-mlp", 1)
        names = [name for name, _ in model.named_parameters()]
        self.assertEqual(names, [f"layers.{i}.{leaf}" for i in range(3)
                                 for leaf in ("weight", "bias")])
        expected = 784 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10
        self.assertEqual(sum(p.numel() for p in model.parameters()), expected)
        self.assertEqual(model(torch.zeros(3, 1, 28, 28)).shape, (3, 10))

    def test_cnn_has_thinwire_layers(self):
        model = ddp_train.make_model("fmnist-cnn", 1)
        # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4, so fc1 sees 64 * 4 * 4 features.
        expected = (1 * 32 * 25 + 32) + (32 * 64 * 25 + 64) + (1024 * 128 + 128) + (128 * 10 + 10)
        self.assertEqual(sum(p.numel() for p in model.parameters()), expected)
        self.assertEqual(model(torch.zeros(2, 1, 28, 28)).shape, (2, 10))

    def test_seeded_init_bounds(self):
        model = ddp_train.make_model("fmnist-cnn", 5)
        for prefix, fan_in in (("conv1", 25), ("conv2", 32 * 25), ("fc1", 1024), ("fc2", 128)):
            bound = 1 / math.sqrt(fan_in)
            for leaf in ("weight", "bias"):
                values = dict(model.named_parameters())[f"{prefix}.{leaf}"]
                self.assertLessEqual(values.abs().max().item(), bound)
        again = ddp_train.make_model("fmnist-cnn", 5)
        other = ddp_train.make_model("fmnist-cnn", 6)
        self.assertTrue(torch.equal(model.fc1.weight, again.fc1.weight))
        self.assertFalse(torch.equal(model.fc1.weight, other.fc1.weight))


@unittest.skipUnless(os.path.isdir(DATA), f"{DATA} not installed (dataset-fashion-mnist)")
class DataTest(unittest.TestCase):
    def test_normalisation(self):
        test = ddp_train.FashionMnist(DATA, "test")
        self.assertEqual(len(test), 10000)
        inputs, labels = test.batch([0, 9999])
        self.assertEqual(inputs.shape, (2, 1, 28, 28))
        raw = test.pixels[[0, 9999]].to(torch.float64)
        expected = (raw / 255.0 - 0.2860) / 0.3530
        self.assertLess((inputs.to(torch.float64) - expected).abs().max().item(), 1e-5)
        self.assertEqual(labels.tolist(), test.labels[[0, 9999]].tolist())


if __name__ == "__main__":
    unittest.main()

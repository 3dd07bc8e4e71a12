#!/usr/bin/python3
"""PyTorch DistributedDataParallel (gloo) peer of thinwire's reference workloads.

One process is one rank. The job is thinwire's job, step for step:
  * data: Fashion-MNIST read from the gzip IDX files, pixels scaled as (x / 255 - 0.2860) / 0.3530
    (core/data/idx_dataset.cc);
  * data order: thinwire's DistributedSampler (core/data/distributed_sampler.cc): one permutation
    per epoch from (seed, epoch), global batch s is slice [s*G, (s+1)*G), rank r takes its
    contiguous sub-slice; the remainder of an epoch is dropped;
  * model: thinwire's Mlp (784-2048-2048-10, ReLU) or Cnn (conv5x5 32, ReLU, maxpool 2, conv5x5 64,
    ReLU, maxpool 2, fc 1024->128, ReLU, fc 128->10), initialised by thinwire's seeded_init
    (core/models/seeded_init.cc), so both frameworks start from bit-identical weights;
  * optimizer: SGD with momentum / Nesterov / weight decay (same update as optim/sgd_optimizer.cc)
    and thinwire's LrSchedule (linear warm-up from 0, then cosine to min_lr_ratio * lr);
  * evaluation: the whole test set, sharded over ranks by stride (sample i on rank i % world),
    batches of --eval-batch, loss and correct counts summed with an allreduce.
The random streams (std::mt19937_64 + SplitMix64/FNV-1a seed mixing, core/data/seeded_random.h)
are re-implemented below with numpy, bit for bit.

Rank 0 writes metrics.jsonl in the shared result format (docs: bench/peers/README.md).
Launch with bench/peers/run_local.sh, or set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT yourself.
Any failure prints one line "ddp_train.py: rank R/W: error: ..." to stderr and exits non-zero;
every collective is bounded by --timeout-s.
"""

import argparse
import datetime
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as functional
from torch import nn

PROGRAM = "ddp_train.py"
MASK64 = (1 << 64) - 1
PIXEL_MEAN = 0.2860  # of x / 255 over the Fashion-MNIST training set (IdxDatasetOptions)
PIXEL_STD = 0.3530
NUM_CLASSES = 10
WARMUP_STEPS_EXCLUDED = 5
HOOKS = ("none", "fp16", "powersgd", "powersgd-batched")
WORKLOADS = ("fmnist-mlp", "fmnist-cnn")
# Per-workload defaults taken from examples/fmnist_mlp.yaml and examples/fmnist_cnn.yaml.
WORKLOAD_DEFAULTS = {
    "fmnist-mlp": {"weight_decay": 0.0, "eval_batch": 1000},
    "fmnist-cnn": {"weight_decay": 0.0005, "eval_batch": 500},
}


# ---------------------------------------------------------------------------------------------
# Seeded random streams (port of core/data/seeded_random.h)
# ---------------------------------------------------------------------------------------------


def mix_bits(value):
    """SplitMix64 finaliser on a Python int (mod 2^64)."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def mix_seed(seed, purpose):
    """Seed of the stream identified by (seed, purpose), as thinwire::core::mixSeed."""
    tag = (purpose * 0xD6E8FEB86659FD93 + 0x632BE59BD9B4E019) & MASK64
    return mix_bits(mix_bits(seed & MASK64) ^ tag)


def hash_name(text):
    """FNV-1a (64-bit) of the UTF-8 bytes of `text`, as thinwire::core::hashName."""
    value = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & MASK64
    return value


class MersenneTwister64:
    """std::mt19937_64, whose output sequence the C++ standard fixes; vectorised with numpy.

    The twist of the 312-word state is done in three slices that respect its data dependencies,
    so one numpy call handles up to 156 words at a time.
    """

    _N = 312
    _M = 156
    _MATRIX_A = np.uint64(0xB5026F5AA96619E9)
    _UPPER = np.uint64(0xFFFFFFFF80000000)
    _LOWER = np.uint64(0x7FFFFFFF)

    def __init__(self, seed):
        words = [seed & MASK64]
        for i in range(1, self._N):
            previous = words[-1]
            words.append((6364136223846793005 * (previous ^ (previous >> 62)) + i) & MASK64)
        self._state = np.array(words, dtype=np.uint64)
        self._pending = np.empty(0, dtype=np.uint64)

    def _mix(self, upper_from, lower_from):
        y = (upper_from & self._UPPER) | (lower_from & self._LOWER)
        return (y >> np.uint64(1)) ^ ((y & np.uint64(1)) * self._MATRIX_A)

    def _twist(self):
        old = self._state
        n, m = self._N, self._M
        new = np.empty_like(old)
        new[: n - m] = old[m:] ^ self._mix(old[: n - m], old[1 : n - m + 1])
        new[n - m : n - 1] = new[: m - 1] ^ self._mix(old[n - m : n - 1], old[n - m + 1 :])
        new[n - 1] = new[m - 1] ^ self._mix(old[n - 1], new[0])
        self._state = new
        return new

    @staticmethod
    def _temper(words):
        z = words.copy()
        z ^= (z >> np.uint64(29)) & np.uint64(0x5555555555555555)
        z ^= (z << np.uint64(17)) & np.uint64(0x71D67FFFEDA60000)
        z ^= (z << np.uint64(37)) & np.uint64(0xFFF7EEE000000000)
        z ^= z >> np.uint64(43)
        return z

    def take(self, count):
        """The next `count` outputs as a uint64 array."""
        parts = [self._pending]
        have = self._pending.size
        while have < count:
            block = self._temper(self._twist())
            parts.append(block)
            have += block.size
        words = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._pending = words[count:]
        return words[:count]


class SeededRandom:
    """thinwire::core::SeededRandom: bounded integers and uniforms derived from mt19937_64."""

    def __init__(self, seed):
        self._engine = MersenneTwister64(seed)

    def raw(self, count):
        return self._engine.take(count)

    def uniform(self, count):
        """`count` doubles in [0, 1) with 53 random bits each."""
        return (self.raw(count) >> np.uint64(11)).astype(np.float64) * (2.0**-53)

    def shuffled_range(self, size):
        """Fisher-Yates permutation of range(size) drawn with below(i + 1) for i = size-1 .. 1."""
        order = list(range(size))
        draws = self.raw(max(size - 1, 0)).tolist()
        position = 0
        for i in range(size - 1, 0, -1):
            bound = i + 1
            threshold = ((1 << 64) - bound) % bound  # rejection removes the modulo bias
            while True:
                if position == len(draws):
                    draws.extend(self.raw(64).tolist())
                value = draws[position]
                position += 1
                if value >= threshold:
                    break
            j = value % bound
            order[i], order[j] = order[j], order[i]
        return order


def seeded_init_(module, seed):
    """Overwrites every parameter as thinwire::core::initParametersFromSeed does (in place).

    Weight with fan-in F and the bias next to it: uniform in [-1/sqrt(F), 1/sqrt(F)), drawn from
    SeededRandom(mix_seed(seed, hash_name(parameter name))) in row-major order.
    """
    parameters = list(module.named_parameters())
    fan_in = {}
    for name, value in parameters:
        prefix, _, leaf = name.rpartition(".")
        if leaf == "weight" and value.dim() >= 2:
            fan_in[prefix] = value.numel() // value.size(0)
    with torch.no_grad():
        for name, value in parameters:
            prefix, _, leaf = name.rpartition(".")
            if leaf not in ("weight", "bias") or prefix not in fan_in:
                raise ValueError(f"cannot initialise parameter '{name}': expected <prefix>.weight "
                                 "(>= 2-D) or <prefix>.bias next to one")
            bound = 1.0 / math.sqrt(float(fan_in[prefix]))
            draws = SeededRandom(mix_seed(seed, hash_name(name))).uniform(value.numel())
            values = ((2.0 * draws - 1.0) * bound).astype(np.float32)
            value.copy_(torch.from_numpy(values).view(value.shape))


class DistributedSampler:
    """thinwire::core::DistributedSampler: this rank's indices for global step s."""

    def __init__(self, dataset_size, batch_per_rank, rank, world_size, seed):
        global_batch = batch_per_rank * world_size
        if dataset_size < global_batch:
            raise ValueError(f"dataset of {dataset_size} samples is smaller than one global "
                             f"batch of {global_batch} ({batch_per_rank} per rank x "
                             f"{world_size} ranks)")
        self.steps_per_epoch = dataset_size // global_batch
        self._size = dataset_size
        self._batch = batch_per_rank
        self._rank = rank
        self._world = world_size
        self._seed = seed
        self._epoch = -1
        self._order = []

    def permutation(self, epoch):
        return SeededRandom(mix_seed(self._seed, epoch)).shuffled_range(self._size)

    def indices(self, step):
        epoch = step // self.steps_per_epoch
        if epoch != self._epoch:
            self._order = self.permutation(epoch)
            self._epoch = epoch
        begin = (step % self.steps_per_epoch) * self._batch * self._world + self._rank * self._batch
        return self._order[begin : begin + self._batch]


# ---------------------------------------------------------------------------------------------
# Learning rate (port of optim/lr_schedule.cc, cosine kind)
# ---------------------------------------------------------------------------------------------


def lr_at(step, base_lr, warmup_steps, total_steps, min_lr_ratio=0.0):
    """Learning rate of optimizer step `step` (0-based).

    Warm-up step s < warmup_steps uses base_lr * (s + 1) / warmup_steps; afterwards cosine decay
    from base_lr to min_lr_ratio * base_lr, reaching it at step == total_steps.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    floor = min_lr_ratio * base_lr
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------------------------


def read_idx(directory, name, magic, rank):
    """Reads '<directory>/<name>.gz' (or the plain file): returns (dims, uint8 tensor, path)."""
    path = os.path.join(directory, name + ".gz")
    opener = gzip.open
    if not os.path.exists(path) and os.path.exists(os.path.join(directory, name)):
        path, opener = os.path.join(directory, name), open
    try:
        with opener(path, "rb") as stream:
            content = stream.read()
    except OSError as error:
        raise OSError(f"fashion-mnist: cannot read '{path}': {error} (install the Debian package "
                      "dataset-fashion-mnist or pass --data)") from None
    header = 4 * (1 + rank)
    if len(content) < header:
        raise ValueError(f"fashion-mnist: '{path}' is truncated: expected a {header}-byte IDX "
                         "header")
    found = struct.unpack(">I", content[:4])[0]
    if found != magic:
        raise ValueError(f"fashion-mnist: '{path}' has magic 0x{found:x}, expected 0x{magic:x}")
    dims = list(struct.unpack(f">{rank}I", content[4:header]))
    payload = math.prod(dims)
    if len(content) - header != payload:
        raise ValueError(f"fashion-mnist: '{path}' declares {payload} payload bytes, found "
                         f"{len(content) - header}")
    data = torch.frombuffer(bytearray(content[header:]), dtype=torch.uint8)
    return dims, data, path


class FashionMnist:
    """One split of Fashion-MNIST held as uint8; batch() normalises like IdxDataset::batch."""

    def __init__(self, directory, split):
        prefix = "train" if split == "train" else "t10k"
        dims, pixels, images_path = read_idx(directory, prefix + "-images-idx3-ubyte", 0x803, 3)
        (count,), labels, labels_path = read_idx(directory, prefix + "-labels-idx1-ubyte", 0x801, 1)
        if dims[0] != count:
            raise ValueError(f"fashion-mnist: '{images_path}' holds {dims[0]} images but "
                             f"'{labels_path}' holds {count} labels")
        if int(labels.max()) >= NUM_CLASSES:
            raise ValueError(f"fashion-mnist: '{labels_path}' has a label >= {NUM_CLASSES}")
        self.pixels = pixels.view(dims[0], 1, dims[1], dims[2])
        self.labels = labels.to(torch.long)

    def __len__(self):
        return self.labels.numel()

    def batch(self, indices):
        rows = torch.tensor(indices, dtype=torch.long)
        inputs = self.pixels.index_select(0, rows).to(torch.float32)
        # The same two float32 scalar ops as thinwire, so the inputs are bit-identical.
        inputs.mul_(1.0 / (255.0 * PIXEL_STD)).add_(-PIXEL_MEAN / PIXEL_STD)
        return inputs, self.labels.index_select(0, rows)


class Mlp(nn.Module):
    """thinwire::core::Mlp: Linear layers under "layers.<i>", ReLU between them."""

    def __init__(self, in_features, hidden, num_classes):
        super().__init__()
        widths = [in_features, *hidden, num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, inputs):
        x = inputs.reshape(inputs.size(0), -1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = functional.relu(x)
        return x


class Cnn(nn.Module):
    """thinwire::core::Cnn: two unpadded 5x5 conv + ReLU + 2x2 max-pool blocks, then two FC."""

    def __init__(self, channels, hidden, num_classes, sample_shape=(1, 28, 28)):
        super().__init__()
        height = ((sample_shape[1] - 4) // 2 - 4) // 2
        width = ((sample_shape[2] - 4) // 2 - 4) // 2
        self.flat_features = channels[1] * height * width
        self.conv1 = nn.Conv2d(sample_shape[0], channels[0], 5)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5)
        self.fc1 = nn.Linear(self.flat_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, inputs):
        x = functional.max_pool2d(functional.relu(self.conv1(inputs)), 2)
        x = functional.max_pool2d(functional.relu(self.conv2(x)), 2)
        x = functional.relu(self.fc1(x.reshape(x.size(0), self.flat_features)))
        return self.fc2(x)


def make_model(workload, seed):
    if workload == "fmnist-mlp":
        model = Mlp(28 * 28, [2048, 2048], NUM_CLASSES)
    else:
        model = Cnn([32, 64], 128, NUM_CLASSES)
    seeded_init_(model, seed)
    return model


# ---------------------------------------------------------------------------------------------
# Communication hooks
# ---------------------------------------------------------------------------------------------


class ByteCounter:
    """Payload bytes this rank handed to allreduce for gradients (thinwire's bytes_sent)."""

    def __init__(self):
        self.bytes = 0


class _CountingDistributed:
    """Stands in for torch.distributed inside the hook modules and counts all_reduce payloads.

    The built-in hooks call dist.all_reduce themselves (PowerSGD several times per bucket, with
    sizes that depend on its state); counting at that call is the only exact measure short of
    re-implementing them.
    """

    def __init__(self, real, counter):
        self._real = real
        self._counter = counter

    def all_reduce(self, tensor, *args, **kwargs):
        self._counter.bytes += tensor.numel() * tensor.element_size()
        return self._real.all_reduce(tensor, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


def wrap_model(model, args, counter):
    """DDP-wraps `model` with the requested hook; returns (module to train, per-step byte adder)."""
    if args.floor:
        return model, None
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb)
    if args.hook == "none":
        # The reducer's built-in allreduce: every gradient, fp32, once per step.
        step_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        return ddp, step_bytes
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    proxy = _CountingDistributed(dist, counter)
    default_hooks.dist = proxy
    powerSGD_hook.dist = proxy
    if args.hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    else:
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=1,
                                            start_powerSGD_iter=2, warm_start=True)
        hook = (powerSGD_hook.powerSGD_hook if args.hook == "powersgd"
                else powerSGD_hook.batched_powerSGD_hook)
        ddp.register_comm_hook(state, hook)
    return ddp, None


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def sum_over_ranks(values):
    """Sums a list of floats over all ranks (blocking, bounded by the process group timeout)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def evaluate(model, test, rank, world_size, eval_batch):
    """Test loss and accuracy of `model` over the whole test set (collective)."""
    model.eval()
    loss_sum = correct = count = 0.0
    shard = list(range(rank, len(test), world_size))
    with torch.no_grad():
        for begin in range(0, len(shard), eval_batch):
            inputs, labels = test.batch(shard[begin : begin + eval_batch])
            logits = model(inputs)
            loss_sum += functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += logits.argmax(1).eq(labels).sum().item()
            count += labels.numel()
    model.train()
    loss_sum, correct, count = sum_over_ranks([loss_sum, correct, count])
    return loss_sum / count, correct / count


def json_number(value):
    return value if math.isfinite(value) else None  # JSON has no NaN/Inf


class MetricsFile:
    """Rank 0's metrics.jsonl (one JSON object per line, flushed at once); inert elsewhere."""

    def __init__(self, directory):
        self._stream = None
        if directory:
            os.makedirs(directory, exist_ok=True)
            self._stream = open(os.path.join(directory, "metrics.jsonl"), "w", encoding="utf-8")

    def write(self, record):
        if self._stream:
            self._stream.write(json.dumps(record) + "\n")
            self._stream.flush()

    def close(self):
        if self._stream:
            self._stream.close()


def log(message):
    print(f"{PROGRAM}: {message}", file=sys.stderr, flush=True)


def train(args, rank, world_size, process_start):
    torch.set_num_threads(args.threads)
    leader = rank == 0
    train_set = FashionMnist(args.data, "train")
    test_set = FashionMnist(args.data, "test")
    sampler = DistributedSampler(len(train_set), args.batch_per_rank, rank, world_size, args.seed)
    model = make_model(args.workload, args.seed)
    counter = ByteCounter()
    net, step_bytes = wrap_model(model, args, counter)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=args.momentum,
                                nesterov=args.nesterov, weight_decay=args.weight_decay)
    metrics = MetricsFile(args.out if leader else None)
    method = "floor" if args.floor else args.hook
    if leader:
        parameter_count = sum(p.numel() for p in model.parameters())
        log(f"{args.workload}: {parameter_count} parameters, {world_size} ranks (gloo), "
            f"global batch {args.batch_per_rank * world_size}, method {method}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) per rank")

    phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    timed_seconds = 0.0
    timed_steps = 0
    excluded = WARMUP_STEPS_EXCLUDED if args.steps > WARMUP_STEPS_EXCLUDED else 0
    samples_per_step = args.batch_per_rank * world_size
    loss_sum = correct_sum = seen_sum = 0.0
    final_loss = final_accuracy = float("nan")
    run_start = time.perf_counter()
    window_start = run_start
    window_steps = 0
    lr = 0.0
    for step in range(args.steps):
        step_start = time.perf_counter()
        inputs, labels = train_set.batch(sampler.indices(step))
        after_data = time.perf_counter()
        logits = net(inputs)
        loss = functional.cross_entropy(logits, labels)
        after_forward = time.perf_counter()
        with torch.no_grad():
            loss_sum += loss.item() * labels.numel()
            correct_sum += logits.argmax(1).eq(labels).sum().item()
            seen_sum += labels.numel()
        before_backward = time.perf_counter()
        loss.backward()  # DDP's bucketed allreduce overlaps with it and is awaited inside
        after_backward = time.perf_counter()
        lr = lr_at(step, args.lr, args.warmup_steps, args.steps, args.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_end = time.perf_counter()
        if step_bytes:
            counter.bytes += step_bytes
        if step >= excluded:
            phases["data"] += after_data - step_start
            phases["forward"] += after_forward - after_data
            phases["backward"] += after_backward - before_backward
            phases["optimizer"] += step_end - after_backward
            timed_seconds += step_end - step_start
            timed_steps += 1
        window_steps += 1

        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            totals = sum_over_ranks([loss_sum, correct_sum, seen_sum])
            total_loss, total_correct, total_seen = totals
            now = time.perf_counter()
            samples_per_s = window_steps * samples_per_step / max(now - window_start, 1e-9)
            record = {"kind": "train", "step": done, "loss": json_number(total_loss / total_seen),
                      "accuracy": total_correct / total_seen, "lr": lr,
                      "samples_per_s": samples_per_s, "elapsed_s": now - run_start,
                      "bytes_sent": counter.bytes}
            metrics.write(record)
            if leader:
                log(f"step {done}/{args.steps} | loss {total_loss / total_seen:.4f} | acc "
                    f"{total_correct / total_seen:.3f} | lr {lr:.3g} | "
                    f"{samples_per_s:.0f} samples/s")
            loss_sum = correct_sum = seen_sum = 0.0
            window_steps = 0
            window_start = time.perf_counter()
        if (args.eval_every > 0 and done % args.eval_every == 0) or done == args.steps:
            final_loss, final_accuracy = evaluate(model, test_set, rank, world_size,
                                                  args.eval_batch)
            metrics.write({"kind": "eval", "step": done, "loss": json_number(final_loss),
                           "accuracy": final_accuracy,
                           "elapsed_s": time.perf_counter() - run_start})
            if leader:
                log(f"eval at step {done}: test loss {final_loss:.4f}, test accuracy "
                    f"{final_accuracy:.4f}")
            window_steps = 0
            window_start = time.perf_counter()

    per_step = {name: seconds / max(timed_steps, 1) for name, seconds in phases.items()}
    summary = {
        "kind": "summary",
        "framework": "pytorch-ddp",
        "method": method,
        "workload": args.workload,
        "ranks": world_size,
        "steps": args.steps,
        "batch_per_rank": args.batch_per_rank,
        "seconds_per_step": timed_seconds / max(timed_steps, 1),
        "warmup_steps_excluded": excluded,
        "times_per_step_s": {"data": per_step["data"], "forward": per_step["forward"],
                             "backward": per_step["backward"], "compress": 0.0, "sync_wait": 0.0,
                             "optimizer": per_step["optimizer"]},
        "final_test_accuracy": final_accuracy,
        "final_test_loss": json_number(final_loss),
        "bytes_sent_per_rank": counter.bytes,
        "wall_s": time.perf_counter() - process_start,
    }
    metrics.write(summary)
    metrics.close()
    if leader:
        print(f"{PROGRAM}: {args.workload} {method}: "
              f"seconds_per_step={summary['seconds_per_step']:.4f} "
              f"final_test_accuracy={final_accuracy:.4f} final_test_loss={final_loss:.4f} "
              f"bytes_sent_per_rank={counter.bytes}", flush=True)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="PyTorch DDP (gloo) peer of thinwire's fmnist workloads; one process per rank "
        "(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the environment).")
    parser.add_argument("--workload", choices=WORKLOADS, default="fmnist-mlp")
    parser.add_argument("--hook", choices=HOOKS, default="none",
                        help="DDP communication hook (none = built-in fp32 allreduce)")
    parser.add_argument("--floor", action="store_true",
                        help="no DDP, no gradient communication: each rank steps on its own "
                        "gradient (the compute-only floor)")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-per-rank", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate after warm-up")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="default: 0 for fmnist-mlp, 0.0005 for fmnist-cnn (as the examples)")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--min-lr-ratio", type=float, default=0.0,
                        help="cosine decays to this fraction of --lr at the last step")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=0,
                        help="steps between test evaluations (0: only at the end)")
    parser.add_argument("--eval-batch", type=int, default=None,
                        help="default: 1000 for fmnist-mlp, 500 for fmnist-cnn")
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per rank")
    parser.add_argument("--bucket-mb", type=float, default=25.0, help="DDP bucket_cap_mb")
    parser.add_argument("--timeout-s", type=float, default=300.0,
                        help="bound on process-group start-up and on every collective")
    parser.add_argument("--out", default=None, help="directory for rank 0's metrics.jsonl")
    args = parser.parse_args(argv)
    defaults = WORKLOAD_DEFAULTS[args.workload]
    if args.weight_decay is None:
        args.weight_decay = defaults["weight_decay"]
    if args.eval_batch is None:
        args.eval_batch = defaults["eval_batch"]
    checks = [
        (args.steps >= 1, "--steps must be >= 1"),
        (args.batch_per_rank >= 1, "--batch-per-rank must be >= 1"),
        (args.lr > 0, "--lr must be > 0"),
        (0 <= args.momentum < 1, "--momentum must be in [0, 1)"),
        (not args.nesterov or args.momentum > 0, "--nesterov needs --momentum > 0"),
        (args.weight_decay >= 0, "--weight-decay must be >= 0"),
        (args.warmup_steps >= 0, "--warmup-steps must be >= 0"),
        (args.eval_every >= 0, "--eval-every must be >= 0"),
        (args.eval_batch >= 1, "--eval-batch must be >= 1"),
        (args.log_every >= 1, "--log-every must be >= 1"),
        (args.threads >= 1, "--threads must be >= 1"),
        (args.bucket_mb > 0, "--bucket-mb must be > 0"),
        (args.timeout_s > 0, "--timeout-s must be > 0"),
        (not (args.floor and args.hook != "none"), "--floor communicates no gradients; "
         "it takes no --hook"),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    return args


def rank_from_environment():
    """(rank, world_size) from RANK / WORLD_SIZE; raises ValueError naming what is missing."""
    missing = [name for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if not os.environ.get(name)]
    if missing:
        raise ValueError(f"environment variable(s) {', '.join(missing)} not set "
                         "(start ranks with bench/peers/run_local.sh)")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} WORLD_SIZE={world_size}: need 0 <= RANK < WORLD_SIZE")
    return rank, world_size


def main(argv):
    process_start = time.perf_counter()
    args = parse_args(argv)
    where = f"rank {os.environ.get('RANK', '?')}/{os.environ.get('WORLD_SIZE', '?')}"
    try:
        rank, world_size = rank_from_environment()
        try:
            dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world_size,
                                    timeout=datetime.timedelta(seconds=args.timeout_s))
        except RuntimeError as error:
            raise RuntimeError(
                f"process group start-up failed (gloo, {world_size} ranks, rendezvous at "
                f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}, --timeout-s "
                f"{args.timeout_s:g}; did every rank start?): {error}") from None
        train(args, rank, world_size, process_start)
        dist.destroy_process_group()
    except BaseException as error:  # noqa: B036 -- every failure must become one line and rc 1
        if isinstance(error, SystemExit) and not error.code:
            raise
        text = " ".join(str(error).split()) or "(no message)"
        print(f"{PROGRAM}: {where}: error: {type(error).__name__}: {text[:2000]}", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        # A process group with collectives in flight can block in its destructor: leave at once.
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

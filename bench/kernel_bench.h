// File: bench/kernel_bench.h
//
// `thinwire bench kernels`: the machine's memory bandwidth, measured with a STREAM-triad loop
// (a = b + s*c over float32 arrays much larger than the caches, 12 bytes per element and pass),
// next to the throughput of thinwire's per-element kernels, in the same process and run. Each
// kernel is reported in GB/s of float32 input, in elements/s, and as a fraction of its roofline:
// triad bandwidth / bytes the kernel's job must move per element (see Note [Kernel roofline] in
// kernel_bench.cc).
//
// Kernels live in a KernelRegistry: a name, the bytes per element of the job, and a prepare
// function that allocates the kernel's buffers for one input size (untimed) and returns the timed
// body. To add a kernel (a compressor's compress + error-feedback pass, say), write a function
// `void addFooKernels(KernelRegistry& registry)` next to the kernel that calls registry.add(), and
// call it from makeBuiltinKernelRegistry() in kernel_bench.cc; no static registration.
//
// The compressors' kernels (top-k exact and sampled, sign, 4-bit quantize) are timed as their
// fused compress() with error feedback: residual += gradient and the residual update in the same
// call, 12 bytes per element at the least (read residual and gradient, write residual).
//
// Ownership: the registry owns its KernelSpecs; a prepared KernelRun owns its buffers.
// Threading: runKernelBench() sets at::set_num_threads() for its duration (restored afterwards)
// and runs on the calling thread; a registry is not shared between threads.
//
// Example:
//   thinwire bench kernels --sizes 1M,64M --iterations 10 --json kernels.jsonl
//   KernelRegistry registry = makeBuiltinKernelRegistry();
//   KernelBenchOptions options = parseKernelBenchArgs({"--kernels", "f32_to_f16"}, registry);
//   return runKernelBench(options, registry);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace thinwire::bench {

inline constexpr const char kKernelBenchUsage[] =
    "usage: thinwire bench kernels [--sizes LIST] [--kernels LIST] [--iterations N]\n"
    "                              [--warmup N] [--threads N] [--triad-size SIZE] [--json PATH]\n"
    "  Measures memory bandwidth (STREAM triad) and, in the same run, the throughput of\n"
    "  thinwire's per-element kernels as GB/s of float32 input and fraction of the roofline\n"
    "  (triad bandwidth / bytes per element). Single process, no MPI.\n"
    "  --sizes LIST       float32 input per kernel call in bytes, K/M/G suffixes (powers of\n"
    "                     1024), multiples of 4; default 1M,64M\n"
    "  --kernels LIST     comma-separated kernel names (default: all; the table lists them)\n"
    "  --iterations N     timed repetitions per kernel and size (default 10); median and best\n"
    "  --warmup N         untimed repetitions first (default 2)\n"
    "  --threads N        ATen intra-op threads for the run (default 1, as one rank uses)\n"
    "  --triad-size SIZE  bytes per triad array (default 128M; keep it far above the caches)\n"
    "  --json PATH        one JSON object per line: the triad, then each (kernel, size)\n";

// The timed body of one kernel at one size: runs the kernel once over buffers it owns.
using KernelRun = std::function<void()>;

struct KernelSpec {
  std::string name;         // unique in its registry; what --kernels accepts
  std::string description;  // one line, printed in the table's legend
  // Bytes per float32 input element that the kernel's job must read and write at the least (one
  // fused pass; a k-element output with k << numel counts as nothing). Implementations of the
  // same job share it, so their roofline fractions compare. > 0.
  double bytesPerElement = 0;
  // Called once per size, untimed, with a contiguous float32 `input` (standard normal values,
  // numel >= 1) that outlives the returned run. Allocates what the kernel needs and returns the
  // timed body. May throw; the benchmark then fails with that error.
  std::function<KernelRun(const at::Tensor& input)> prepare;
};

class KernelRegistry {
 public:
  // Appends `spec`; kernels run in the order they were added. Throws InvalidArgument for an
  // empty or duplicate name, bytesPerElement <= 0 or an empty prepare.
  void add(KernelSpec spec);
  const std::vector<KernelSpec>& kernels() const { return kernels_; }
  // The kernel called `name`, or nullptr. The pointer is valid until the next add().
  const KernelSpec* find(const std::string& name) const;
  // "a, b, c": the registered names, for error messages.
  std::string names() const;

 private:
  std::vector<KernelSpec> kernels_;
};

// thinwire's per-element kernels: float32 <-> float16 / bfloat16 casts, the error-feedback
// "residual add + scale" pass (fused loop and two ATen ops), exact at::topk of 1 % (the
// yardstick) and the sampled-threshold selection of 1 %, and the compressors' compress() with
// error feedback: top-k exact and sampled (1 %), sign (chunk 2048), 4-bit quantize.
KernelRegistry makeBuiltinKernelRegistry();

struct KernelBenchOptions {
  // Float32 input per kernel call, in bytes (positive multiples of 4). Default 1 MB (cache
  // resident) and 64 MB (memory bound).
  std::vector<int64_t> sizesBytes = {int64_t{1} << 20, int64_t{64} << 20};
  std::vector<std::string> kernels;  // names; empty runs every registered kernel
  int iterations = 10;               // timed repetitions per kernel and size, and triad passes
  int warmup = 2;                    // untimed repetitions first (>= 0)
  int threads = 1;                   // at::set_num_threads() for the run, >= 1
  int64_t triadBytes = int64_t{128} << 20;  // bytes per triad array (three arrays)
  std::string jsonPath;                     // empty: no JSON output
  std::ostream* out = nullptr;              // the table; nullptr means std::cout. Not owned.
};

// Parses the arguments after `thinwire bench kernels` (see kKernelBenchUsage); --kernels names
// are checked against `registry`. Throws InvalidArgument naming the bad argument.
KernelBenchOptions parseKernelBenchArgs(const std::vector<std::string>& args,
                                        const KernelRegistry& registry);

// Blocking, single process. Measures the triad, then each selected kernel at each size, prints
// the table to options.out and writes options.jsonPath. Returns 0. Throws InvalidArgument for bad
// options or an unknown kernel name, Error when the JSON file cannot be written, and whatever a
// kernel's prepare or run throws.
int runKernelBench(const KernelBenchOptions& options, const KernelRegistry& registry);

}  // namespace thinwire::bench

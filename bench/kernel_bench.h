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
// SampledThresholdSelector is the DGC-style reference selection (threshold from a random sample,
// then one mask pass) that the exact at::topk is compared against.
//
// Ownership: the registry owns its KernelSpecs; a prepared KernelRun owns its buffers. A selector
// owns the buffers its results view.
// Threading: runKernelBench() sets at::set_num_threads() for its duration (restored afterwards)
// and runs on the calling thread; a registry and a selector are not shared between threads.
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
#include <random>
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

// thinwire's per-element kernels that exist today: float32 <-> float16 / bfloat16 casts, the
// error-feedback "residual add + scale" pass (fused loop and two ATen ops), exact at::topk of
// 1 % and the sampled-threshold selection of 1 %.
KernelRegistry makeBuiltinKernelRegistry();

struct SampledThresholdOptions {
  double ratio = 0.01;        // fraction of elements to keep, in (0, 1]
  double sampleRatio = 0.01;  // fraction of elements sampled for the threshold, in (0, 1]
  uint64_t seed = 0;          // seeds the sample positions; later calls continue the stream
};

// A selection: views into the selector's buffers (see SampledThresholdSelector::select).
struct SparseSelection {
  at::Tensor indices;   // int32, ascending positions in the input
  at::Tensor values;    // float32, input[indices] with their signs
  float threshold = 0;  // an element is kept iff |x| >= threshold
};

// DGC-style top-k approximation (specs/compressors.md §1.2, without the adaptation loop): samples
// about max(sampleRatio * numel, 4096) elements (capped at numel; every stride-th element from a
// random start, the stride odd), takes the threshold as the ceil(ratio * samples)-th largest
// sampled magnitude, then keeps every element whose magnitude reaches it in one mask pass. The kept
// count is ratio * numel up to sampling error (relative spread about 1 / sqrt(ratio * samples)).
// Every kept element is >= every dropped one in magnitude; NaN elements are never kept.
class SampledThresholdSelector {
 public:
  // Throws InvalidArgument when ratio or sampleRatio is outside (0, 1].
  explicit SampledThresholdSelector(SampledThresholdOptions options);

  // Blocking; the mask pass uses at::get_num_threads() threads. `input` must be a contiguous
  // float32 CPU tensor with 1 <= numel <= INT32_MAX (InvalidArgument otherwise); it is read only.
  // The result views buffers owned by the selector: valid until the next select() call or the
  // selector's destruction (clone() to keep it).
  SparseSelection select(const at::Tensor& input);

 private:
  SampledThresholdOptions options_;
  std::mt19937_64 random_;
  std::vector<float> sample_;
  std::vector<int64_t> chunkCounts_;
  at::Tensor indices_;  // int32, capacity numel: a chunk never overflows its own range
  at::Tensor values_;   // float32, same capacity
};

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

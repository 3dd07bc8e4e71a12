#include "bench/kernel_bench.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <sstream>
#include <utility>

#include "base/error.h"
#include "base/timer.h"
#include "bench/bench_common.h"
#include "bench/comm_bench.h"
#include "compressors/quantize_compressor.h"
#include "compressors/sampled_threshold.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"

namespace thinwire::bench {
namespace {

// Note [Kernel roofline]
// A per-element kernel over data far larger than the caches cannot run faster than memory
// bandwidth / bytes it must move per element. STREAM triad (a = b + s*c) is the best case a plain
// loop reaches on this machine: two read streams, one write stream, counted as 12 bytes per
// element as STREAM does (the write-allocate read of `a` is not counted). So a kernel's roofline
// is triad bandwidth / KernelSpec::bytesPerElement elements per second, and its fraction of the
// roofline is (elements/s * bytesPerElement) / triad bandwidth. The best triad pass is the
// ceiling; kernels are reported at their median, so the fraction is conservative. Inputs that fit
// in the caches can exceed 1.0: the roofline is about memory, not cache, bandwidth.

// Below this many elements per thread a parallel loop costs more than it saves.
constexpr int64_t kGrainSize = int64_t{1} << 15;

// Restores the ATen intra-op thread count on scope exit.
class NumThreadsGuard {
 public:
  explicit NumThreadsGuard(int threads) : previous_(at::get_num_threads()) {
    at::set_num_threads(threads);
  }
  ~NumThreadsGuard() { at::set_num_threads(previous_); }
  NumThreadsGuard(const NumThreadsGuard&) = delete;
  NumThreadsGuard& operator=(const NumThreadsGuard&) = delete;

 private:
  int previous_;
};

struct Timing {
  double best = 0;    // seconds
  double median = 0;  // seconds
};

Timing timeRuns(const KernelRun& run, int warmup, int iterations) {
  for (int i = 0; i < warmup; ++i) run();
  std::vector<double> seconds;
  seconds.reserve(iterations);
  for (int i = 0; i < iterations; ++i) {
    Stopwatch watch;
    run();
    seconds.push_back(watch.seconds());
  }
  return {*std::min_element(seconds.begin(), seconds.end()), median(seconds)};
}

void triad(float* __restrict a,
           const float* __restrict b,
           const float* __restrict c,
           float scale,
           int64_t numel) {
  at::parallel_for(0, numel, kGrainSize, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) a[i] = b[i] + scale * c[i];
  });
}

// e = e + g; out = e * scale, one pass: reads e and g, writes e and out (16 bytes per element).
void residualAddScale(float* __restrict residual,
                      const float* __restrict gradient,
                      float* __restrict out,
                      float scale,
                      int64_t numel) {
  at::parallel_for(0, numel, kGrainSize, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float e = residual[i] + gradient[i];
      residual[i] = e;
      out[i] = e * scale;
    }
  });
}

int64_t topFraction(double ratio, int64_t numel) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(ratio * static_cast<double>(numel))));
}

void addCastKernels(KernelRegistry& registry) {
  // What the fp16/bf16 compressors do on the way out (x.to(kHalf)) and back, and what the MPI
  // 16-bit reduction does per pair (widen, add, round back).
  const std::pair<at::ScalarType, const char*> kTypes[] = {{at::kHalf, "f16"},
                                                           {at::kBFloat16, "bf16"}};
  for (const auto& [dtype, suffix] : kTypes) {
    const at::ScalarType type = dtype;
    registry.add({std::string("f32_to_") + suffix,
                  std::string("float32 -> ") + suffix + " cast (ATen copy_), 4 + 2 B/elem", 6.0,
                  [type](const at::Tensor& input) -> KernelRun {
                    at::Tensor narrow = at::empty(input.sizes(), input.options().dtype(type));
                    return [input, narrow]() mutable { narrow.copy_(input); };
                  }});
    registry.add({std::string(suffix) + "_to_f32",
                  std::string(suffix) + " -> float32 cast (ATen copy_), 2 + 4 B/elem", 6.0,
                  [type](const at::Tensor& input) -> KernelRun {
                    at::Tensor narrow = input.to(type);
                    at::Tensor wide = at::empty_like(input);
                    return [narrow, wide]() mutable { wide.copy_(narrow); };
                  }});
  }
}

void addErrorFeedbackKernels(KernelRegistry& registry) {
  // The shape of an error-feedback step: e = e + g; out = e * s. 16 B/elem: read e, g; write e,
  // out. The ATen form runs it as two passes (add_, mul_out) and moves 20 B/elem.
  constexpr float kScale = 0.25f;
  auto prepareBuffers = [](const at::Tensor& input) {
    return std::make_pair(input.mul(0.5f), at::empty_like(input));
  };
  registry.add({"ef_add_scale_fused", "e = e + g; out = e * s as one plain loop, 16 B/elem", 16.0,
                [prepareBuffers](const at::Tensor& input) -> KernelRun {
                  auto [residual, out] = prepareBuffers(input);
                  return [input, residual = residual, out = out]() mutable {
                    residualAddScale(residual.data_ptr<float>(), input.data_ptr<float>(),
                                     out.data_ptr<float>(), kScale, input.numel());
                  };
                }});
  registry.add({"ef_add_scale_aten", "e.add_(g); mul_out(out, e, s): two ATen passes, 20 B/elem",
                16.0, [prepareBuffers](const at::Tensor& input) -> KernelRun {
                  auto [residual, out] = prepareBuffers(input);
                  return [input, residual = residual, out = out]() mutable {
                    residual.add_(input);
                    at::mul_out(out, residual, at::Scalar(kScale));
                  };
                }});
}

void addSelectionKernels(KernelRegistry& registry) {
  // Selecting the 1 % largest magnitudes must read the input once: 4 B/elem (the k-element
  // output is negligible). The exact form materialises |x| first, as a compressor would.
  constexpr double kRatio = 0.01;
  registry.add({"topk_exact_1pct",
                "abs_out + at::topk(k = 1 %, unsorted) + index_select of the values, 4 B/elem", 4.0,
                [](const at::Tensor& input) -> KernelRun {
                  const int64_t k = topFraction(kRatio, input.numel());
                  at::Tensor magnitude = at::empty_like(input);
                  at::Tensor topValues = at::empty({k}, input.options());
                  at::Tensor topIndices = at::empty({k}, input.options().dtype(at::kLong));
                  at::Tensor selected = at::empty({k}, input.options());
                  return [input, magnitude, topValues, topIndices, selected, k]() mutable {
                    at::abs_out(magnitude, input);
                    at::topk_out(topValues, topIndices, magnitude, k, /*dim=*/0,
                                 /*largest=*/true, /*sorted=*/false);
                    at::index_select_out(selected, input, 0, topIndices);
                  };
                }});
  registry.add({"sampled_threshold_1pct",
                "threshold from a 1 % random sample, then one mask pass (DGC-style), 4 B/elem", 4.0,
                [](const at::Tensor& input) -> KernelRun {
                  auto selector = std::make_shared<compressors::SampledThresholdSelector>(
                      compressors::SampledThresholdOptions{kRatio, 0.01, /*seed=*/1});
                  return [input, selector]() { (void)selector->select(input); };
                }});
}

void addCompressorKernels(KernelRegistry& registry) {
  // compress() with error feedback: p = e + g, payload = C(p), e = p - decode(payload), in as few
  // passes as the method allows. The job reads e and g and writes e: 12 B/elem, the triad's
  // traffic, so a fused one-pass kernel can reach the roofline. The residual starts at g / 2 and
  // keeps accumulating across repetitions, as an EF memory does.
  struct Method {
    const char* name;
    const char* description;
    std::function<std::shared_ptr<compressors::Compressor>()> make;
    compressors::LayerParams params;
  };
  const Method methods[] = {
      {"topk_exact_ef", "TopKCompressor exact, 1 %, with EF (radix select), 12 B/elem",
       [] { return std::make_shared<compressors::TopKCompressor>(); },
       compressors::LayerParams{.ratio = 0.01}},
      {"topk_sampled_ef", "TopKCompressor DGC sampled threshold, 1 %, with EF, 12 B/elem",
       [] {
         return std::make_shared<compressors::TopKCompressor>(
             compressors::TopKOptions{.sampled = true});
       },
       compressors::LayerParams{.ratio = 0.01, .rankSeed = 1}},
      {"sign_ef", "SignCompressor, chunk 2048, L1 scale, with EF, 12 B/elem",
       [] {
         return std::make_shared<compressors::SignCompressor>(
             compressors::SignOptions{.chunk = 2048});
       },
       compressors::LayerParams{}},
      {"quantize4_ef", "QuantizeCompressor 4 bits, bucket 512, nearest, with EF, 12 B/elem",
       [] { return std::make_shared<compressors::QuantizeCompressor>(); },
       compressors::LayerParams{.bits = 4}},
  };
  for (const Method& method : methods) {
    registry.add({method.name, method.description, 12.0,
                  [make = method.make, params = method.params](const at::Tensor& input) {
                    std::shared_ptr<compressors::Compressor> compressor = make();
                    at::Tensor residual = input.mul(0.5f);
                    auto payload = std::make_shared<compressors::Payload>();
                    return KernelRun([input, residual, compressor, payload, params]() mutable {
                      compressor->compress(residual, input, 1.0f, *payload, params);
                    });
                  }});
  }
}

void checkSizeBytes(const char* what, int64_t bytes) {
  TW_CHECK(bytes >= 4 && bytes % 4 == 0, what, ": ", bytes,
           " bytes is not a positive multiple of 4 (float32 elements)");
  TW_CHECK(bytes / 4 <= INT32_MAX, what, ": ", bytes, " bytes is more than INT32_MAX elements");
}

}  // namespace

void KernelRegistry::add(KernelSpec spec) {
  TW_CHECK(!spec.name.empty(), "KernelRegistry::add: empty kernel name");
  TW_CHECK(find(spec.name) == nullptr, "KernelRegistry::add: kernel '", spec.name,
           "' is already registered");
  TW_CHECK(spec.bytesPerElement > 0, "KernelRegistry::add: kernel '", spec.name,
           "' has bytesPerElement = ", spec.bytesPerElement, ", expected > 0");
  TW_CHECK(static_cast<bool>(spec.prepare), "KernelRegistry::add: kernel '", spec.name,
           "' has no prepare function");
  kernels_.push_back(std::move(spec));
}

const KernelSpec* KernelRegistry::find(const std::string& name) const {
  for (const KernelSpec& spec : kernels_) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

std::string KernelRegistry::names() const {
  std::string joined;
  for (const KernelSpec& spec : kernels_) {
    if (!joined.empty()) joined += ", ";
    joined += spec.name;
  }
  return joined;
}

KernelRegistry makeBuiltinKernelRegistry() {
  KernelRegistry registry;
  addCastKernels(registry);
  addErrorFeedbackKernels(registry);
  addSelectionKernels(registry);
  addCompressorKernels(registry);
  return registry;
}

KernelBenchOptions parseKernelBenchArgs(const std::vector<std::string>& args,
                                        const KernelRegistry& registry) {
  KernelBenchOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    size_t equals = flag.find('=');
    if (equals != std::string::npos) {
      value = flag.substr(equals + 1);
      flag = flag.substr(0, equals);
    } else if (flag == "--sizes" || flag == "--kernels" || flag == "--iterations" ||
               flag == "--warmup" || flag == "--threads" || flag == "--triad-size" ||
               flag == "--json") {
      TW_CHECK(i + 1 < args.size(), flag, " needs a value\n", kKernelBenchUsage);
      value = args[++i];
    }
    if (flag == "--sizes") {
      options.sizesBytes = parseSizeList(flag, value);
      for (int64_t bytes : options.sizesBytes) checkSizeBytes("--sizes", bytes);
    } else if (flag == "--kernels") {
      options.kernels.clear();
      for (const std::string& name : splitNames(flag, value)) {
        TW_CHECK(registry.find(name) != nullptr, "--kernels: unknown kernel '", name,
                 "', expected one of ", registry.names());
        TW_CHECK(std::find(options.kernels.begin(), options.kernels.end(), name) ==
                     options.kernels.end(),
                 "--kernels: '", name, "' is listed twice");
        options.kernels.push_back(name);
      }
    } else if (flag == "--iterations") {
      options.iterations = parseCount(flag, value, 1, 1000000);
    } else if (flag == "--warmup") {
      options.warmup = parseCount(flag, value, 0, 1000000);
    } else if (flag == "--threads") {
      options.threads = parseCount(flag, value, 1, 1024);
    } else if (flag == "--triad-size") {
      options.triadBytes = parseByteSize(flag, value);
      checkSizeBytes("--triad-size", options.triadBytes);
    } else if (flag == "--json") {
      TW_CHECK(!value.empty(), "--json needs a path");
      options.jsonPath = value;
    } else {
      TW_THROW(InvalidArgument, "unknown argument '", args[i], "'\n", kKernelBenchUsage);
    }
  }
  return options;
}

int runKernelBench(const KernelBenchOptions& options, const KernelRegistry& registry) {
  TW_CHECK(options.iterations >= 1, "kernel bench: iterations = ", options.iterations,
           ", expected >= 1");
  TW_CHECK(options.warmup >= 0, "kernel bench: warmup = ", options.warmup, ", expected >= 0");
  TW_CHECK(options.threads >= 1, "kernel bench: threads = ", options.threads, ", expected >= 1");
  TW_CHECK(!options.sizesBytes.empty(), "kernel bench: no sizes");
  for (int64_t bytes : options.sizesBytes) checkSizeBytes("kernel bench: size", bytes);
  checkSizeBytes("kernel bench: triad size", options.triadBytes);
  std::vector<const KernelSpec*> selected;
  if (options.kernels.empty()) {
    for (const KernelSpec& spec : registry.kernels()) selected.push_back(&spec);
  } else {
    for (const std::string& name : options.kernels) {
      const KernelSpec* spec = registry.find(name);
      TW_CHECK(spec != nullptr, "kernel bench: unknown kernel '", name, "', expected one of ",
               registry.names());
      selected.push_back(spec);
    }
  }
  std::ostream& out = options.out != nullptr ? *options.out : std::cout;
  std::ofstream json;
  if (!options.jsonPath.empty()) {
    json.open(options.jsonPath, std::ios::out | std::ios::trunc);
    TW_CHECK(json.good(), "kernel bench: cannot open --json path '", options.jsonPath, "'");
  }
  NumThreadsGuard threadsGuard(options.threads);

  // Memory bandwidth. Filling b and c touches every page before timing, so page faults are not
  // measured.
  const int64_t triadNumel = options.triadBytes / 4;
  double triadBest = 0;
  {
    at::Tensor a = at::zeros({triadNumel}, at::kFloat);
    at::Tensor b = at::full({triadNumel}, 1.0f, at::kFloat);
    at::Tensor c = at::full({triadNumel}, 2.0f, at::kFloat);
    float* aData = a.data_ptr<float>();
    const float* bData = b.data_ptr<float>();
    const float* cData = c.data_ptr<float>();
    Timing timing = timeRuns([&]() { triad(aData, bData, cData, 3.0f, triadNumel); },
                             options.warmup, options.iterations);
    TW_ASSERT(aData[0] == 7.0f && aData[triadNumel - 1] == 7.0f, "triad result ", aData[0]);
    const double bytes = 12.0 * static_cast<double>(triadNumel);
    triadBest = bytes / timing.best;
    out << "# STREAM triad a = b + s*c: 3 x " << formatBytes(options.triadBytes) << " float32, "
        << options.threads << " thread(s), " << options.iterations << " passes: best " << std::fixed
        << std::setprecision(2) << triadBest / 1e9 << " GB/s, median "
        << bytes / timing.median / 1e9 << " GB/s (12 B/elem)\n";
    if (json.is_open()) {
      json << "{\"bench\":\"kernels\",\"kernel\":\"triad\",\"size_bytes\":" << options.triadBytes
           << ",\"numel\":" << triadNumel
           << ",\"bytes_per_element\":12,\"threads\":" << options.threads
           << ",\"iterations\":" << options.iterations << std::setprecision(9) << std::defaultfloat
           << ",\"best_s\":" << timing.best << ",\"median_s\":" << timing.median
           << ",\"best_gbps\":" << triadBest / 1e9
           << ",\"median_gbps\":" << bytes / timing.median / 1e9 << "}\n";
    }
  }

  out << "# kernels: median of " << options.iterations << " (after " << options.warmup
      << " warm-up); GB/s of float32 input; roofline = triad best / B/elem\n"
      << std::left << std::setw(24) << "kernel" << std::right << std::setw(9) << "size"
      << std::setw(8) << "B/elem" << std::setw(12) << "median s" << std::setw(9) << "GB/s"
      << std::setw(9) << "Gelem/s" << std::setw(10) << "roofline"
      << "\n";
  auto generator = at::make_generator<at::CPUGeneratorImpl>(/*seed_in=*/42);
  for (int64_t bytes : options.sizesBytes) {
    const int64_t numel = bytes / 4;
    const at::Tensor input = at::randn({numel}, generator, at::TensorOptions(at::kFloat));
    for (const KernelSpec* spec : selected) {
      Timing timing;
      {
        KernelRun run = spec->prepare(input);
        timing = timeRuns(run, options.warmup, options.iterations);
      }
      const double elementsPerSecond = static_cast<double>(numel) / timing.median;
      const double inputGbps = static_cast<double>(bytes) / timing.median / 1e9;
      const double roofline = elementsPerSecond * spec->bytesPerElement / triadBest;
      out << std::left << std::setw(24) << spec->name << std::right << std::setw(9)
          << formatBytes(bytes) << std::fixed << std::setprecision(0) << std::setw(8)
          << spec->bytesPerElement << std::scientific << std::setprecision(3) << std::setw(12)
          << timing.median << std::fixed << std::setprecision(2) << std::setw(9) << inputGbps
          << std::setw(9) << elementsPerSecond / 1e9 << std::setw(10) << roofline << "\n";
      out.flush();
      if (json.is_open()) {
        json << "{\"bench\":\"kernels\",\"kernel\":\"" << spec->name
             << "\",\"size_bytes\":" << bytes << ",\"numel\":" << numel << std::setprecision(9)
             << std::defaultfloat << ",\"bytes_per_element\":" << spec->bytesPerElement
             << ",\"threads\":" << options.threads << ",\"iterations\":" << options.iterations
             << ",\"best_s\":" << timing.best << ",\"median_s\":" << timing.median
             << ",\"input_gbps\":" << inputGbps << ",\"elements_per_s\":" << elementsPerSecond
             << ",\"roofline_fraction\":" << roofline << "}\n";
      }
    }
  }
  for (const KernelSpec* spec : selected)
    out << "# " << spec->name << ": " << spec->description << "\n";
  if (json.is_open()) {
    json.flush();
    if (!json.good()) TW_THROW(Error, "kernel bench: writing '", options.jsonPath, "' failed");
  }
  return 0;
}

}  // namespace thinwire::bench

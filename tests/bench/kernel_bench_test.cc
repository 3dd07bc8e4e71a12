#include "bench/kernel_bench.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "tests/testing/error_message.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::bench {
namespace {

using testing::errorMessageOf;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

at::Tensor standardNormal(int64_t numel, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({numel}, generator, at::TensorOptions(at::kFloat));
}

// Checks a selection against `input` with plain loops that share nothing with the selector:
// positions ascending and in range, values copied with their signs, exactly the elements with
// |x| >= threshold kept, and every kept magnitude >= every dropped one. Returns the kept count.
int64_t expectValidSelection(const at::Tensor& input, const SparseSelection& selection) {
  const float* x = input.data_ptr<float>();
  const int64_t numel = input.numel();
  EXPECT_EQ(selection.indices.scalar_type(), at::kInt);
  EXPECT_EQ(selection.values.scalar_type(), at::kFloat);
  EXPECT_EQ(selection.indices.numel(), selection.values.numel());
  const at::Tensor indices = selection.indices.contiguous();
  const at::Tensor values = selection.values.contiguous();
  const int32_t* index = indices.data_ptr<int32_t>();
  const float* value = values.data_ptr<float>();
  std::vector<char> kept(numel, 0);
  for (int64_t j = 0; j < indices.numel(); ++j) {
    EXPECT_GE(index[j], 0);
    EXPECT_LT(index[j], numel);
    if (j > 0) {
      EXPECT_LT(index[j - 1], index[j]) << "not ascending at " << j;
    }
    if (index[j] < 0 || index[j] >= numel) continue;
    EXPECT_EQ(value[j], x[index[j]]) << "at position " << index[j];
    kept[index[j]] = 1;
  }
  float smallestKept = std::numeric_limits<float>::infinity();
  float largestDropped = -1;
  int64_t reachingThreshold = 0;
  for (int64_t i = 0; i < numel; ++i) {
    const float magnitude = std::fabs(x[i]);
    if (magnitude >= selection.threshold) ++reachingThreshold;
    if (std::isnan(magnitude)) {
      EXPECT_FALSE(kept[i]) << "NaN kept at " << i;
      continue;
    }
    if (kept[i]) {
      smallestKept = std::min(smallestKept, magnitude);
    } else {
      largestDropped = std::max(largestDropped, magnitude);
    }
  }
  EXPECT_EQ(reachingThreshold, indices.numel());
  if (indices.numel() > 0) {
    EXPECT_GE(smallestKept, largestDropped);
  }
  return indices.numel();
}

TEST(KernelBenchArgsTest, DefaultsRunEveryKernelOnOneThread) {
  const KernelRegistry registry = makeBuiltinKernelRegistry();
  const KernelBenchOptions options = parseKernelBenchArgs({}, registry);
  EXPECT_TRUE(options.kernels.empty());
  EXPECT_EQ(options.sizesBytes, (std::vector<int64_t>{1 << 20, 64 << 20}));
  EXPECT_EQ(options.threads, 1);
  EXPECT_EQ(options.iterations, 10);
  EXPECT_EQ(options.triadBytes, int64_t{128} << 20);
}

TEST(KernelBenchArgsTest, ParsesEveryFlag) {
  const KernelRegistry registry = makeBuiltinKernelRegistry();
  const KernelBenchOptions options = parseKernelBenchArgs(
      {"--sizes", "4K,2M", "--kernels=topk_exact_1pct,f32_to_bf16", "--iterations", "3", "--warmup",
       "0", "--threads=2", "--triad-size", "256M", "--json", "k.jsonl"},
      registry);
  EXPECT_EQ(options.sizesBytes, (std::vector<int64_t>{4096, 2 << 20}));
  EXPECT_EQ(options.kernels, (std::vector<std::string>{"topk_exact_1pct", "f32_to_bf16"}));
  EXPECT_EQ(options.iterations, 3);
  EXPECT_EQ(options.warmup, 0);
  EXPECT_EQ(options.threads, 2);
  EXPECT_EQ(options.triadBytes, int64_t{256} << 20);
  EXPECT_EQ(options.jsonPath, "k.jsonl");
}

TEST(KernelBenchArgsTest, RejectsBadSizes) {
  const KernelRegistry registry = makeBuiltinKernelRegistry();
  // 6 and 2 bytes are not whole float32 elements; 9G is more than INT32_MAX elements.
  for (const std::string bad : {"0", "6", "2", "4K,6", "-1M", "1MB", "9G", "4K,"}) {
    const std::string what = errorMessageOf<InvalidArgument>([&] {
      parseKernelBenchArgs({"--sizes", bad}, registry);
    });
    EXPECT_TRUE(contains(what, "--sizes")) << bad << ": " << what;
  }
  const std::string what = errorMessageOf<InvalidArgument>([&] {
    parseKernelBenchArgs({"--triad-size", "10"}, registry);
  });
  EXPECT_TRUE(contains(what, "--triad-size")) << what;
}

TEST(KernelBenchArgsTest, RejectsUnknownAndRepeatedKernels) {
  const KernelRegistry registry = makeBuiltinKernelRegistry();
  std::string what = errorMessageOf<InvalidArgument>([&] {
    parseKernelBenchArgs({"--kernels", "f32_to_f16,onebit"}, registry);
  });
  EXPECT_TRUE(contains(what, "unknown kernel 'onebit'")) << what;
  EXPECT_TRUE(contains(what, "sampled_threshold_1pct")) << what;  // lists the known names
  what = errorMessageOf<InvalidArgument>([&] {
    parseKernelBenchArgs({"--kernels", "f32_to_f16,f32_to_f16"}, registry);
  });
  EXPECT_TRUE(contains(what, "twice")) << what;
  what = errorMessageOf<InvalidArgument>([&] {
    parseKernelBenchArgs({"--kernels", ""}, registry);
  });
  EXPECT_TRUE(contains(what, "--kernels")) << what;
}

TEST(KernelBenchArgsTest, RejectsOutOfRangeCounts) {
  const KernelRegistry registry = makeBuiltinKernelRegistry();
  for (const auto& [flag, value] :
       std::vector<std::pair<std::string, std::string>>{{"--threads", "0"},
                                                        {"--threads", "1025"},
                                                        {"--iterations", "0"},
                                                        {"--warmup", "-2"},
                                                        {"--threads", "two"}}) {
    const std::string what = errorMessageOf<InvalidArgument>([&] {
      parseKernelBenchArgs({flag, value}, registry);
    });
    EXPECT_TRUE(contains(what, flag + " '" + value + "'")) << what;
  }
  std::string what =
      errorMessageOf<InvalidArgument>([&] { parseKernelBenchArgs({"--threads"}, registry); });
  EXPECT_TRUE(contains(what, "--threads needs a value")) << what;
  what = errorMessageOf<InvalidArgument>([&] {
    parseKernelBenchArgs({"--collectives", "allreduce"}, registry);
  });
  EXPECT_TRUE(contains(what, "unknown argument '--collectives'")) << what;
}

TEST(KernelRegistryTest, BuiltinKernelsAreNamedOnceWithPositiveBytes) {
  const KernelRegistry registry = makeBuiltinKernelRegistry();
  std::vector<std::string> names;
  for (const KernelSpec& spec : registry.kernels()) {
    names.push_back(spec.name);
    EXPECT_GT(spec.bytesPerElement, 0) << spec.name;
    EXPECT_FALSE(spec.description.empty()) << spec.name;
  }
  for (const std::string expected :
       {"f32_to_f16", "f16_to_f32", "f32_to_bf16", "bf16_to_f32", "ef_add_scale_fused",
        "ef_add_scale_aten", "topk_exact_1pct", "sampled_threshold_1pct"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
  EXPECT_EQ(registry.find("no_such_kernel"), nullptr);
}

TEST(KernelRegistryTest, RejectsDuplicateEmptyAndZeroByteKernels) {
  KernelRegistry registry;
  auto prepare = [](const at::Tensor&) -> KernelRun { return [] {}; };
  registry.add({"copy", "a copy", 8.0, prepare});
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         registry.add({"copy", "again", 8.0, prepare});
                       }),
                       "already registered"));
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         registry.add({"", "nameless", 8.0, prepare});
                       }),
                       "empty kernel name"));
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         registry.add({"free", "no bytes", 0.0, prepare});
                       }),
                       "bytesPerElement = 0"));
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         registry.add({"lazy", "no body", 4.0, {}});
                       }),
                       "no prepare"));
  EXPECT_EQ(registry.kernels().size(), 1u);
}

TEST(SampledThresholdSelectorTest, KeepsRoughlyTheRequestedFractionAndOnlyTheLargest) {
  const int64_t numel = int64_t{1} << 20;
  const double ratio = 0.01;
  const double target = ratio * static_cast<double>(numel);
  double sumOfFractions = 0;
  const int kSeeds = 8;
  for (int seed = 0; seed < kSeeds; ++seed) {
    const at::Tensor input = standardNormal(numel, 100 + seed);
    SampledThresholdSelector selector({ratio, 0.01, static_cast<uint64_t>(seed)});
    const int64_t kept = expectValidSelection(input, selector.select(input));
    // About 105 sampled elements set the threshold: the count's relative spread is about 10 %.
    EXPECT_GT(kept, 0.6 * target) << "seed " << seed;
    EXPECT_LT(kept, 1.4 * target) << "seed " << seed;
    sumOfFractions += static_cast<double>(kept) / target;
  }
  EXPECT_NEAR(sumOfFractions / kSeeds, 1.0, 0.1);
}

TEST(SampledThresholdSelectorTest, OtherRatiosAndSmallInputs) {
  for (const auto& [numel, ratio] : std::vector<std::pair<int64_t, double>>{
           {int64_t{1} << 18, 0.1}, {int64_t{1} << 18, 0.001}, {5000, 0.05}, {10, 0.5}, {1, 1.0}}) {
    const at::Tensor input = standardNormal(numel, 7);
    SampledThresholdSelector selector({ratio, 0.01, 3});
    const int64_t kept = expectValidSelection(input, selector.select(input));
    EXPECT_GE(kept, 1) << numel << " " << ratio;
    if (numel >= 4096) {
      const double target = ratio * static_cast<double>(numel);
      EXPECT_GT(kept, 0.5 * target) << numel << " " << ratio;
      EXPECT_LT(kept, 2.0 * target) << numel << " " << ratio;
    }
  }
}

TEST(SampledThresholdSelectorTest, SameResultOnOneAndTwoThreads) {
  const at::Tensor input = standardNormal(int64_t{1} << 20, 11);
  const int previous = at::get_num_threads();
  at::set_num_threads(1);
  SampledThresholdSelector one({0.01, 0.01, 5});
  const SparseSelection single = one.select(input);
  const at::Tensor singleIndices = single.indices.clone();
  at::set_num_threads(2);
  SampledThresholdSelector two({0.01, 0.01, 5});
  const SparseSelection parallel = two.select(input);
  at::set_num_threads(previous);
  EXPECT_EQ(single.threshold, parallel.threshold);
  EXPECT_TRUE(at::equal(singleIndices, parallel.indices));
  expectValidSelection(input, parallel);
}

TEST(SampledThresholdSelectorTest, NaNsAreNeverKeptAndTiesAreAllKept) {
  at::Tensor input = standardNormal(int64_t{1} << 16, 13);
  input.narrow(0, 100, 1000).fill_(std::numeric_limits<float>::quiet_NaN());
  SampledThresholdSelector selector({0.05, 0.01, 1});
  expectValidSelection(input, selector.select(input));

  // Every magnitude equal: the threshold is that magnitude and everything reaches it.
  at::Tensor ties = at::full({5000}, -2.0f, at::kFloat);
  const SparseSelection all = selector.select(ties);
  EXPECT_EQ(all.threshold, 2.0f);
  EXPECT_EQ(expectValidSelection(ties, all), 5000);
}

TEST(SampledThresholdSelectorTest, ReusesBuffersAcrossSizes) {
  SampledThresholdSelector selector({0.02, 0.01, 9});
  const at::Tensor large = standardNormal(int64_t{1} << 17, 1);
  const at::Tensor small = standardNormal(int64_t{1} << 12, 2);
  expectValidSelection(large, selector.select(large));
  expectValidSelection(small, selector.select(small));
  expectValidSelection(large, selector.select(large));
}

TEST(SampledThresholdSelectorTest, RejectsBadOptionsAndInputs) {
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([] {
                         SampledThresholdSelector({0.0, 0.01, 0});
                       }),
                       "ratio = 0"));
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([] {
                         SampledThresholdSelector({0.1, 1.5, 0});
                       }),
                       "sampleRatio = 1.5"));
  SampledThresholdSelector selector({0.1, 0.01, 0});
  EXPECT_TRUE(contains(
      errorMessageOf<InvalidArgument>([&] { (void)selector.select(at::ones({16}, at::kInt)); }),
      "float32"));
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         (void)selector.select(at::ones({8, 8}, at::kFloat).t());
                       }),
                       "not contiguous"));
  EXPECT_TRUE(contains(
      errorMessageOf<InvalidArgument>([&] { (void)selector.select(at::empty({0}, at::kFloat)); }),
      "numel = 0"));
}

TEST(KernelBenchRunTest, PrintsEveryKernelAndWritesOneJsonLineEach) {
  testing::TempDir dir("thinwire-kernel-bench");
  const KernelRegistry registry = makeBuiltinKernelRegistry();
  std::ostringstream table;
  KernelBenchOptions options;
  options.sizesBytes = {4096, 64 << 10};
  options.iterations = 1;
  options.warmup = 1;
  options.triadBytes = 1 << 20;
  options.jsonPath = dir.path() + "/kernels.jsonl";
  options.out = &table;
  ASSERT_EQ(runKernelBench(options, registry), 0);
  std::ifstream json(options.jsonPath);
  std::vector<std::string> lines;
  for (std::string line; std::getline(json, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 1 + registry.kernels().size() * options.sizesBytes.size());
  EXPECT_TRUE(contains(lines[0], "\"kernel\":\"triad\"")) << lines[0];
  for (size_t i = 1; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i].front(), '{');
    EXPECT_EQ(lines[i].back(), '}');
    EXPECT_TRUE(contains(lines[i], "\"roofline_fraction\":")) << lines[i];
    EXPECT_FALSE(contains(lines[i], "nan")) << lines[i];
    EXPECT_FALSE(contains(lines[i], "inf")) << lines[i];
  }
  for (const KernelSpec& spec : registry.kernels()) {
    EXPECT_TRUE(contains(table.str(), spec.name)) << table.str();
  }
  EXPECT_TRUE(contains(table.str(), "STREAM triad")) << table.str();
}

}  // namespace
}  // namespace thinwire::bench

#include "bench/kernel_bench.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
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
        "ef_add_scale_aten", "topk_exact_1pct", "sampled_threshold_1pct", "topk_exact_ef",
        "topk_sampled_ef", "sign_ef", "quantize4_ef"}) {
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

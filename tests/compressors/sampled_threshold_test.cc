#include "compressors/sampled_threshold.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "tests/compressors/test_tensors.h"
#include "tests/testing/error_message.h"

namespace thinwire::compressors {
namespace {

using test::contains;

using testing::errorMessageOf;

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

// The r-th largest magnitude of residual + scale * addend over the given positions, NaN never.
float referenceRank(const std::vector<float>& p, const std::vector<int64_t>& positions, int64_t r) {
  std::vector<float> m;
  for (int64_t j : positions) {
    if (!std::isnan(p[j])) m.push_back(std::fabs(p[j]));
  }
  std::sort(m.begin(), m.end(), std::greater<>());
  return m[r - 1];
}

TEST(SampleThresholdTest, SmallInputsAreExactOrderStatistics) {
  for (int64_t numel : {1, 7, 100, 4096}) {
    const at::Tensor e = standardNormal(numel, 1);
    const at::Tensor g = standardNormal(numel, 2);
    std::vector<float> p(numel);
    std::vector<int64_t> all(numel);
    for (int64_t i = 0; i < numel; ++i) {
      p[i] = e.data_ptr<float>()[i] + 0.5f * g.data_ptr<float>()[i];
      all[i] = i;
    }
    for (double fraction : {0.01, 0.1, 1.0}) {
      const int64_t r = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(fraction * numel)));
      EXPECT_EQ(sampleThreshold(e, g, 0.5f, ThresholdSampleOptions{.fraction = fraction}),
                referenceRank(p, all, r))
          << numel << " " << fraction;
    }
  }
}

TEST(SampleThresholdTest, LargeInputsSampleAStrideAndEstimateTheQuantile) {
  const int64_t numel = int64_t{1} << 20;
  const at::Tensor x = standardNormal(numel, 3);
  // |N(0,1)| exceeds 2.5758 with probability 1 %.
  for (uint64_t seed : {1, 2, 3}) {
    const float threshold = sampleThreshold(x, at::Tensor(), 1.0f,
                                            ThresholdSampleOptions{.fraction = 0.01, .seed = seed});
    EXPECT_NEAR(threshold, 2.5758, 0.15) << seed;
  }
  // Deterministic in the seed; a different seed samples other positions.
  const ThresholdSampleOptions options{.fraction = 0.01, .seed = 7};
  EXPECT_EQ(sampleThreshold(x, at::Tensor(), 1.0f, options),
            sampleThreshold(x, at::Tensor(), 1.0f, options));
  // The sample is of p = residual + scale * addend: zero residual, addend 2x.
  const at::Tensor zero = at::zeros({numel}, at::kFloat);
  EXPECT_EQ(sampleThreshold(zero, x, 2.0f, options),
            2.0f * sampleThreshold(x, at::Tensor(), 1.0f, options));
}

TEST(SampleThresholdTest, NaNsAreSkippedAndAllNaNGivesInfinity) {
  at::Tensor x = at::full({100}, std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(sampleThreshold(x, at::Tensor(), 1.0f, {}), std::numeric_limits<float>::infinity());
  x[5] = 3.0f;
  EXPECT_EQ(sampleThreshold(x, at::Tensor(), 1.0f, ThresholdSampleOptions{.fraction = 0.01}), 3.0f);
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         sampleThreshold(x, at::Tensor(), 1.0f,
                                         ThresholdSampleOptions{.fraction = 0});
                       }),
                       "fraction"));
  EXPECT_TRUE(contains(
      errorMessageOf<InvalidArgument>([&] { sampleThreshold(x, at::zeros({3}), 1.0f, {}); }),
      "addend has 3"));
}

// The rank-th largest by a full sort, independent of the radix selection.
uint32_t sortedRank(std::vector<uint32_t> keys, int64_t rank) {
  std::sort(keys.begin(), keys.end());
  return keys[keys.size() - rank];
}

TEST(NthLargestKeyTest, MatchesASortOnManyDistributions) {
  std::mt19937 random(5);
  std::vector<uint32_t> scratch;
  // Sizes around the small-bin cutoff and larger; uniform 32-bit keys (the top bit too), keys
  // crowded into one top-level bin, few distinct values, and all equal.
  for (int64_t count : {1, 2, 7, 511, 512, 513, 5000, 100003}) {
    for (int kind = 0; kind < 4; ++kind) {
      std::vector<uint32_t> keys(count);
      for (uint32_t& key : keys) {
        const uint32_t word = static_cast<uint32_t>(random());
        key = kind == 0   ? word
              : kind == 1 ? 0x40200000u + (word & 0x1fffffu)
              : kind == 2 ? word % 5
                          : 0x7f800001u;
      }
      for (int64_t rank : {int64_t{1}, (count + 1) / 2, count / 100 + 1, count}) {
        EXPECT_EQ(nthLargestKey(keys.data(), count, rank, scratch), sortedRank(keys, rank))
            << "count " << count << " kind " << kind << " rank " << rank;
      }
    }
  }
  std::vector<uint32_t> keys = {3, 1, 2};
  EXPECT_TRUE(
      contains(errorMessageOf<InvalidArgument>([&] { nthLargestKey(keys.data(), 3, 0, scratch); }),
               "rank = 0"));
  EXPECT_TRUE(
      contains(errorMessageOf<InvalidArgument>([&] { nthLargestKey(keys.data(), 3, 4, scratch); }),
               "rank = 4"));
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

}  // namespace
}  // namespace thinwire::compressors

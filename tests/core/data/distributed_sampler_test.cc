#include "core/data/distributed_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "base/error.h"
#include "core/data/seeded_random.h"

namespace thinwire::core {
namespace {

DistributedSamplerOptions makeOptions(
    int64_t size, int64_t batch, int rank, int world, uint64_t seed) {
  DistributedSamplerOptions options;
  options.datasetSize = size;
  options.batchPerRank = batch;
  options.rank = rank;
  options.worldSize = world;
  options.seed = seed;
  return options;
}

TEST(DistributedSamplerTest, StepsPerEpochDropsTheRemainder) {
  EXPECT_EQ(DistributedSampler(makeOptions(103, 4, 0, 3, 1)).stepsPerEpoch(), 103 / 12);
  EXPECT_EQ(DistributedSampler(makeOptions(12, 4, 2, 3, 1)).stepsPerEpoch(), 1);
  EXPECT_EQ(DistributedSampler(makeOptions(60000, 64, 0, 1, 1)).stepsPerEpoch(), 937);
}

TEST(DistributedSamplerTest, RanksAreDisjointAndTheirUnionIsTheOneRankGlobalBatch) {
  constexpr int64_t kSize = 103;
  constexpr int64_t kBatch = 4;
  constexpr int kWorld = 3;
  constexpr uint64_t kSeed = 11;
  std::vector<DistributedSampler> ranks;
  for (int r = 0; r < kWorld; ++r) ranks.emplace_back(makeOptions(kSize, kBatch, r, kWorld, kSeed));
  DistributedSampler single(makeOptions(kSize, kBatch * kWorld, 0, 1, kSeed));
  ASSERT_EQ(single.stepsPerEpoch(), ranks[0].stepsPerEpoch());

  const int64_t steps = single.stepsPerEpoch();
  for (int64_t step = 0; step < 3 * steps; ++step) {
    std::vector<int64_t> concatenated;
    for (const DistributedSampler& sampler : ranks) {
      const std::vector<int64_t> mine = sampler.indices(step);
      ASSERT_EQ(static_cast<int64_t>(mine.size()), kBatch);
      concatenated.insert(concatenated.end(), mine.begin(), mine.end());
    }
    EXPECT_EQ(concatenated, single.indices(step)) << "step " << step;
  }
  // Within one epoch every index appears at most once across all ranks and steps.
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<int64_t> seen;
    for (int64_t step = epoch * steps; step < (epoch + 1) * steps; ++step) {
      for (const DistributedSampler& sampler : ranks) {
        for (int64_t index : sampler.indices(step)) {
          EXPECT_GE(index, 0);
          EXPECT_LT(index, kSize);
          EXPECT_TRUE(seen.insert(index).second)
              << "index " << index << " repeated in epoch " << epoch;
        }
      }
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), steps * kBatch * kWorld);
  }
}

TEST(DistributedSamplerTest, IndicesArePureFunctionsOfSeedAndStepWhateverTheQueryOrder) {
  const DistributedSampler forward(makeOptions(50, 5, 1, 2, 3));
  std::vector<std::vector<int64_t>> inOrder;
  for (int64_t step = 0; step < 40; ++step) inOrder.push_back(forward.indices(step));
  // A fresh sampler asked in reverse (crossing epochs both ways) must agree.
  const DistributedSampler backward(makeOptions(50, 5, 1, 2, 3));
  for (int64_t step = 39; step >= 0; --step) {
    EXPECT_EQ(backward.indices(step), inOrder[static_cast<size_t>(step)]) << "step " << step;
  }
}

TEST(DistributedSamplerTest, EachEpochIsADifferentPermutation) {
  const DistributedSampler sampler(makeOptions(1000, 10, 0, 1, 5));
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), int64_t{0});
  const std::vector<int64_t> epoch0 = sampler.permutation(0);
  const std::vector<int64_t> epoch1 = sampler.permutation(1);
  for (const auto& order : {epoch0, epoch1}) {
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, identity);
    EXPECT_NE(order, identity);
  }
  EXPECT_NE(epoch0, epoch1);
  EXPECT_NE(sampler.indices(0), sampler.indices(sampler.stepsPerEpoch()));
}

TEST(DistributedSamplerTest, DifferentSeedsGiveDifferentOrders) {
  const DistributedSampler a(makeOptions(1000, 10, 0, 1, 1));
  const DistributedSampler b(makeOptions(1000, 10, 0, 1, 2));
  EXPECT_NE(a.permutation(0), b.permutation(0));
}

TEST(DistributedSamplerTest, ShuffleIsUniformOverPositions) {
  // Position 0 of a 4-element permutation, over many seeds: each element 1/4 of the time.
  constexpr int kTrials = 8000;
  std::vector<int> counts(4, 0);
  for (int seed = 0; seed < kTrials; ++seed) {
    const DistributedSampler sampler(makeOptions(4, 1, 0, 1, static_cast<uint64_t>(seed)));
    ++counts[static_cast<size_t>(sampler.permutation(0)[0])];
  }
  // Standard deviation of each count is sqrt(8000 * 3/16) ~ 39; allow 5 of them.
  for (int count : counts) EXPECT_NEAR(count, kTrials / 4, 200);
}

TEST(DistributedSamplerTest, RejectsDatasetSmallerThanOneGlobalBatch) {
  EXPECT_THROW(DistributedSampler(makeOptions(11, 4, 0, 3, 0)), InvalidArgument);
  EXPECT_THROW(DistributedSampler(makeOptions(0, 1, 0, 1, 0)), InvalidArgument);
  EXPECT_THROW(DistributedSampler(makeOptions(100, 0, 0, 1, 0)), InvalidArgument);
  EXPECT_THROW(DistributedSampler(makeOptions(100, 1, 2, 2, 0)), InvalidArgument);
  EXPECT_THROW(DistributedSampler(makeOptions(100, 1, -1, 2, 0)), InvalidArgument);
  EXPECT_THROW(DistributedSampler(makeOptions(100, 1, 0, 1, 0)).indices(-1), InvalidArgument);
  try {
    DistributedSampler(makeOptions(11, 4, 0, 3, 0));
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("smaller than one global batch of 12"), std::string::npos)
        << e.what();
  }
}

TEST(SeededRandomTest, EngineIsTheStandardMersenneTwister) {
  // The C++ standard fixes the 10000th output of a default-constructed mt19937_64.
  SeededRandom rng(std::mt19937_64::default_seed);
  uint64_t value = 0;
  for (int i = 0; i < 10000; ++i) value = rng.next();
  EXPECT_EQ(value, 9981545732273789042ULL);
}

TEST(SeededRandomTest, BoundedDrawsStayInRangeAndAreUniform) {
  SeededRandom rng(mixSeed(42, 1));
  constexpr uint64_t kBound = 7;
  constexpr int kDraws = 70000;
  std::vector<int> counts(kBound, 0);
  for (int i = 0; i < kDraws; ++i) {
    const uint64_t value = rng.below(kBound);
    ASSERT_LT(value, kBound);
    ++counts[value];
  }
  for (int count : counts) EXPECT_NEAR(count, kDraws / kBound, 500);  // sd ~ 93
  EXPECT_EQ(rng.below(1), 0u);
}

TEST(SeededRandomTest, NormalsHaveZeroMeanAndUnitVariance) {
  SeededRandom rng(mixSeed(7, 2));
  constexpr int kDraws = 200000;
  double sum = 0.0;
  double squares = 0.0;
  for (int i = 0; i < kDraws; ++i) {
    const double x = rng.normal();
    sum += x;
    squares += x * x;
  }
  const double mean = sum / kDraws;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(squares / kDraws - mean * mean, 1.0, 0.02);
}

TEST(SeededRandomTest, MixedSeedsSeparateStreams) {
  EXPECT_NE(mixSeed(1, 0), mixSeed(1, 1));
  EXPECT_NE(mixSeed(1, 0), mixSeed(2, 0));
  EXPECT_EQ(mixSeed(3, 4), mixSeed(3, 4));
  EXPECT_NE(hashName("layers.0.weight"), hashName("layers.0.bias"));
}

}  // namespace
}  // namespace thinwire::core

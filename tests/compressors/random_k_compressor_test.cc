#include "compressors/random_k_compressor.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "tests/compressors/test_tensors.h"
#include "tests/testing/error_message.h"

namespace thinwire::compressors {
namespace {

using test::contains;
using test::gaussian;

using testing::errorMessageOf;

int64_t expectedK(int64_t numel, double ratio) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(ratio * numel)));
}

// Positions where compress() kept a value, read off the residual: p has no zeros (a normal draw
// plus an offset away from 0), and unscaled float32 random-k leaves exactly 0 where it kept.
std::vector<int32_t> keptPositions(const at::Tensor& residual) {
  std::vector<int32_t> kept;
  const float* r = residual.data_ptr<float>();
  for (int64_t i = 0; i < residual.numel(); ++i) {
    if (r[i] == 0.0f) kept.push_back(static_cast<int32_t>(i));
  }
  return kept;
}

at::Tensor nonZero(int64_t numel, uint64_t seed) {
  at::Tensor x = gaussian(numel, seed);
  return x + at::where(x >= 0, at::full_like(x, 0.5f), at::full_like(x, -0.5f));
}

TEST(RandomKIndicesTest, SortedDistinctInRangeAndSeeded) {
  for (int64_t numel : {1, 7, 64, 65, 1000, 100003}) {
    for (double ratio : {0.01, 0.3, 1.0}) {
      const int64_t k = expectedK(numel, ratio);
      const std::vector<int32_t> a = randomKIndices(numel, k, 5);
      ASSERT_EQ(static_cast<int64_t>(a.size()), k);
      for (int64_t j = 0; j < k; ++j) {
        EXPECT_GE(a[j], 0);
        EXPECT_LT(a[j], numel);
        if (j > 0) {
          EXPECT_LT(a[j - 1], a[j]);
        }
      }
      EXPECT_EQ(a, randomKIndices(numel, k, 5));
      if (k < numel && numel > 10) {
        EXPECT_NE(a, randomKIndices(numel, k, 6)) << numel;
      }
    }
  }
  EXPECT_TRUE(randomKIndices(0, 0, 1).empty());
}

TEST(RandomKIndicesTest, EveryPositionEquallyLikely) {
  // d = 20, k = 5, 40000 draws: each position is kept 10000 times in expectation, standard
  // deviation sqrt(40000 * 0.25 * 0.75) ~ 87; allow 5 sigma.
  const int64_t numel = 20;
  const int64_t k = 5;
  const int draws = 40000;
  std::vector<int> counts(numel, 0);
  for (int s = 0; s < draws; ++s) {
    for (int32_t i : randomKIndices(numel, k, 1000 + s)) ++counts[i];
  }
  for (int64_t i = 0; i < numel; ++i) EXPECT_NEAR(counts[i], 10000, 5 * 87) << i;
}

TEST(RandomKCompressorTest, KeepsTheSeededPositionsAndLeavesTheRestInTheResidual) {
  for (int64_t numel : {1, 7, 9, 1000, 70001}) {
    const at::Tensor e = nonZero(numel, 1);
    const at::Tensor g = gaussian(numel, 2) * 0.01f;
    std::vector<float> p(numel);
    for (int64_t i = 0; i < numel; ++i) {
      p[i] = e.data_ptr<float>()[i] + 0.5f * g.data_ptr<float>()[i];
    }
    RandomKCompressor randomK;
    const LayerParams params{.ratio = 0.1, .seed = 77};
    at::Tensor residual = e.clone();
    Payload payload;
    randomK.compress(residual, g, 0.5f, payload, params);
    const int64_t k = expectedK(numel, 0.1);
    EXPECT_EQ(payload.data.scalar_type(), at::kFloat);
    ASSERT_EQ(payload.data.numel(), k);
    EXPECT_EQ(payload.wireBytes(), randomK.payloadBytes(numel, params));
    const std::vector<int32_t> kept = keptPositions(residual);
    EXPECT_EQ(kept, randomKIndices(numel, k, 77));
    ASSERT_EQ(static_cast<int64_t>(kept.size()), k);
    for (int64_t j = 0; j < k; ++j) EXPECT_EQ(payload.data.data_ptr<float>()[j], p[kept[j]]);
    std::set<int32_t> keptSet(kept.begin(), kept.end());
    for (int64_t i = 0; i < numel; ++i) {
      if (keptSet.count(i) == 0) {
        EXPECT_EQ(residual.data_ptr<float>()[i], p[i]) << i;
      }
    }
    // Same seed, another rank's data: the same positions.
    at::Tensor other = nonZero(numel, 3);
    randomK.compress(other, at::Tensor(), 1.0f, payload, params);
    EXPECT_EQ(keptPositions(other), kept);
    // Another seed: other positions.
    if (numel >= 1000) {
      at::Tensor third = nonZero(numel, 3);
      randomK.compress(third, at::Tensor(), 1.0f, payload, LayerParams{.ratio = 0.1, .seed = 78});
      EXPECT_NE(keptPositions(third), kept);
    }
  }
}

TEST(RandomKCompressorTest, UnscaledErrorFeedbackIsExactAndPayloadsSum) {
  const int64_t numel = 1001;
  const LayerParams params{.ratio = 0.05, .seed = 9};
  RandomKCompressor randomK;
  // Integer-valued inputs: every sum below is exact in float32, whatever the order.
  const at::Tensor a = at::round(gaussian(numel, 4) * 100.0f);
  const at::Tensor b = at::round(gaussian(numel, 5) * 100.0f);
  at::Tensor ra = at::zeros({numel}, at::kFloat);
  at::Tensor rb = at::zeros({numel}, at::kFloat);
  Payload pa;
  Payload pb;
  randomK.compress(ra, a, 1.0f, pa, params);
  randomK.compress(rb, b, 1.0f, pb, params);
  at::Tensor delta = at::zeros({numel}, at::kFloat);
  randomK.decompressAdd(pa, delta, 1.0f, params);
  EXPECT_TRUE(at::equal(delta + ra, a));  // Delta + e_new == e_old + g
  Payload summed = pa;
  summed.data = pa.data + pb.data;
  at::Tensor fromSum = at::zeros({numel}, at::kFloat);
  randomK.decompressAdd(summed, fromSum, 1.0f, params);
  at::Tensor separately = at::zeros({numel}, at::kFloat);
  randomK.decompressAdd(pa, separately, 1.0f, params);
  randomK.decompressAdd(pb, separately, 1.0f, params);
  EXPECT_TRUE(at::equal(fromSum, separately));
  EXPECT_TRUE(randomK.isSummable());
}

TEST(RandomKCompressorTest, ScaledIsUnbiased) {
  // d = 40, k = 4: each coordinate of C(x) is x_i * 10 with probability 0.1, else 0, so its
  // variance is 9 x_i^2; the mean of N draws has standard deviation 3 |x_i| / sqrt(N).
  const int64_t numel = 40;
  const int draws = 20000;
  const at::Tensor x = gaussian(numel, 11);
  RandomKCompressor randomK(RandomKOptions{.scale = true});
  at::Tensor sum = at::zeros({numel}, at::kFloat);
  Payload payload;
  for (int s = 0; s < draws; ++s) {
    const LayerParams params{.ratio = 0.1, .seed = static_cast<uint64_t>(s)};
    at::Tensor residual = x.clone();
    randomK.compress(residual, at::Tensor(), 1.0f, payload, params);
    randomK.decompressAdd(payload, sum, 1.0f, params);
    if (s == 0) {
      at::Tensor delta = at::zeros({numel}, at::kFloat);
      randomK.decompressAdd(payload, delta, 1.0f, params);
      EXPECT_TRUE(at::allclose(delta + residual, x, 1e-6, 1e-6));
    }
  }
  const at::Tensor mean = sum / static_cast<float>(draws);
  for (int64_t i = 0; i < numel; ++i) {
    const float xi = x.data_ptr<float>()[i];
    EXPECT_NEAR(mean.data_ptr<float>()[i], xi, 4.5 * 3.0 * std::fabs(xi) / std::sqrt(draws)) << i;
  }
  EXPECT_DOUBLE_EQ(randomK.deltaHint(numel, LayerParams{.ratio = 0.1}), 0.0);
  EXPECT_DOUBLE_EQ(randomK.deltaHint(numel, LayerParams{.ratio = 0.8}), 2.0 - 40.0 / 32.0);
}

TEST(RandomKCompressorTest, UnscaledExpectedErrorIsOneMinusKOverDOfTheNorm) {
  const int64_t numel = 100;
  const int draws = 4000;
  const at::Tensor x = gaussian(numel, 12);
  const double norm = x.pow(2).sum().item<double>();
  RandomKCompressor randomK;
  double error = 0;
  Payload payload;
  for (int s = 0; s < draws; ++s) {
    at::Tensor residual = x.clone();
    randomK.compress(residual, at::Tensor(), 1.0f, payload,
                     LayerParams{.ratio = 0.2, .seed = static_cast<uint64_t>(s)});
    error += residual.pow(2).sum().item<double>();  // ||C(x) - x||^2
  }
  // The error of one draw is a sum of 80 of the 100 squares: relative spread of the mean ~1 %.
  EXPECT_NEAR(error / draws, 0.8 * norm, 0.05 * norm);
  EXPECT_DOUBLE_EQ(randomK.deltaHint(numel, LayerParams{.ratio = 0.2}), 0.2);
}

TEST(RandomKCompressorTest, HalfValues) {
  const int64_t numel = 999;
  const at::Tensor x = gaussian(numel, 13) * 1e4f;
  RandomKCompressor randomK(RandomKOptions{.scale = true, .fp16Values = true});
  const LayerParams params{.ratio = 0.1, .seed = 3};
  at::Tensor residual = x.clone();
  Payload payload;
  randomK.compress(residual, at::Tensor(), 1.0f, payload, params);
  EXPECT_EQ(payload.data.scalar_type(), at::kHalf);
  EXPECT_EQ(payload.wireBytes(), 99 * 2);
  const std::vector<int32_t> kept = randomKIndices(numel, 99, 3);
  const float factor = static_cast<float>(999.0 / 99.0);
  for (int64_t j = 0; j < 99; ++j) {
    const float v = std::max(-65504.0f, std::min(65504.0f, factor * x.data_ptr<float>()[kept[j]]));
    EXPECT_EQ(static_cast<float>(payload.data.data_ptr<c10::Half>()[j]),
              static_cast<float>(c10::Half(v)));
  }
  at::Tensor delta = at::zeros({numel}, at::kFloat);
  randomK.decompressAdd(payload, delta, 1.0f, params);
  EXPECT_TRUE(at::allclose(delta + residual, x, 1e-5, 1e-3));
}

TEST(RandomKCompressorTest, EmptyAndBadArguments) {
  RandomKCompressor randomK;
  at::Tensor empty = at::empty({0}, at::kFloat);
  Payload payload;
  randomK.compress(empty, at::Tensor(), 1.0f, payload, LayerParams{});
  EXPECT_EQ(payload.wireBytes(), 0);
  randomK.decompressAdd(payload, empty, 1.0f, LayerParams{});

  at::Tensor residual = at::zeros({10}, at::kFloat);
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         randomK.compress(residual, at::Tensor(), 1.0f, payload,
                                          LayerParams{.ratio = 0});
                       }),
                       "ratio"));
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         randomK.compress(residual, at::zeros({3}), 1.0f, payload, LayerParams{});
                       }),
                       "addend has 3"));
  randomK.compress(residual, at::Tensor(), 1.0f, payload, LayerParams{.ratio = 0.5});
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         randomK.decompressAdd(payload, residual, 1.0f, LayerParams{.ratio = 0.2});
                       }),
                       "expected k = 2"));
  RandomKCompressor half(RandomKOptions{.fp16Values = true});
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         half.decompressAdd(payload, residual, 1.0f, LayerParams{.ratio = 0.5});
                       }),
                       "float16"));
  EXPECT_TRUE(
      contains(errorMessageOf<InvalidArgument>([] { (void)randomKIndices(10, 11, 0); }), "k = 11"));
}

}  // namespace
}  // namespace thinwire::compressors

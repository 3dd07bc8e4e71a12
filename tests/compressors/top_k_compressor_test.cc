#include "compressors/top_k_compressor.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
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

// Normal values rounded to quarters: many exact ties in magnitude.
at::Tensor coarse(int64_t numel, uint64_t seed) {
  return at::round(gaussian(numel, seed) * 4.0f) / 4.0f;
}

bool sameBits(float a, float b) {
  uint32_t x = 0;
  uint32_t y = 0;
  std::memcpy(&x, &a, sizeof(x));
  std::memcpy(&y, &b, sizeof(y));
  return x == y;
}

// The decoded payload, read with plain byte copies (independent of the compressor).
struct Decoded {
  std::vector<int32_t> indices;
  std::vector<float> values;
};

Decoded decode(const Payload& payload, bool fp16) {
  Decoded decoded;
  const int64_t bytes = payload.wireBytes();
  const int64_t entry = fp16 ? 6 : 8;
  EXPECT_EQ(bytes % entry, 0);
  const int64_t count = bytes / entry;
  const uint8_t* data = payload.data.data_ptr<uint8_t>();
  decoded.indices.resize(count);
  std::memcpy(decoded.indices.data(), data, count * 4);
  decoded.values.resize(count);
  for (int64_t j = 0; j < count; ++j) {
    if (fp16) {
      c10::Half half;
      std::memcpy(&half, data + count * 4 + j * 2, 2);
      decoded.values[j] = static_cast<float>(half);
    } else {
      std::memcpy(&decoded.values[j], data + count * 4 + j * 4, 4);
    }
  }
  return decoded;
}

// Reference selection: indices ordered by |p| descending, NaN last, lower index first on ties;
// the first k, returned ascending.
std::vector<int32_t> referenceTopK(const std::vector<float>& p, int64_t k) {
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  auto magnitude = [&](int32_t i) {
    const float m = std::fabs(p[i]);
    return std::isnan(m) ? -1.0f : m;
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return magnitude(a) > magnitude(b); });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

int64_t expectedK(int64_t numel, double ratio) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(ratio * numel)));
}

// Compresses e + scale * g with exact top-k and checks the payload and the residual against the
// reference, bit for bit.
void expectExactTopK(
    const at::Tensor& e, const at::Tensor& g, float scale, double ratio, bool fp16 = false) {
  const int64_t numel = e.numel();
  std::vector<float> p(numel);
  for (int64_t i = 0; i < numel; ++i) {
    p[i] = g.defined() ? e.data_ptr<float>()[i] + scale * g.data_ptr<float>()[i]
                       : e.data_ptr<float>()[i];
  }
  TopKCompressor topk(TopKOptions{.fp16Values = fp16});
  at::Tensor residual = e.clone();
  Payload payload;
  LayerParams params{.ratio = ratio};
  topk.compress(residual, g, scale, payload, params);
  const int64_t k = expectedK(numel, ratio);
  EXPECT_EQ(payload.numel, numel);
  EXPECT_EQ(payload.data.scalar_type(), at::kByte);
  EXPECT_EQ(payload.wireBytes(), k * (fp16 ? 6 : 8));
  const Decoded decoded = decode(payload, fp16);
  const std::vector<int32_t> expected = referenceTopK(p, k);
  ASSERT_EQ(decoded.indices, expected) << "numel " << numel << " ratio " << ratio;
  std::vector<char> kept(numel, 0);
  for (int64_t j = 0; j < k; ++j) {
    const int32_t i = decoded.indices[j];
    kept[i] = 1;
    if (fp16) {
      const float clamped = std::max(-65504.0f, std::min(65504.0f, p[i]));
      EXPECT_TRUE(sameBits(decoded.values[j], static_cast<float>(c10::Half(clamped))));
    } else {
      EXPECT_TRUE(sameBits(decoded.values[j], p[i])) << i;
    }
  }
  const float* r = residual.data_ptr<float>();
  for (int64_t i = 0; i < numel; ++i) {
    if (kept[i] && !fp16) {
      EXPECT_TRUE(sameBits(r[i], 0.0f)) << i;
    } else if (!kept[i]) {
      EXPECT_TRUE(sameBits(r[i], p[i])) << i;
    }
  }
}

TEST(TopKCompressorTest, KeepsLargestMagnitudesLowestIndexFirstOnTies) {
  for (int64_t numel : {1, 2, 7, 8, 9, 17, 100, 1000, 4097, 65537, 200003}) {
    for (double ratio : {0.001, 0.01, 0.1, 0.5, 1.0}) {
      const at::Tensor e = coarse(numel, numel);
      const at::Tensor g = coarse(numel, numel + 1);
      expectExactTopK(e, g, 0.5f, ratio);
    }
  }
}

TEST(TopKCompressorTest, WithoutAddendSelectsFromTheResidual) {
  for (int64_t numel : {1, 7, 1000}) expectExactTopK(gaussian(numel, 3), at::Tensor(), 1.0f, 0.1);
}

TEST(TopKCompressorTest, CrowdedBinsAndAllEqualMagnitudes) {
  // All magnitudes equal: the k lowest indices, whatever the signs.
  const int64_t numel = 300000;
  at::Tensor equal = at::full({numel}, 2.0f, at::kFloat);
  equal.narrow(0, 0, numel / 2).neg_();
  expectExactTopK(equal, at::Tensor(), 1.0f, 0.01);
  // Consecutive floats above 1: all in one top-level bin, distinct only in the low bits.
  at::Tensor dense = at::empty({numel}, at::kFloat);
  uint32_t one = 0;
  const float oneValue = 1.0f;
  std::memcpy(&one, &oneValue, sizeof(one));
  for (int64_t i = 0; i < numel; ++i) {
    const uint32_t bits = one + static_cast<uint32_t>((i * 7919) % 5000);
    std::memcpy(dense.data_ptr<float>() + i, &bits, sizeof(bits));
  }
  expectExactTopK(dense, at::Tensor(), 1.0f, 0.01);
  expectExactTopK(dense, at::Tensor(), 1.0f, 0.3);
  // Zeros, denormals and infinities.
  at::Tensor mixed = at::zeros({5000}, at::kFloat);
  mixed[10] = std::numeric_limits<float>::infinity();
  mixed[20] = -std::numeric_limits<float>::infinity();
  mixed[30] = std::numeric_limits<float>::denorm_min();
  mixed[40] = -1e-40f;
  expectExactTopK(mixed, at::Tensor(), 1.0f, 0.001);  // k = 5: inf, -inf, two denormals, a zero
}

TEST(TopKCompressorTest, NaNIsSelectedOnlyWhenEverythingElseIsTaken) {
  at::Tensor x = gaussian(1000, 5);
  x.narrow(0, 100, 50).fill_(std::numeric_limits<float>::quiet_NaN());
  expectExactTopK(x, at::Tensor(), 1.0f, 0.1);
  // 950 numbers, k = 980: every number and the 30 lowest-index NaNs.
  TopKCompressor topk;
  at::Tensor residual = x.clone();
  Payload payload;
  topk.compress(residual, at::Tensor(), 1.0f, payload, LayerParams{.ratio = 0.98});
  const Decoded decoded = decode(payload, false);
  int64_t nans = 0;
  for (size_t j = 0; j < decoded.indices.size(); ++j) {
    if (std::isnan(decoded.values[j])) {
      ++nans;
      EXPECT_LT(decoded.indices[j], 130);
    }
  }
  EXPECT_EQ(nans, 30);
}

TEST(TopKCompressorTest, SameResultOnOneAndTwoThreads) {
  const int64_t numel = int64_t{1} << 20;
  const at::Tensor e = coarse(numel, 21);
  const at::Tensor g = gaussian(numel, 22);
  const int previous = at::get_num_threads();
  std::vector<at::Tensor> payloads;
  std::vector<at::Tensor> residuals;
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    TopKCompressor topk;
    at::Tensor residual = e.clone();
    Payload payload;
    topk.compress(residual, g, 1.0f, payload, LayerParams{.ratio = 0.01});
    payloads.push_back(payload.data);
    residuals.push_back(residual);
  }
  at::set_num_threads(previous);
  EXPECT_TRUE(at::equal(payloads[0], payloads[1]));
  EXPECT_TRUE(at::equal(residuals[0], residuals[1]));
  at::set_num_threads(2);
  expectExactTopK(e, g, 1.0f, 0.01);
  at::set_num_threads(previous);
}

TEST(TopKCompressorTest, ErrorFeedbackInvariantIsBitExact) {
  for (bool fp16 : {false, true}) {
    for (int64_t numel : {1, 7, 1000, 100001}) {
      const at::Tensor e = gaussian(numel, 31) * 100.0f;
      const at::Tensor g = gaussian(numel, 32) * 1e5f;  // some beyond the float16 range
      TopKCompressor topk(TopKOptions{.fp16Values = fp16});
      at::Tensor residual = e.clone();
      Payload payload;
      const LayerParams params{.ratio = 0.05};
      topk.compress(residual, g, 1.0f, payload, params);
      at::Tensor delta = at::zeros({numel}, at::kFloat);
      topk.decompressAdd(payload, delta, 1.0f, params);
      const float* d = delta.data_ptr<float>();
      const float* r = residual.data_ptr<float>();
      for (int64_t i = 0; i < numel; ++i) {
        const float p = e.data_ptr<float>()[i] + g.data_ptr<float>()[i];
        ASSERT_TRUE(sameBits(d[i] + r[i], p)) << "fp16 " << fp16 << " at " << i;
      }
      if (fp16) expectExactTopK(e, g, 1.0f, 0.05, /*fp16=*/true);
    }
  }
}

TEST(TopKCompressorTest, FullRatioIsTheIdentity) {
  const at::Tensor e = gaussian(777, 41);
  const at::Tensor g = gaussian(777, 42);
  TopKCompressor topk;
  at::Tensor residual = e.clone();
  Payload payload;
  topk.compress(residual, g, 1.0f, payload, LayerParams{.ratio = 1.0});
  at::Tensor out = at::zeros({777}, at::kFloat);
  topk.decompressAdd(payload, out, 1.0f, LayerParams{.ratio = 1.0});
  EXPECT_TRUE(at::equal(out, e + g));
  EXPECT_TRUE(at::equal(residual, at::zeros({777}, at::kFloat)));
}

TEST(TopKCompressorTest, DecompressAddSumsCollidingIndicesAndScales) {
  // numel 10, ratio 0.3: k = 3. Hand-written payload with index 2 twice.
  const std::vector<int32_t> indices = {2, 2, 5};
  const std::vector<float> values = {1.0f, 2.0f, -4.0f};
  Payload payload;
  payload.numel = 10;
  payload.data = at::empty({24}, at::kByte);
  std::memcpy(payload.data.data_ptr<uint8_t>(), indices.data(), 12);
  std::memcpy(payload.data.data_ptr<uint8_t>() + 12, values.data(), 12);
  at::Tensor out = at::ones({10}, at::kFloat);
  TopKCompressor topk;
  topk.decompressAdd(payload, out, 0.5f, LayerParams{.ratio = 0.3});
  std::vector<float> expected(10, 1.0f);
  expected[2] = 1.0f + 0.5f * 3.0f;
  expected[5] = 1.0f - 0.5f * 4.0f;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(out.data_ptr<float>()[i], expected[i]) << i;
}

TEST(TopKCompressorTest, EmptyInputGivesEmptyPayload) {
  TopKCompressor topk;
  at::Tensor residual = at::empty({0}, at::kFloat);
  Payload payload;
  topk.compress(residual, at::empty({0}, at::kFloat), 1.0f, payload, LayerParams{});
  EXPECT_EQ(payload.wireBytes(), 0);
  EXPECT_EQ(payload.numel, 0);
  EXPECT_EQ(topk.payloadBytes(0, LayerParams{}), 0);
  at::Tensor out = at::empty({0}, at::kFloat);
  topk.decompressAdd(payload, out, 1.0f, LayerParams{});
}

TEST(TopKCompressorTest, SizesAndDelta) {
  TopKCompressor exact;
  TopKCompressor half(TopKOptions{.fp16Values = true});
  TopKCompressor sampled(TopKOptions{.sampled = true});
  const LayerParams params{.ratio = 0.01};
  EXPECT_EQ(exact.payloadBytes(1000, params), 10 * 8);
  EXPECT_EQ(half.payloadBytes(1000, params), 10 * 6);
  EXPECT_EQ(exact.payloadBytes(50, params), 8);  // k = max(1, floor(0.5))
  EXPECT_EQ(sampled.payloadBytes(1000, params), -1);
  EXPECT_EQ(sampled.maxPayloadBytes(1000, params), 80);
  EXPECT_DOUBLE_EQ(exact.deltaHint(1000, params), 0.01);
  EXPECT_DOUBLE_EQ(exact.deltaHint(50, params), 0.02);
  EXPECT_FALSE(exact.isSummable());
  EXPECT_EQ(exact.name(), "topk");
  EXPECT_EQ(topKCount(0, 0.5), 0);
  EXPECT_EQ(topKCount(7, 0.5), 3);
}

TEST(TopKCompressorTest, RejectsBadArguments) {
  TopKCompressor topk;
  at::Tensor residual = at::zeros({10}, at::kFloat);
  Payload payload;
  for (double ratio : {0.0, -0.1, 1.5}) {
    EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                           topk.compress(residual, at::Tensor(), 1.0f, payload,
                                         LayerParams{.ratio = ratio});
                         }),
                         "ratio"));
  }
  at::Tensor ints = at::zeros({10}, at::kInt);
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         topk.compress(ints, at::Tensor(), 1.0f, payload, LayerParams{});
                       }),
                       "float32"));
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         topk.compress(residual, at::zeros({11}), 1.0f, payload, LayerParams{});
                       }),
                       "addend has 11"));
  EXPECT_TRUE(contains(
      errorMessageOf<InvalidArgument>([] { TopKCompressor(TopKOptions{.upperBound = 0.5}); }),
      "upperBound"));
  EXPECT_TRUE(contains(
      errorMessageOf<InvalidArgument>([] { TopKCompressor(TopKOptions{.lowerBound = 0}); }),
      "lowerBound"));
  EXPECT_TRUE(contains(
      errorMessageOf<InvalidArgument>([] { TopKCompressor(TopKOptions{.sampleRatio = 2}); }),
      "sampleRatio"));

  // Payloads that do not match the params.
  topk.compress(residual, at::Tensor(), 1.0f, payload, LayerParams{.ratio = 0.3});
  at::Tensor out = at::zeros({10}, at::kFloat);
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         topk.decompressAdd(payload, out, 1.0f, LayerParams{.ratio = 0.5});
                       }),
                       "expected 5"));
  Payload truncated = payload;
  truncated.data = payload.data.narrow(0, 0, 20).clone();
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         topk.decompressAdd(truncated, out, 1.0f, LayerParams{.ratio = 0.3});
                       }),
                       "whole number"));
  Payload outOfRange = payload;
  outOfRange.data = payload.data.clone();
  const int32_t bad = 10;
  std::memcpy(outOfRange.data.data_ptr<uint8_t>(), &bad, 4);
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         topk.decompressAdd(outOfRange, out, 1.0f, LayerParams{.ratio = 0.3});
                       }),
                       "index 10"));
  at::Tensor wrongSize = at::zeros({9}, at::kFloat);
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         topk.decompressAdd(payload, wrongSize, 1.0f, LayerParams{.ratio = 0.3});
                       }),
                       "9 elements"));
}

// Sampled mode: checks the payload and residual against p with plain loops. Returns the count.
int64_t expectValidSampled(const at::Tensor& e,
                           const at::Tensor& g,
                           const TopKOptions& options,
                           double ratio,
                           uint64_t seed,
                           Payload* payloadOut = nullptr) {
  const int64_t numel = e.numel();
  std::vector<float> p(numel);
  for (int64_t i = 0; i < numel; ++i) p[i] = e.data_ptr<float>()[i] + g.data_ptr<float>()[i];
  TopKCompressor topk(options);
  at::Tensor residual = e.clone();
  Payload payload;
  const LayerParams params{.ratio = ratio, .rankSeed = seed};
  topk.compress(residual, g, 1.0f, payload, params);
  const Decoded decoded = decode(payload, options.fp16Values);
  const int64_t count = static_cast<int64_t>(decoded.indices.size());
  EXPECT_LE(count, expectedK(numel, ratio));
  std::vector<char> kept(numel, 0);
  float smallestKept = std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < count; ++j) {
    const int32_t i = decoded.indices[j];
    EXPECT_TRUE(i >= 0 && i < numel);
    if (j > 0) {
      EXPECT_LT(decoded.indices[j - 1], i);
    }
    kept[i] = 1;
    EXPECT_FALSE(std::isnan(p[i]) || p[i] == 0.0f) << "sent NaN or zero at " << i;
    smallestKept = std::min(smallestKept, std::fabs(p[i]));
    if (!options.fp16Values) {
      EXPECT_TRUE(sameBits(decoded.values[j], p[i])) << i;
    }
  }
  float largestDropped = 0;
  const float* r = residual.data_ptr<float>();
  for (int64_t i = 0; i < numel; ++i) {
    if (!kept[i]) {
      EXPECT_TRUE(sameBits(r[i], p[i])) << i;
      if (!std::isnan(p[i])) largestDropped = std::max(largestDropped, std::fabs(p[i]));
    } else if (!options.fp16Values) {
      EXPECT_TRUE(sameBits(r[i], 0.0f)) << i;
    }
  }
  if (count > 0) {
    EXPECT_GE(smallestKept, largestDropped);
  }
  if (payloadOut != nullptr) *payloadOut = payload;
  return count;
}

// Student-t with `df` degrees of freedom: normal / sqrt(chi2(df) / df).
at::Tensor studentT(int64_t numel, int df, uint64_t seed) {
  at::Tensor chi2 = at::zeros({numel}, at::kFloat);
  for (int d = 0; d < df; ++d) chi2 += gaussian(numel, seed * 100 + d + 1).pow(2);
  return gaussian(numel, seed * 100) / (chi2 / static_cast<float>(df)).sqrt();
}

TEST(TopKCompressorSampledTest, CountWithinBoundsOnGaussianAndHeavyTailedInputs) {
  const int64_t numel = int64_t{1} << 20;
  const double ratio = 0.01;
  const int64_t k = expectedK(numel, ratio);
  const std::vector<std::pair<std::string, at::Tensor>> inputs = {
      {"gaussian", gaussian(numel, 51)},
      {"student-t(3)", studentT(numel, 3, 52)},
      {"cauchy", gaussian(numel, 53) / gaussian(numel, 54)}};
  for (const auto& [name, gradient] : inputs) {
    for (uint64_t seed : {1, 2, 3}) {
      const at::Tensor e = 0.1f * gaussian(numel, 60 + seed);
      const int64_t count =
          expectValidSampled(e, gradient, TopKOptions{.sampled = true}, ratio, seed);
      EXPECT_GE(count, 0.8 * k) << name << " seed " << seed;
      EXPECT_LE(count, k) << name << " seed " << seed;
    }
  }
  // A smaller ratio, float16 values.
  const int64_t count =
      expectValidSampled(at::zeros({numel}), studentT(numel, 3, 55),
                         TopKOptions{.sampled = true, .fp16Values = true}, 0.001, 4);
  EXPECT_GE(count, 0.8 * expectedK(numel, 0.001));
}

TEST(TopKCompressorSampledTest, SmallInputsAndFullAdaptationMatchExactTopK) {
  // Up to 4096 elements the sample is everything: the candidates contain the top-k, which is then
  // cut exactly. With lowerBound = upperBound = 1 the threshold aims at k and adapts until at
  // least k reach it, so the result is the exact top-k at any size.
  std::vector<std::pair<int64_t, TopKOptions>> cases = {
      {1, TopKOptions{.sampled = true}},
      {7, TopKOptions{.sampled = true}},
      {100, TopKOptions{.sampled = true}},
      {4096, TopKOptions{.sampled = true}},
      {200003,
       TopKOptions{.sampled = true, .maxAdaptations = 60, .upperBound = 1.0, .lowerBound = 1.0}}};
  for (const auto& [numel, options] : cases) {
    for (uint64_t seed : {1, 2, 3, 4}) {
      const at::Tensor e = coarse(numel, seed);
      const at::Tensor g = gaussian(numel, seed + 10);
      for (double ratio : {0.01, 0.3}) {
        Payload sampled;
        expectValidSampled(e, g, options, ratio, seed, &sampled);
        TopKCompressor exact;
        at::Tensor residual = e.clone();
        Payload reference;
        exact.compress(residual, g, 1.0f, reference, LayerParams{.ratio = ratio});
        EXPECT_TRUE(at::equal(sampled.data, reference.data)) << numel << " seed " << seed;
      }
    }
  }
}

TEST(TopKCompressorSampledTest, DeterministicInTheSeedAndTheThreadCount) {
  const int64_t numel = int64_t{1} << 20;
  const at::Tensor e = gaussian(numel, 71);
  const at::Tensor g = studentT(numel, 3, 72);
  const int previous = at::get_num_threads();
  std::vector<at::Tensor> payloads;
  for (int threads : {1, 2, 1}) {
    at::set_num_threads(threads);
    TopKCompressor topk(TopKOptions{.sampled = true});
    at::Tensor residual = e.clone();
    Payload payload;
    topk.compress(residual, g, 1.0f, payload, LayerParams{.ratio = 0.01, .rankSeed = 5});
    payloads.push_back(payload.data);
  }
  at::set_num_threads(previous);
  EXPECT_TRUE(at::equal(payloads[0], payloads[1]));
  EXPECT_TRUE(at::equal(payloads[0], payloads[2]));
}

TEST(TopKCompressorSampledTest, ErrorFeedbackInvariantIsBitExact) {
  for (bool fp16 : {false, true}) {
    const int64_t numel = 300007;
    const at::Tensor e = gaussian(numel, 81) * 100.0f;
    const at::Tensor g = studentT(numel, 2, 82) * 1e3f;
    TopKCompressor topk(TopKOptions{.sampled = true, .fp16Values = fp16});
    at::Tensor residual = e.clone();
    Payload payload;
    const LayerParams params{.ratio = 0.02, .rankSeed = 3};
    topk.compress(residual, g, 1.0f, payload, params);
    at::Tensor delta = at::zeros({numel}, at::kFloat);
    topk.decompressAdd(payload, delta, 1.0f, params);
    const float* d = delta.data_ptr<float>();
    const float* r = residual.data_ptr<float>();
    for (int64_t i = 0; i < numel; ++i) {
      const float p = e.data_ptr<float>()[i] + g.data_ptr<float>()[i];
      ASSERT_TRUE(sameBits(d[i] + r[i], p)) << "fp16 " << fp16 << " at " << i;
    }
  }
}

TEST(TopKCompressorSampledTest, AllEqualMagnitudesKeepTheLowestIndices) {
  // Every element reaches the threshold, so the candidate buffers grow to numel and the cut to k
  // resolves ties alone: the k lowest positions are sent, the rest return to the residual.
  for (int64_t numel : {int64_t{7}, int64_t{100003}}) {
    at::Tensor e = at::full({numel}, 1.5f);
    for (int64_t i = 0; i < numel; i += 3) e[i] = -1.5f;
    const at::Tensor g = at::zeros({numel}, at::kFloat);
    TopKCompressor topk(TopKOptions{.sampled = true});
    at::Tensor residual = e.clone();
    Payload payload;
    topk.compress(residual, g, 1.0f, payload, LayerParams{.ratio = 0.01, .rankSeed = 2});
    const int64_t k = expectedK(numel, 0.01);
    const Decoded decoded = decode(payload, false);
    ASSERT_EQ(static_cast<int64_t>(decoded.indices.size()), k) << numel;
    for (int64_t j = 0; j < k; ++j) {
      EXPECT_EQ(decoded.indices[j], j);
      EXPECT_EQ(decoded.values[j], j % 3 == 0 ? -1.5f : 1.5f);
    }
    for (int64_t i = 0; i < numel; ++i) {
      ASSERT_EQ(residual.data_ptr<float>()[i], i < k ? 0.0f : e.data_ptr<float>()[i]) << i;
    }
  }
}

TEST(TopKCompressorSampledTest, ReusedInstanceMatchesFreshOnesAcrossSizes) {
  // Scratch buffers kept between calls (grown by a large input, reused by smaller ones) must not
  // leak into later results; each result is also checked against p.
  TopKCompressor reused(TopKOptions{.sampled = true});
  uint64_t seed = 100;
  for (int64_t numel : {300001, 1000, 17, 65537, 300001}) {
    const at::Tensor e = gaussian(numel, ++seed);
    const at::Tensor g = studentT(numel, 3, ++seed);
    const LayerParams params{.ratio = 0.01, .rankSeed = seed};
    Payload fresh;
    expectValidSampled(e, g, TopKOptions{.sampled = true}, 0.01, seed, &fresh);
    at::Tensor residual = e.clone();
    Payload payload;
    reused.compress(residual, g, 1.0f, payload, params);
    EXPECT_TRUE(at::equal(payload.data, fresh.data)) << numel;
  }
}

TEST(TopKCompressorSampledTest, ZerosAndNaNAreNeverSent) {
  TopKCompressor topk(TopKOptions{.sampled = true});
  at::Tensor zeros = at::zeros({10000}, at::kFloat);
  Payload payload;
  topk.compress(zeros, at::Tensor(), 1.0f, payload, LayerParams{.ratio = 0.01});
  EXPECT_EQ(payload.wireBytes(), 0);
  EXPECT_TRUE(at::equal(zeros, at::zeros({10000}, at::kFloat)));
  at::Tensor out = at::zeros({10000}, at::kFloat);
  topk.decompressAdd(payload, out, 1.0f, LayerParams{.ratio = 0.01});

  at::Tensor x = gaussian(10000, 91);
  x.narrow(0, 0, 5000).fill_(std::numeric_limits<float>::quiet_NaN());
  const int64_t count =
      expectValidSampled(x, at::zeros({10000}), TopKOptions{.sampled = true}, 0.01, 1);
  EXPECT_GE(count, 80);  // k = 100, lowerBound 0.8
  EXPECT_LE(count, 100);
  // A sampled payload may hold fewer than k entries, never more.
  Payload tooMany;
  tooMany.numel = 100;
  tooMany.data = at::zeros({8 * 2}, at::kByte);
  EXPECT_TRUE(contains(errorMessageOf<InvalidArgument>([&] {
                         at::Tensor small = at::zeros({100}, at::kFloat);
                         topk.decompressAdd(tooMany, small, 1.0f, LayerParams{.ratio = 0.01});
                       }),
                       "at most 1"));
}

}  // namespace
}  // namespace thinwire::compressors

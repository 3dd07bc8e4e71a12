#include "compressors/quantize_compressor.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "tests/compressors/test_tensors.h"

namespace thinwire::compressors {
namespace {

using test::gaussian;
using test::toVector;

LayerParams withBits(int bits, uint64_t rankSeed = 0) {
  LayerParams params;
  params.bits = bits;
  params.rankSeed = rankSeed;
  return params;
}

// Reads the payload as documented: nBuckets (unit, min) float pairs, then one LSB-first stream
// of `bits`-bit codes.
struct Decoded {
  std::vector<float> units;
  std::vector<float> minima;
  std::vector<uint32_t> levels;
};

Decoded parsePayload(const Payload& payload, int64_t bucket, int bits) {
  Decoded decoded;
  const int64_t numel = payload.numel;
  const int64_t buckets = (numel + bucket - 1) / bucket;
  const uint8_t* bytes = payload.data.data_ptr<uint8_t>();
  for (int64_t k = 0; k < buckets; ++k) {
    float pair[2];
    std::memcpy(pair, bytes + 8 * k, sizeof(pair));
    decoded.units.push_back(pair[0]);
    decoded.minima.push_back(pair[1]);
  }
  const uint8_t* codes = bytes + 8 * buckets;
  for (int64_t i = 0; i < numel; ++i) {
    uint32_t level = 0;
    for (int b = 0; b < bits; ++b) {
      const int64_t bit = i * bits + b;
      level |= uint32_t((codes[bit / 8] >> (bit % 8)) & 1) << b;
    }
    decoded.levels.push_back(level);
  }
  return decoded;
}

TEST(QuantizeCompressorTest, NearestRoundingErrorIsAtMostHalfAUnit) {
  for (int bits = 2; bits <= 8; ++bits) {
    for (int64_t bucket : {7, 64, 512}) {
      QuantizeCompressor quantize(QuantizeOptions{bucket, false});
      const LayerParams params = withBits(bits);
      for (int64_t numel : {0, 1, 7, 8, 9, 100, 1000, 2 * 512 + 5}) {
        SCOPED_TRACE("bits " + std::to_string(bits) + " bucket " + std::to_string(bucket) +
                     " numel " + std::to_string(numel));
        at::Tensor residual = gaussian(numel, 1);
        const at::Tensor addend = gaussian(numel, 2);
        const std::vector<float> p = toVector(residual + 2.0 * addend);
        Payload payload;
        quantize.compress(residual, addend, 2.0f, payload, params);
        ASSERT_EQ(payload.wireBytes(), quantize.payloadBytes(numel, params));
        ASSERT_EQ(payload.wireBytes(),
                  8 * ((numel + bucket - 1) / bucket) + (numel * bits + 7) / 8);
        const Decoded decoded = parsePayload(payload, bucket, bits);
        at::Tensor out = at::zeros({numel});
        quantize.decompressAdd(payload, out, 1.0f, params);
        const std::vector<float> ov = toVector(out);
        const std::vector<float> rv = toVector(residual);
        const double levels = std::ldexp(1.0, bits) - 1;
        for (int64_t start = 0; start < numel; start += bucket) {
          const int64_t end = std::min(numel, start + bucket);
          const double lo = *std::min_element(p.begin() + start, p.begin() + end);
          const double hi = *std::max_element(p.begin() + start, p.begin() + end);
          const double unit = (hi - lo) / levels;
          const int64_t k = start / bucket;
          ASSERT_EQ(decoded.minima[k], float(lo));
          ASSERT_NEAR(decoded.units[k], unit, 1e-6 * unit + 1e-12);
          for (int64_t i = start; i < end; ++i) {
            ASSERT_LE(decoded.levels[i], uint32_t(levels));
            // The decoded value lies on the bucket's grid, at most half a unit from p.
            const double value = lo + decoded.levels[i] * double(decoded.units[k]);
            ASSERT_NEAR(ov[i], value, 1e-5 * (std::fabs(value) + unit));
            ASSERT_LE(std::fabs(ov[i] - p[i]), unit / 2 * (1 + 1e-4) + 1e-6) << "element " << i;
            ASSERT_NEAR(rv[i], p[i] - ov[i], 1e-6 * (std::fabs(p[i]) + 1));
          }
        }
        // Padding bits in the last byte are 0.
        if (numel * bits % 8 != 0) {
          const uint8_t last = payload.data[payload.wireBytes() - 1].item<uint8_t>();
          EXPECT_EQ(last >> (numel * bits % 8), 0);
        }
      }
    }
  }
}

TEST(QuantizeCompressorTest, EveryBitWidthRoundTripsItsLevelsExactly) {
  // Inputs placed exactly on a grid (min -1.5, unit 0.25, both levels 0 and L present) decode
  // to themselves and leave a zero residual.
  for (int bits = 2; bits <= 8; ++bits) {
    const int levels = (1 << bits) - 1;
    const int64_t bucket = 64;
    const int64_t numel = 3 * bucket - 11;
    std::vector<uint32_t> chosen;
    std::vector<float> values;
    for (int64_t i = 0; i < numel; ++i) {
      uint32_t level = uint32_t((i * 37 + 11) % (levels + 1));
      if (i % bucket == 0) level = 0;
      if (i % bucket == 1) level = uint32_t(levels);
      chosen.push_back(level);
      values.push_back(-1.5f + 0.25f * float(level));
    }
    at::Tensor residual = at::tensor(values);
    const at::Tensor original = residual.clone();
    QuantizeCompressor quantize(QuantizeOptions{bucket, false});
    Payload payload;
    quantize.compress(residual, at::Tensor(), 1.0f, payload, withBits(bits));
    const Decoded decoded = parsePayload(payload, bucket, bits);
    EXPECT_EQ(decoded.levels, chosen) << "bits " << bits;
    for (float unit : decoded.units) EXPECT_EQ(unit, 0.25f);
    for (float lowest : decoded.minima) EXPECT_EQ(lowest, -1.5f);
    EXPECT_TRUE(at::equal(residual, at::zeros({numel}))) << "bits " << bits;
    at::Tensor out = at::zeros({numel});
    quantize.decompressAdd(payload, out, 1.0f, withBits(bits));
    EXPECT_TRUE(at::equal(out, original)) << "bits " << bits;
  }
}

TEST(QuantizeCompressorTest, ConstantBucketDecodesExactly) {
  QuantizeCompressor quantize(QuantizeOptions{16, true});
  // Bucket 0 constant 3.7, bucket 1 all zero, bucket 2 (partial) constant -2.1.
  at::Tensor residual = at::cat({at::full({16}, 3.7f), at::zeros({16}), at::full({5}, -2.1f)});
  const at::Tensor original = residual.clone();
  Payload payload;
  quantize.compress(residual, at::Tensor(), 1.0f, payload, withBits(3, 99));
  EXPECT_TRUE(at::equal(residual, at::zeros({37})));
  const Decoded decoded = parsePayload(payload, 16, 3);
  for (float unit : decoded.units) EXPECT_EQ(unit, 0.0f);
  at::Tensor out = at::zeros({37});
  quantize.decompressAdd(payload, out, 1.0f, withBits(3));
  EXPECT_TRUE(at::equal(out, original));
}

TEST(QuantizeCompressorTest, LastPartialBucketHasItsOwnRange) {
  QuantizeCompressor quantize(QuantizeOptions{100, false});
  // The full bucket spans [-50, 50]; the 3-element tail spans [0, 1] and must keep its
  // precision instead of inheriting the coarse unit.
  at::Tensor residual = at::cat({at::linspace(-50, 50, 100), at::tensor({0.0f, 0.6f, 1.0f})});
  Payload payload;
  quantize.compress(residual, at::Tensor(), 1.0f, payload, withBits(2));
  const Decoded decoded = parsePayload(payload, 100, 2);
  ASSERT_EQ(decoded.units.size(), 2u);
  EXPECT_FLOAT_EQ(decoded.units[0], 100.0f / 3);
  EXPECT_FLOAT_EQ(decoded.units[1], 1.0f / 3);
  EXPECT_EQ(decoded.minima[1], 0.0f);
  EXPECT_EQ(decoded.levels[100], 0u);
  EXPECT_EQ(decoded.levels[101], 2u);  // floor(0.6 / (1/3) + 0.5) = floor(2.3)
  EXPECT_EQ(decoded.levels[102], 3u);
  const std::vector<float> tail = toVector(residual.narrow(0, 100, 3));
  EXPECT_NEAR(tail[1], 0.6 - 2.0 / 3, 1e-6);
}

TEST(QuantizeCompressorTest, StochasticRoundingIsUnbiased) {
  // Mean of 10^4 independent draws within 4 sigma of the input, sigma^2 = unit^2 f (1 - f) / N
  // with f the fractional position between the two neighbouring levels.
  const int64_t numel = 48;
  const int bits = 2;
  const int draws = 10000;
  QuantizeCompressor quantize(QuantizeOptions{numel, true});
  const at::Tensor x = gaussian(numel, 3);
  const std::vector<float> xv = toVector(x);
  std::vector<double> sum(numel, 0.0);
  Payload payload;
  at::Tensor out = at::zeros({numel});
  for (int draw = 0; draw < draws; ++draw) {
    at::Tensor residual = x.clone();
    quantize.compress(residual, at::Tensor(), 1.0f, payload, withBits(bits, uint64_t(draw)));
    out.zero_();
    quantize.decompressAdd(payload, out, 1.0f, withBits(bits));
    const std::vector<float> ov = toVector(out);
    for (int64_t i = 0; i < numel; ++i) sum[i] += ov[i];
  }
  const double lo = *std::min_element(xv.begin(), xv.end());
  const double hi = *std::max_element(xv.begin(), xv.end());
  const double unit = (hi - lo) / 3;
  for (int64_t i = 0; i < numel; ++i) {
    const double position = (xv[i] - lo) / unit;
    const double f = position - std::floor(position);
    const double sigma = unit * std::sqrt(f * (1 - f) / draws);
    EXPECT_NEAR(sum[i] / draws, xv[i], 4 * sigma + 1e-5) << "element " << i;
  }
}

TEST(QuantizeCompressorTest, StochasticRoundingFollowsTheSeed) {
  QuantizeCompressor quantize(QuantizeOptions{64, true});
  const at::Tensor x = gaussian(1000, 4);
  auto run = [&](uint64_t seed) {
    at::Tensor residual = x.clone();
    Payload payload;
    quantize.compress(residual, at::Tensor(), 1.0f, payload, withBits(3, seed));
    return payload.data;
  };
  EXPECT_TRUE(at::equal(run(7), run(7)));
  EXPECT_FALSE(at::equal(run(7), run(8)));
}

TEST(QuantizeCompressorTest, ErrorFeedbackInvariantHolds) {
  for (bool stochastic : {false, true}) {
    QuantizeCompressor quantize(QuantizeOptions{512, stochastic});
    const int64_t numel = 3000;
    at::Tensor residual = gaussian(numel, 5) * 0.1;
    const at::Tensor gradient = gaussian(numel, 6);
    const at::Tensor expected = residual + gradient;
    Payload payload;
    quantize.compress(residual, gradient, 1.0f, payload, withBits(4, 17));
    at::Tensor delta = at::zeros({numel});
    quantize.decompressAdd(payload, delta, 1.0f, withBits(4));
    EXPECT_TRUE(at::allclose(delta + residual, expected, 1e-5, 1e-6));
  }
}

TEST(QuantizeCompressorTest, ResultDoesNotDependOnTheThreadCount) {
  for (int bits : {3, 4}) {  // 3: unaligned buckets (serial), 4: parallel buckets
    QuantizeCompressor quantize(QuantizeOptions{100, true});
    const at::Tensor gradient = gaussian(300000, 7);
    at::Tensor manyResidual = gaussian(300000, 8);
    at::Tensor oneResidual = manyResidual.clone();
    Payload many;
    Payload one;
    const int threads = at::get_num_threads();
    at::set_num_threads(std::max(2, threads));
    quantize.compress(manyResidual, gradient, 0.3f, many, withBits(bits, 5));
    at::Tensor manyOut = at::zeros({300000});
    quantize.decompressAdd(many, manyOut, 1.0f, withBits(bits));
    at::set_num_threads(1);
    quantize.compress(oneResidual, gradient, 0.3f, one, withBits(bits, 5));
    at::Tensor oneOut = at::zeros({300000});
    quantize.decompressAdd(one, oneOut, 1.0f, withBits(bits));
    at::set_num_threads(threads);
    EXPECT_TRUE(at::equal(many.data, one.data));
    EXPECT_TRUE(at::equal(manyResidual, oneResidual));
    EXPECT_TRUE(at::equal(manyOut, oneOut));
  }
}

TEST(QuantizeCompressorTest, ContractionHintBoundsTheMeasuredError) {
  QuantizeCompressor quantize(QuantizeOptions{512, false});
  EXPECT_EQ(quantize.deltaHint(100000, withBits(4)), 0.0);  // 2 * 15^2 < 512
  for (int bits : {5, 6, 8}) {
    const double delta = quantize.deltaHint(100000, withBits(bits));
    EXPECT_DOUBLE_EQ(delta, 1.0 - 512.0 / (2.0 * std::pow(std::ldexp(1.0, bits) - 1, 2)));
    for (uint64_t seed : {9, 10}) {
      const at::Tensor x = gaussian(4096, seed).pow(3);
      at::Tensor residual = x.clone();
      Payload payload;
      quantize.compress(residual, at::Tensor(), 1.0f, payload, withBits(bits));
      const double ratio = residual.pow(2).sum().item<double>() / x.pow(2).sum().item<double>();
      EXPECT_LE(ratio, 1.0 - delta) << "bits " << bits;
    }
  }
}

TEST(QuantizeCompressorTest, RejectsBadBitsBucketsAndPayloads) {
  QuantizeCompressor quantize;
  EXPECT_EQ(quantize.name(), "quantize");
  EXPECT_FALSE(quantize.isSummable());
  EXPECT_EQ(quantize.alignment(withBits(4)), 512);
  EXPECT_EQ(quantize.payloadBytes(0, withBits(4)), 0);
  EXPECT_EQ(quantize.payloadBytes(1, withBits(4)), 8 + 1);
  EXPECT_EQ(quantize.payloadBytes(513, withBits(3)), 16 + 193);
  EXPECT_EQ(quantize.maxPayloadBytes(513, withBits(3)), 16 + 193);
  EXPECT_THROW(QuantizeCompressor(QuantizeOptions{0, false}), InvalidArgument);
  at::Tensor residual = gaussian(100, 11);
  Payload payload;
  for (int bits : {0, 1, 9, 16}) {
    EXPECT_THROW(quantize.compress(residual, at::Tensor(), 1.0f, payload, withBits(bits)),
                 InvalidArgument);
    EXPECT_THROW(quantize.payloadBytes(100, withBits(bits)), InvalidArgument);
  }
  quantize.compress(residual, at::Tensor(), 1.0f, payload, withBits(4));
  at::Tensor out = at::zeros({100});
  EXPECT_THROW(quantize.decompressAdd(payload, out, 1.0f, withBits(5)), InvalidArgument);
  at::Tensor wrong = at::zeros({101});
  EXPECT_THROW(quantize.decompressAdd(payload, wrong, 1.0f, withBits(4)), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::compressors

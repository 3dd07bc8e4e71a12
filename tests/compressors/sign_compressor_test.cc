#include "compressors/sign_compressor.h"

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

// Plain reference of the scaled sign: per chunk scale in double, decode = scale * (p >= 0 ? 1 :
// -1), bits LSB-first.
struct Reference {
  std::vector<double> scales;
  std::vector<double> decoded;
  std::vector<uint8_t> bits;
};

Reference referenceSign(const std::vector<float>& p, int64_t chunk, SignScale kind) {
  Reference ref;
  const int64_t numel = static_cast<int64_t>(p.size());
  const int64_t len = chunk == 0 ? numel : chunk;
  ref.decoded.resize(p.size());
  ref.bits.assign(static_cast<size_t>((numel + 7) / 8), 0);
  for (int64_t start = 0; start < numel; start += len) {
    const int64_t end = std::min(numel, start + len);
    double sum = 0;
    for (int64_t i = start; i < end; ++i) {
      sum += kind == SignScale::kL1 ? std::fabs(p[i]) : double(p[i]) * p[i];
    }
    const double mean = sum / double(end - start);
    const double scale = kind == SignScale::kL1 ? mean : std::sqrt(mean);
    ref.scales.push_back(scale);
    for (int64_t i = start; i < end; ++i) {
      const bool positive = p[i] >= 0;
      ref.decoded[i] = positive ? scale : -scale;
      if (positive) ref.bits[i / 8] |= uint8_t(1U << (i % 8));
    }
  }
  return ref;
}

float payloadScale(const Payload& payload, int64_t index) {
  float scale = 0;
  std::memcpy(&scale, payload.data.data_ptr<uint8_t>() + 4 * index, sizeof(float));
  return scale;
}

struct Case {
  int64_t chunk;
  SignScale scale;
};

class SignCompressorTest : public ::testing::TestWithParam<Case> {};

TEST_P(SignCompressorTest, MatchesThePlainReferenceForEverySize) {
  const Case c = GetParam();
  SignCompressor sign(SignOptions{c.chunk, c.scale});
  for (int64_t numel : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 4099, 2 * 2048 + 3, 9000}) {
    SCOPED_TRACE("numel " + std::to_string(numel));
    at::Tensor residual = gaussian(numel, 1);
    const at::Tensor addend = gaussian(numel, 2) * 3;
    const at::Tensor p = residual + 0.5 * addend;
    const Reference ref = referenceSign(toVector(p), c.chunk, c.scale);

    Payload payload;
    sign.compress(residual, addend, 0.5f, payload, {});
    EXPECT_EQ(payload.numel, numel);
    ASSERT_EQ(payload.data.scalar_type(), at::kByte);
    ASSERT_EQ(payload.wireBytes(), sign.payloadBytes(numel, {}));
    const int64_t chunks = int64_t(ref.scales.size());
    EXPECT_EQ(payload.wireBytes(), 4 * chunks + (numel + 7) / 8);
    for (int64_t k = 0; k < chunks; ++k) {
      EXPECT_NEAR(payloadScale(payload, k), ref.scales[k], 1e-5 * ref.scales[k]) << "chunk " << k;
    }
    const uint8_t* bits = payload.data.data_ptr<uint8_t>() + 4 * chunks;
    for (size_t j = 0; j < ref.bits.size(); ++j) {
      ASSERT_EQ(bits[j], ref.bits[j]) << "byte " << j;
    }

    // Residual = p - decode, decode = what decompressAdd adds.
    at::Tensor out = gaussian(numel, 3);
    const at::Tensor before = out.clone();
    sign.decompressAdd(payload, out, 0.5f, {});
    const std::vector<float> pv = toVector(p);
    const std::vector<float> rv = toVector(residual);
    const std::vector<float> ov = toVector(out);
    const std::vector<float> bv = toVector(before);
    for (int64_t i = 0; i < numel; ++i) {
      const double tolerance = 1e-5 * (std::fabs(ref.decoded[i]) + std::fabs(pv[i]) + 1e-3);
      ASSERT_NEAR(rv[i], pv[i] - ref.decoded[i], tolerance) << "element " << i;
      ASSERT_NEAR(ov[i], bv[i] + 0.5 * ref.decoded[i], tolerance) << "element " << i;
    }
  }
}

TEST_P(SignCompressorTest, ErrorFeedbackInvariantHolds) {
  // Delta + e_new == e_old + g, with Delta the decoded payload.
  const Case c = GetParam();
  SignCompressor sign(SignOptions{c.chunk, c.scale});
  const int64_t numel = 5000;
  at::Tensor residual = gaussian(numel, 4) * 0.1;
  const at::Tensor gradient = gaussian(numel, 5);
  const at::Tensor expected = residual + gradient;
  Payload payload;
  sign.compress(residual, gradient, 1.0f, payload, {});
  at::Tensor delta = at::zeros({numel});
  sign.decompressAdd(payload, delta, 1.0f, {});
  EXPECT_TRUE(at::allclose(delta + residual, expected, 1e-5, 1e-6));
}

TEST_P(SignCompressorTest, ChunkNormIsPreservedByTheChosenScale) {
  // kL1: ||Delta_chunk||_1 == ||p_chunk||_1; kL2: ||Delta_chunk||_2 == ||p_chunk||_2.
  const Case c = GetParam();
  SignCompressor sign(SignOptions{c.chunk, c.scale});
  const int64_t numel = 4099;
  at::Tensor residual = gaussian(numel, 6) * at::linspace(0.1, 5, numel);
  const at::Tensor p = residual.clone();
  Payload payload;
  sign.compress(residual, at::Tensor(), 1.0f, payload, {});
  at::Tensor delta = at::zeros({numel});
  sign.decompressAdd(payload, delta, 1.0f, {});
  const int64_t len = c.chunk == 0 ? numel : c.chunk;
  const double order = c.scale == SignScale::kL1 ? 1.0 : 2.0;
  for (int64_t start = 0; start < numel; start += len) {
    const int64_t size = std::min(len, numel - start);
    const double sent = delta.narrow(0, start, size).to(at::kDouble).norm(order).item<double>();
    const double truth = p.narrow(0, start, size).to(at::kDouble).norm(order).item<double>();
    EXPECT_NEAR(sent, truth, 1e-5 * truth) << "chunk at " << start;
  }
}

TEST_P(SignCompressorTest, ResultDoesNotDependOnTheThreadCount) {
  const Case c = GetParam();
  SignCompressor sign(SignOptions{c.chunk, c.scale});
  const int64_t numel = 300000;
  const at::Tensor gradient = gaussian(numel, 7);
  at::Tensor manyResidual = gaussian(numel, 8);
  at::Tensor oneResidual = manyResidual.clone();
  Payload many;
  Payload one;
  const int threads = at::get_num_threads();
  at::set_num_threads(std::max(2, threads));
  sign.compress(manyResidual, gradient, 0.3f, many, {});
  at::set_num_threads(1);
  sign.compress(oneResidual, gradient, 0.3f, one, {});
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(many.data, one.data));
  EXPECT_TRUE(at::equal(manyResidual, oneResidual));
}

INSTANTIATE_TEST_SUITE_P(ChunksAndScales,
                         SignCompressorTest,
                         ::testing::Values(Case{8, SignScale::kL1},
                                           Case{64, SignScale::kL1},
                                           Case{2048, SignScale::kL1},
                                           Case{0, SignScale::kL1},
                                           Case{8, SignScale::kL2},
                                           Case{2048, SignScale::kL2},
                                           Case{0, SignScale::kL2}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.scale == SignScale::kL1 ? "L1" : "L2") +
                                  "Chunk" + std::to_string(info.param.chunk);
                         });

TEST(SignCompressorBitsTest, ZeroIsPositiveAndPaddingBitsAreZero) {
  SignCompressor sign(SignOptions{16, SignScale::kL1});
  // 11 elements: two bytes, the second with 3 used bits.
  at::Tensor residual =
      at::tensor({0.0f, -0.0f, -1.0f, 2.0f, 0.0f, -3.0f, 1.0f, 1.0f, -1.0f, 0.0f, -2.0f});
  Payload payload;
  sign.compress(residual, at::Tensor(), 1.0f, payload, {});
  ASSERT_EQ(payload.wireBytes(), 4 + 2);
  const uint8_t* bits = payload.data.data_ptr<uint8_t>() + 4;
  // Elements 0..7: + + - + + - + + -> bits 0,1,3,4,6,7.
  EXPECT_EQ(bits[0], 0b11011011);
  // Elements 8..10: - + - -> bit 1 only; bits 3..7 are padding.
  EXPECT_EQ(bits[1], 0b00000010);
  EXPECT_FLOAT_EQ(payloadScale(payload, 0), 11.0f / 11.0f);

  // An all-zero chunk has scale 0, every sign +1, and a zero residual.
  at::Tensor zeros = at::zeros({9});
  sign.compress(zeros, at::Tensor(), 1.0f, payload, {});
  EXPECT_EQ(payloadScale(payload, 0), 0.0f);
  EXPECT_EQ(payload.data[4].item<uint8_t>(), 0xFF);
  EXPECT_EQ(payload.data[5].item<uint8_t>(), 0x01);
  EXPECT_TRUE(at::equal(zeros, at::zeros({9})));
}

TEST(SignCompressorBitsTest, UnpackRoundTripsHandWrittenPayloads) {
  // A payload written by hand (not by compress) decodes as documented: LSB-first, bit 1 = +.
  SignCompressor sign(SignOptions{8, SignScale::kL1});
  const int64_t numel = 13;  // two chunks: 8 + 5 elements
  at::Tensor data = at::zeros({4 * 2 + 2}, at::kByte);
  const float scales[2] = {0.5f, 2.0f};
  std::memcpy(data.data_ptr<uint8_t>(), scales, sizeof(scales));
  data[8] = 0b10100101;
  data[9] = 0b00010110;
  Payload payload{data, numel, {}};
  at::Tensor out = at::zeros({numel});
  sign.decompressAdd(payload, out, 2.0f, {});
  std::vector<float> expected;
  for (int b = 0; b < 8; ++b) expected.push_back(((0b10100101 >> b) & 1) ? 1.0f : -1.0f);
  for (int b = 0; b < 5; ++b) expected.push_back(((0b00010110 >> b) & 1) ? 4.0f : -4.0f);
  EXPECT_EQ(toVector(out), expected);
}

TEST(SignCompressorClassTest, PerChunkScalesNeverLoseToOneScale) {
  const int64_t numel = 8192;
  // Magnitudes that vary across the tensor make one scale a poor fit.
  const at::Tensor x = gaussian(numel, 9) * at::exp(at::linspace(-3, 3, numel));
  double errors[2];
  const int64_t chunks[2] = {256, 0};
  for (int k = 0; k < 2; ++k) {
    at::Tensor residual = x.clone();
    Payload payload;
    SignCompressor(SignOptions{chunks[k], SignScale::kL1})
        .compress(residual, at::Tensor(), 1.0f, payload, {});
    errors[k] = residual.to(at::kDouble).pow(2).sum().item<double>();
  }
  EXPECT_LE(errors[0], errors[1]);
  EXPECT_LT(errors[0], 0.5 * errors[1]);
}

TEST(SignCompressorClassTest, OneSparseVectorSeparatesL1FromL2) {
  // specs §7/§8: for x = e_1, kL2 gives ||C(x) - x||^2 = 2 (1 - 1/sqrt(d)) ||x||^2 (~2x), kL1
  // gives (1 - 1/d) ||x||^2 < ||x||^2.
  const int64_t numel = 1024;
  const double d = double(numel);
  for (SignScale kind : {SignScale::kL1, SignScale::kL2}) {
    at::Tensor residual = at::zeros({numel});
    residual[5] = 3.0f;
    Payload payload;
    SignCompressor sign(SignOptions{0, kind});
    sign.compress(residual, at::Tensor(), 1.0f, payload, {});
    const double ratio = residual.to(at::kDouble).pow(2).sum().item<double>() / 9.0;
    if (kind == SignScale::kL1) {
      EXPECT_NEAR(ratio, 1.0 - 1.0 / d, 1e-5);
      EXPECT_LE(ratio, 1.0 - sign.deltaHint(numel, {}) + 1e-9);
    } else {
      EXPECT_NEAR(ratio, 2.0 * (1.0 - 1.0 / std::sqrt(d)), 1e-5);
      EXPECT_GT(ratio, 1.0);
      EXPECT_EQ(sign.deltaHint(numel, {}), 0.0);
    }
  }
}

TEST(SignCompressorClassTest, L1ErrorStaysWithinTheContractionHint) {
  SignCompressor sign(SignOptions{512, SignScale::kL1});
  for (uint64_t seed : {10, 11, 12}) {
    const at::Tensor x = gaussian(3000, seed).pow(3);  // heavy-tailed
    at::Tensor residual = x.clone();
    Payload payload;
    sign.compress(residual, at::Tensor(), 1.0f, payload, {});
    const double ratio = residual.pow(2).sum().item<double>() / x.pow(2).sum().item<double>();
    EXPECT_LE(ratio, 1.0 - sign.deltaHint(3000, {}));
  }
  EXPECT_DOUBLE_EQ(sign.deltaHint(3000, {}), 1.0 / 512);
  EXPECT_DOUBLE_EQ(sign.deltaHint(100, {}), 1.0 / 100);
}

TEST(SignCompressorClassTest, ErrorFeedbackRunningMeanConvergesAtRateOneOverT) {
  // Feeding the same g every step, sum_t Delta_t = T g - e_T: the running mean of the outputs
  // misses g by e_T / T, and e_T stays bounded, so the miss shrinks like 1/T.
  SignCompressor sign(SignOptions{64, SignScale::kL1});
  const int64_t numel = 1000;
  const at::Tensor gradient = gaussian(numel, 13);
  at::Tensor residual = at::zeros({numel});
  at::Tensor sum = at::zeros({numel}, at::kDouble);
  Payload payload;
  at::Tensor delta = at::zeros({numel});
  double missAt100 = 0;
  double maxResidual = 0;
  for (int t = 1; t <= 1000; ++t) {
    sign.compress(residual, gradient, 1.0f, payload, {});
    delta.zero_();
    sign.decompressAdd(payload, delta, 1.0f, {});
    sum += delta.to(at::kDouble);
    maxResidual = std::max(maxResidual, residual.norm().item<double>());
    if (t == 100) missAt100 = (sum / t - gradient.to(at::kDouble)).norm().item<double>();
  }
  const at::Tensor miss = sum / 1000 - gradient.to(at::kDouble);
  EXPECT_TRUE(at::allclose(miss, -residual.to(at::kDouble) / 1000, 1e-4, 1e-5));
  const double missAt1000 = miss.norm().item<double>();
  EXPECT_LE(missAt1000, maxResidual / 1000 * 1.01);
  EXPECT_LT(missAt1000, missAt100 / 4);
  EXPECT_LT(maxResidual, 10 * gradient.norm().item<double>());
}

TEST(SignCompressorApiTest, SizesAlignmentAndErrors) {
  SignCompressor chunked(SignOptions{2048, SignScale::kL1});
  SignCompressor whole(SignOptions{0, SignScale::kL1});
  EXPECT_FALSE(chunked.isSummable());
  EXPECT_EQ(chunked.name(), "sign");
  EXPECT_EQ(chunked.payloadBytes(0, {}), 0);
  EXPECT_EQ(chunked.payloadBytes(1, {}), 4 + 1);
  EXPECT_EQ(chunked.payloadBytes(4097, {}), 3 * 4 + 513);
  EXPECT_EQ(whole.payloadBytes(4097, {}), 4 + 513);
  EXPECT_EQ(chunked.maxPayloadBytes(4097, {}), chunked.payloadBytes(4097, {}));
  EXPECT_EQ(chunked.alignment({}), 2048);
  EXPECT_EQ(whole.alignment({}), 8);
  EXPECT_THROW(SignCompressor(SignOptions{12, SignScale::kL1}), InvalidArgument);
  EXPECT_THROW(SignCompressor(SignOptions{-8, SignScale::kL1}), InvalidArgument);

  at::Tensor residual = gaussian(100, 14);
  Payload payload;
  chunked.compress(residual, at::Tensor(), 1.0f, payload, {});
  at::Tensor wrong = at::zeros({99});
  EXPECT_THROW(chunked.decompressAdd(payload, wrong, 1.0f, {}), InvalidArgument);
  // A payload of another chunk size has another byte count.
  at::Tensor out = at::zeros({4097});
  at::Tensor large = gaussian(4097, 15);
  whole.compress(large, at::Tensor(), 1.0f, payload, {});
  EXPECT_THROW(chunked.decompressAdd(payload, out, 1.0f, {}), InvalidArgument);
  EXPECT_THROW(chunked.compress(residual, at::zeros({3}), 1.0f, payload, {}), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::compressors

#include "compressors/cast_compressor.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/error.h"
#include "tests/compressors/test_tensors.h"

namespace thinwire::compressors {
namespace {

using test::gaussian;

const std::vector<int64_t> kSizes = {0, 1, 7, 8, 9, 1000, 4099};

class CastCompressorTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(CastCompressorTest, PayloadIsTheRoundedSumAndResidualItsRoundingError) {
  CastCompressor cast(GetParam());
  for (int64_t numel : kSizes) {
    at::Tensor residual = gaussian(numel, 1) * 3;
    const at::Tensor addend = gaussian(numel, 2);
    const at::Tensor p = residual + 0.5 * addend;
    // ATen's own conversion (round to nearest even) is the reference.
    const at::Tensor expected = p.to(GetParam());
    Payload payload;
    cast.compress(residual, addend, 0.5f, payload, {});
    EXPECT_EQ(payload.numel, numel);
    ASSERT_EQ(payload.data.scalar_type(), GetParam());
    EXPECT_TRUE(at::equal(payload.data, expected)) << "numel " << numel;
    EXPECT_TRUE(at::equal(residual, p - expected.to(at::kFloat))) << "numel " << numel;
    EXPECT_EQ(payload.wireBytes(), cast.payloadBytes(numel, {}));
    EXPECT_EQ(cast.payloadBytes(numel, {}), 2 * numel);
  }
}

TEST_P(CastCompressorTest, MatchesAtenAcrossTheWholeRange) {
  // Magnitudes from 1e-9 (float16 subnormals and flush to zero) to 1e5 (float16 overflow to
  // inf) with both signs; every size exercises the vector body and the scalar tail.
  CastCompressor cast(GetParam());
  for (int64_t numel : {5, 8, 13, 4096 + 3}) {
    at::Generator generator = at::detail::createCPUGenerator(uint64_t(numel));
    const at::Tensor exponent = at::rand({numel}, generator) * 14 - 9;
    const at::Tensor sign = at::where(at::rand({numel}, generator) < 0.5, -1.0, 1.0);
    at::Tensor residual = (sign * at::pow(10.0, exponent)).to(at::kFloat);
    const at::Tensor p = residual.clone();
    const at::Tensor expected = p.to(GetParam());
    Payload payload;
    cast.compress(residual, at::Tensor(), 1.0f, payload, {});
    EXPECT_TRUE(at::equal(payload.data, expected)) << "numel " << numel;
    EXPECT_TRUE(at::equal(residual, p - expected.to(at::kFloat))) << "numel " << numel;
    at::Tensor out = at::zeros({numel});
    cast.decompressAdd(payload, out, 1.0f, {});
    EXPECT_TRUE(at::equal(out, expected.to(at::kFloat))) << "numel " << numel;
  }
}

TEST_P(CastCompressorTest, DecompressAddAccumulatesScaledPayload) {
  CastCompressor cast(GetParam());
  for (int64_t numel : kSizes) {
    at::Tensor residual = gaussian(numel, 3);
    Payload payload;
    cast.compress(residual, at::Tensor(), 1.0f, payload, {});
    at::Tensor out = gaussian(numel, 4);
    const at::Tensor expected = out + 0.75 * payload.data.to(at::kFloat);
    cast.decompressAdd(payload, out, 0.75f, {});
    EXPECT_TRUE(at::allclose(out, expected, 1e-6, 1e-7)) << "numel " << numel;
  }
}

TEST_P(CastCompressorTest, ErrorFeedbackLosesNothingOverTime) {
  // sum_t decode(payload_t) = T * g - e_T, and |e_T| stays within one rounding step of g.
  CastCompressor cast(GetParam());
  const at::Tensor gradient = gaussian(257, 5);
  at::Tensor residual = at::zeros({257});
  at::Tensor decoded = at::zeros({257}, at::kDouble);
  const int steps = 200;
  Payload payload;
  for (int t = 0; t < steps; ++t) {
    cast.compress(residual, gradient, 1.0f, payload, {});
    decoded += payload.data.to(at::kDouble);
  }
  const at::Tensor mean = decoded / steps;
  const at::Tensor expected = gradient.to(at::kDouble) - residual.to(at::kDouble) / steps;
  EXPECT_TRUE(at::allclose(mean, expected, 1e-5, 1e-6));
  const double relative = 1.0 - cast.deltaHint(257, {});
  const double bound = 2 * std::sqrt(relative) * gradient.abs().max().item<double>();
  EXPECT_LE(residual.abs().max().item<double>(), bound);
  EXPECT_LE((mean - gradient.to(at::kDouble)).abs().max().item<double>(), bound / steps * 1.01);
}

TEST_P(CastCompressorTest, ContractionHintBoundsTheMeasuredError) {
  CastCompressor cast(GetParam());
  const at::Tensor x = gaussian(10000, 6);
  at::Tensor residual = x.clone();
  Payload payload;
  cast.compress(residual, at::Tensor(), 1.0f, payload, {});
  const double error = residual.pow(2).sum().item<double>() / x.pow(2).sum().item<double>();
  EXPECT_LE(error, 1.0 - cast.deltaHint(10000, {}));
  EXPECT_GT(error, 0.0);
}

TEST_P(CastCompressorTest, IsSummableAndRejectsAForeignPayload) {
  CastCompressor cast(GetParam());
  EXPECT_TRUE(cast.isSummable());
  Payload foreign{at::zeros({4}), 4, {}};
  at::Tensor out = at::zeros({4});
  EXPECT_THROW(cast.decompressAdd(foreign, out, 1.0f, {}), InvalidArgument);
  at::Tensor doubles = at::zeros({4}, at::kDouble);
  Payload payload;
  EXPECT_THROW(cast.compress(doubles, at::Tensor(), 1.0f, payload, {}), InvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Dtypes,
                         CastCompressorTest,
                         ::testing::Values(at::kHalf, at::kBFloat16),
                         [](const ::testing::TestParamInfo<at::ScalarType>& info) {
                           return std::string(info.param == at::kHalf ? "Fp16" : "Bf16");
                         });

TEST(CastCompressorTieTest, HalfwayValuesRoundToEven) {
  // Float16 has 10 stored mantissa bits: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 and
  // rounds to 1 (even); 1 + 3 * 2^-11 rounds up to 1 + 2^-9. Bfloat16 has 7: the same with
  // 2^-8 and 2^-7.
  struct Case {
    at::ScalarType dtype;
    int shift;
  };
  for (const Case& c : {Case{at::kHalf, 11}, Case{at::kBFloat16, 8}}) {
    const float half = std::ldexp(1.0f, -c.shift);
    at::Tensor residual = at::tensor({1.0f + half, 1.0f + 3 * half, -(1.0f + half)});
    Payload payload;
    CastCompressor(c.dtype).compress(residual, at::Tensor(), 1.0f, payload, {});
    const at::Tensor decoded = payload.data.to(at::kFloat);
    EXPECT_EQ(decoded[0].item<float>(), 1.0f);
    EXPECT_EQ(decoded[1].item<float>(), 1.0f + 4 * half);
    EXPECT_EQ(decoded[2].item<float>(), -1.0f);
    EXPECT_EQ(residual[0].item<float>(), half);
    EXPECT_EQ(residual[1].item<float>(), -half);
  }
}

TEST(CastCompressorNameTest, NamesAndDtypes) {
  EXPECT_EQ(CastCompressor(at::kHalf).name(), "fp16");
  EXPECT_EQ(CastCompressor(at::kBFloat16).name(), "bf16");
  EXPECT_THROW(CastCompressor(at::kFloat), InvalidArgument);
  EXPECT_THROW(CastCompressor(at::kDouble), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::compressors

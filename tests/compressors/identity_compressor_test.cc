#include "compressors/identity_compressor.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <vector>

#include "base/error.h"
#include "tests/compressors/test_tensors.h"

namespace thinwire::compressors {
namespace {

using test::gaussian;

const std::vector<int64_t> kSizes = {0, 1, 7, 8, 9, 1000, 4099};

TEST(IdentityCompressorTest, SendsResidualPlusScaledAddendAndZeroesResidual) {
  IdentityCompressor identity;
  for (int64_t numel : kSizes) {
    at::Tensor residual = gaussian(numel, 1);
    const at::Tensor addend = gaussian(numel, 2);
    const at::Tensor expected = residual + 0.5 * addend;
    Payload payload;
    identity.compress(residual, addend, 0.5f, payload, {});
    EXPECT_EQ(payload.numel, numel);
    ASSERT_TRUE(payload.data.defined());
    EXPECT_EQ(payload.data.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(payload.data, expected)) << "numel " << numel;
    EXPECT_TRUE(at::equal(residual, at::zeros({numel}))) << "numel " << numel;
    EXPECT_EQ(payload.wireBytes(), identity.payloadBytes(numel, {}));
    EXPECT_EQ(identity.payloadBytes(numel, {}), 4 * numel);
  }
}

TEST(IdentityCompressorTest, WithoutAddendSendsTheResidual) {
  IdentityCompressor identity;
  at::Tensor residual = gaussian(37, 3);
  const at::Tensor expected = residual.clone();
  Payload payload;
  identity.compress(residual, at::Tensor(), 1.0f, payload, {});
  EXPECT_TRUE(at::equal(payload.data, expected));
  EXPECT_TRUE(at::equal(residual, at::zeros({37})));
}

TEST(IdentityCompressorTest, DecompressAddAccumulatesScaledPayload) {
  IdentityCompressor identity;
  for (int64_t numel : kSizes) {
    at::Tensor residual = gaussian(numel, 4);
    const at::Tensor sent = residual.clone();
    Payload payload;
    identity.compress(residual, at::Tensor(), 1.0f, payload, {});
    at::Tensor out = gaussian(numel, 5);
    const at::Tensor expected = out + (-0.25) * sent;
    identity.decompressAdd(payload, out, -0.25f, {});
    EXPECT_TRUE(at::allclose(out, expected, 1e-6, 1e-7)) << "numel " << numel;
  }
}

TEST(IdentityCompressorTest, SummedPayloadsDecodeToTheSumOfInputs) {
  IdentityCompressor identity;
  ASSERT_TRUE(identity.isSummable());
  at::Tensor first = gaussian(100, 6);
  at::Tensor second = gaussian(100, 7);
  const at::Tensor expected = first + second;
  Payload a;
  Payload b;
  identity.compress(first, at::Tensor(), 1.0f, a, {});
  identity.compress(second, at::Tensor(), 1.0f, b, {});
  Payload sum{a.data + b.data, 100, {}};
  at::Tensor out = at::zeros({100});
  identity.decompressAdd(sum, out, 1.0f, {});
  EXPECT_TRUE(at::equal(out, expected));
}

TEST(IdentityCompressorTest, ReusesThePayloadStorage) {
  IdentityCompressor identity;
  at::Tensor residual = gaussian(64, 8);
  Payload payload;
  identity.compress(residual, at::Tensor(), 1.0f, payload, {});
  const void* storage = payload.data.data_ptr();
  residual = gaussian(64, 9);
  const at::Tensor expected = residual.clone();
  identity.compress(residual, at::Tensor(), 1.0f, payload, {});
  EXPECT_EQ(payload.data.data_ptr(), storage);
  EXPECT_TRUE(at::equal(payload.data, expected));
}

TEST(IdentityCompressorTest, RejectsWrongDtypesAndSizes) {
  IdentityCompressor identity;
  Payload payload;
  at::Tensor doubles = at::zeros({4}, at::kDouble);
  EXPECT_THROW(identity.compress(doubles, at::Tensor(), 1.0f, payload, {}), InvalidArgument);
  at::Tensor residual = at::zeros({4});
  EXPECT_THROW(identity.compress(residual, at::zeros({5}), 1.0f, payload, {}), InvalidArgument);
  at::Tensor strided = at::zeros({4, 4}).t();
  EXPECT_THROW(identity.compress(strided, at::Tensor(), 1.0f, payload, {}), InvalidArgument);
  identity.compress(residual, at::Tensor(), 1.0f, payload, {});
  at::Tensor wrongSize = at::zeros({5});
  EXPECT_THROW(identity.decompressAdd(payload, wrongSize, 1.0f, {}), InvalidArgument);
  Payload truncated{at::zeros({3}), 4, {}};
  EXPECT_THROW(identity.decompressAdd(truncated, residual, 1.0f, {}), InvalidArgument);
}

TEST(IdentityCompressorTest, IsExactForTheContractionBound) {
  IdentityCompressor identity;
  EXPECT_EQ(identity.deltaHint(10, {}), 1.0);
  EXPECT_EQ(identity.name(), "identity");
}

}  // namespace
}  // namespace thinwire::compressors

#include "qat/hadamard.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "base/error.h"
#include "tests/qat/qat_reference.h"

namespace thinwire::qat {
namespace {

using testing::blockDiagonalHadamard;
using testing::denseHadamard;
using testing::gaussian;

TEST(HadamardTest, TransformOfIdentityIsTheSylvesterMatrix) {
  const at::Tensor h = blockHadamard(at::eye(128, at::kFloat)).to(at::kDouble);
  EXPECT_LT((h - denseHadamard(128)).abs().max().item<double>(), 1e-7);
  // The +-1 pattern: H[i][j] sqrt(128) = (-1)^popcount(i & j), exactly after rounding.
  const at::Tensor signs = (h * std::sqrt(128.0)).round();
  for (int64_t i = 0; i < 128; i += 7) {
    for (int64_t j = 0; j < 128; j += 5) {
      const double expected = __builtin_popcountll(static_cast<uint64_t>(i & j)) % 2 ? -1 : 1;
      EXPECT_EQ(signs[i][j].item<double>(), expected) << i << "," << j;
    }
  }
}

TEST(HadamardTest, IsSymmetricAndOrthogonal) {
  const at::Tensor h = blockHadamard(at::eye(128, at::kFloat));
  EXPECT_TRUE(at::equal(h, h.t()));
  EXPECT_LT((at::matmul(h, h.t()) - at::eye(128)).abs().max().item<float>(), 1e-6);
}

TEST(HadamardTest, MatchesTheDenseBlockDiagonalProductAndKeepsRms) {
  const at::Tensor x = gaussian({5, 3, 512}, 1);
  const at::Tensor reference = at::matmul(x.to(at::kDouble), blockDiagonalHadamard(512));
  const at::Tensor u = blockHadamard(x);
  EXPECT_LT((u.to(at::kDouble) - reference).abs().max().item<double>(), 1e-5);
  const at::Tensor rmsIn = x.pow(2).mean(-1).sqrt();
  const at::Tensor rmsOut = u.pow(2).mean(-1).sqrt();
  EXPECT_LT(((rmsOut - rmsIn) / rmsIn).abs().max().item<float>(), 1e-5);
  EXPECT_LT((blockHadamard(u) - x).abs().max().item<float>(), 1e-5);  // an involution
}

TEST(HadamardTest, GradientIsTheTransposedTransform) {
  const at::Tensor x = gaussian({4, 256}, 2).requires_grad_(true);
  const at::Tensor g = gaussian({4, 256}, 3);
  (blockHadamard(x) * g).sum().backward();
  const at::Tensor expected = at::matmul(g.to(at::kDouble), blockDiagonalHadamard(256).t());
  EXPECT_LT((x.grad().to(at::kDouble) - expected).abs().max().item<double>(), 1e-5);
}

// The vector butterflies (Note [Vector butterflies]) reproduce the stage loop bit for bit, in
// place and out of place, for values with every kind of rounding (wide dynamic range, ties).
TEST(HadamardTest, FastTransformEqualsTheStageLoopBitForBit) {
  const at::Tensor x = gaussian({7, 384}, 4) * at::exp(gaussian({7, 384}, 5) * 4);
  at::Tensor expected = x.clone();
  float* e = expected.data_ptr<float>();
  for (int64_t b = 0; b < expected.numel(); b += 128) testing::scalarFwhtBlock(e + b);

  at::Tensor outOfPlace = at::full_like(x, -1.0f);
  fwhtBlocks(x.data_ptr<float>(), outOfPlace.data_ptr<float>(), x.numel());
  EXPECT_TRUE(at::equal(outOfPlace, expected));
  at::Tensor inPlace = x.clone();
  fwhtBlocksInPlace(inPlace.data_ptr<float>(), inPlace.numel());
  EXPECT_TRUE(at::equal(inPlace, expected));
  EXPECT_TRUE(at::equal(blockHadamard(x), expected));
  // Every input position reaches every output of its block with the right sign.
  const at::Tensor h = blockHadamard(at::eye(128, at::kFloat));
  at::Tensor identity = at::eye(128, at::kFloat);
  for (int64_t i = 0; i < 128; ++i) testing::scalarFwhtBlock(identity.data_ptr<float>() + i * 128);
  EXPECT_TRUE(at::equal(h, identity));
}

TEST(HadamardTest, RejectsRowsThatAreNotWholeBlocks) {
  EXPECT_THROW(blockHadamard(at::zeros({2, 100})), InvalidArgument);
  EXPECT_THROW(blockHadamard(at::zeros({2, 192})), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::qat

#include "qat/quantizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <cmath>
#include <set>

#include "base/error.h"
#include "qat/hadamard.h"
#include "tests/qat/qat_reference.h"

namespace thinwire::qat {
namespace {

using testing::blockDiagonalHadamard;
using testing::gaussian;
using testing::optimalGridMse;

QuantizerOptions quest(int64_t bits, Variant variant = Variant::kFull) {
  QuantizerOptions options;
  options.bits = bits;
  options.variant = variant;
  return options;
}

QuantizerOptions ste(int64_t bits) {
  QuantizerOptions options;
  options.bits = bits;
  options.hadamard = false;
  options.gradient = Gradient::kStraightThrough;
  return options;
}

double normalisedMse(const at::Tensor& q, const at::Tensor& x) {
  const at::Tensor xd = x.to(at::kDouble);
  return ((q.to(at::kDouble) - xd).pow(2).mean() / xd.pow(2).mean()).item<double>();
}

int64_t levelsOf(int64_t bits) { return int64_t{1} << bits; }

// Spec §3.1.2: normalised MSE on N(0, 1) rows of length 4096 against the optimum of the grid,
// found here by a numeric search over the clip (not from the quantizer's constants).
TEST(QuantizerTest, GaussianMseIsWithinOnePercentOfTheOptimum) {
  const at::Tensor x = gaussian({1000, 4096}, 11);
  for (int64_t bits : {1, 2, 3, 4, 8}) {
    const double optimum = optimalGridMse(levelsOf(bits));
    const double mse = normalisedMse(fakeQuantize(x, quest(bits)), x);
    const double tolerance = bits == 8 ? 0.02 : 0.01;
    EXPECT_NEAR(mse / optimum, 1.0, tolerance) << bits << " bits: " << mse << " vs " << optimum;
  }
  // Without the rotation Gaussian rows stay Gaussian: STE's grid is as good.
  EXPECT_NEAR(normalisedMse(fakeQuantize(x, ste(4)), x) / optimalGridMse(16), 1.0, 0.01);
}

TEST(QuantizerTest, FirstScaleIsTheMeanAbsoluteValueOfAGaussian) {
  // QuEST's constant is sqrt(2/pi) to 2.1e-9 (it came out of a numeric fit), not to 1e-12.
  EXPECT_NEAR(gaussianOptimalScale(1), std::sqrt(2.0 / M_PI), 1e-8);
}

// Spec §3.1.7: on heavy-tailed rows the rotation brings the MSE back near the Gaussian optimum.
TEST(QuantizerTest, HadamardGaussianisesLaplaceRows) {
  at::Generator generator = at::detail::createCPUGenerator(5);
  const at::Tensor uniform = at::rand({500, 1024}, generator).clamp_min(1e-12);
  const at::Tensor sign = at::rand({500, 1024}, generator).gt(0.5).to(at::kFloat) * 2 - 1;
  const at::Tensor x = -at::log(uniform) * sign;
  const double optimum = optimalGridMse(16);
  EXPECT_LT(normalisedMse(fakeQuantize(x, quest(4)), x), 1.1 * optimum);
  EXPECT_GT(normalisedMse(fakeQuantize(x, ste(4)), x), 2.0 * optimum);
}

// Spec §3.1.3.
TEST(QuantizerTest, OutputsLieOnTheCentredGridWithoutZero) {
  const at::Tensor x = gaussian({64, 256}, 12);
  const at::Tensor u = at::matmul(x.to(at::kDouble), blockDiagonalHadamard(256));
  for (int64_t bits : {1, 2, 3, 4, 8}) {
    const QuantizedRows rows = quantizeRows(x, quest(bits));
    const int64_t half = levelsOf(bits) / 2;
    EXPECT_GE(rows.codes.min().item<int64_t>(), -half);
    EXPECT_LE(rows.codes.max().item<int64_t>(), half - 1);
    const at::Tensor values = dequantizeRows(rows.codes, rows.step);
    EXPECT_EQ(values.eq(0).sum().item<int64_t>(), 0);
    for (int64_t r = 0; r < 64; r += 9) {
      EXPECT_LE(std::get<0>(at::_unique(values[r])).numel(), levelsOf(bits));
    }
    // Independent float64 reference of the forward: c = alpha RMS + 1e-8, centred grid.
    const at::Tensor sigma = u.pow(2).mean(-1, true).sqrt();
    const at::Tensor clip = gaussianOptimalScale(bits) * sigma + 1e-8;
    const at::Tensor step = 2 * clip / static_cast<double>(levelsOf(bits) - 1);
    const at::Tensor level = at::round(at::clamp(u, -clip, clip) / step + 0.5);
    const at::Tensor reference = (level - 0.5) * step;
    EXPECT_LT(((rows.step.to(at::kDouble) - step.squeeze(1)) / step.squeeze(1))
                  .abs()
                  .max()
                  .item<double>(),
              1e-5);
    const double mismatched = ((values.to(at::kDouble) - reference).abs() > 1e-4 * step)
                                  .to(at::kDouble)
                                  .mean()
                                  .item<double>();
    EXPECT_LT(mismatched, 1e-3) << bits << " bits";  // only float ties at cell borders
    // Full variant: the same values rotated back.
    const at::Tensor full = fakeQuantize(x, quest(bits)).to(at::kDouble);
    const at::Tensor rotatedBack =
        at::matmul(values.to(at::kDouble), blockDiagonalHadamard(256).t());
    EXPECT_LT((full - rotatedBack).abs().max().item<double>(), 1e-5);
    if (bits == 1) {
      // b = 1 gives +-alpha_1 RMS = +-sqrt(2/pi) RMS.
      const at::Tensor expected = std::sqrt(2.0 / M_PI) * sigma;
      EXPECT_LT(((values.abs().to(at::kDouble) - expected) / expected).abs().max().item<double>(),
                1e-5);
    }
  }
}

TEST(QuantizerTest, AllZeroRowsGiveMinusHalfAStep) {
  for (int64_t bits : {1, 4}) {
    const at::Tensor q = fakeQuantize(at::zeros({2, 128}), quest(bits, Variant::kHalf));
    ASSERT_TRUE(at::isfinite(q).all().item<bool>());
    const double step = 2e-8 / static_cast<double>(levelsOf(bits) - 1);
    EXPECT_NEAR(q.max().item<double>(), -step / 2, 1e-3 * step);
    EXPECT_NEAR(q.min().item<double>(), -step / 2, 1e-3 * step);
  }
}

// Spec §1.10.3: ties go to the even level. u / step + 1/2 = 1/2 (u = 0) rounds to 0, giving
// -step/2 where half-away-from-zero rounding gives +step/2; u = -step (t = -1/2) rounds to -0,
// giving -step/2 where half-away gives -3 step/2.
TEST(QuantizerTest, RoundsHalfToEven) {
  at::Tensor x = at::ones({1, 4096});
  x.narrow(1, 0, 2048).mul_(-1);
  x[0][10] = 0.0f;
  // Find v with v == -step(row containing v) exactly; the dependence on v is tiny.
  float v = -0.5f;
  bool converged = false;
  for (int i = 0; i < 50 && !converged; ++i) {
    x[0][20] = v;
    const float step = quantizeRows(x, ste(2)).step[0].item<float>();
    converged = (-step == v);
    v = -step;
  }
  ASSERT_TRUE(converged);
  const QuantizedRows rows = quantizeRows(x, ste(2));
  const float step = rows.step[0].item<float>();
  const at::Tensor values = dequantizeRows(rows.codes, rows.step);
  EXPECT_EQ(values[0][10].item<float>(), -step / 2);
  EXPECT_EQ(values[0][20].item<float>(), -step / 2);
  EXPECT_EQ(rows.codes[0][10].item<int64_t>(), -1);
}

// Spec §3.1.4: fraction of rotated Gaussian coordinates beyond the clip.
TEST(QuantizerTest, ClipFractionsMatchTheGaussianTails) {
  const at::Tensor x = gaussian({500, 4096}, 13);
  const at::Tensor u = blockHadamard(x);
  const double expected[] = {0, 0.4249, 0.1353, 0.04026, 0.01194};
  for (int64_t bits = 1; bits <= 4; ++bits) {
    const QuantizedRows rows = quantizeRows(x, quest(bits));
    const at::Tensor clip = rows.step.unsqueeze(1) * (levelsOf(bits) - 1) / 2.0;
    const double fraction = (u.abs() > clip).to(at::kDouble).mean().item<double>();
    EXPECT_NEAR(fraction / expected[bits], 1.0, 0.03) << bits << " bits";
  }
}

// Spec §3.1.5: masked fractions, and the mask is the trust rule |q - u| <= step / 2.
TEST(QuantizerTest, TrustMaskFractionsAndEquivalence) {
  const at::Tensor x = gaussian({1000, 4096}, 14);
  const at::Tensor u = blockHadamard(x);
  struct Case {
    int64_t bits;
    double maskScale;
    double expected;
    double tolerance;
  };
  const Case cases[] = {{1, 2.0, 0.11054, 0.05},  {1, 0.0, 0.2996, 0.05},
                        {2, 0.0, 0.04644, 0.05},  {3, 0.0, 0.019074, 0.05},
                        {4, 0.0, 0.007329, 0.05}, {8, 0.0, 0.0000963, 0.20}};
  for (const Case& c : cases) {
    QuantizerOptions options = quest(c.bits);
    options.maskScale = c.maskScale;
    const QuantizedRows rows = quantizeRows(x, options);
    const double masked = 1.0 - rows.mask.to(at::kDouble).mean().item<double>();
    EXPECT_NEAR(masked / c.expected, 1.0, c.tolerance) << c.bits << " bits, s " << c.maskScale;
    const at::Tensor step = rows.step.unsqueeze(1);
    const at::Tensor clip = step * (levelsOf(c.bits) - 1) / 2.0;
    // Every in-range coordinate keeps its gradient.
    EXPECT_TRUE(rows.mask.masked_select(u.abs() <= clip).all().item<bool>());
    if (c.bits >= 2 && c.maskScale == 0.0) {
      const at::Tensor q = dequantizeRows(rows.codes, rows.step);
      const at::Tensor trust = (q - u).abs() <= step / 2;
      const double differ = trust.ne(rows.mask).to(at::kDouble).mean().item<double>();
      EXPECT_LT(differ, 1e-5) << c.bits << " bits";  // float ties at the threshold only
    }
  }
}

// Spec §3.1.8.
TEST(QuantizerTest, BackwardIsTheMaskedRotatedGradient) {
  const at::Tensor x0 = gaussian({6, 256}, 15) * 3;
  const at::Tensor g = gaussian({6, 256}, 16);
  const at::Tensor h = blockDiagonalHadamard(256);
  for (int64_t bits : {1, 2, 4}) {
    const at::Tensor mask = quantizeRows(x0, quest(bits)).mask.to(at::kDouble);
    ASSERT_GT((1 - mask).sum().item<double>(), 0) << "the test needs masked coordinates";
    for (Variant variant : {Variant::kFull, Variant::kHalf}) {
      const at::Tensor x = x0.clone().requires_grad_(true);
      (fakeQuantize(x, quest(bits, variant)) * g).sum().backward();
      const at::Tensor gd = g.to(at::kDouble);
      const at::Tensor expected = variant == Variant::kFull
                                      ? at::matmul(at::matmul(gd, h) * mask, h.t())
                                      : at::matmul(gd * mask, h.t());
      EXPECT_LT((x.grad().to(at::kDouble) - expected).abs().max().item<double>(), 1e-5)
          << bits << " bits, variant " << static_cast<int>(variant);
    }
  }
  const at::Tensor x = x0.clone().requires_grad_(true);
  (fakeQuantize(x, ste(2)) * g).sum().backward();
  EXPECT_TRUE(at::equal(x.grad(), g));
}

// The vector row kernel (Note [Vector row kernel]) against the element-by-element reference:
// values, codes, steps, masks and the backward bit for bit, for every width, both variants, row
// counts that are not multiples of four, exact ties, zero rows and STE rows of odd length.
TEST(QuantizerTest, RowKernelEqualsTheScalarReferenceBitForBit) {
  for (int64_t bits = 1; bits <= kMaxBits; ++bits) {
    for (int64_t rows : {1, 3, 4, 9}) {
      at::Tensor x = gaussian({rows, 256}, 20 + bits) * at::exp(gaussian({rows, 256}, 40) * 2);
      if (rows > 1) x[1].zero_();
      const double alpha = gaussianOptimalScale(bits);
      const double maskScale = defaultMaskScale(bits);
      const testing::ScalarQuestRows expected =
          testing::scalarQuestRows(x, bits, true, alpha, maskScale);
      const QuantizedRows got = quantizeRows(x, quest(bits));
      ASSERT_TRUE(at::equal(got.codes, expected.codes)) << bits << " bits, " << rows << " rows";
      ASSERT_TRUE(at::equal(got.step, expected.step)) << bits << " bits, " << rows << " rows";
      ASSERT_TRUE(at::equal(got.mask, expected.mask)) << bits << " bits, " << rows << " rows";
      at::Tensor back = expected.values.clone();
      for (int64_t b = 0; b < back.numel(); b += 128) {
        testing::scalarFwhtBlock(back.data_ptr<float>() + b);
      }
      for (Variant variant : {Variant::kFull, Variant::kHalf}) {
        const at::Tensor leaf = x.clone().requires_grad_(true);
        const at::Tensor q = fakeQuantize(leaf, quest(bits, variant));
        ASSERT_TRUE(at::equal(q, variant == Variant::kFull ? back : expected.values))
            << bits << " bits, " << rows << " rows, variant " << static_cast<int>(variant);
        // Backward: Full ((G H) . M) H, Half (G . M) H, with the stage-loop transform.
        const at::Tensor g = gaussian({rows, 256}, 60 + rows);
        q.backward(g);
        at::Tensor reference = g.clone();
        float* p = reference.data_ptr<float>();
        const bool* m = expected.mask.data_ptr<bool>();
        for (int64_t b = 0; b < reference.numel(); b += 128) {
          if (variant == Variant::kFull) testing::scalarFwhtBlock(p + b);
          for (int64_t j = b; j < b + 128; ++j) p[j] = m[j] ? p[j] : 0.0f;
          testing::scalarFwhtBlock(p + b);
        }
        ASSERT_TRUE(at::equal(leaf.grad(), reference))
            << bits << " bits, variant " << static_cast<int>(variant);
      }
    }
  }
  // Exact ties u / step + 1/2 = k + 1/2 round to even: rows on the grid's midpoints.
  at::Tensor ties = at::arange(-12, 12, at::kFloat).repeat({4, 16}) * 0.25f;
  const QuantizedRows tieRows = quantizeRows(ties, ste(4));
  const testing::ScalarQuestRows tieExpected =
      testing::scalarQuestRows(ties, 4, false, gaussianOptimalScale(4), defaultMaskScale(4));
  EXPECT_TRUE(at::equal(tieRows.codes, tieExpected.codes));
  EXPECT_TRUE(at::equal(fakeQuantize(ties, ste(4)), tieExpected.values));
  // STE rows of odd length go through the vector body and the scalar tail.
  const at::Tensor odd = gaussian({5, 37}, 70);
  EXPECT_TRUE(at::equal(
      fakeQuantize(odd, ste(3)),
      testing::scalarQuestRows(odd, 3, false, gaussianOptimalScale(3), defaultMaskScale(3))
          .values));
}

// Spec §3.1.10: bf16 inputs are quantized with fp32 arithmetic.
TEST(QuantizerTest, ReducedPrecisionInputsUseFp32Inside) {
  const at::Tensor x = (gaussian({256, 512}, 17) * 2).to(at::kBFloat16);
  const at::Tensor wide = x.to(at::kFloat);
  for (int64_t bits : {2, 4, 8}) {
    const QuantizedRows narrow = quantizeRows(x, quest(bits));
    const QuantizedRows reference = quantizeRows(wide, quest(bits));
    EXPECT_TRUE(at::equal(narrow.codes, reference.codes));
    EXPECT_TRUE(at::equal(narrow.step, reference.step));
    EXPECT_TRUE(at::equal(narrow.mask, reference.mask));
    // No in-range coordinate loses its gradient (bf16 math would flip some).
    const at::Tensor u = at::matmul(wide.to(at::kDouble), blockDiagonalHadamard(512));
    const at::Tensor clip = narrow.step.to(at::kDouble).unsqueeze(1) * (levelsOf(bits) - 1) / 2.0;
    const at::Tensor inRange = u.abs() <= clip * (1 - 1e-6);
    EXPECT_EQ(narrow.mask.logical_not().logical_and(inRange).sum().item<int64_t>(), 0);
    const at::Tensor q = fakeQuantize(x, quest(bits));
    EXPECT_EQ(q.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(q, fakeQuantize(wide, quest(bits)).to(at::kBFloat16)));
  }
}

TEST(QuantizerTest, LsqMatchesItsGradientRules) {
  const at::Tensor x0 = gaussian({4, 256}, 18);
  const at::Tensor g = gaussian({4, 256}, 19);
  const int64_t bits = 4;
  const double s0 = 0.2;
  const at::Tensor x = x0.clone().requires_grad_(true);
  const at::Tensor step = at::full({1}, s0).requires_grad_(true);
  const at::Tensor q = lsqQuantize(x, step, bits);
  (q * g).sum().backward();
  const at::Tensor xd = x0.to(at::kDouble);
  const double bound = 7.5;
  const at::Tensor t = xd / s0;
  const at::Tensor inside = (t.abs() <= bound).to(at::kDouble);
  const at::Tensor level = at::round(t.clamp(-bound, bound) + 0.5);
  EXPECT_LT((q.to(at::kDouble) - (level - 0.5) * s0).abs().max().item<double>(), 1e-6);
  EXPECT_LT((x.grad().to(at::kDouble) - g.to(at::kDouble) * inside).abs().max().item<double>(),
            1e-6);
  const at::Tensor dqds = inside * ((level - 0.5) - t) + (1 - inside) * t.sign() * bound;
  const double scale = 1.0 / std::sqrt(static_cast<double>(x0.numel()) * 7.0);
  const double expected = scale * (dqds * g.to(at::kDouble)).sum().item<double>();
  EXPECT_NEAR(step.grad().item<double>(), expected, 1e-4 * std::abs(expected) + 1e-6);
}

TEST(QuantizerTest, RejectsBadArguments) {
  EXPECT_THROW(fakeQuantize(at::zeros({2, 128}), quest(0)), InvalidArgument);
  EXPECT_THROW(fakeQuantize(at::zeros({2, 128}), quest(9)), InvalidArgument);
  EXPECT_THROW(fakeQuantize(at::zeros({2, 100}), quest(4)), InvalidArgument);
  EXPECT_NO_THROW(fakeQuantize(at::zeros({2, 100}), ste(4)));
  EXPECT_THROW(fakeQuantize(at::zeros({2, 128}, at::kLong), quest(4)), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::qat

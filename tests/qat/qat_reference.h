// Independent references for the qat tests: a dense Hadamard matrix built from its definition,
// a dense block-diagonal rotation in float64, and the MSE-optimal clip of a centred uniform grid
// on N(0, 1) found by a numeric search over the scale (closed-form Gaussian integrals per cell).
// Nothing here calls qat code.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace thinwire::qat::testing {

inline at::Tensor gaussian(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));
}

// H[i][j] = (-1)^popcount(i & j) / sqrt(n), float64.
inline at::Tensor denseHadamard(int64_t n) {
  at::Tensor h = at::empty({n, n}, at::kDouble);
  auto a = h.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      a[i][j] = (__builtin_popcountll(static_cast<uint64_t>(i & j)) % 2 == 0 ? 1.0 : -1.0) /
                std::sqrt(static_cast<double>(n));
    }
  }
  return h;
}

// blockdiag(H128, ..., H128) of size d x d, float64.
inline at::Tensor blockDiagonalHadamard(int64_t d) {
  at::Tensor out = at::zeros({d, d}, at::kDouble);
  const at::Tensor h = denseHadamard(128);
  for (int64_t b = 0; b < d / 128; ++b) out.narrow(0, b * 128, 128).narrow(1, b * 128, 128) = h;
  return out;
}

inline double normalPdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * M_PI); }
inline double normalCdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

// E[(q(Z) - Z)^2], Z ~ N(0, 1), q = nearest of the n levels linspace(-alpha, alpha, n) (values
// beyond the grid go to the outermost level). Exact: per cell [a, b] with level l,
// int (l - z)^2 phi = l^2 P - 2 l (phi(a) - phi(b)) + P - (b phi(b) - a phi(a)).
inline double gridMse(double alpha, int64_t levels) {
  const double step = 2.0 * alpha / static_cast<double>(levels - 1);
  double total = 0.0;
  for (int64_t k = 0; k < levels; ++k) {
    const double level = -alpha + step * static_cast<double>(k);
    const double a = k == 0 ? -40.0 : level - step / 2;
    const double b = k == levels - 1 ? 40.0 : level + step / 2;
    const double p = normalCdf(b) - normalCdf(a);
    const double m1 = normalPdf(a) - normalPdf(b);
    const double m2 = p - (b * normalPdf(b) - a * normalPdf(a));
    total += level * level * p - 2.0 * level * m1 + m2;
  }
  return total;
}

// min over alpha of gridMse: a coarse scan then golden-section refinement.
inline double optimalGridMse(int64_t levels) {
  double best = 1e9, bestAlpha = 0.0;
  for (double alpha = 0.01; alpha < 8.0; alpha += 0.01) {
    const double mse = gridMse(alpha, levels);
    if (mse < best) best = mse, bestAlpha = alpha;
  }
  double lo = bestAlpha - 0.01, hi = bestAlpha + 0.01;
  const double ratio = (std::sqrt(5.0) - 1.0) / 2.0;
  for (int i = 0; i < 100; ++i) {
    const double x1 = hi - ratio * (hi - lo), x2 = lo + ratio * (hi - lo);
    if (gridMse(x1, levels) < gridMse(x2, levels)) {
      hi = x2;
    } else {
      lo = x1;
    }
  }
  return gridMse((lo + hi) / 2, levels);
}

// The fast Walsh-Hadamard transform of one 128-float block written as the plain stage loop of
// its definition (the butterfly order of the textbook algorithm), in place, fp32: what the
// vectorised transform must reproduce bit for bit.
inline void scalarFwhtBlock(float* block) {
  for (int64_t half = 1; half < 128; half *= 2) {
    for (int64_t start = 0; start < 128; start += 2 * half) {
      for (int64_t j = start; j < start + half; ++j) {
        const float a = block[j];
        const float b = block[j + half];
        block[j] = a + b;
        block[j + half] = a - b;
      }
    }
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(128.0));
  for (int64_t j = 0; j < 128; ++j) block[j] *= scale;
}

// Element-by-element QuEST of [rows, d] fp32 rows per specs/qat.md §1.2 in fp32 (sum of
// squares in double, element 0 first; std::rint, half to even): the rotated-basis values, the
// codes r - 1, the steps and the trust mask |u| <= maskScale * c.
struct ScalarQuestRows {
  at::Tensor values;  // [rows, d] fp32, rotated basis when hadamard
  at::Tensor codes;   // [rows, d] int8
  at::Tensor step;    // [rows] fp32
  at::Tensor mask;    // [rows, d] bool
};
inline ScalarQuestRows scalarQuestRows(
    const at::Tensor& x, int64_t bits, bool hadamard, double alpha, double maskScale) {
  const at::Tensor input = x.to(at::kFloat).contiguous();
  const int64_t rows = input.size(0), d = input.size(1);
  ScalarQuestRows out{input.clone(), at::empty({rows, d}, at::kChar), at::empty({rows}, at::kFloat),
                      at::empty({rows, d}, at::kBool)};
  for (int64_t r = 0; r < rows; ++r) {
    float* u = out.values.data_ptr<float>() + r * d;
    if (hadamard) {
      for (int64_t b = 0; b < d; b += 128) scalarFwhtBlock(u + b);
    }
    double sumSquares = 0.0;
    for (int64_t j = 0; j < d; ++j) sumSquares += static_cast<double>(u[j]) * u[j];
    const float sigma = static_cast<float>(std::sqrt(sumSquares / static_cast<double>(d)));
    const float clip = static_cast<float>(alpha) * sigma + 1e-8f;
    const float step = 2.0f * clip / static_cast<float>((int64_t{1} << bits) - 1);
    const float keep = static_cast<float>(maskScale) * clip;
    out.step.data_ptr<float>()[r] = step;
    for (int64_t j = 0; j < d; ++j) {
      const float value = u[j];
      out.mask.data_ptr<bool>()[r * d + j] = std::fabs(value) <= keep;
      const float level = std::rint(std::min(std::max(value, -clip), clip) / step + 0.5f);
      out.codes.data_ptr<int8_t>()[r * d + j] = static_cast<int8_t>(level - 1.0f);
      u[j] = (level - 0.5f) * step;
    }
  }
  return out;
}

}  // namespace thinwire::qat::testing

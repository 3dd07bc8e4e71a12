// File: qat/quantizer.h
//
// Fake quantizers for quantization-aware training (docs/qat.md, specs/qat.md §1):
//   * QuEST: rotate each row by the block Hadamard transform, scale c = alpha_b * RMS(row) + 1e-8
//     (alpha_b the MSE-optimal Gaussian clip of kGaussianOptimalScales), clamp to [-c, c] and
//     round to the centred grid without zero, levels (k + 1/2) * step, step = 2c / (2^b - 1),
//     k in [-2^(b-1), 2^(b-1) - 1], round half to even. Backward: the trust estimator, the
//     upstream gradient masked in the rotated basis where |u| <= s * c (s = maskScale).
//   * STE: the same grid without the rotation; the gradient passes unchanged.
//   * LSQ: one learnable step per tensor on the same centred grid; gradients to the input
//     (zero outside the clip) and to the step (LSQ's rule with its 1/sqrt(numel * qmax) scale).
// Rows are the last dimension: a weight [out, in] is quantized per output row, an activation
// [..., in] per token. All internal arithmetic is fp32 whatever the input dtype (bf16 rounding
// of u/step would flip levels near midpoints); results come back in the input's dtype.
//
// On the CPU, forward and backward are one pass per row each (rotation, RMS, clamp / round /
// mask, the saved mask is one byte per element), in SSE2 vectors on x86-64 with results bit for
// bit those of the element-by-element loop (quantizer.cc, Note [Vector row kernel]).
//
// Ownership: pure functions returning new tensors. Threading: thread-safe; the row kernel
// parallelises over rows with at::parallel_for.
//
// Example:
//   QuantizerOptions options;                      // QuEST, 4 bits, Full variant, default trust
//   at::Tensor w = at::randn({256, 512}, at::requires_grad());
//   at::Tensor q = qat::fakeQuantize(w, options);  // forward q(wH)H^T, trust-masked backward
//   QuantizedRows rows = qat::quantizeRows(w.detach(), options);   // int8 codes + row steps
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace thinwire::qat {

// alpha_b for b = 1..8, verbatim from QuEST's OPTIMAL_GAUSSIAN_SCALES: the clip c = alpha_b *
// sigma minimising the N(0, sigma^2) MSE of the 2^b-level centred uniform grid.
inline constexpr double kGaussianOptimalScales[9] = {
    0.0,                 // unused: 0 bits means "not quantized"
    0.7978845587140913,  // sqrt(2 / pi): b = 1 outputs +-E|u|
    1.4935346200015913,
    2.051068354131873,
    2.513930578568423,
    2.9160938834961225,
    3.276597282593217,
    3.6010497188221655,
    3.884938678807525,
};

inline constexpr int64_t kMaxBits = 8;

// alpha_b; InvalidArgument unless 1 <= bits <= 8.
double gaussianOptimalScale(int64_t bits);

// The default multiplier s of the gradient mask |u| <= s * c: 2^b / (2^b - 1) for b >= 2, which
// is QuEST's default trust |q(u) - u| <= step / 2 (ties aside), and 1.3 for b = 1, the clip
// mask QuEST's W1A1 runs use (specs/qat.md §1.5). InvalidArgument unless 1 <= bits <= 8.
double defaultMaskScale(int64_t bits);

enum class Variant {
  kFull,  // q(xH) H^T: the output lives in the original basis
  kHalf,  // q(xH): only valid when both matmul operands are Half-rotated on the same dimension
};

enum class Gradient {
  kTrust,            // upstream gradient masked where |u| > maskScale * c (QuEST)
  kStraightThrough,  // upstream gradient unchanged (STE)
};

struct QuantizerOptions {
  int64_t bits = 4;                  // 1..8
  bool hadamard = true;              // rotate rows first (QuEST); false for STE / no-HT
  Variant variant = Variant::kFull;  // ignored without hadamard
  Gradient gradient = Gradient::kTrust;
  double maskScale = 0.0;  // s of the mask; 0 = defaultMaskScale(bits)
};

// Fake-quantizes x (any float dtype, last dimension a multiple of 128 when options.hadamard)
// and returns a tensor of x's shape and dtype, differentiable w.r.t. x: Full gives
// ((G H) . M) H^T, Half (G . M) H^T, straight-through G; no gradient flows through the scale.
// Throws InvalidArgument for bits outside 1..8, a negative maskScale, a non-float x or a bad d.
at::Tensor fakeQuantize(const at::Tensor& x, const QuantizerOptions& options);

// The integer form of fakeQuantize's forward (no autograd): for x viewed as [rows, d],
// codes [rows, d] int8 in [-2^(b-1), 2^(b-1) - 1] and step [rows] fp32, such that
// dequantizeRows(codes, step) equals fakeQuantize(x) in the quantized basis (the rotated one
// with hadamard) bit for bit; mask [rows, d] bool is the gradient mask.
struct QuantizedRows {
  at::Tensor codes;
  at::Tensor step;
  at::Tensor mask;
};
QuantizedRows quantizeRows(const at::Tensor& x, const QuantizerOptions& options);

// (codes + 1/2) * step per row, fp32 [rows, d]. InvalidArgument on mismatched shapes or dtypes
// other than int8 codes and fp32 steps.
at::Tensor dequantizeRows(const at::Tensor& codes, const at::Tensor& step);

// LSQ fake quantization with the learnable scalar `step` (fp32, 1 element): the centred grid
// (k + 1/2) * step, k in [-2^(b-1), 2^(b-1) - 1]. Differentiable w.r.t. x (1 inside the clip
// range (2^b - 1) * step / 2, 0 outside) and step (LSQ, gradient scaled by
// 1 / sqrt(numel * max(1, 2^(b-1) - 1))). InvalidArgument for bits outside 1..8.
at::Tensor lsqQuantize(const at::Tensor& x, const at::Tensor& step, int64_t bits);

// The LSQ+ initial step for Gaussian data of the given RMS: 2 * alpha_b * rms / (2^b - 1).
double lsqInitialStep(int64_t bits, double rms);

}  // namespace thinwire::qat

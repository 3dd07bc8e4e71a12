// File: qat/pv_quantized.h
//
// The scalar group-wise representation PV-Tuning works on (docs/pv_tuning.md, specs/qat.md
// §2.4 (a)): a weight W [out, in] is cut along its input dimension into groups of `groupSize`
// consecutive weights of one row; group g of row o has an fp32 scale s[o, g] and an fp32 zero
// point z[o, g] (an asymmetric grid), and every weight has an integer code q in [0, 2^bits):
//   W[o, i] = s[o, i / groupSize] * (q[o, i] - z[o, i / groupSize]).
// P (continuous) = {s, z}; V (discrete) = {q}, stored as uint8. One code group of the V-step is
// one weight (scalar quantization).
//
// Ownership: plain value types holding tensors; functions return new tensors and never keep
// references to their arguments. Threading: thread-safe (pure functions).
//
// Example:
//   PvScalarGrid grid{.bits = 2, .groupSize = 64};
//   PvQuantizedWeight q = quantizeRtn(weight, grid);          // round-to-nearest init
//   at::Tensor w = dequantize(q);                             // [out, in] fp32
//   PvContinuousGradients g = continuousGradients(q, dLdW);   // chain rule to scales, zeros
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace thinwire::qat {

struct PvScalarGrid {
  int64_t bits = 2;        // 1..8: 2^bits levels per group
  int64_t groupSize = 64;  // weights per group along the input dimension; must divide `in`
};

struct PvQuantizedWeight {
  at::Tensor codes;   // uint8 [out, in], every value in [0, 2^bits)
  at::Tensor scales;  // [out, in / groupSize], fp32 (fp64 in gradient tests)
  at::Tensor zeros;   // [out, in / groupSize], same dtype as scales; in code units
  PvScalarGrid grid;
};

// Round-to-nearest initialisation from a full-precision weight [out, in]: per group, the
// min-max grid s = (max - min) / (2^bits - 1) (at least 1e-8), z = -min / s, and
// q = clamp(round(W / s + z), 0, 2^bits - 1). Scales and zeros take the weight's dtype.
// InvalidArgument when the weight is not 2-D floating point, bits is outside 1..8, or
// groupSize does not divide `in`.
PvQuantizedWeight quantizeRtn(const at::Tensor& weight, const PvScalarGrid& grid);

// D(q, s, z): the dense weight [out, in] in the scales' dtype. Pure; no autograd.
at::Tensor dequantize(const PvQuantizedWeight& weight);
at::Tensor dequantize(const at::Tensor& codes,
                      const at::Tensor& scales,
                      const at::Tensor& zeros,
                      int64_t groupSize);

// Nearest codes of a reference weight R [out, in] on the grid (s, z):
// clamp(round(R / s + z), 0, 2^bits - 1) as uint8 (round half to even). Pure.
at::Tensor projectCodes(const at::Tensor& reference,
                        const at::Tensor& scales,
                        const at::Tensor& zeros,
                        const PvScalarGrid& grid);

struct PvContinuousGradients {
  at::Tensor scales;  // dL/ds [out, groups] = sum over the group of G * (q - z)
  at::Tensor zeros;   // dL/dz [out, groups] = -s * sum over the group of G
};

// Chain rule of D through the continuous parameters, given the dense gradient G = dL/dW
// [out, in] (codes have no gradient). Computed in G's dtype. Pure.
PvContinuousGradients continuousGradients(const PvQuantizedWeight& weight,
                                          const at::Tensor& weightGrad);

}  // namespace thinwire::qat

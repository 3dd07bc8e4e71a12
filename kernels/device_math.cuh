// Device helpers shared by the .cu files of kernels/: the magnitude key of top-k's ordering and
// arithmetic spelled with explicit rounding intrinsics. nvcc contracts a * b + c into one fused
// multiply-add by default, which rounds once instead of twice; the CPU implementations (x86-64
// without FMA) round twice, so every kernel that must match them bit for bit writes
// addRn(a, mulRn(b, c)) instead of a + b * c.
#pragma once

#include <cstdint>

namespace thinwire::kernels::detail {

__device__ __forceinline__ float mulRn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float addRn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float subRn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float divRn(float a, float b) { return __fdiv_rn(a, b); }

// See Note [Magnitude keys] in compressors/top_k_compressor.cc: |x| ranked by its bit pattern
// plus one, NaN below every number (key 0).
__device__ __forceinline__ uint32_t magnitudeKey(float value) {
  const uint32_t bits = __float_as_uint(value) & 0x7fffffffu;
  return bits <= 0x7f800000u ? bits + 1 : 0u;
}

// p = residual + scale * addend with the CPU's two roundings; addend may be null.
__device__ __forceinline__ float fusedP(const float* residual,
                                        const float* addend,
                                        float scale,
                                        int64_t i) {
  const float r = residual[i];
  return addend == nullptr ? r : addRn(r, mulRn(scale, addend[i]));
}

inline int blocksFor(int64_t work, int threads) {
  return static_cast<int>((work + threads - 1) / threads);
}

}  // namespace thinwire::kernels::detail

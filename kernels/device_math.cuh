// Device helpers shared by the .cu files of kernels/: the launch spelling, the magnitude key of
// top-k's ordering and arithmetic spelled with explicit rounding intrinsics. nvcc contracts a * b +
// c into one fused multiply-add by default, which rounds once instead of twice; the CPU
// implementations (x86-64 without FMA) round twice, so every kernel that must match them bit for
// bit writes addRn(a, mulRn(b, c)) instead of a + b * c.
#pragma once

#include <cstdint>

// A kernel launch, kernel<<<grid, block, sharedBytes, stream>>>(args...), spelled so that the
// emulated build (kernels/emulation, plain C++ without the <<< >>> syntax) can run it too:
//   TW_LAUNCH(kernel, grid, block, sharedBytes, stream)(args...);
// and the dynamic shared memory of a kernel, extern __shared__ type name[]:
//   TW_DYNAMIC_SHARED(type, name);
#if defined(THINWIRE_KERNELS_EMULATED_RUNTIME)
#define TW_LAUNCH(kernel, grid, block, sharedBytes, stream) \
  (static_cast<void>(stream),                               \
   ::thinwire::kernels::emulation::launch(kernel, grid, block, sharedBytes))
#define TW_DYNAMIC_SHARED(type, name) \
  type* name = ::thinwire::kernels::emulation::dynamicShared<type>()
#else
#define TW_LAUNCH(kernel, grid, block, sharedBytes, stream) \
  kernel<<<grid, block, sharedBytes, stream>>>
#define TW_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

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

// p for the four consecutive elements from i (a multiple of 4; residual and addend 16-byte
// aligned, see aligned16): the same roundings as fusedP, one 16-byte load per array.
__device__ __forceinline__ float4 fusedP4(const float* residual,
                                          const float* addend,
                                          float scale,
                                          int64_t i) {
  const float4 r = *reinterpret_cast<const float4*>(residual + i);
  if (addend == nullptr) return r;
  const float4 a = *reinterpret_cast<const float4*>(addend + i);
  return make_float4(addRn(r.x, mulRn(scale, a.x)), addRn(r.y, mulRn(scale, a.y)),
                     addRn(r.z, mulRn(scale, a.z)), addRn(r.w, mulRn(scale, a.w)));
}

// The first `count` of the four floats from `source` into o, zeros after them: one 16-byte load
// when all four are read and `vector` (source 16-byte aligned), else one load per element.
__device__ __forceinline__ void loadFour(const float* source,
                                         int64_t count,
                                         bool vector,
                                         float (&o)[4]) {
  if (vector && count >= 4) {
    const float4 v = *reinterpret_cast<const float4*>(source);
    o[0] = v.x;
    o[1] = v.y;
    o[2] = v.z;
    o[3] = v.w;
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) o[k] = k < count ? source[k] : 0.0f;
}

// The first `count` of the four floats of r to `target`, the same way.
__device__ __forceinline__ void storeFour(float* target,
                                          int64_t count,
                                          bool vector,
                                          const float (&r)[4]) {
  if (vector && count >= 4) {
    *reinterpret_cast<float4*>(target) = make_float4(r[0], r[1], r[2], r[3]);
    return;
  }
  for (int k = 0; k < 4 && k < count; ++k) target[k] = r[k];
}

// a / b for a, b >= 0: 32-bit division when both fit (several times cheaper on the GPU than the
// 64-bit one), else 64-bit.
__device__ __forceinline__ int64_t indexDiv(int64_t a, int64_t b) {
  if (((a | b) >> 31) == 0) {
    return static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b));
  }
  return a / b;
}

// True when `pointer` (null included) is 16-byte aligned: the float4 paths of the kernels need
// it; tensors from the caching allocator are, views with an odd storage offset may not be.
inline bool aligned16(const void* pointer) {
  return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
}

inline int blocksFor(int64_t work, int threads) {
  return static_cast<int>((work + threads - 1) / threads);
}

}  // namespace thinwire::kernels::detail

// File: kernels/emulation/cuda_runtime.h
//
// Stands in for the CUDA toolkit's cuda_runtime.h in the emulated build (see emulator.h): the
// keywords, built-in variables, intrinsics and runtime calls that kernels/*.cu use, mapped onto
// the host compiler and the emulator. Only this folder's targets put it on the include path; the
// CUDA build never sees it. Device pointers are host pointers here, streams are ignored (every
// launch and copy completes before it returns).
#pragma once

#include <math.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/emulation/emulator.h"

#define THINWIRE_KERNELS_EMULATED_RUNTIME 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one at a time, so a function static is the block's shared memory.
#define __shared__ static

#define threadIdx (::thinwire::kernels::emulation::threadIndex())
#define blockIdx (::thinwire::kernels::emulation::blockIndex())
#define blockDim (::thinwire::kernels::emulation::blockDimension())
#define gridDim (::thinwire::kernels::emulation::gridDimension())

struct alignas(16) float4 {
  float x;
  float y;
  float z;
  float w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// The device's min and max overloads for integers and floats.
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

inline void __syncthreads() { ::thinwire::kernels::emulation::syncThreads(); }

template <typename T>
inline T __shfl_sync(unsigned mask, T value, int sourceLane, int width = 32) {
  return ::thinwire::kernels::emulation::collective(
      ::thinwire::kernels::emulation::Collective::kShuffle, mask, value, sourceLane, width);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  return ::thinwire::kernels::emulation::collective(
      ::thinwire::kernels::emulation::Collective::kShuffleDown, mask, value,
      static_cast<int>(delta), width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int laneMask, int width = 32) {
  return ::thinwire::kernels::emulation::collective(
      ::thinwire::kernels::emulation::Collective::kShuffleXor, mask, value, laneMask, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::thinwire::kernels::emulation::collective(
      ::thinwire::kernels::emulation::Collective::kBallot, mask, predicate != 0 ? 1u : 0u, 0, 32);
}

// Fibers never interleave inside a statement: a plain read-modify-write is atomic here.
template <typename T, typename U>
inline T atomicAdd(T* address, U value) {
  const T old = *address;
  *address = static_cast<T>(old + value);
  return old;
}

inline int __popc(unsigned value) { return __builtin_popcount(value); }
inline unsigned __float_as_uint(float value) {
  unsigned bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}
inline float __uint_as_float(unsigned bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}
// The _rn intrinsics round each operation on its own, never fused into a multiply-add. Where the
// emulated kernels are compiled to contract like nvcc (tests/kernels_emulated/CMakeLists.txt:
// -mfma -ffp-contract=fast), a volatile result must be stored and read back, so the compiler
// cannot fuse it with the next operation; plain a * b + c in a kernel is still fused, as on the
// device.
inline float __fmul_rn(float a, float b) {
  volatile float result = a * b;
  return result;
}
inline float __fadd_rn(float a, float b) {
  volatile float result = a + b;
  return result;
}
inline float __fsub_rn(float a, float b) {
  volatile float result = a - b;
  return result;
}
inline float __fdiv_rn(float a, float b) {
  volatile float result = a / b;
  return result;
}

// ---- runtime API ----
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
};
enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

inline cudaError_t cudaGetLastError() {
  return static_cast<cudaError_t>(::thinwire::kernels::emulation::takeLaunchError());
}
inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
inline const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
  }
  return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "emulated launch error";
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(
    void* destination, const void* source, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  if (bytes != 0) std::memmove(destination, source, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* destination, int value, size_t bytes, cudaStream_t) {
  if (bytes != 0) std::memset(destination, value, bytes);
  return cudaSuccess;
}
template <typename Kernel>
inline cudaError_t cudaFuncSetAttribute(Kernel kernel, cudaFuncAttribute, int value) {
  if (value < 0 || value > 227 * 1024) return cudaErrorInvalidValue;  // the H100's and H200's limit
  ::thinwire::kernels::emulation::allowDynamicShared(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}

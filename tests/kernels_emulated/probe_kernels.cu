// The emulator's probe kernels (probe_kernels.h), written as for nvcc: compiled by the host
// compiler against kernels/emulation/cuda_runtime.h in the emulated tier only.
#include <cuda_runtime.h>

#include "kernels/device_math.cuh"
#include "tests/kernels_emulated/probe_kernels.h"

namespace thinwire::kernels::probe {
namespace {

__global__ void blockSumKernel(const float* in, bool withBarrier, float* out) {
  TW_DYNAMIC_SHARED(float, partial);
  const int t = static_cast<int>(threadIdx.x);
  partial[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (int half = static_cast<int>(blockDim.x) / 2; half > 0; half /= 2) {
    if (t < half) partial[t] = partial[t] + partial[t + half];
    if (withBarrier) __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

__global__ void collectiveKernel(const uint32_t* in, uint32_t* out) {
  const int t = static_cast<int>(threadIdx.x);
  const int lane = t % 32;
  const uint32_t value = in[t];
  out[4 * t] = __shfl_sync(0xffffffffu, value, (lane + 3) % 32);
  out[4 * t + 1] = __shfl_down_sync(0xffffffffu, value, 5);
  out[4 * t + 2] = __shfl_xor_sync(0xffffffffu, value, 6);
  out[4 * t + 3] = __ballot_sync(0xffffffffu, lane % 3 == 0);
}

__global__ void exitKernel(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f, 0);
}

__global__ void hangKernel(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f, 0);
  }
}

__global__ void sharedKernel(float* out) {
  TW_DYNAMIC_SHARED(float, scratch);
  scratch[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = scratch[blockDim.x - 1 - threadIdx.x];
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int blockSums(const float* in, int blocks, int threads, bool withBarrier, float* out) {
  TW_LAUNCH(blockSumKernel, blocks, threads, threads * static_cast<int>(sizeof(float)), nullptr)
  (in, withBarrier, out);
  return launched();
}

int warpCollectives(const uint32_t* in, uint32_t* out) {
  TW_LAUNCH(collectiveKernel, 1, 64, 0, nullptr)(in, out);
  return launched();
}

int shuffleAfterExit(float* out) {
  TW_LAUNCH(exitKernel, 1, 32, 0, nullptr)(out);
  return launched();
}

int barrierAgainstShuffle(float* out) {
  TW_LAUNCH(hangKernel, 1, 32, 0, nullptr)(out);
  return launched();
}

int launchWithShared(int threads, int sharedBytes, bool raise, float* out) {
  if (raise) {
    const cudaError_t error = cudaFuncSetAttribute(
        sharedKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sharedBytes);
    if (error != cudaSuccess) return static_cast<int>(error);
  }
  TW_LAUNCH(sharedKernel, 1, threads, sharedBytes, nullptr)(out);
  return launched();
}

}  // namespace thinwire::kernels::probe

// Bucketed b-bit quantization with fused error feedback on the GPU, bit-identical to
// QuantizeCompressor (same roundings, same splitmix64 stream, same LSB-first code stream).
#include <cuda_runtime.h>

#include "kernels/device_math.cuh"
#include "kernels/launch.h"

namespace thinwire::kernels::detail {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint64_t splitmix64(uint64_t seed, uint64_t j) {
  uint64_t z = seed + (j + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

__device__ __forceinline__ float uniform(uint64_t seed, uint64_t j) {
  return mulRn(static_cast<float>(splitmix64(seed, j) >> 40), 1.0f / 16777216.0f);
}

// One block per bucket: the range of p (computed on the fly), then levels and residuals in a
// second sweep that reads the bucket again (from cache for buckets of a few KB).
__global__ void __launch_bounds__(kThreads) quantizeKernel(float* residual,
                                                           const float* addend,
                                                           float addendScale,
                                                           int64_t numel,
                                                           int64_t bucket,
                                                           float levels,
                                                           bool stochastic,
                                                           uint64_t seed,
                                                           float* meta,
                                                           uint8_t* levelOut) {
  const int64_t k = blockIdx.x;
  const int64_t start = k * bucket;
  const int64_t length = min(bucket, numel - start);
  float lowest = INFINITY;
  float highest = -INFINITY;
  for (int64_t e = threadIdx.x; e < length; e += kThreads) {
    const float p = fusedP(residual, addend, addendScale, start + e);
    lowest = p < lowest ? p : lowest;
    highest = p > highest ? p : highest;
  }
  // min and max do not depend on the order of comparison (for numbers), so a tree is exact.
  __shared__ float lows[kThreads];
  __shared__ float highs[kThreads];
  lows[threadIdx.x] = lowest;
  highs[threadIdx.x] = highest;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      const float otherLow = lows[threadIdx.x + half];
      const float otherHigh = highs[threadIdx.x + half];
      lows[threadIdx.x] = otherLow < lows[threadIdx.x] ? otherLow : lows[threadIdx.x];
      highs[threadIdx.x] = otherHigh > highs[threadIdx.x] ? otherHigh : highs[threadIdx.x];
    }
    __syncthreads();
  }
  lowest = lows[0];
  const float unit = divRn(subRn(highs[0], lowest), levels);
  if (threadIdx.x == 0) {
    meta[2 * k] = unit;
    meta[2 * k + 1] = lowest;
  }
  for (int64_t e = threadIdx.x; e < length; e += kThreads) {
    const int64_t j = start + e;
    const float p = fusedP(residual, addend, addendScale, j);
    int level = 0;
    if (!(unit > 0.0f)) {
      residual[j] = subRn(p, lowest);
    } else {
      const float offset = stochastic ? uniform(seed, static_cast<uint64_t>(j)) : 0.5f;
      float t = addRn(divRn(subRn(p, lowest), unit), offset);
      t = t < levels ? t : levels;
      t = t > 0.0f ? t : 0.0f;
      level = static_cast<int>(t);  // t >= 0: truncation is floor
      residual[j] = subRn(p, addRn(lowest, mulRn(static_cast<float>(level), unit)));
    }
    levelOut[j] = static_cast<uint8_t>(level);
  }
}

__global__ void packKernel(const uint8_t* levels, int64_t numel, int bits, uint8_t* codes) {
  const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t first = group * 8;
  if (first >= numel) return;
  const int count = static_cast<int>(numel - first < 8 ? numel - first : 8);
  uint64_t packed = 0;
  for (int k = 0; k < count; ++k) packed |= static_cast<uint64_t>(levels[first + k]) << (k * bits);
  const int bytes = count == 8 ? bits : (count * bits + 7) / 8;
  uint8_t* out = codes + group * bits;
  for (int t = 0; t < bytes; ++t) out[t] = static_cast<uint8_t>(packed >> (8 * t));
}

__global__ void dequantizeAddKernel(const float* meta,
                                    const uint8_t* codes,
                                    int64_t codeBytes,
                                    int64_t numel,
                                    int64_t bucket,
                                    int bits,
                                    float alpha,
                                    float* out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= numel) return;
  const int64_t position = j * bits;
  const int64_t byte = position / 8;
  unsigned window = codes[byte];
  if (byte + 1 < codeBytes) window |= static_cast<unsigned>(codes[byte + 1]) << 8;
  const unsigned level = (window >> (position % 8)) & ((1u << bits) - 1u);
  const int64_t k = j / bucket;
  const float unit = meta[2 * k];
  const float lowest = meta[2 * k + 1];
  out[j] = addRn(out[j], mulRn(alpha, addRn(lowest, mulRn(static_cast<float>(level), unit))));
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int launchQuantizeBuckets(float* residual,
                          const float* addend,
                          float scale,
                          int64_t numel,
                          int64_t bucket,
                          int bits,
                          bool stochastic,
                          uint64_t seed,
                          uint8_t* meta,
                          uint8_t* levels,
                          void* stream) {
  if (numel == 0) return 0;
  const int64_t buckets = (numel + bucket - 1) / bucket;
  const float levelCount = static_cast<float>((1u << bits) - 1u);
  quantizeKernel<<<static_cast<unsigned>(buckets), kThreads, 0,
                   static_cast<cudaStream_t>(stream)>>>(residual, addend, scale, numel, bucket,
                                                        levelCount, stochastic, seed,
                                                        reinterpret_cast<float*>(meta), levels);
  return launched();
}

int launchPackCodes(const uint8_t* levels, int64_t numel, int bits, uint8_t* codes, void* stream) {
  if (numel == 0) return 0;
  packKernel<<<blocksFor((numel + 7) / 8, kThreads), kThreads, 0,
               static_cast<cudaStream_t>(stream)>>>(levels, numel, bits, codes);
  return launched();
}

int launchDequantizeAdd(const uint8_t* meta,
                        const uint8_t* codes,
                        int64_t codeBytes,
                        int64_t numel,
                        int64_t bucket,
                        int bits,
                        float alpha,
                        float* out,
                        void* stream) {
  if (numel == 0) return 0;
  dequantizeAddKernel<<<blocksFor(numel, kThreads), kThreads, 0,
                        static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const float*>(meta), codes, codeBytes, numel, bucket, bits, alpha, out);
  return launched();
}

}  // namespace thinwire::kernels::detail

// Bucketed b-bit quantization with fused error feedback on the GPU, bit-identical to
// QuantizeCompressor (same roundings, same splitmix64 stream, same LSB-first code stream).
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/device_math.cuh"
#include "kernels/launch.h"

namespace thinwire::kernels::detail {
namespace {

constexpr int kThreads = 256;
// The fused path's limits: a bucket of floats per warp in shared memory, 48 KiB per block.
constexpr int64_t kSharedFloats = 12 * 1024;
constexpr int64_t kMaxWarpBucket = kSharedFloats;

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

// Note [Quantize warps]
// The fast path (bucket a multiple of 8, at most kMaxWarpBucket) gives each bucket one warp: the
// warp reads p once with coalesced 16-byte loads into its own slice of shared memory (each lane
// reads back only what it wrote), reduces min and max with shuffles to lane 0, which every lane
// then takes (so all lanes agree even on the sign of a zero), and writes residuals and codes in
// a second sweep over shared memory. A bucket starts on a multiple of 8 elements, so two
// neighbouring lanes' four codes form one group of Note [Code groups] (QuantizeCompressor),
// `bits` whole bytes of the stream. No block barrier: a warp past the last bucket just returns.
constexpr int kWarpThreads = 32;

template <bool kVector>
__global__ void __launch_bounds__(kThreads) quantizeWarpKernel(float* residual,
                                                               const float* addend,
                                                               float addendScale,
                                                               int64_t numel,
                                                               int bucket,
                                                               int64_t buckets,
                                                               float levels,
                                                               int bits,
                                                               bool stochastic,
                                                               uint64_t seed,
                                                               float* meta,
                                                               uint8_t* codes,
                                                               int64_t codeBytes) {
  TW_DYNAMIC_SHARED(float4, staged);
  const int warp = threadIdx.x / kWarpThreads;
  const int lane = threadIdx.x % kWarpThreads;
  const int64_t k = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarpThreads) + warp;
  if (k >= buckets) return;  // the whole warp
  float4* mine = staged + static_cast<int64_t>(warp) * (bucket / 4);
  const int64_t start = k * bucket;
  const int length = static_cast<int>(min(static_cast<int64_t>(bucket), numel - start));
  const int vectors = (length + 3) / 4;
  const int steps = (bucket / 4 + kWarpThreads - 1) / kWarpThreads;  // the same on every lane

  float lowest = INFINITY;
  float highest = -INFINITY;
  for (int step = 0; step < steps; ++step) {
    const int v = step * kWarpThreads + lane;
    if (v >= vectors) continue;
    const int e = 4 * v;
    float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (kVector && e + 4 <= length) {
      const float4 p4 = fusedP4(residual, addend, addendScale, start + e);
      p[0] = p4.x;
      p[1] = p4.y;
      p[2] = p4.z;
      p[3] = p4.w;
    } else {
      for (int q = 0; q < 4 && e + q < length; ++q) {
        p[q] = fusedP(residual, addend, addendScale, start + e + q);
      }
    }
    mine[v] = make_float4(p[0], p[1], p[2], p[3]);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (e + q < length) {
        lowest = p[q] < lowest ? p[q] : lowest;
        highest = p[q] > highest ? p[q] : highest;
      }
    }
  }
  // min and max do not depend on the order of comparison (for numbers; NaN never wins).
  for (int offset = kWarpThreads / 2; offset > 0; offset /= 2) {
    const float otherLow = __shfl_down_sync(0xffffffffu, lowest, offset);
    const float otherHigh = __shfl_down_sync(0xffffffffu, highest, offset);
    lowest = otherLow < lowest ? otherLow : lowest;
    highest = otherHigh > highest ? otherHigh : highest;
  }
  lowest = __shfl_sync(0xffffffffu, lowest, 0);
  highest = __shfl_sync(0xffffffffu, highest, 0);
  const float unit = divRn(subRn(highest, lowest), levels);
  if (lane == 0) {
    meta[2 * k] = unit;
    meta[2 * k + 1] = lowest;
  }

  for (int step = 0; step < steps; ++step) {
    const int v = step * kWarpThreads + lane;
    uint32_t quad = 0;  // the four codes of this lane, code q at bit q * bits
    if (v < vectors) {
      const int e = 4 * v;
      const float4 p4 = mine[v];
      const float p[4] = {p4.x, p4.y, p4.z, p4.w};
      float r[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        int level = 0;
        if (!(unit > 0.0f)) {
          r[q] = subRn(p[q], lowest);
        } else {
          const uint64_t j = static_cast<uint64_t>(start + e + q);
          const float offset = stochastic ? uniform(seed, j) : 0.5f;
          float t = addRn(divRn(subRn(p[q], lowest), unit), offset);
          t = t < levels ? t : levels;
          t = t > 0.0f ? t : 0.0f;
          level = static_cast<int>(t);  // t >= 0: truncation is floor
          r[q] = subRn(p[q], addRn(lowest, mulRn(static_cast<float>(level), unit)));
        }
        if (e + q < length) quad |= static_cast<uint32_t>(level) << (q * bits);
      }
      storeFour(residual + start + e, length - e, kVector, r);
    }
    const uint32_t highQuad = __shfl_down_sync(0xffffffffu, quad, 1);
    if (v < vectors && (v & 1) == 0) {
      const uint64_t group =
          static_cast<uint64_t>(quad) | (static_cast<uint64_t>(highQuad) << (4 * bits));
      const int64_t firstByte = (start + 4 * v) / 8 * bits;
      for (int t = 0; t < bits && firstByte + t < codeBytes; ++t) {
        codes[firstByte + t] = static_cast<uint8_t>(group >> (8 * t));
      }
    }
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

// One float4 of `out` per thread (16-byte aligned). Elements [8g, 8g + 8) are code group g
// (Note [Code groups]), `bits` bytes from byte g * bits; the thread takes its half of the group.
__global__ void dequantizeAddVectorKernel(const float* meta,
                                          const uint8_t* codes,
                                          int64_t codeBytes,
                                          int64_t numel,
                                          int64_t bucket,
                                          int bits,
                                          float alpha,
                                          float* out) {
  const int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t e = 4 * v;
  if (e >= numel) return;
  const int64_t firstByte = (v / 2) * bits;
  uint64_t group = 0;
  for (int t = 0; t < bits && firstByte + t < codeBytes; ++t) {
    group |= static_cast<uint64_t>(codes[firstByte + t]) << (8 * t);
  }
  const uint32_t quad = static_cast<uint32_t>(group >> ((v & 1) * 4 * bits));
  const uint32_t mask = (1u << bits) - 1u;
  int64_t k = indexDiv(e, bucket);
  int64_t bucketEnd = (k + 1) * bucket;
  float unit = meta[2 * k];
  float lowest = meta[2 * k + 1];
  float o[4];
  loadFour(out + e, numel - e, true, o);
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    if (e + q >= numel) break;
    while (e + q >= bucketEnd) {  // buckets shorter than 4 elements end more than once
      ++k;
      bucketEnd += bucket;
      unit = meta[2 * k];
      lowest = meta[2 * k + 1];
    }
    const uint32_t level = (quad >> (q * bits)) & mask;
    o[q] = addRn(o[q], mulRn(alpha, addRn(lowest, mulRn(static_cast<float>(level), unit))));
  }
  storeFour(out + e, numel - e, true, o);
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
  TW_LAUNCH(quantizeKernel, static_cast<unsigned>(buckets), kThreads, 0,
            static_cast<cudaStream_t>(stream))
  (residual, addend, scale, numel, bucket, levelCount, stochastic, seed,
   reinterpret_cast<float*>(meta), levels);
  return launched();
}

bool quantizeFusedSupported(int64_t bucket) { return bucket % 8 == 0 && bucket <= kMaxWarpBucket; }

int launchQuantizePacked(float* residual,
                         const float* addend,
                         float scale,
                         int64_t numel,
                         int64_t bucket,
                         int bits,
                         bool stochastic,
                         uint64_t seed,
                         uint8_t* meta,
                         uint8_t* codes,
                         void* stream) {
  if (numel == 0) return 0;
  if (!quantizeFusedSupported(bucket)) return static_cast<int>(cudaErrorInvalidValue);
  const int64_t buckets = (numel + bucket - 1) / bucket;
  const int64_t codeBytes = (numel * bits + 7) / 8;
  const float levelCount = static_cast<float>((1u << bits) - 1u);
  // Shared memory of a block within the default 48 KiB: one bucket of floats per warp.
  const int64_t warps =
      std::max<int64_t>(1, std::min<int64_t>(kThreads / kWarpThreads, kSharedFloats / bucket));
  const int64_t sharedBytes = warps * bucket * static_cast<int64_t>(sizeof(float));
  const int blocks = static_cast<int>((buckets + warps - 1) / warps);
  const int threads = static_cast<int>(warps) * kWarpThreads;
  auto s = static_cast<cudaStream_t>(stream);
  float* metaValues = reinterpret_cast<float*>(meta);
  const int length = static_cast<int>(bucket);
  if (aligned16(residual) && aligned16(addend)) {
    TW_LAUNCH(quantizeWarpKernel<true>, blocks, threads, sharedBytes, s)
    (residual, addend, scale, numel, length, buckets, levelCount, bits, stochastic, seed,
     metaValues, codes, codeBytes);
  } else {
    TW_LAUNCH(quantizeWarpKernel<false>, blocks, threads, sharedBytes, s)
    (residual, addend, scale, numel, length, buckets, levelCount, bits, stochastic, seed,
     metaValues, codes, codeBytes);
  }
  return launched();
}

int launchPackCodes(const uint8_t* levels, int64_t numel, int bits, uint8_t* codes, void* stream) {
  if (numel == 0) return 0;
  TW_LAUNCH(packKernel, blocksFor((numel + 7) / 8, kThreads), kThreads, 0,
            static_cast<cudaStream_t>(stream))
  (levels, numel, bits, codes);
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
  auto s = static_cast<cudaStream_t>(stream);
  const float* metaValues = reinterpret_cast<const float*>(meta);
  if (aligned16(out)) {
    TW_LAUNCH(dequantizeAddVectorKernel, blocksFor((numel + 3) / 4, kThreads), kThreads, 0, s)
    (metaValues, codes, codeBytes, numel, bucket, bits, alpha, out);
  } else {
    TW_LAUNCH(dequantizeAddKernel, blocksFor(numel, kThreads), kThreads, 0, s)
    (metaValues, codes, codeBytes, numel, bucket, bits, alpha, out);
  }
  return launched();
}

}  // namespace thinwire::kernels::detail

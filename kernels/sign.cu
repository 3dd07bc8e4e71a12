// 1-bit compression with fused error feedback on the GPU, bit-identical to SignCompressor: the
// same per-lane float sums, combined in double in the same order (see Note [Sign sums]).
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/device_math.cuh"
#include "kernels/launch.h"

namespace thinwire::kernels::detail {
namespace {

constexpr int kThreads = 256;
constexpr int kLanes = 8;  // SignCompressor's float accumulators per 4096-element block
constexpr int64_t kSumBlock = 4096;
constexpr int kGroupsPerBlock = kThreads / kLanes;

// Note [Sign sums]
// SignCompressor sums |p| (or p^2) of each 4096-element block in 8 float lanes, lane b taking
// elements b, b + 8, b + 16, ... in order, then adds the lanes in double, lane 0 first, and the
// blocks of a segment in double, in order. A group of 8 threads reproduces exactly that: thread b
// is lane b, and every thread of the group adds the 8 lanes (read with shuffles) in the same
// order, so all of them hold the same scale.
__device__ __forceinline__ float laneTerm(float p, bool l2) { return l2 ? mulRn(p, p) : fabsf(p); }

__device__ __forceinline__ float scaleOf(double sum, int64_t length, bool l2) {
  const double mean = sum / static_cast<double>(length);
  return static_cast<float>(l2 ? sqrt(mean) : mean);
}

__device__ __forceinline__ double groupSum(float laneSum) {
  const int base = (threadIdx.x & 31) & ~(kLanes - 1);
  double block = 0.0;
#pragma unroll
  for (int q = 0; q < kLanes; ++q) {
    block += static_cast<double>(__shfl_sync(0xffffffffu, laneSum, base + q));
  }
  return block;
}

// Note [Sign tiles]
// The fused chunked kernel reads residual and addend once: a block stages a tile of whole chunks
// (at most kTileElements, at most kMaxChunksPerTile) as p in shared memory with coalesced 16-byte
// loads, thread (chunk c, lane b) then adds lane b of chunk c from shared memory in the CPU's
// order (Note [Sign sums]), and the block writes the residual and the bits from shared memory,
// one float4 per thread: the 4-bit nibbles of two neighbouring threads form one byte. The step
// count of the write loop is the same for every thread, so the shuffle sees all 32 lanes.
constexpr int kTileElements = 4096;  // 16 KiB of shared memory
constexpr int kMaxChunksPerTile = kThreads / kLanes;

template <bool kVector>
__global__ void __launch_bounds__(kThreads) chunkTileKernel(float* residual,
                                                            const float* addend,
                                                            float addendScale,
                                                            int64_t numel,
                                                            int chunkLength,
                                                            int chunksPerTile,
                                                            bool l2,
                                                            float* scales,
                                                            uint8_t* bits) {
  __shared__ float4 tileVectors[kTileElements / 4];
  __shared__ float tileScales[kMaxChunksPerTile];
  float* tile = reinterpret_cast<float*>(tileVectors);
  const int tileLength = chunkLength * chunksPerTile;
  const int64_t tileStart = static_cast<int64_t>(blockIdx.x) * tileLength;
  const int length = static_cast<int>(min(static_cast<int64_t>(tileLength), numel - tileStart));
  const int whole = length / 4;
  for (int v = threadIdx.x; v < whole; v += kThreads) {
    const int64_t i = tileStart + 4 * v;
    tileVectors[v] = kVector ? fusedP4(residual, addend, addendScale, i)
                             : make_float4(fusedP(residual, addend, addendScale, i),
                                           fusedP(residual, addend, addendScale, i + 1),
                                           fusedP(residual, addend, addendScale, i + 2),
                                           fusedP(residual, addend, addendScale, i + 3));
  }
  // The tail, and zeros after it up to the float4 that the write loop reads whole.
  for (int e = 4 * whole + threadIdx.x; e < 4 * ((length + 3) / 4); e += kThreads) {
    tile[e] = e < length ? fusedP(residual, addend, addendScale, tileStart + e) : 0.0f;
  }
  __syncthreads();

  const int chunk = threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  const int chunkStart = chunk * chunkLength;
  const int chunkEnd = chunk < chunksPerTile ? min(chunkStart + chunkLength, length) : 0;
  float laneSum = 0.0f;
#pragma unroll 8
  for (int e = chunkStart + lane; e < chunkEnd; e += kLanes) {
    laneSum = addRn(laneSum, laneTerm(tile[e], l2));
  }
  const double total = 0.0 + groupSum(laneSum);  // every thread: the shuffles need all lanes
  if (lane == 0 && chunkEnd > chunkStart) {
    const float scale = scaleOf(total, chunkEnd - chunkStart, l2);
    tileScales[chunk] = scale;
    scales[tileStart / chunkLength + chunk] = scale;
  }
  __syncthreads();

  const int vectors = (length + 3) / 4;
  for (int first = 0; first < vectors; first += kThreads) {
    const int v = first + threadIdx.x;
    unsigned nibble = 0;
    if (v < vectors) {
      const int e = 4 * v;
      // chunkLength is a multiple of 8: the four elements share a chunk.
      const float scale = tileScales[e / chunkLength];
      const float4 p4 = tileVectors[v];
      const float p[4] = {p4.x, p4.y, p4.z, p4.w};
      float r[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const bool positive = p[k] >= 0.0f;
        r[k] = subRn(p[k], positive ? scale : -scale);
        if (e + k < length) nibble |= static_cast<unsigned>(positive) << k;
      }
      storeFour(residual + tileStart + e, length - e, kVector, r);
    }
    const unsigned high = __shfl_down_sync(0xffffffffu, nibble, 1);
    if (v < vectors && (v & 1) == 0) {
      bits[(tileStart + 4 * v) / kLanes] = static_cast<uint8_t>(nibble | (high << 4));
    }
  }
}

__global__ void __launch_bounds__(kThreads) blockSumKernel(float* residual,
                                                           const float* addend,
                                                           float addendScale,
                                                           int64_t numel,
                                                           int64_t segmentLength,
                                                           int64_t blocksPerSegment,
                                                           int64_t totalBlocks,
                                                           bool l2,
                                                           double* blockSums) {
  const int64_t block = static_cast<int64_t>(blockIdx.x) * kGroupsPerBlock + threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  int64_t start = 0;
  int64_t length = 0;
  if (block < totalBlocks) {
    const int64_t segment = block / blocksPerSegment;
    const int64_t segmentEnd = min(numel, (segment + 1) * segmentLength);
    start = segment * segmentLength + (block % blocksPerSegment) * kSumBlock;
    length = start < segmentEnd ? min(kSumBlock, segmentEnd - start) : 0;
  }
  float laneSum = 0.0f;
  for (int64_t e = lane; e < length; e += kLanes) {
    const float p = fusedP(residual, addend, addendScale, start + e);
    if (addend != nullptr) residual[start + e] = p;
    laneSum = addRn(laneSum, laneTerm(p, l2));
  }
  const double sum = groupSum(laneSum);
  if (lane == 0 && block < totalBlocks) blockSums[block] = sum;
}

__global__ void segmentScaleKernel(const double* blockSums,
                                   int64_t numel,
                                   int64_t segmentLength,
                                   int64_t blocksPerSegment,
                                   int64_t segments,
                                   bool l2,
                                   float* scales) {
  const int64_t segment = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (segment >= segments) return;
  const int64_t length = min(segmentLength, numel - segment * segmentLength);
  const int64_t blocks = (length + kSumBlock - 1) / kSumBlock;
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) total += blockSums[segment * blocksPerSegment + b];
  scales[segment] = scaleOf(total, length, l2);
}

__global__ void packKernel(
    float* residual, int64_t numel, int64_t segmentLength, const float* scales, uint8_t* bits) {
  const int64_t byte = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t start = byte * kLanes;
  if (start >= numel) return;
  const float scale = scales[start / segmentLength];
  unsigned value = 0;
  for (int b = 0; b < kLanes && start + b < numel; ++b) {
    const float p = residual[start + b];
    const bool positive = p >= 0.0f;
    value |= static_cast<unsigned>(positive) << b;
    residual[start + b] = subRn(p, positive ? scale : -scale);
  }
  bits[byte] = static_cast<uint8_t>(value);
}

__global__ void decompressAddKernel(const float* scales,
                                    const uint8_t* bits,
                                    int64_t numel,
                                    int64_t segmentLength,
                                    float alpha,
                                    float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= numel) return;
  const float value = mulRn(alpha, scales[i / segmentLength]);
  const bool positive = (bits[i / kLanes] >> (i % kLanes)) & 1u;
  out[i] = addRn(out[i], positive ? value : -value);
}

// One float4 of `out` per thread (16-byte aligned): the nibble of its four bits, the scale of
// its segment (re-read only where a segment ends inside the four elements).
__global__ void decompressAddVectorKernel(const float* scales,
                                          const uint8_t* bits,
                                          int64_t numel,
                                          int64_t segmentLength,
                                          float alpha,
                                          float* out) {
  const int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t e = 4 * v;
  if (e >= numel) return;
  const unsigned nibble = (static_cast<unsigned>(bits[v / 2]) >> (4 * (v & 1))) & 0xfu;
  int64_t segment = indexDiv(e, segmentLength);
  int64_t segmentEnd = (segment + 1) * segmentLength;
  float value = mulRn(alpha, scales[segment]);
  float o[4];
  loadFour(out + e, numel - e, true, o);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (e + k >= numel) break;
    if (e + k >= segmentEnd) {
      ++segment;
      segmentEnd += segmentLength;
      value = mulRn(alpha, scales[segment]);
    }
    o[k] = addRn(o[k], (nibble >> k) & 1u ? value : -value);
  }
  storeFour(out + e, numel - e, true, o);
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int launchSignCompressChunked(float* residual,
                              const float* addend,
                              float scale,
                              int64_t numel,
                              int64_t chunkLength,
                              bool l2,
                              uint8_t* scales,
                              uint8_t* bits,
                              void* stream) {
  if (numel == 0) return 0;
  const int length = static_cast<int>(chunkLength);
  const int chunksPerTile = std::max(1, std::min(kMaxChunksPerTile, kTileElements / length));
  const int64_t tileLength = static_cast<int64_t>(chunksPerTile) * length;
  const int blocks = static_cast<int>((numel + tileLength - 1) / tileLength);
  auto s = static_cast<cudaStream_t>(stream);
  float* scaleValues = reinterpret_cast<float*>(scales);
  if (aligned16(residual) && aligned16(addend)) {
    TW_LAUNCH(chunkTileKernel<true>, blocks, kThreads, 0, s)
    (residual, addend, scale, numel, length, chunksPerTile, l2, scaleValues, bits);
  } else {
    TW_LAUNCH(chunkTileKernel<false>, blocks, kThreads, 0, s)
    (residual, addend, scale, numel, length, chunksPerTile, l2, scaleValues, bits);
  }
  return launched();
}

int launchSignCompressSegmented(float* residual,
                                const float* addend,
                                float scale,
                                int64_t numel,
                                int64_t segmentLength,
                                bool l2,
                                double* blockSums,
                                uint8_t* scales,
                                uint8_t* bits,
                                void* stream) {
  if (numel == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t segments = (numel + segmentLength - 1) / segmentLength;
  const int64_t blocksPerSegment = (segmentLength + kSumBlock - 1) / kSumBlock;
  const int64_t totalBlocks = segments * blocksPerSegment;
  TW_LAUNCH(blockSumKernel, blocksFor(totalBlocks, kGroupsPerBlock), kThreads, 0, s)
  (residual, addend, scale, numel, segmentLength, blocksPerSegment, totalBlocks, l2, blockSums);
  float* scaleValues = reinterpret_cast<float*>(scales);
  TW_LAUNCH(segmentScaleKernel, blocksFor(segments, kThreads), kThreads, 0, s)
  (blockSums, numel, segmentLength, blocksPerSegment, segments, l2, scaleValues);
  TW_LAUNCH(packKernel, blocksFor((numel + kLanes - 1) / kLanes, kThreads), kThreads, 0, s)
  (residual, numel, segmentLength, scaleValues, bits);
  return launched();
}

int launchSignDecompressAdd(const uint8_t* scales,
                            const uint8_t* bits,
                            int64_t numel,
                            int64_t segmentLength,
                            float alpha,
                            float* out,
                            void* stream) {
  if (numel == 0) return 0;
  auto s = static_cast<cudaStream_t>(stream);
  const float* scaleValues = reinterpret_cast<const float*>(scales);
  if (aligned16(out)) {
    TW_LAUNCH(decompressAddVectorKernel, blocksFor((numel + 3) / 4, kThreads), kThreads, 0, s)
    (scaleValues, bits, numel, segmentLength, alpha, out);
  } else {
    TW_LAUNCH(decompressAddKernel, blocksFor(numel, kThreads), kThreads, 0, s)
    (scaleValues, bits, numel, segmentLength, alpha, out);
  }
  return launched();
}

}  // namespace thinwire::kernels::detail

// 1-bit compression with fused error feedback on the GPU, bit-identical to SignCompressor: the
// same per-lane float sums, combined in double in the same order (see Note [Sign sums]).
#include <cuda_runtime.h>

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

__global__ void __launch_bounds__(kThreads) chunkedKernel(float* residual,
                                                          const float* addend,
                                                          float addendScale,
                                                          int64_t numel,
                                                          int64_t chunkLength,
                                                          bool l2,
                                                          float* scales,
                                                          uint8_t* bits) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kGroupsPerBlock + threadIdx.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  const int64_t start = chunk * chunkLength;
  const int64_t length = start < numel ? min(chunkLength, numel - start) : 0;
  float laneSum = 0.0f;
#pragma unroll 8
  for (int64_t e = lane; e < length; e += kLanes) {
    laneSum = addRn(laneSum, laneTerm(fusedP(residual, addend, addendScale, start + e), l2));
  }
  const double total = 0.0 + groupSum(laneSum);
  const float scale = length > 0 ? scaleOf(total, length, l2) : 0.0f;
  if (lane == 0 && length > 0) scales[chunk] = scale;
  const int shift = (threadIdx.x & 31) & ~(kLanes - 1);
  const int64_t steps = chunkLength / kLanes;  // the same on every thread: ballots stay uniform
  for (int64_t m = 0; m < steps; ++m) {
    const int64_t e = m * kLanes + lane;
    bool positive = false;
    if (e < length) {
      const float p = fusedP(residual, addend, addendScale, start + e);
      positive = p >= 0.0f;
      residual[start + e] = subRn(p, positive ? scale : -scale);
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, positive);
    if (lane == 0 && m * kLanes < length) {
      bits[start / kLanes + m] = static_cast<uint8_t>((ballot >> shift) & 0xffu);
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
  const int64_t chunks = (numel + chunkLength - 1) / chunkLength;
  chunkedKernel<<<blocksFor(chunks, kGroupsPerBlock), kThreads, 0,
                  static_cast<cudaStream_t>(stream)>>>(residual, addend, scale, numel, chunkLength,
                                                       l2, reinterpret_cast<float*>(scales), bits);
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
  blockSumKernel<<<blocksFor(totalBlocks, kGroupsPerBlock), kThreads, 0, s>>>(
      residual, addend, scale, numel, segmentLength, blocksPerSegment, totalBlocks, l2, blockSums);
  float* scaleValues = reinterpret_cast<float*>(scales);
  segmentScaleKernel<<<blocksFor(segments, kThreads), kThreads, 0, s>>>(
      blockSums, numel, segmentLength, blocksPerSegment, segments, l2, scaleValues);
  packKernel<<<blocksFor((numel + kLanes - 1) / kLanes, kThreads), kThreads, 0, s>>>(
      residual, numel, segmentLength, scaleValues, bits);
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
  decompressAddKernel<<<blocksFor(numel, kThreads), kThreads, 0,
                        static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const float*>(scales), bits, numel, segmentLength, alpha, out);
  return launched();
}

}  // namespace thinwire::kernels::detail

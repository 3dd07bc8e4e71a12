// Top-k selection on the GPU: sampled threshold, one fused candidate pass with ordered compaction,
// and the helpers of the exact refinement (see kernels/top_k.cc for the algorithm).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/device_math.cuh"
#include "kernels/launch.h"

namespace thinwire::kernels::detail {
namespace {

constexpr int kPassThreads = 256;
constexpr int kItems = static_cast<int>(kTopKTile) / kPassThreads;
constexpr int kWarps = kPassThreads / 32;
constexpr int kScanThreads = 1024;
constexpr int kThreads = 256;
// A half's largest finite value: larger magnitudes saturate (TopKCompressor's fp16 rule).
constexpr float kHalfMax = 65504.0f;

__global__ void sampleKeysKernel(const float* residual,
                                 const float* addend,
                                 float scale,
                                 int64_t first,
                                 int64_t stride,
                                 int64_t count,
                                 int32_t* keys) {
  const int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= count) return;
  keys[s] = static_cast<int32_t>(magnitudeKey(fusedP(residual, addend, scale, first + s * stride)));
}

// Note [Ordered candidate pass]
// One block per tile of kTopKTile elements. Every thread loads its 16 elements first (independent
// loads keep enough bytes in flight to run at memory speed), then the block walks the tile in
// 256-element steps: a warp ballot gives each candidate its rank inside its warp, the warps'
// counts give the warp offsets, so candidates land in their tile's slots in index order without
// atomics, and the result never depends on scheduling.
__global__ void __launch_bounds__(kPassThreads) thresholdPassKernel(float* residual,
                                                                    const float* addend,
                                                                    float scale,
                                                                    int64_t numel,
                                                                    uint32_t thresholdKey,
                                                                    bool zeroCandidates,
                                                                    int32_t* slotIndices,
                                                                    float* slotValues,
                                                                    int32_t* tileCounts) {
  const int64_t tileBase = static_cast<int64_t>(blockIdx.x) * kTopKTile;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  float p[kItems];
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const int64_t i = tileBase + it * kPassThreads + threadIdx.x;
    p[it] = i < numel ? fusedP(residual, addend, scale, i) : 0.0f;
  }
  __shared__ int warpCounts[kWarps];
  int running = 0;
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const int64_t i = tileBase + it * kPassThreads + threadIdx.x;
    const bool valid = i < numel;
    const bool candidate = valid && magnitudeKey(p[it]) >= thresholdKey;
    if (valid) {
      if (addend != nullptr) {
        residual[i] = candidate && zeroCandidates ? 0.0f : p[it];
      } else if (candidate && zeroCandidates) {
        residual[i] = 0.0f;
      }
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, candidate);
    if (lane == 0) warpCounts[warp] = __popc(ballot);
    __syncthreads();
    int offset = running;
    int total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      offset += w < warp ? warpCounts[w] : 0;
      total += warpCounts[w];
    }
    if (candidate) {
      const int position = offset + __popc(ballot & ((1u << lane) - 1u));
      slotIndices[tileBase + position] = static_cast<int32_t>(i);
      slotValues[tileBase + position] = p[it];
    }
    running += total;
    __syncthreads();  // warpCounts is rewritten by the next step
  }
  if (threadIdx.x == 0) tileCounts[blockIdx.x] = running;
}

// Hillis-Steele inclusive scan of one value per thread across the block: returns the sum of
// `own` over threads 0..threadIdx.x. `sums` is shared memory of blockDim.x values; every thread
// of the block must call it.
__device__ int64_t blockInclusiveScan(int64_t* sums, int64_t own) {
  sums[threadIdx.x] = own;
  __syncthreads();
  for (unsigned step = 1; step < blockDim.x; step *= 2) {
    const int64_t add = threadIdx.x >= step ? sums[threadIdx.x - step] : 0;
    __syncthreads();
    sums[threadIdx.x] += add;
    __syncthreads();
  }
  return sums[threadIdx.x];
}

__global__ void __launch_bounds__(kScanThreads)
    scanTilesKernel(const int32_t* tileCounts, int64_t tiles, int64_t* tileOffsets) {
  __shared__ int64_t sums[kScanThreads];
  const int64_t per = (tiles + kScanThreads - 1) / kScanThreads;
  const int64_t begin = threadIdx.x * per;
  const int64_t end = begin + per < tiles ? begin + per : tiles;
  int64_t own = 0;
  for (int64_t t = begin; t < end; ++t) own += tileCounts[t];
  const int64_t inclusive = blockInclusiveScan(sums, own);
  int64_t offset = inclusive - own;
  for (int64_t t = begin; t < end; ++t) {
    tileOffsets[t] = offset;
    offset += tileCounts[t];
  }
  if (threadIdx.x == kScanThreads - 1) tileOffsets[tiles] = inclusive;
}

__global__ void gatherTilesKernel(const int32_t* slotIndices,
                                  const float* slotValues,
                                  const int32_t* tileCounts,
                                  const int64_t* tileOffsets,
                                  int32_t* indices,
                                  float* values) {
  const int64_t tile = blockIdx.x;
  const int count = tileCounts[tile];
  const int64_t from = tile * kTopKTile;
  const int64_t to = tileOffsets[tile];
  for (int j = threadIdx.x; j < count; j += blockDim.x) {
    indices[to + j] = slotIndices[from + j];
    values[to + j] = slotValues[from + j];
  }
}

__global__ void magnitudeKeysKernel(const float* values, int64_t count, int32_t* keys) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < count) keys[j] = static_cast<int32_t>(magnitudeKey(values[j]));
}

__global__ void scatterKernel(float* residual,
                              const int32_t* indices,
                              const float* values,
                              int64_t count) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < count) residual[indices[j]] = values[j];
}

__global__ void emitKernel(const int32_t* indices,
                           const float* values,
                           int64_t count,
                           bool fp16Values,
                           float* residual,
                           uint8_t* payload) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= count) return;
  const int32_t index = indices[j];
  const float p = values[j];
  reinterpret_cast<int32_t*>(payload)[j] = index;
  if (fp16Values) {
    const float saturated = p > kHalfMax ? kHalfMax : (p < -kHalfMax ? -kHalfMax : p);
    const __half half = __float2half_rn(saturated);
    reinterpret_cast<__half*>(payload + 4 * count)[j] = half;
    residual[index] = subRn(p, __half2float(half));
  } else {
    reinterpret_cast<float*>(payload + 4 * count)[j] = p;
    residual[index] = 0.0f;
  }
}

__global__ void decompressAddKernel(const uint8_t* payload,
                                    int64_t count,
                                    bool fp16Values,
                                    float alpha,
                                    float* out,
                                    int64_t numel,
                                    int32_t* badIndex) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= count) return;
  const int32_t index = reinterpret_cast<const int32_t*>(payload)[j];
  if (index < 0 || index >= numel) {
    *badIndex = 1;
    return;
  }
  const float value = fp16Values
                          ? __half2float(reinterpret_cast<const __half*>(payload + 4 * count)[j])
                          : reinterpret_cast<const float*>(payload + 4 * count)[j];
  // Repeated indices add up, as in the CPU loop; unique ones get exactly o + alpha * v.
  atomicAdd(out + index, mulRn(alpha, value));
}

// Note [Radix select]
// The rank-th largest of non-negative int32 keys without sorting them: three passes over the
// digits of bits 31..21, 20..10 and 9..0. Pass d histograms the digit of the keys whose higher
// bits equal the prefix found so far; one block then walks the bins from the largest digit down
// to the bin that holds the rank, appends that digit to the prefix and keeps the rank within the
// bin. After three passes the prefix is the key itself: exactly what sorting and indexing gives.
// state[0] = prefix, state[1] = rank within the keys that share the prefix.
constexpr int kSelectBins = 1 << 11;
static_assert(kSelectBins * 3 == kRadixSelectHistogramInts, "launch.h sizes the histograms");
constexpr int kSelectThreads = 1024;
constexpr int kSelectPasses = 3;
__host__ __device__ constexpr int selectShift(int pass) {
  return pass == 0 ? 21 : pass == 1 ? 10 : 0;
}
__host__ __device__ constexpr int selectBins(int pass) { return pass == 2 ? 1 << 10 : 1 << 11; }

__global__ void __launch_bounds__(kThreads) selectHistogramKernel(
    const int32_t* keys, int64_t count, int pass, const int64_t* state, int32_t* histogram) {
  __shared__ int32_t bins[kSelectBins];
  for (int b = threadIdx.x; b < kSelectBins; b += blockDim.x) bins[b] = 0;
  __syncthreads();
  const int shift = selectShift(pass);
  const uint32_t digitMask = static_cast<uint32_t>(selectBins(pass) - 1);
  // The bits above this pass's digit, fixed by the passes before (none in pass 0).
  const uint32_t highMask = pass == 0 ? 0u : ~((digitMask << shift) | ((1u << shift) - 1u));
  const uint32_t prefix = pass == 0 ? 0u : static_cast<uint32_t>(state[0]);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const uint32_t key = static_cast<uint32_t>(keys[i]);
    if ((key & highMask) == prefix) atomicAdd(&bins[(key >> shift) & digitMask], 1);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kSelectBins; b += blockDim.x) {
    if (bins[b] != 0) atomicAdd(&histogram[b], bins[b]);
  }
}

// One block of kSelectThreads: thread t owns bins (bins - 1 - 2t) and (bins - 2 - 2t), the largest
// digits first; an inclusive scan of the owners' counts finds the bin holding the rank.
__global__ void __launch_bounds__(kSelectThreads)
    selectDigitKernel(const int32_t* histogram, int pass, int64_t initialRank, int64_t* state) {
  __shared__ int64_t sums[kSelectThreads];
  const int bins = selectBins(pass);
  const int high = bins - 1 - 2 * static_cast<int>(threadIdx.x);
  const int64_t first = high >= 0 ? histogram[high] : 0;
  const int64_t second = high >= 1 ? histogram[high - 1] : 0;
  const int64_t own = first + second;
  const int64_t before = blockInclusiveScan(sums, own) - own;
  const int64_t rank = pass == 0 ? initialRank : state[1];
  const uint32_t prefix = pass == 0 ? 0u : static_cast<uint32_t>(state[0]);
  __syncthreads();  // every thread has read state before one of them rewrites it
  if (own > 0 && before < rank && rank <= before + own) {
    const bool inFirst = rank <= before + first;
    const int digit = inFirst ? high : high - 1;
    state[0] = static_cast<int64_t>(prefix | (static_cast<uint32_t>(digit) << selectShift(pass)));
    state[1] = inFirst ? rank - before : rank - before - first;
  }
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int launchSampleKeys(const float* residual,
                     const float* addend,
                     float scale,
                     int64_t first,
                     int64_t stride,
                     int64_t count,
                     int32_t* keys,
                     void* stream) {
  if (count == 0) return 0;
  TW_LAUNCH(sampleKeysKernel, blocksFor(count, kThreads), kThreads, 0,
            static_cast<cudaStream_t>(stream))
  (residual, addend, scale, first, stride, count, keys);
  return launched();
}

int launchThresholdPass(float* residual,
                        const float* addend,
                        float scale,
                        int64_t numel,
                        uint32_t thresholdKey,
                        bool zeroCandidates,
                        int32_t* slotIndices,
                        float* slotValues,
                        int32_t* tileCounts,
                        void* stream) {
  if (numel == 0) return 0;
  TW_LAUNCH(thresholdPassKernel, blocksFor(numel, kTopKTile), kPassThreads, 0,
            static_cast<cudaStream_t>(stream))
  (residual, addend, scale, numel, thresholdKey, zeroCandidates, slotIndices, slotValues,
   tileCounts);
  return launched();
}

int launchScanTiles(const int32_t* tileCounts, int64_t tiles, int64_t* tileOffsets, void* stream) {
  TW_LAUNCH(scanTilesKernel, 1, kScanThreads, 0, static_cast<cudaStream_t>(stream))
  (tileCounts, tiles, tileOffsets);
  return launched();
}

int launchGatherTiles(const int32_t* slotIndices,
                      const float* slotValues,
                      const int32_t* tileCounts,
                      const int64_t* tileOffsets,
                      int64_t tiles,
                      int32_t* indices,
                      float* values,
                      void* stream) {
  if (tiles == 0) return 0;
  TW_LAUNCH(gatherTilesKernel, static_cast<unsigned>(tiles), 128, 0,
            static_cast<cudaStream_t>(stream))
  (slotIndices, slotValues, tileCounts, tileOffsets, indices, values);
  return launched();
}

int launchMagnitudeKeys(const float* values, int64_t count, int32_t* keys, void* stream) {
  if (count == 0) return 0;
  TW_LAUNCH(magnitudeKeysKernel, blocksFor(count, kThreads), kThreads, 0,
            static_cast<cudaStream_t>(stream))
  (values, count, keys);
  return launched();
}

int launchScatter(
    float* residual, const int32_t* indices, const float* values, int64_t count, void* stream) {
  if (count == 0) return 0;
  TW_LAUNCH(scatterKernel, blocksFor(count, kThreads), kThreads, 0,
            static_cast<cudaStream_t>(stream))
  (residual, indices, values, count);
  return launched();
}

int launchTopKEmit(const int32_t* indices,
                   const float* values,
                   int64_t count,
                   bool fp16Values,
                   float* residual,
                   uint8_t* payload,
                   void* stream) {
  if (count == 0) return 0;
  TW_LAUNCH(emitKernel, blocksFor(count, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream))
  (indices, values, count, fp16Values, residual, payload);
  return launched();
}

int launchTopKDecompressAdd(const uint8_t* payload,
                            int64_t count,
                            bool fp16Values,
                            float alpha,
                            float* out,
                            int64_t numel,
                            int32_t* badIndex,
                            void* stream) {
  if (count == 0) return 0;
  TW_LAUNCH(decompressAddKernel, blocksFor(count, kThreads), kThreads, 0,
            static_cast<cudaStream_t>(stream))
  (payload, count, fp16Values, alpha, out, numel, badIndex);
  return launched();
}

int launchRadixSelect(const int32_t* keys,
                      int64_t count,
                      int64_t rank,
                      int64_t* state,
                      int32_t* histograms,
                      void* stream) {
  if (count == 0 || rank < 1 || rank > count) return static_cast<int>(cudaErrorInvalidValue);
  auto s = static_cast<cudaStream_t>(stream);
  const cudaError_t cleared =
      cudaMemsetAsync(histograms, 0, sizeof(int32_t) * kSelectBins * kSelectPasses, s);
  if (cleared != cudaSuccess) return static_cast<int>(cleared);
  // Enough blocks to fill the device, each at least 16 keys per thread.
  const int blocks = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(1024, (count + 16 * kThreads - 1) / (16 * kThreads))));
  for (int pass = 0; pass < kSelectPasses; ++pass) {
    int32_t* histogram = histograms + pass * kSelectBins;
    TW_LAUNCH(selectHistogramKernel, blocks, kThreads, 0, s)(keys, count, pass, state, histogram);
    TW_LAUNCH(selectDigitKernel, 1, kSelectThreads, 0, s)(histogram, pass, rank, state);
  }
  return launched();
}

}  // namespace thinwire::kernels::detail

// QuEST's row quantizer on the GPU (qat/quantizer.cc's Note [Row kernel]): one block per row,
// the row in shared memory, the block Hadamard transform as 7 butterfly stages in the CPU's order,
// so the rotation is bit-identical; RMS, clip, rounding and trust mask follow with the CPU's
// roundings.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/device_math.cuh"
#include "kernels/launch.h"

namespace thinwire::kernels::detail {
namespace {

constexpr int kThreads = 256;
constexpr int kBlock = 128;  // qat::kHadamardBlock
constexpr int64_t kDefaultSharedBytes = 48 * 1024;

// Every 128-block of row[0, d) times H128 (unnormalised butterflies, then the scale), in place.
__device__ void fwhtRow(float* row, int64_t d, float scale) {
  const int64_t pairs = d / 2;
  for (int half = 1; half < kBlock; half *= 2) {
    for (int64_t q = threadIdx.x; q < pairs; q += blockDim.x) {
      const int64_t block = q / (kBlock / 2);
      const int w = static_cast<int>(q % (kBlock / 2));
      const int64_t a = block * kBlock + (w / half) * 2 * half + (w % half);
      const float x = row[a];
      const float y = row[a + half];
      row[a] = addRn(x, y);
      row[a + half] = subRn(x, y);
    }
    __syncthreads();
  }
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = mulRn(row[j], scale);
  __syncthreads();
}

// Note [Register rows]
// The fast paths keep every element in a register: a warp holds one 128-block, four consecutive
// elements per lane. Butterfly stages of half 1 and 2 pair elements of the same lane; stages of
// half 4 .. 64 pair lane l with lane l ^ (half / 4), exchanged with shuffles. Each stage computes
// the same x + y and x - y as the CPU's stage (IEEE addition is commutative), in the CPU's stage
// order, so the result is bit-identical; there is no barrier and no shared memory.
constexpr int kWarpThreads = 32;
constexpr int kMaxRegisterRow = 4096;  // 1024 threads of four elements
constexpr int kRegisterThreads = 256;  // threads of a block for rows shorter than 1024

// Every lane of the warp must call this (shuffles with a full mask).
__device__ __forceinline__ void fwhtWarp(float (&x)[4], float scale) {
  const int lane = threadIdx.x % kWarpThreads;
  float a = x[0];
  float b = x[1];
  x[0] = addRn(a, b);
  x[1] = subRn(a, b);
  a = x[2];
  b = x[3];
  x[2] = addRn(a, b);
  x[3] = subRn(a, b);
  a = x[0];
  b = x[2];
  x[0] = addRn(a, b);
  x[2] = subRn(a, b);
  a = x[1];
  b = x[3];
  x[1] = addRn(a, b);
  x[3] = subRn(a, b);
#pragma unroll
  for (int partner = 1; partner < kWarpThreads; partner *= 2) {
    const bool upper = (lane & partner) != 0;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float other = __shfl_xor_sync(0xffffffffu, x[q], partner);
      // lower: x + y (mine is x); upper: x - y (the partner's is x, mine y)
      x[q] = upper ? subRn(other, x[q]) : addRn(x[q], other);
    }
  }
#pragma unroll
  for (int q = 0; q < 4; ++q) x[q] = mulRn(x[q], scale);
}

// Block Hadamard of `count` floats (a multiple of 128, 16-byte aligned), one float4 per thread.
__global__ void __launch_bounds__(kRegisterThreads)
    hadamardRegisterKernel(float* data, int64_t count, float scale) {
  const int64_t e = 4 * (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x);
  // count is a multiple of 128: a warp is wholly inside or wholly past the end.
  if (e >= count) return;
  const float4 v = *reinterpret_cast<const float4*>(data + e);
  float x[4] = {v.x, v.y, v.z, v.w};
  fwhtWarp(x, scale);
  *reinterpret_cast<float4*>(data + e) = make_float4(x[0], x[1], x[2], x[3]);
}

// QuEST forward with a row of d (a multiple of 128, at most kMaxRegisterRow) in the registers of
// d / 4 threads, rowsPerBlock rows per block; input and values 16-byte aligned. `byteVectors`:
// mask and codes are 4-byte aligned, so a thread stores its four bytes at once.
__global__ void __launch_bounds__(1024) forwardRegisterKernel(const float* input,
                                                              QuestLaunch plan,
                                                              int rowsPerBlock,
                                                              bool byteVectors,
                                                              float* values,
                                                              bool* mask,
                                                              int8_t* codes,
                                                              float* steps) {
  __shared__ double warpSums[1024 / kWarpThreads];
  const int rowThreads = static_cast<int>(plan.d / 4);
  const int rowWarps = rowThreads / kWarpThreads;
  const int localRow = threadIdx.x / rowThreads;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * rowsPerBlock + localRow;
  const bool active = row < plan.rows;  // the same for whole warps
  const int64_t e = row * plan.d + 4 * (threadIdx.x % rowThreads);
  float x[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (active) {
    const float4 v = *reinterpret_cast<const float4*>(input + e);
    x[0] = v.x;
    x[1] = v.y;
    x[2] = v.z;
    x[3] = v.w;
  }
  if (plan.hadamard) fwhtWarp(x, plan.hadamardScale);
  double sum = 0.0;
#pragma unroll
  for (int q = 0; q < 4; ++q) sum += static_cast<double>(x[q]) * static_cast<double>(x[q]);
  for (int offset = kWarpThreads / 2; offset > 0; offset /= 2) {
    sum += __shfl_down_sync(0xffffffffu, sum, offset);
  }
  const int warp = threadIdx.x / kWarpThreads;
  if (threadIdx.x % kWarpThreads == 0) warpSums[warp] = sum;
  __syncthreads();
  // Every thread of a row adds its row's warps in the same order: one value per row.
  double total = 0.0;
  for (int w = 0; w < rowWarps; ++w) total += warpSums[localRow * rowWarps + w];
  const float sigma = static_cast<float>(sqrt(total / static_cast<double>(plan.d)));
  const float clip = addRn(mulRn(plan.alpha, sigma), 1e-8f);
  const float step = divRn(mulRn(2.0f, clip), plan.levelsMinusOne);
  const float keep = mulRn(plan.maskScale, clip);
  if (active && steps != nullptr && threadIdx.x % rowThreads == 0) steps[row] = step;
  uint32_t maskBytes = 0;
  uint32_t codeBytes = 0;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const float value = x[q];
    maskBytes |= static_cast<uint32_t>(fabsf(value) <= keep) << (8 * q);
    // std::min(std::max(value, -clip), clip), NaN behaviour included.
    const float raised = value < -clip ? -clip : value;
    const float clamped = clip < raised ? clip : raised;
    const float level = rintf(addRn(divRn(clamped, step), 0.5f));
    const int8_t code = static_cast<int8_t>(subRn(level, 1.0f));
    codeBytes |= static_cast<uint32_t>(static_cast<uint8_t>(code)) << (8 * q);
    x[q] = mulRn(subRn(level, 0.5f), step);
  }
  if (plan.rotateBack) fwhtWarp(x, plan.hadamardScale);
  if (!active) return;
  *reinterpret_cast<float4*>(values + e) = make_float4(x[0], x[1], x[2], x[3]);
  if (byteVectors) {
    if (mask != nullptr) *reinterpret_cast<uint32_t*>(mask + e) = maskBytes;
    if (codes != nullptr) *reinterpret_cast<uint32_t*>(codes + e) = codeBytes;
  } else {
    for (int q = 0; q < 4; ++q) {
      if (mask != nullptr) mask[e + q] = ((maskBytes >> (8 * q)) & 0xffu) != 0;
      if (codes != nullptr) codes[e + q] = static_cast<int8_t>((codeBytes >> (8 * q)) & 0xffu);
    }
  }
}

__global__ void __launch_bounds__(kThreads) forwardKernel(
    const float* input, QuestLaunch plan, float* values, bool* mask, int8_t* codes, float* steps) {
  TW_DYNAMIC_SHARED(float, row);
  __shared__ double partial[kThreads];
  __shared__ float rowClip;
  __shared__ float rowStep;
  __shared__ float rowKeep;
  const int64_t d = plan.d;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = input[base + j];
  __syncthreads();
  if (plan.hadamard) fwhtRow(row, d, plan.hadamardScale);
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    sum += static_cast<double>(row[j]) * static_cast<double>(row[j]);  // exact products
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float sigma = static_cast<float>(sqrt(partial[0] / static_cast<double>(d)));
    const float clip = addRn(mulRn(plan.alpha, sigma), 1e-8f);
    rowClip = clip;
    rowStep = divRn(mulRn(2.0f, clip), plan.levelsMinusOne);
    rowKeep = mulRn(plan.maskScale, clip);
    if (steps != nullptr) steps[blockIdx.x] = rowStep;
  }
  __syncthreads();
  const float clip = rowClip;
  const float step = rowStep;
  const float keep = rowKeep;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float value = row[j];
    if (mask != nullptr) mask[base + j] = fabsf(value) <= keep;
    // std::min(std::max(value, -clip), clip), NaN behaviour included.
    const float raised = value < -clip ? -clip : value;
    const float clamped = clip < raised ? clip : raised;
    const float level = rintf(addRn(divRn(clamped, step), 0.5f));
    if (codes != nullptr) codes[base + j] = static_cast<int8_t>(subRn(level, 1.0f));
    row[j] = mulRn(subRn(level, 0.5f), step);
  }
  __syncthreads();
  if (plan.rotateBack) fwhtRow(row, d, plan.hadamardScale);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) values[base + j] = row[j];
}

__global__ void __launch_bounds__(kThreads)
    backwardKernel(float* gradient, const bool* mask, QuestLaunch plan) {
  TW_DYNAMIC_SHARED(float, row);
  const int64_t d = plan.d;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = gradient[base + j];
  __syncthreads();
  if (plan.rotateBack) fwhtRow(row, d, plan.hadamardScale);
  if (mask != nullptr) {
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      row[j] = mask[base + j] ? row[j] : 0.0f;
    }
    __syncthreads();
  }
  if (plan.hadamard) fwhtRow(row, d, plan.hadamardScale);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) gradient[base + j] = row[j];
}

__global__ void __launch_bounds__(kThreads) hadamardKernel(float* data, int64_t d, float scale) {
  TW_DYNAMIC_SHARED(float, row);
  const int64_t base = static_cast<int64_t>(blockIdx.x) * d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = data[base + j];
  __syncthreads();
  fwhtRow(row, d, scale);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) data[base + j] = row[j];
}

template <typename Kernel>
int allowSharedBytes(Kernel kernel, int64_t bytes) {
  if (bytes <= kDefaultSharedBytes) return 0;
  return static_cast<int>(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(bytes)));
}

int launched() { return static_cast<int>(cudaGetLastError()); }

}  // namespace

int launchQuestForward(const float* input,
                       const QuestLaunch& plan,
                       float* values,
                       bool* mask,
                       int8_t* codes,
                       float* steps,
                       void* stream) {
  if (plan.rows == 0 || plan.d == 0) return 0;
  if (plan.d % kBlock == 0 && plan.d <= kMaxRegisterRow && aligned16(input) && aligned16(values)) {
    const int rowThreads = static_cast<int>(plan.d / 4);
    const int rowsPerBlock = std::max(1, kRegisterThreads / rowThreads);
    const int64_t blocks = (plan.rows + rowsPerBlock - 1) / rowsPerBlock;
    const bool byteVectors =
        reinterpret_cast<uintptr_t>(mask) % 4 == 0 && reinterpret_cast<uintptr_t>(codes) % 4 == 0;
    TW_LAUNCH(forwardRegisterKernel, static_cast<unsigned>(blocks), rowsPerBlock * rowThreads, 0,
              static_cast<cudaStream_t>(stream))
    (input, plan, rowsPerBlock, byteVectors, values, mask, codes, steps);
    return launched();
  }
  const int64_t bytes = plan.d * static_cast<int64_t>(sizeof(float));
  if (int error = allowSharedBytes(forwardKernel, bytes)) return error;
  TW_LAUNCH(forwardKernel, static_cast<unsigned>(plan.rows), kThreads, bytes,
            static_cast<cudaStream_t>(stream))
  (input, plan, values, mask, codes, steps);
  return launched();
}

int launchQuestBackward(float* gradient, const bool* mask, const QuestLaunch& plan, void* stream) {
  if (plan.rows == 0 || plan.d == 0) return 0;
  const int64_t bytes = plan.d * static_cast<int64_t>(sizeof(float));
  if (int error = allowSharedBytes(backwardKernel, bytes)) return error;
  TW_LAUNCH(backwardKernel, static_cast<unsigned>(plan.rows), kThreads, bytes,
            static_cast<cudaStream_t>(stream))
  (gradient, mask, plan);
  return launched();
}

int launchBlockHadamard(float* data, int64_t rows, int64_t d, float hadamardScale, void* stream) {
  if (rows == 0 || d == 0) return 0;
  if (d % kBlock == 0 && aligned16(data)) {
    const int64_t count = rows * d;
    TW_LAUNCH(hadamardRegisterKernel, blocksFor(count / 4, kRegisterThreads), kRegisterThreads, 0,
              static_cast<cudaStream_t>(stream))
    (data, count, hadamardScale);
    return launched();
  }
  const int64_t bytes = d * static_cast<int64_t>(sizeof(float));
  if (int error = allowSharedBytes(hadamardKernel, bytes)) return error;
  TW_LAUNCH(hadamardKernel, static_cast<unsigned>(rows), kThreads, bytes,
            static_cast<cudaStream_t>(stream))
  (data, d, hadamardScale);
  return launched();
}

}  // namespace thinwire::kernels::detail

// QuEST's row quantizer on the GPU (qat/quantizer.cc's Note [Row kernel]): one block per row,
// the row in shared memory, the block Hadamard transform as 7 butterfly stages in the CPU's order,
// so the rotation is bit-identical; RMS, clip, rounding and trust mask follow with the CPU's
// roundings.
#include <cuda_runtime.h>

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

__global__ void __launch_bounds__(kThreads) forwardKernel(
    const float* input, QuestLaunch plan, float* values, bool* mask, int8_t* codes, float* steps) {
  extern __shared__ float row[];
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
  extern __shared__ float row[];
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
  extern __shared__ float row[];
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
  const int64_t bytes = plan.d * static_cast<int64_t>(sizeof(float));
  if (int error = allowSharedBytes(forwardKernel, bytes)) return error;
  forwardKernel<<<static_cast<unsigned>(plan.rows), kThreads, bytes,
                  static_cast<cudaStream_t>(stream)>>>(input, plan, values, mask, codes, steps);
  return launched();
}

int launchQuestBackward(float* gradient, const bool* mask, const QuestLaunch& plan, void* stream) {
  if (plan.rows == 0 || plan.d == 0) return 0;
  const int64_t bytes = plan.d * static_cast<int64_t>(sizeof(float));
  if (int error = allowSharedBytes(backwardKernel, bytes)) return error;
  backwardKernel<<<static_cast<unsigned>(plan.rows), kThreads, bytes,
                   static_cast<cudaStream_t>(stream)>>>(gradient, mask, plan);
  return launched();
}

int launchBlockHadamard(float* data, int64_t rows, int64_t d, float hadamardScale, void* stream) {
  if (rows == 0 || d == 0) return 0;
  const int64_t bytes = d * static_cast<int64_t>(sizeof(float));
  if (int error = allowSharedBytes(hadamardKernel, bytes)) return error;
  hadamardKernel<<<static_cast<unsigned>(rows), kThreads, bytes,
                   static_cast<cudaStream_t>(stream)>>>(data, d, hadamardScale);
  return launched();
}

}  // namespace thinwire::kernels::detail

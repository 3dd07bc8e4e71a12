#include "qat/hadamard.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <cmath>

#include "base/error.h"
#include "qat/cuda_rows.h"

namespace thinwire::qat {

void fwhtBlocksInPlace(float* data, int64_t length) {
  // 1/sqrt(128) in fp32, applied once at the end of each block: the butterflies are exact
  // integer-coefficient sums, so one rounding of the scale keeps H orthogonal to fp32 precision.
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kHadamardBlock)));
  for (int64_t offset = 0; offset < length; offset += kHadamardBlock) {
    float* block = data + offset;
    for (int64_t half = 1; half < kHadamardBlock; half *= 2) {
      for (int64_t start = 0; start < kHadamardBlock; start += 2 * half) {
        float* a = block + start;
        float* b = a + half;
        for (int64_t j = 0; j < half; ++j) {
          const float x = a[j];
          const float y = b[j];
          a[j] = x + y;
          b[j] = x - y;
        }
      }
    }
    for (int64_t j = 0; j < kHadamardBlock; ++j) block[j] *= scale;
  }
}

namespace {

// Rotates a contiguous fp32 copy of `x`; returns it in x's dtype.
at::Tensor rotate(const at::Tensor& x) {
  at::Tensor work = x.to(at::kFloat).contiguous().clone();
  const int64_t d = work.size(-1);
  const int64_t rows = d == 0 ? 0 : work.numel() / d;
  if (work.is_cuda()) {
    at::Tensor rowsView = work.view({rows, d});
    if (rows > 0) hadamardRowsOnCudaInPlace(rowsView);
    return work.to(x.scalar_type());
  }
  float* data = work.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fwhtBlocksInPlace(data + r * d, d);
  });
  return work.to(x.scalar_type());
}

struct BlockHadamardFunction : public torch::autograd::Function<BlockHadamardFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* /*ctx*/, const at::Tensor& x) {
    return rotate(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* /*ctx*/,
                                                 torch::autograd::variable_list grads) {
    return {rotate(grads[0])};
  }
};

}  // namespace

at::Tensor blockHadamard(const at::Tensor& x) {
  TW_CHECK(x.dim() >= 1 && x.size(-1) % kHadamardBlock == 0,
           "the block Hadamard transform needs a last dimension that is a multiple of 128, got "
           "shape ",
           x.sizes());
  TW_CHECK(at::isFloatingType(x.scalar_type()), "blockHadamard needs a float tensor, got ",
           x.scalar_type());
  return BlockHadamardFunction::apply(x);
}

}  // namespace thinwire::qat

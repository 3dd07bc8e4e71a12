#include "optim/grad_clip.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "base/error.h"

namespace thinwire::optim {

double clipGradientNorm(std::vector<NamedParameter>& parameters, double maxNorm) {
  TW_CHECK(maxNorm > 0, "gradient clipping norm must be > 0, got ", maxNorm);
  at::NoGradGuard noGrad;
  double squared = 0;
  for (auto& p : parameters) {
    const at::Tensor& grad = p.tensor.grad();
    if (!grad.defined()) continue;
    if (grad.is_cpu() && grad.scalar_type() == at::kFloat && grad.is_contiguous()) {
      // One pass, accumulated in double, without materialising a double copy of the gradient
      // (that copy and its square cost more than the rest of the step on a large model).
      const float* g = grad.data_ptr<float>();
      const int64_t n = grad.numel();
      double sum = 0;
      for (int64_t k = 0; k < n; ++k) sum += static_cast<double>(g[k]) * g[k];
      squared += sum;
    } else {
      // CUDA gradients (a host loop over device memory would fault) and other layouts.
      squared += grad.to(at::kDouble).pow(2).sum().item<double>();
    }
  }
  const double norm = std::sqrt(squared);
  if (norm > maxNorm) {
    const double factor = maxNorm / (norm + 1e-6);
    for (auto& p : parameters) {
      if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(factor);
    }
  }
  return norm;
}

}  // namespace thinwire::optim

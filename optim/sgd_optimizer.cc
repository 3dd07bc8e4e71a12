#include "optim/sgd_optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "base/error.h"

namespace thinwire::optim {

SgdOptimizer::SgdOptimizer(std::vector<NamedParameter> parameters, const OptimizerOptions& options)
    : parameters_(std::move(parameters)), options_(options), momentum_(parameters_.size()) {
  TW_CHECK(options_.momentum >= 0 && options_.momentum < 1, "SGD momentum must be in [0, 1), got ",
           options_.momentum);
  TW_CHECK(!options_.nesterov || options_.momentum > 0, "Nesterov SGD needs momentum > 0");
  TW_CHECK(options_.weightDecay >= 0, "weight decay must be >= 0, got ", options_.weightDecay);
}

void SgdOptimizer::step(double lr) {
  at::NoGradGuard noGrad;
  for (size_t i = 0; i < parameters_.size(); ++i) stepOne(i, lr);
}

bool SgdOptimizer::stepParameters(double lr, const std::vector<size_t>& indices) {
  at::NoGradGuard noGrad;
  for (size_t i : indices) {
    TW_CHECK(i < parameters_.size(), "SGD: parameter index ", i, " out of range (",
             parameters_.size(), " parameters)");
    stepOne(i, lr);
  }
  return true;
}

// Note [Fused SGD]
// The common case (contiguous float32 parameter and gradient, momentum state present) runs as
// one pass over memory: read g, p, m; write m, p. Written with ATen ops the same update makes
// four to five passes and allocates a temporary, and on a communication-bound step the
// optimizer's memory traffic is the part of the step that cannot hide behind the wire. The
// arithmetic is the formula's, in the same order and precision (float), as the ATen path.
void SgdOptimizer::stepOne(size_t i, double lr) {
  at::Tensor& param = parameters_[i].tensor;
  const at::Tensor& grad = param.grad();
  if (!grad.defined()) return;
  // The fused loop runs on the host: CUDA parameters take the ATen path.
  const bool fusable = options_.momentum != 0 && momentum_[i].defined() && param.is_cpu() &&
                       grad.is_cpu() && param.scalar_type() == at::kFloat &&
                       grad.scalar_type() == at::kFloat && param.is_contiguous() &&
                       grad.is_contiguous() && momentum_[i].is_contiguous() &&
                       grad.sizes().equals(param.sizes());
  if (fusable) {
    float* p = param.data_ptr<float>();
    const float* g = grad.data_ptr<float>();
    float* m = momentum_[i].data_ptr<float>();
    const float mu = static_cast<float>(options_.momentum);
    const float decay = static_cast<float>(options_.weightDecay);
    const float step = static_cast<float>(-lr);
    const int64_t n = param.numel();
    if (options_.nesterov) {
      for (int64_t k = 0; k < n; ++k) {
        const float d = decay != 0 ? g[k] + decay * p[k] : g[k];
        m[k] = m[k] * mu + d;
        p[k] = p[k] + step * (d + mu * m[k]);
      }
    } else {
      for (int64_t k = 0; k < n; ++k) {
        const float d = decay != 0 ? g[k] + decay * p[k] : g[k];
        m[k] = m[k] * mu + d;
        p[k] = p[k] + step * m[k];
      }
    }
    return;
  }
  at::Tensor direction = grad;
  if (options_.weightDecay != 0) direction = direction.add(param, options_.weightDecay);
  if (options_.momentum != 0) {
    if (!momentum_[i].defined()) {
      momentum_[i] = direction.clone();
    } else {
      momentum_[i].mul_(options_.momentum).add_(direction);
    }
    direction = options_.nesterov ? direction.add(momentum_[i], options_.momentum) : momentum_[i];
  }
  param.add_(direction, -lr);
}

StateDict SgdOptimizer::state() const {
  StateDict state;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (momentum_[i].defined()) state["momentum." + parameters_[i].name] = momentum_[i].clone();
  }
  return state;
}

void SgdOptimizer::loadState(const StateDict& state) {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    auto it = state.find("momentum." + parameters_[i].name);
    if (it == state.end()) {
      momentum_[i] = at::Tensor();
      continue;
    }
    if (!it->second.sizes().equals(parameters_[i].tensor.sizes())) {
      TW_THROW(DataError, "checkpoint momentum of '", parameters_[i].name, "' has shape ",
               it->second.sizes(), ", the parameter has ", parameters_[i].tensor.sizes());
    }
    momentum_[i] = it->second.clone();
  }
}

}  // namespace thinwire::optim

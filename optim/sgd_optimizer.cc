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

void SgdOptimizer::stepOne(size_t i, double lr) {
  at::Tensor& param = parameters_[i].tensor;
  const at::Tensor& grad = param.grad();
  if (!grad.defined()) return;
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

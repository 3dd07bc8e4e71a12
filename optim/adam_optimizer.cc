#include "optim/adam_optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "base/error.h"

namespace thinwire::optim {

AdamOptimizer::AdamOptimizer(std::vector<NamedParameter> parameters,
                             const OptimizerOptions& options)
    : parameters_(std::move(parameters)),
      options_(options),
      expAvg_(parameters_.size()),
      expAvgSq_(parameters_.size()),
      steps_(parameters_.size(), 0) {
  TW_CHECK(options_.beta1 >= 0 && options_.beta1 < 1, "Adam beta1 must be in [0, 1), got ",
           options_.beta1);
  TW_CHECK(options_.beta2 >= 0 && options_.beta2 < 1, "Adam beta2 must be in [0, 1), got ",
           options_.beta2);
  TW_CHECK(options_.eps > 0, "Adam eps must be > 0, got ", options_.eps);
  TW_CHECK(options_.weightDecay >= 0, "weight decay must be >= 0, got ", options_.weightDecay);
}

void AdamOptimizer::step(double lr) {
  at::NoGradGuard noGrad;
  for (size_t i = 0; i < parameters_.size(); ++i) stepOne(i, lr);
}

bool AdamOptimizer::stepParameters(double lr, const std::vector<size_t>& indices) {
  at::NoGradGuard noGrad;
  for (size_t i : indices) {
    TW_CHECK(i < parameters_.size(), "Adam: parameter index ", i, " out of range (",
             parameters_.size(), " parameters)");
    stepOne(i, lr);
  }
  return true;
}

void AdamOptimizer::stepOne(size_t i, double lr) {
  const bool decoupled = options_.kind == OptimizerKind::kAdamW;
  at::Tensor& param = parameters_[i].tensor;
  at::Tensor grad = param.grad();
  if (!grad.defined()) return;
  if (!expAvg_[i].defined()) {
    expAvg_[i] = at::zeros_like(param);
    expAvgSq_[i] = at::zeros_like(param);
  }
  const int64_t t = ++steps_[i];
  if (options_.weightDecay != 0) {
    if (decoupled) {
      param.mul_(1.0 - lr * options_.weightDecay);
    } else {
      grad = grad.add(param, options_.weightDecay);
    }
  }
  expAvg_[i].mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
  expAvgSq_[i].mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
  const double biasCorrection1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t));
  const double biasCorrection2 = 1.0 - std::pow(options_.beta2, static_cast<double>(t));
  at::Tensor denominator = expAvgSq_[i].sqrt().div_(std::sqrt(biasCorrection2)).add_(options_.eps);
  param.addcdiv_(expAvg_[i], denominator, -lr / biasCorrection1);
}

StateDict AdamOptimizer::state() const {
  StateDict state;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (!expAvg_[i].defined()) continue;
    const std::string& name = parameters_[i].name;
    state["exp_avg." + name] = expAvg_[i].clone();
    state["exp_avg_sq." + name] = expAvgSq_[i].clone();
    state["step." + name] = scalarTensor(steps_[i]);
  }
  return state;
}

void AdamOptimizer::loadState(const StateDict& state) {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const std::string& name = parameters_[i].name;
    auto it = state.find("exp_avg." + name);
    if (it == state.end()) {
      expAvg_[i] = at::Tensor();
      expAvgSq_[i] = at::Tensor();
      steps_[i] = 0;
      continue;
    }
    const at::Tensor& expAvgSq = requireEntry(state, "exp_avg_sq." + name);
    if (!it->second.sizes().equals(parameters_[i].tensor.sizes()) ||
        !expAvgSq.sizes().equals(parameters_[i].tensor.sizes())) {
      TW_THROW(DataError, "checkpoint Adam moments of '", name, "' have shape ", it->second.sizes(),
               ", the parameter has ", parameters_[i].tensor.sizes());
    }
    expAvg_[i] = it->second.clone();
    expAvgSq_[i] = expAvgSq.clone();
    steps_[i] = requireEntry(state, "step." + name).item<int64_t>();
  }
}

}  // namespace thinwire::optim

#include "optim/one_bit_adam.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "base/error.h"

namespace thinwire::optim {

OneBitAdam::OneBitAdam(std::vector<NamedParameter> parameters, const OptimizerOptions& options)
    : parameters_(std::move(parameters)),
      options_(options),
      expAvg_(parameters_.size()),
      expAvgSq_(parameters_.size()),
      steps_(parameters_.size(), 0),
      frozenSteps_(parameters_.size(), 0),
      denominator_(parameters_.size()),
      masks_(parameters_.size()),
      update_(parameters_.size()),
      allreduce_({.timeout = options.commTimeout}) {
  TW_CHECK(options_.beta1 >= 0 && options_.beta1 < 1, "1-bit Adam beta1 must be in [0, 1), got ",
           options_.beta1);
  TW_CHECK(options_.beta2 >= 0 && options_.beta2 < 1, "1-bit Adam beta2 must be in [0, 1), got ",
           options_.beta2);
  TW_CHECK(options_.eps > 0, "1-bit Adam eps must be > 0, got ", options_.eps);
  TW_CHECK(options_.weightDecay >= 0, "weight decay must be >= 0, got ", options_.weightDecay);
  TW_CHECK(options_.freezeStep >= 1,
           "1-bit Adam freeze_step must be >= 1 (the variance needs a warm-up), got ",
           options_.freezeStep);
  TW_CHECK(options_.communicator != nullptr,
           "1-bit Adam needs OptimizerOptions::communicator (its momentum allreduce runs there)");
}

void OneBitAdam::step(double lr) {
  at::NoGradGuard noGrad;
  if (compressing_) {
    compressionStep(lr);
    ++step_;
    return;
  }
  for (size_t i = 0; i < parameters_.size(); ++i) warmupStep(i, lr);
  ++step_;
  if (step_ >= options_.freezeStep) {
    frozenSteps_ = steps_;
    freeze();
  }
}

// The operations of AdamOptimizer::stepOne for kAdamW, in the same order (bit-identical).
void OneBitAdam::warmupStep(size_t i, double lr) {
  at::Tensor& param = parameters_[i].tensor;
  const at::Tensor& grad = param.grad();
  if (!grad.defined()) return;
  if (!expAvg_[i].defined()) {
    expAvg_[i] = at::zeros_like(param);
    expAvgSq_[i] = at::zeros_like(param);
  }
  const int64_t t = ++steps_[i];
  if (options_.weightDecay != 0) param.mul_(1.0 - lr * options_.weightDecay);
  expAvg_[i].mul_(options_.beta1).add_(grad, 1.0 - options_.beta1);
  expAvgSq_[i].mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
  const double biasCorrection1 =
      options_.biasCorrection ? 1.0 - std::pow(options_.beta1, static_cast<double>(t)) : 1.0;
  const double biasCorrection2 =
      options_.biasCorrection ? 1.0 - std::pow(options_.beta2, static_cast<double>(t)) : 1.0;
  at::Tensor denominator = expAvgSq_[i].sqrt().div_(std::sqrt(biasCorrection2)).add_(options_.eps);
  param.addcdiv_(expAvg_[i], denominator, -lr / biasCorrection1);
}

// Enters the compression stage: every parameter gets moments (zero for one that never had a
// gradient), the frozen denominators and, with momentumMask, the masks of Note [Momentum mask].
void OneBitAdam::freeze() {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const at::Tensor& param = parameters_[i].tensor;
    TW_CHECK(param.scalar_type() == at::kFloat, "1-bit Adam needs float32 parameters; '",
             parameters_[i].name, "' is ", param.scalar_type());
    if (!expAvg_[i].defined()) {
      expAvg_[i] = at::zeros(param.sizes(), at::kFloat);
      expAvgSq_[i] = at::zeros(param.sizes(), at::kFloat);
    }
    if (!expAvg_[i].is_contiguous()) expAvg_[i] = expAvg_[i].contiguous();
    const double biasCorrection2 =
        options_.biasCorrection && frozenSteps_[i] > 0
            ? 1.0 - std::pow(options_.beta2, static_cast<double>(frozenSteps_[i]))
            : 1.0;
    denominator_[i] = expAvgSq_[i].sqrt().div_(std::sqrt(biasCorrection2)).add_(options_.eps);
    masks_[i] = options_.momentumMask ? expAvgSq_[i].ne(0).contiguous() : at::Tensor();
  }
  compressing_ = true;
}

void OneBitAdam::compressionStep(double lr) {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const at::Tensor& grad = parameters_[i].tensor.grad();
    expAvg_[i].mul_(options_.beta1);
    if (grad.defined()) expAvg_[i].add_(grad, 1.0 - options_.beta1);
  }
  // Note [Preconditioned basis]: the compressed tensors are u = m / d; d is frozen and
  // identical on every rank, so the average of u is the average of m divided by d.
  std::vector<at::Tensor>& sent = options_.preconditioned ? update_ : expAvg_;
  if (options_.preconditioned) {
    for (size_t i = 0; i < parameters_.size(); ++i) {
      if (!update_[i].defined()) update_[i] = at::empty_like(expAvg_[i]);
      at::div_out(update_[i], expAvg_[i], denominator_[i]);
    }
  }
  allreduce_.run(sent, *options_.communicator, masks_);
  for (size_t i = 0; i < parameters_.size(); ++i) {
    at::Tensor& param = parameters_[i].tensor;
    const int64_t t = ++steps_[i];
    const double biasCorrection1 =
        options_.biasCorrection ? 1.0 - std::pow(options_.beta1, static_cast<double>(t)) : 1.0;
    if (options_.weightDecay != 0) param.mul_(1.0 - lr * options_.weightDecay);
    if (options_.preconditioned) {
      at::mul_out(expAvg_[i], update_[i], denominator_[i]);
      param.add_(update_[i], -lr / biasCorrection1);
    } else {
      param.addcdiv_(expAvg_[i], denominator_[i], -lr / biasCorrection1);
    }
  }
}

OptimizerCommStats OneBitAdam::commStats() const {
  return {.bytesSent = allreduce_.bytesSent(), .wireBytes = allreduce_.bytesSent()};
}

StateDict OneBitAdam::state() const {
  StateDict state;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (!expAvg_[i].defined()) continue;
    const std::string& name = parameters_[i].name;
    state["exp_avg." + name] = expAvg_[i].clone();
    state["exp_avg_sq." + name] = expAvgSq_[i].clone();
    state["step." + name] = scalarTensor(steps_[i]);
    state["frozen_step." + name] = scalarTensor(frozenSteps_[i]);
  }
  state["onebit.step"] = scalarTensor(step_);
  state["onebit.phase"] = scalarTensor(static_cast<int64_t>(compressing_ ? 1 : 0));
  state["onebit.preconditioned"] = scalarTensor(static_cast<int64_t>(options_.preconditioned));
  return state;
}

void OneBitAdam::loadState(const StateDict& state) {
  for (size_t i = 0; i < parameters_.size(); ++i) {
    const std::string& name = parameters_[i].name;
    denominator_[i] = at::Tensor();
    masks_[i] = at::Tensor();
    auto it = state.find("exp_avg." + name);
    if (it == state.end()) {
      expAvg_[i] = at::Tensor();
      expAvgSq_[i] = at::Tensor();
      steps_[i] = 0;
      frozenSteps_[i] = 0;
      continue;
    }
    const at::Tensor& expAvgSq = requireEntry(state, "exp_avg_sq." + name);
    if (!it->second.sizes().equals(parameters_[i].tensor.sizes()) ||
        !expAvgSq.sizes().equals(parameters_[i].tensor.sizes())) {
      TW_THROW(DataError, "checkpoint 1-bit Adam moments of '", name, "' have shape ",
               it->second.sizes(), ", the parameter has ", parameters_[i].tensor.sizes());
    }
    expAvg_[i] = it->second.contiguous().clone();
    expAvgSq_[i] = expAvgSq.contiguous().clone();
    steps_[i] = requireEntry(state, "step." + name).item<int64_t>();
    frozenSteps_[i] = requireEntry(state, "frozen_step." + name).item<int64_t>();
  }
  step_ = requireEntry(state, "onebit.step").item<int64_t>();
  // The worker and server errors (rank state) live in the basis that was compressed.
  auto basis = state.find("onebit.preconditioned");
  const bool savedPreconditioned = basis != state.end() && basis->second.item<int64_t>() != 0;
  if (requireEntry(state, "onebit.phase").item<int64_t>() == 1 &&
      savedPreconditioned != options_.preconditioned) {
    TW_THROW(ConfigError, "the checkpoint's 1-bit Adam compressed ",
             savedPreconditioned ? "m / (sqrt(v) + eps)" : "the momentum",
             " and its errors are in that basis; set optim.onebit_preconditioned: ",
             savedPreconditioned ? "true" : "false", " to resume it");
  }
  compressing_ = false;
  if (requireEntry(state, "onebit.phase").item<int64_t>() == 1) {
    freeze();
  } else if (step_ >= options_.freezeStep) {
    // Saved in the warm-up by a run with a later freeze_step: this run's warm-up is over.
    frozenSteps_ = steps_;
    freeze();
  }
}

}  // namespace thinwire::optim

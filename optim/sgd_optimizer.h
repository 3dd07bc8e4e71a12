// File: optim/sgd_optimizer.h
//
// SGD with optional heavy-ball or Nesterov momentum and L2 weight decay, with PyTorch's
// torch.optim.SGD semantics (dampening 0; the first step initialises the buffer to the gradient):
//   g ← g + wd·p;  b ← g (first step) or μ·b + g;  d ← g + μ·b (Nesterov) or b;  p ← p − lr·d.
//
// Example:
//   SgdOptimizer opt(parameters, {.kind = OptimizerKind::kSgd, .momentum = 0.9});
//   opt.step(0.05);
#pragma once

#include <vector>

#include "optim/optimizer.h"

namespace thinwire::optim {

class SgdOptimizer : public Optimizer {
 public:
  SgdOptimizer(std::vector<NamedParameter> parameters, const OptimizerOptions& options);
  void step(double lr) override;
  bool stepParameters(double lr, const std::vector<size_t>& indices) override;
  StateDict state() const override;
  void loadState(const StateDict& state) override;
  std::string name() const override { return "sgd"; }

 private:
  void stepOne(size_t i, double lr);
  std::vector<NamedParameter> parameters_;
  OptimizerOptions options_;
  std::vector<at::Tensor> momentum_;  // undefined until the parameter's first step
};

}  // namespace thinwire::optim

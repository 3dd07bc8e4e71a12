// File: optim/adam_optimizer.h
//
// Adam and AdamW with torch.optim semantics (bias-corrected moments, eps outside the square
// root). Adam adds wd·p to the gradient; AdamW first decays p ← p·(1 − lr·wd). Moments are fp32.
//   m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
//   p ← p − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)
//
// Example:
//   AdamOptimizer opt(parameters, {.kind = OptimizerKind::kAdamW, .weightDecay = 0.1});
//   opt.step(3e-4);
#pragma once

#include <vector>

#include "optim/optimizer.h"

namespace thinwire::optim {

class AdamOptimizer : public Optimizer {
 public:
  AdamOptimizer(std::vector<NamedParameter> parameters, const OptimizerOptions& options);
  void step(double lr) override;
  bool stepParameters(double lr, const std::vector<size_t>& indices) override;
  StateDict state() const override;
  void loadState(const StateDict& state) override;
  std::string name() const override {
    return options_.kind == OptimizerKind::kAdamW ? "adamw" : "adam";
  }

 private:
  void stepOne(size_t i, double lr);
  std::vector<NamedParameter> parameters_;
  OptimizerOptions options_;
  std::vector<at::Tensor> expAvg_;
  std::vector<at::Tensor> expAvgSq_;
  std::vector<int64_t> steps_;
};

}  // namespace thinwire::optim

// File: optim/one_bit_adam.h
//
// `OneBitAdam`: 1-bit Adam (Tang et al., ICML 2021; specs/compressors.md §5). Two stages, switched
// on the same step on every rank:
//   warm-up (the first freezeStep steps): AdamW on the gradient the trainer averaged
//     (syncMode() == kTrainerAverages); the same operations, in the same order, as
//     AdamOptimizer with kind kAdamW, so the trajectory is bit-identical to AdamW's.
//   compression (every later step; syncMode() == kOptimizerOwned, the trainer skips gradient
//     communication): the variance v is frozen at its value after step freezeStep;
//       m <- beta1 m + (1 - beta1) g_local          (this rank's own, un-averaged gradient)
//       m <- OneBitAllreduce(m)                      (identical m on every rank afterwards;
//                                                     by default in the basis m / d, see the Note)
//       p <- p (1 - lr wd)                           (decoupled decay, local, never compressed)
//       p <- p - lr / bc1(t) * m / (sqrt(v) / sqrt(bc2(freezeStep)) + eps)
//     A parameter with no .grad() in this stage counts as a zero gradient (every rank must join
//     the collective with the same sizes).
// The first step() already updates the weights (no dry run, unlike DeepSpeed).
//
// Note [1-bit Adam bias correction]
// biasCorrection = true: warm-up is torch's AdamW (bc1(t) = 1 - beta1^t, bc2(t) = 1 - beta2^t,
// t = the parameter's step count). In the compression stage the frozen v keeps the correction of
// the step it was frozen at, bc2(t_freeze), and m keeps the running bc1(t) (t keeps counting; it
// is 1 within float precision after a few hundred steps). biasCorrection = false: bc1 = bc2 = 1
// everywhere, as DeepSpeed's OnebitAdam really computes (its flag is unused).
//
// Note [Preconditioned basis]
// preconditioned = true (the default) compresses u = m / d instead of m, where d = sqrt(v) /
// sqrt(bc2) + eps is the frozen denominator: u <- OneBitAllreduce(u); m <- u * d; p -= lr / bc1 *
// u. d is frozen and bit-identical on every rank, so the exact average is unchanged (avg(m) / d),
// and the error feedback works in the basis of the update itself. Why: 1-bit compression gives
// every element of a tensor the same magnitude (the tensor's RMS). In the momentum basis an
// element with a tiny frozen v (an LM-head row of a rare byte) then moves by lr * RMS(m) / sqrt(v),
// hundreds of times Adam's step; text_llama diverged within 10 steps of the freeze that way
// (docs/benchmarks.md, "1-bit Adam"). In the preconditioned basis every element moves by at most
// about lr * RMS(u), like Adam's own normalised step. preconditioned = false is the paper's and
// DeepSpeed's basis, kept for comparison; the errors of one basis cannot resume in the other.
//
// Note [Momentum mask]
// An element whose v is exactly 0 at the freeze never had a non-zero gradient in the warm-up
// (an embedding row of a byte that never occurs). 1-bit compression cannot send an exact zero,
// so such an element would get +-scale updates and a growing error forever (the §5.3 pitfall).
// With momentumMask, the elements with v == 0 at the freeze are masked out of the compressed
// allreduce (their m stays exactly 0, their worker and server errors stay 0); the mask is a
// function of the frozen v, so it is rebuilt from the checkpointed v on resume.
//
// State: state() (identical on every rank, saved once) holds m ("exp_avg.<name>"), v
// ("exp_avg_sq.<name>"), per-parameter step counts ("step.<name>"), the step count at which v
// was frozen ("frozen_step.<name>"), the optimizer's step count ("onebit.step") and stage
// ("onebit.phase": 0 warm-up, 1 compression). rankState() holds this rank's worker and server
// errors; both are needed for a bit-exact resume in the compression stage.
//
// Ownership: borrows options.communicator (must outlive the optimizer). Threading: one thread;
// step() issues collectives on the communicator in lock-step with the other ranks.
//
// Example:
//   OneBitAdam opt(parameters, {.kind = OptimizerKind::kOneBitAdam, .weightDecay = 0.01,
//                               .freezeStep = 100, .communicator = &comm});
//   if (opt.syncMode() == SyncMode::kTrainerAverages) averageGradients();
//   opt.step(1e-3);
#pragma once

#include <vector>

#include "compressors/onebit_allreduce.h"
#include "optim/optimizer.h"

namespace thinwire::optim {

class OneBitAdam : public Optimizer {
 public:
  // Throws InvalidArgument for betas outside [0, 1), eps <= 0, weight decay < 0, freezeStep < 1
  // or a null communicator.
  OneBitAdam(std::vector<NamedParameter> parameters, const OptimizerOptions& options);

  // Blocking. Warm-up: one AdamW step on .grad() (parameters without .grad() are skipped).
  // Compression stage: collective (see the file comment); throws the communicator's CommError /
  // TimeoutError.
  void step(double lr) override;

  SyncMode syncMode() const override {
    return compressing_ ? SyncMode::kOptimizerOwned : SyncMode::kTrainerAverages;
  }
  OptimizerCommStats commStats() const override;

  StateDict state() const override;
  // Throws DataError for a missing entry or a moment of another shape, ConfigError for a
  // compression-stage checkpoint saved with the other options.preconditioned.
  void loadState(const StateDict& state) override;
  StateDict rankState() const override { return allreduce_.state(); }
  void loadRankState(const StateDict& state) override { allreduce_.loadState(state); }

  std::string name() const override { return "onebit_adam"; }

  // Steps taken so far (warm-up and compression).
  int64_t stepCount() const { return step_; }
  // True from the step after freezeStep warm-up steps on.
  bool compressing() const { return compressing_; }

 private:
  void warmupStep(size_t i, double lr);
  void freeze();
  void compressionStep(double lr);

  std::vector<NamedParameter> parameters_;
  OptimizerOptions options_;
  std::vector<at::Tensor> expAvg_;
  std::vector<at::Tensor> expAvgSq_;
  std::vector<int64_t> steps_;
  std::vector<int64_t> frozenSteps_;     // steps_[i] when v was frozen
  std::vector<at::Tensor> denominator_;  // sqrt(v) / sqrt(bc2) + eps, frozen (derived from v)
  std::vector<at::Tensor> masks_;        // v != 0 at the freeze (derived from v); see the Note
  std::vector<at::Tensor> update_;       // m / d, the compressed tensors (preconditioned basis)
  int64_t step_ = 0;
  bool compressing_ = false;
  compressors::OneBitAllreduce allreduce_;
};

}  // namespace thinwire::optim

// File: compressors/error_feedback.h
//
// `ErrorFeedback`: EF14 residual memory (Seide et al. 2014, Stich et al. 2018; specs §1.1). Per
// layer it keeps e (fp32, zeros at first use) and sends C(e + g), keeping what the compressor
// dropped:
//     p = e + s * g,  message = C(p),  e <- p - C(p)
// with s = 1 (gradient units, the default) or s = lr (step units, Stich's form; decode() then
// divides the average by lr so the optimizer can multiply it back; see Note [Residual units] in
// feedback.h). The whole update is one fused Compressor::compress call, so for top-k the
// residual is exact: C(p) + e_new == e_old + s * g bit for bit.
//
// Ownership: owns every layer's e; borrows the compressor for each call.
// Threading: one thread at a time.
//
// Example:
//   ErrorFeedback ef(FeedbackOptions{.kind = FeedbackKind::kEf});
//   ef.encode(layer, grad, topk, params, step, message);   // message = C(e + g); e updated
//   ... average the messages of all ranks into `average` ...
//   ef.decode(layer, average, step);                       // unchanged (gradient units)
#pragma once

#include <string>

#include "compressors/feedback.h"
#include "compressors/feedback_state.h"

namespace thinwire::compressors {

class ErrorFeedback : public Feedback {
 public:
  // Reads options.stepUnits; the other fields are ignored.
  explicit ErrorFeedback(const FeedbackOptions& options);

  std::string name() const override { return "ef"; }

  // Blocking. out = C(e + s g) with s = step.lr in step units, else 1; e <- e + s g - C(e + s g).
  // `grad` is only read. Throws InvalidArgument for a non-float32/non-contiguous gradient, a
  // numel that differs from the layer's state, and whatever the compressor throws.
  void encode(LayerId layer,
              at::Tensor& grad,
              Compressor& compressor,
              const LayerParams& params,
              const StepInfo& step,
              Payload& out) override;

  // In place: step units divide `average` by step.lr (throws InvalidArgument unless lr > 0);
  // gradient units leave it unchanged.
  void decode(LayerId layer, at::Tensor& average, const StepInfo& step) override;

  // "<layer>.e" for every layer (clones).
  StateDict state() const override { return state_.state(); }
  void loadState(const StateDict& state) override { state_.loadState(state, name()); }

 private:
  bool stepUnits_;
  FeedbackState state_{std::vector<std::string>{"e"}};
};

}  // namespace thinwire::compressors

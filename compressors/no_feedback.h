// File: compressors/no_feedback.h
//
// `NoFeedback`: plain compressed averaging, the baseline every feedback policy is measured
// against. Each step sends C(g) and forgets what the compression dropped, so a biased compressor
// (top-k, sign) can stall or diverge (the Beznosikov example in tests/compressors/
// convergence_test.cc diverges exponentially with Top-1).
//
// Ownership: holds no state; borrows the compressor for each call.
// Threading: stateless, but the compressor it is handed must not be shared during a call.
//
// Example:
//   NoFeedback none;
//   none.encode(layer, grad, compressor, params, step, message);  // message = C(g); grad clobbered
//   ... average the messages of all ranks into `average` ...
//   none.decode(layer, average, step);                            // unchanged
#pragma once

#include <string>

#include "compressors/feedback.h"

namespace thinwire::compressors {

class NoFeedback : public Feedback {
 public:
  std::string name() const override { return "none"; }

  // Blocking. out = C(grad); `grad` is used as the compressor's scratch residual and holds
  // grad - decode(out) on return. Throws InvalidArgument for a non-float32 or non-contiguous
  // gradient (and whatever the compressor throws).
  void encode(LayerId layer,
              at::Tensor& grad,
              Compressor& compressor,
              const LayerParams& params,
              const StepInfo& step,
              Payload& out) override;

  // Leaves `average` unchanged.
  void decode(LayerId layer, at::Tensor& average, const StepInfo& step) override;

  // Empty: the policy has no state.
  StateDict state() const override { return {}; }
  // Accepts only an empty state; throws DataError for any entry.
  void loadState(const StateDict& state) override;
};

}  // namespace thinwire::compressors

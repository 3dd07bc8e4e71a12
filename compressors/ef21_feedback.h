// File: compressors/ef21_feedback.h
//
// `Ef21Feedback`: EF21 (Richtárik, Sokolov, Fatkhullin 2021; specs §3.2). Each rank tracks its
// own gradient with h_i and sends only the compressed change; every rank tracks the mean h:
//     message = C(g - h_i),  h_i <- h_i + C(g - h_i)              (encode, per rank)
//     h <- h + mean_i C(g_i - h_i),  the optimizer applies h     (decode, same on every rank)
// so h == mean_i h_i at all times. h_i and h start at zero, which makes the first message C(g_0)
// (the paper's variant with h_i^0 = C(g_i^0)): every step sends the same kind of message, so the
// collectives stay the same size from step 0 on instead of needing one dense round first. With
// full gradients EF21 converges linearly where EF14 stalls at a heterogeneity floor.
//
// Ownership: owns every layer's h_i (per rank) and h (identical on every rank); borrows the
// compressor for each call.
// Threading: one thread at a time.
//
// Example:
//   Ef21Feedback ef21;
//   ef21.encode(layer, grad, topk, params, step, message);   // message = C(g - h_i); h_i updated
//   ... average the messages of all ranks into `average` ...
//   ef21.decode(layer, average, step);                       // h += average; average = h
#pragma once

#include <string>

#include "compressors/feedback.h"
#include "compressors/feedback_state.h"

namespace thinwire::compressors {

class Ef21Feedback : public Feedback {
 public:
  std::string name() const override { return "ef21"; }

  // Blocking. out = C(grad - h_i), then h_i += decode(out). `grad` is the compressor's scratch:
  // it holds grad - h_i - decode(out) on return. Throws InvalidArgument for a
  // non-float32/non-contiguous gradient, a numel that differs from the layer's state, and
  // whatever the compressor throws.
  void encode(LayerId layer,
              at::Tensor& grad,
              Compressor& compressor,
              const LayerParams& params,
              const StepInfo& step,
              Payload& out) override;

  // In place: h <- h + average, then average <- h (the tracked mean gradient). `average` must
  // have the layer's numel (InvalidArgument otherwise).
  void decode(LayerId layer, at::Tensor& average, const StepInfo& step) override;

  // "<layer>.h_i" and "<layer>.h" for every layer (clones).
  StateDict state() const override { return state_.state(); }
  void loadState(const StateDict& state) override { state_.loadState(state, name()); }

 private:
  FeedbackState state_{std::vector<std::string>{"h_i", "h"}};
};

}  // namespace thinwire::compressors

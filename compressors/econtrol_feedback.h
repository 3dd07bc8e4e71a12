// File: compressors/econtrol_feedback.h
//
// `EControlFeedback`: EControl (Gao, Islamov, Stich, ICLR 2024; specs §3). EF21-style tracking of
// each rank's gradient (h_i, mean h) plus a damped error memory e on the tracking error:
//     message = C(eta e + g - h_i)                                (encode, per rank)
//     e <- e + g - h_i - C(...),  h_i <- h_i + C(...)
//     h <- h + mean_i C(...),  the optimizer applies h            (decode, same on every rank)
// Invariant per rank and step: e' + h_i' == e + g (up to fp32 rounding), so e is the gradient
// mass not yet applied. e, h_i and h start at zero (the first message is C(g_0)); with eta = 0
// the method is EF21 exactly, with the identity compressor e stays 0 and h is the plain average.
//
// Ownership: owns every layer's e, h_i (per rank) and h (identical on every rank); borrows the
// compressor for each call.
// Threading: one thread at a time.
//
// Example:
//   EControlFeedback econtrol(FeedbackOptions{.kind = FeedbackKind::kEControl});  // eta from delta
//   econtrol.encode(layer, grad, topk, params, step, message);
//   ... average the messages of all ranks into `average` ...
//   econtrol.decode(layer, average, step);                   // h += average; average = h
#pragma once

#include <cstdint>
#include <string>

#include "compressors/feedback.h"
#include "compressors/feedback_state.h"

namespace thinwire::compressors {

class EControlFeedback : public Feedback {
 public:
  // Reads options.eta: in [0, 1], or < 0 to derive it from the compressor per layer (see Note
  // [EControl eta]), and options.trackingMomentum in [0, 1) (Note [EControl on momentum]).
  // Throws InvalidArgument for eta > 1, a momentum outside [0, 1), or NaN.
  explicit EControlFeedback(const FeedbackOptions& options);

  std::string name() const override { return "econtrol"; }

  // The feedback strength used for a layer of `numel` elements compressed by `compressor` with
  // `params`: the configured eta, or 0.5 * compressor.deltaHint(numel, params). Throws
  // InvalidArgument when eta must be derived and the compressor reports delta <= 0 (not
  // contractive: set eta explicitly).
  double effectiveEta(const Compressor& compressor, int64_t numel, const LayerParams& params) const;

  // Blocking. out = C(eta e + grad - h_i); then e <- (1 - eta) e + r, where r = p - decode(out)
  // is what the compressor leaves in `grad` (so e <- e + g - h_i - decode(out)), and
  // h_i += decode(out). `grad` is overwritten (it holds r on return). Throws InvalidArgument for
  // a non-float32/non-contiguous gradient, a numel that differs from the layer's state, a
  // non-contractive compressor without an explicit eta, and whatever the compressor throws.
  void encode(LayerId layer,
              at::Tensor& grad,
              Compressor& compressor,
              const LayerParams& params,
              const StepInfo& step,
              Payload& out) override;

  // In place: h <- h + average, then average <- h. `average` must have the layer's numel
  // (InvalidArgument otherwise).
  void decode(LayerId layer, at::Tensor& average, const StepInfo& step) override;

  // "<layer>.e", "<layer>.h_i", "<layer>.h" (and "<layer>.v" with tracking momentum) for every
  // layer (clones).
  StateDict state() const override { return state_.state(); }
  void loadState(const StateDict& state) override { state_.loadState(state, name()); }

 private:
  double eta_;
  double momentum_;  // trackingMomentum: 0 = track g
  FeedbackState state_;
};

// Note [EControl on momentum]
// h_i changes only where the compressor sends, so at top-1 % a coordinate of h_i keeps the value
// of one stochastic gradient for about 100 steps, and the optimizer applies that sample at every
// one of them: tracking amplifies gradient noise (specs §3.2: EF21 "needs large batches"). EF
// applies each gradient's mass once and has no such effect. EF21-SGDM (Fatkhullin et al. 2023)
// tracks a local momentum average instead; with `trackingMomentum` = beta > 0 EControl does the
// same: v <- beta v + (1 - beta) g, message = C(eta e + v - h_i), so e' + h_i' == e + v. v is an
// average, not a sum: run the optimizer without momentum and with lr / (1 - beta) to match an
// SGD-momentum run's step size.

// Note [EControl eta]
// eta sets how strongly the accumulated error e is fed back. The paper's theory uses delta / 400,
// which is safe but slow (e decays only by (1 - eta) per step); the paper tunes it. In the
// heterogeneous least-squares toy (specs §3.2: n = 10, d = 20, Top-2, delta = 0.1) eta = 0.1 delta
// and eta = delta both converge, eta = 5 delta diverges. The default, eta = delta / 2, sits in the
// middle of that stable range: a factor of 2 below the largest value seen to be stable, and still
// within a factor of 5 of its feedback strength. tests/compressors/convergence_test.cc checks the
// default converges on that toy and that a too-large eta does not.

}  // namespace thinwire::compressors

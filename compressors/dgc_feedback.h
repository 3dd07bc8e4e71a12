// File: compressors/dgc_feedback.h
//
// `DgcFeedback`: Deep Gradient Compression's local state (Lin et al., ICLR 2018; specs §1.2):
// momentum correction, momentum factor masking and local gradient clipping around a top-k
// compressor. Per layer and rank, with momentum m:
//     g <- g * min(1, (clipNorm / sqrt(worldSize)) / ||g||)    (only when clipNorm > 0)
//     plain:    u <- m u + g;        v <- v + u
//     nesterov: u <- m (u + g);      v <- v + u + g
//     message = TopK(v);  v <- 0 where sent;  u <- 0 where sent (momentumMasking)
// The aggregated messages are the update itself: decode() leaves the average unchanged and the
// optimizer must run WITHOUT momentum (the engine enforces it), or momentum would count twice.
// Clipping uses the L2 norm of this layer's local gradient, not of the whole model: the policy
// sees one layer at a time, and a per-layer bound keeps one exploding layer from being scaled
// by the others' norms. With k = numel and no masking the method is momentum (Nesterov) SGD on
// the averaged gradient; with masking and k = numel every u is cleared each step (plain SGD).
//
// Ownership: owns every layer's u and v (fp32); borrows the compressor for each call, which must
// be top-k (name() "topk"): its payload layout (top_k_compressor.h) tells which positions were
// sent, and k * entry bytes == maxPayloadBytes gives the entry size (float32 or float16 values).
// Threading: one thread at a time.
//
// Example:
//   DgcFeedback dgc(FeedbackOptions{.kind = FeedbackKind::kDgc, .momentum = 0.9});
//   TopKCompressor topk(TopKOptions{.sampled = true});
//   dgc.encode(layer, grad, topk, LayerParams{.ratio = 0.001}, step, message);
//   ... average the messages of all ranks into `average` ...
//   dgc.decode(layer, average, step);   // unchanged; apply with momentum-free SGD
#pragma once

#include <string>

#include "compressors/feedback.h"
#include "compressors/feedback_state.h"

namespace thinwire::compressors {

class DgcFeedback : public Feedback {
 public:
  // Reads options.momentum (in [0, 1)), nesterov, momentumMasking and clipNorm (>= 0; 0 = no
  // clipping). Throws InvalidArgument for values outside those ranges.
  explicit DgcFeedback(const FeedbackOptions& options);

  std::string name() const override { return "dgc"; }

  // Blocking. Clips `grad` in place (clipNorm > 0; the limit uses step.worldSize), advances u and
  // v, sends out = TopK(v) and clears the sent positions of v (and of u with masking). Throws
  // InvalidArgument, before any state changes, when the compressor is not top-k (name() !=
  // "topk"), for a non-float32/non-contiguous gradient, a numel that differs from the layer's
  // state or step.worldSize < 1; and whatever the compressor throws.
  void encode(LayerId layer,
              at::Tensor& grad,
              Compressor& compressor,
              const LayerParams& params,
              const StepInfo& step,
              Payload& out) override;

  // Leaves `average` unchanged: it already is the momentum-corrected update.
  void decode(LayerId layer, at::Tensor& average, const StepInfo& step) override;

  // "<layer>.u" and "<layer>.v" for every layer (clones).
  StateDict state() const override { return state_.state(); }
  void loadState(const StateDict& state) override { state_.loadState(state, name()); }

 private:
  FeedbackOptions options_;
  FeedbackState state_{std::vector<std::string>{"u", "v"}};
};

}  // namespace thinwire::compressors

// File: compressors/feedback.h
//
// `Feedback`: the per-layer state that turns a biased compressor into a convergent method
// (specs/compressors.md §1–§3): none, error feedback (EF14, residual memory), EF21, EControl and
// DGC (momentum correction, momentum factor masking, local clipping). A policy wraps any
// Compressor; the two combine freely (DGC needs a sparse one: top-k).
//
// One training step of one layer, on every rank:
//   encode(layer, grad, ...)      -> this rank's message, compressed into `out`, state updated
//   (an aggregator averages the messages of all ranks into `average`)
//   decode(layer, average, ...)   -> the gradient estimate the optimizer sees, written in place
// Units (Note [Residual units]): the residual memory is in gradient units by default; with
// `stepUnits` EF stores lr * g (the Stich/Karimireddy form) and decode divides by lr again.
//
// Ownership: a policy owns every layer's state (fp32 tensors, zero-initialised on first use, one
// entry per LayerId); it borrows the compressor for the duration of a call.
// Threading: one thread at a time per policy object (the engine's sync thread).
//
// Example:
//   std::unique_ptr<Feedback> ef = makeFeedback({.kind = FeedbackKind::kEf});
//   Payload message;
//   ef->encode(layer, grad, *topk, params, step, message);    // message = C(e + g), e updated
//   ... aggregate the messages of all ranks into `average` ...
//   ef->decode(layer, average, step);                          // EF: unchanged
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "base/state_dict.h"
#include "compressors/compressor.h"

namespace thinwire::compressors {

using LayerId = int64_t;  // dense index of a compressed layer, identical on every rank

// What a policy may depend on besides the gradient; identical on every rank.
struct StepInfo {
  int64_t step = 0;  // 0-based optimizer step
  double lr = 1.0;   // learning rate of this step (step-unit EF)
  double epoch = 0;  // fractional epoch (DGC sparsity warm-up)
  int worldSize = 1;
};

enum class FeedbackKind { kNone, kEf, kEf21, kEControl, kDgc };

struct FeedbackOptions {
  FeedbackKind kind = FeedbackKind::kEf;
  bool stepUnits = false;  // EF: residual stores lr * g (see Note [Residual units])
  double eta = -1;         // EControl: feedback strength; < 0 = derive from the compressor's delta
  // EControl: > 0 tracks the local momentum v <- beta v + (1 - beta) g instead of g (Note
  // [EControl on momentum]); 0 tracks g as the paper does.
  double trackingMomentum = 0;
  // DGC
  double momentum = 0.9;        // momentum of the correction (the optimizer runs without)
  bool nesterov = false;        // u <- m (u + g); v <- v + u + g
  bool momentumMasking = true;  // zero u where a coordinate was sent
  double clipNorm = 0;          // > 0: clip the local gradient to clipNorm / sqrt(worldSize)
};

class Feedback {
 public:
  virtual ~Feedback() = default;

  virtual std::string name() const = 0;

  // Blocking. Builds this rank's message for `layer` from its local gradient `grad` (contiguous
  // float32; the policy may overwrite it: it is the engine's private copy), compresses it with
  // `compressor` and `params` into `out`, and advances the layer's state (EF: e <- p - C(p);
  // EF21/EControl: h_i <- h_i + C(...); DGC: velocity and momentum). The first call for a layer
  // allocates its state. Throws InvalidArgument when `grad`'s numel differs from the state's, or
  // when the compressor cannot serve the policy (DGC without a sparse compressor).
  virtual void encode(LayerId layer,
                      at::Tensor& grad,
                      Compressor& compressor,
                      const LayerParams& params,
                      const StepInfo& step,
                      Payload& out) = 0;

  // Blocking, in place: `average` holds the mean over ranks of the decoded messages of `layer`
  // for this step; on return it holds the gradient the optimizer applies (EF21/EControl: the
  // tracked mean h after h <- h + average; step units: average / lr; others: unchanged).
  virtual void decode(LayerId layer, at::Tensor& average, const StepInfo& step) = 0;

  // Per-rank state of every layer, for bit-exact resume: keys "<layer>.<buffer>" (e.g. "3.e").
  virtual StateDict state() const = 0;
  // Restores a state() of the same policy over the same layers. Throws DataError on a missing
  // entry or a size mismatch.
  virtual void loadState(const StateDict& state) = 0;
};

std::unique_ptr<Feedback> makeFeedback(const FeedbackOptions& options);

// Parses "none" | "ef" | "ef21" | "econtrol" | "dgc".
FeedbackKind parseFeedbackKind(const std::string& name);

// Note [Residual units]
// EF in the Stich form keeps e in step units (p = e + lr g, the optimizer applies mean(C(p))
// directly); GRACE, DGC and the PowerSGD hook keep it in gradient units (p = e + g, the optimizer
// applies lr * mean(C(p))). Under a constant learning rate both give the same trajectory; with a
// schedule the gradient-unit form applies an old residual with the new rate. thinwire's optimizers
// take a gradient and a rate, so gradient units are the default; `stepUnits` stores lr g and
// decode() divides the average by this step's lr before the optimizer multiplies it back.

}  // namespace thinwire::compressors

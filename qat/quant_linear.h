// File: qat/quant_linear.h
//
// QuantLinear: a bias-free linear layer y = Qa(x) . Qw(W)^T whose weight and input activations
// go through the fake quantizers of qat/quantizer.h, each with its own bit width, while the
// latent weight W stays fp32 and is what the optimizer updates. With Method::kNone it is exactly
// torch::nn::Linear without bias. The only parameter of a QuEST or STE layer is `weight`
// ([out, in], the same name and shape as torch::nn::Linear's), so data-parallel gradient
// synchronisation and per-parameter compression see the same parameters as in full precision;
// LSQ adds the learnable scalars `weight_step` and `input_step`.
//
// QuEST Half variant: both operands are rotated on the `in` dimension and neither is rotated
// back, which is exact because H H^T = I; an operand with 0 bits (full precision) is then
// rotated without quantization, so weight-only or activation-only QAT stays correct.
//
// For evaluating an export (qat/quantized_export.h), setFrozenWeight() replaces Qw(W) by the
// dequantized integer codes; activations are still quantized online.
//
// Ownership: a torch::nn::Module; hold it through the QuantLinear holder (std::shared_ptr).
// Threading: as any torch module, forward() from one thread at a time per instance.
//
// Example:
//   QatOptions qat;  qat.method = Method::kQuest;  qat.weightBits = 4;  qat.activationBits = 4;
//   QuantLinear layer(QuantLinearOptions{256, 768, qat});
//   at::Tensor y = layer->forward(at::randn({8, 128, 256}));   // [8, 128, 768]
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "qat/quantizer.h"

namespace thinwire::qat {

enum class Method {
  kNone,   // full precision
  kQuest,  // Hadamard + Gaussian-optimal RMS scale + trust mask
  kSte,    // the same grid without Hadamard, straight-through gradient
  kLsq,    // learnable per-tensor step (LSQ), centred grid
};

// "none", "quest", "ste" or "lsq"; InvalidArgument for any other word.
Method methodFromName(const std::string& name);
const char* methodName(Method method);

struct QatOptions {
  Method method = Method::kNone;
  int64_t weightBits = 4;            // 1..8; 0 = weights stay full precision
  int64_t activationBits = 4;        // 1..8; 0 = inputs stay full precision
  Variant variant = Variant::kHalf;  // QuEST only
  double trust = 0.0;                // QuEST mask scale s; 0 = defaultMaskScale(bits)
};

struct QuantLinearOptions {
  int64_t inFeatures = 0;
  int64_t outFeatures = 0;
  QatOptions qat;
};

class QuantLinearImpl : public torch::nn::Module {
 public:
  // Throws InvalidArgument for sizes < 1, bits outside 0..8, a negative trust, LSQ at 1 bit
  // (LSQ's step gradient is undefined there), or QuEST with inFeatures % 128 != 0.
  explicit QuantLinearImpl(const QuantLinearOptions& options);

  // x [..., in] (any float dtype) -> [..., out]. Differentiable w.r.t. x, weight and LSQ steps.
  at::Tensor forward(const at::Tensor& x);

  // The weight operand forward() multiplies with, detached, fp32 [out, in]: Qw(W), in the
  // rotated basis for QuEST Half, or the frozen weight when one is set.
  at::Tensor effectiveWeight();

  // Uses `weight` ([out, in] fp32, in the basis effectiveWeight() reports) instead of Qw(W)
  // from now on; an undefined tensor returns to quantizing the latent weight. InvalidArgument
  // on a shape mismatch.
  void setFrozenWeight(const at::Tensor& weight);

  // Whether the weight operand is held in the Hadamard-rotated basis (QuEST Half).
  bool weightRotated() const;

  const QuantLinearOptions& options() const { return options_; }

  // The quantizer settings of the weight and the input (QuEST or STE methods).
  QuantizerOptions weightQuantizer() const;
  QuantizerOptions inputQuantizer() const;

  at::Tensor weight;      // [out, in], fp32 latent weight
  at::Tensor weightStep;  // LSQ only: [1]
  at::Tensor inputStep;   // LSQ only: [1]

 private:
  at::Tensor quantizeWeight();
  at::Tensor quantizeInput(const at::Tensor& x);

  QuantLinearOptions options_;
  at::Tensor frozenWeight_;
};
TORCH_MODULE(QuantLinear);

}  // namespace thinwire::qat

#include "qat/quant_linear.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>

#include "base/error.h"
#include "qat/hadamard.h"

namespace thinwire::qat {

Method methodFromName(const std::string& name) {
  if (name == "none") return Method::kNone;
  if (name == "quest") return Method::kQuest;
  if (name == "ste") return Method::kSte;
  if (name == "lsq") return Method::kLsq;
  TW_THROW(InvalidArgument, "qat method must be none, quest, ste or lsq, got '", name, "'");
}

const char* methodName(Method method) {
  switch (method) {
    case Method::kNone:
      return "none";
    case Method::kQuest:
      return "quest";
    case Method::kSte:
      return "ste";
    case Method::kLsq:
      return "lsq";
  }
  return "unknown";
}

QuantLinearImpl::QuantLinearImpl(const QuantLinearOptions& options) : options_(options) {
  const QatOptions& qat = options.qat;
  TW_CHECK(options.inFeatures >= 1 && options.outFeatures >= 1,
           "QuantLinear needs in and out features >= 1, got ", options.inFeatures, " and ",
           options.outFeatures);
  TW_CHECK(qat.weightBits >= 0 && qat.weightBits <= kMaxBits && qat.activationBits >= 0 &&
               qat.activationBits <= kMaxBits,
           "QuantLinear bits must be in [0, 8], got weights ", qat.weightBits, " and inputs ",
           qat.activationBits);
  TW_CHECK(qat.trust >= 0, "QuantLinear trust must be >= 0, got ", qat.trust);
  if (qat.method == Method::kQuest) {
    TW_CHECK(options.inFeatures % kHadamardBlock == 0,
             "QuEST needs in_features to be a multiple of 128, got ", options.inFeatures);
  }
  if (qat.method == Method::kLsq) {
    TW_CHECK(qat.weightBits != 1 && qat.activationBits != 1,
             "LSQ is undefined at 1 bit (its step gradient scale divides by 2^(b-1) - 1)");
  }
  weight = register_parameter("weight", at::empty({options.outFeatures, options.inFeatures}));
  {
    // torch::nn::Linear's default initialisation; models usually re-initialise from a seed.
    torch::NoGradGuard noGrad;
    const double bound = 1.0 / std::sqrt(static_cast<double>(options.inFeatures));
    weight.uniform_(-bound, bound);
  }
  if (qat.method == Method::kLsq) {
    // LSQ+ initial steps, identical on every rank: the weight's RMS after a uniform
    // +-1/sqrt(in) initialisation is 1/sqrt(3 in); the inputs are taken as unit-RMS (they are
    // RMS-normalised in the Llama blocks). A data-dependent first-batch initialisation would
    // differ between ranks.
    const double weightRms = 1.0 / std::sqrt(3.0 * static_cast<double>(options.inFeatures));
    if (qat.weightBits > 0) {
      weightStep = register_parameter(
          "weight_step", at::full({1}, lsqInitialStep(qat.weightBits, weightRms), at::kFloat));
    }
    if (qat.activationBits > 0) {
      inputStep = register_parameter(
          "input_step", at::full({1}, lsqInitialStep(qat.activationBits, 1.0), at::kFloat));
    }
  }
}

bool QuantLinearImpl::weightRotated() const {
  return options_.qat.method == Method::kQuest && options_.qat.variant == Variant::kHalf;
}

QuantizerOptions QuantLinearImpl::weightQuantizer() const {
  QuantizerOptions q;
  q.bits = options_.qat.weightBits;
  q.hadamard = options_.qat.method == Method::kQuest;
  q.variant = options_.qat.variant;
  q.gradient =
      options_.qat.method == Method::kQuest ? Gradient::kTrust : Gradient::kStraightThrough;
  q.maskScale = options_.qat.trust;
  return q;
}

QuantizerOptions QuantLinearImpl::inputQuantizer() const {
  QuantizerOptions q = weightQuantizer();
  q.bits = options_.qat.activationBits;
  return q;
}

at::Tensor QuantLinearImpl::quantizeWeight() {
  if (frozenWeight_.defined()) return frozenWeight_;
  const QatOptions& qat = options_.qat;
  if (qat.method == Method::kNone || qat.weightBits == 0) {
    return weightRotated() ? blockHadamard(weight) : weight;
  }
  if (qat.method == Method::kLsq) return lsqQuantize(weight, weightStep, qat.weightBits);
  return fakeQuantize(weight, weightQuantizer());
}

at::Tensor QuantLinearImpl::quantizeInput(const at::Tensor& x) {
  const QatOptions& qat = options_.qat;
  if (qat.method == Method::kNone || qat.activationBits == 0) {
    return weightRotated() ? blockHadamard(x) : x;
  }
  if (qat.method == Method::kLsq) return lsqQuantize(x, inputStep, qat.activationBits);
  return fakeQuantize(x, inputQuantizer());
}

at::Tensor QuantLinearImpl::forward(const at::Tensor& x) {
  TW_CHECK(x.dim() >= 1 && x.size(-1) == options_.inFeatures, "QuantLinear expects [..., ",
           options_.inFeatures, "], got ", x.sizes());
  if (options_.qat.method == Method::kNone && !frozenWeight_.defined()) {
    return at::linear(x, weight);
  }
  return at::linear(quantizeInput(x), quantizeWeight());
}

at::Tensor QuantLinearImpl::effectiveWeight() {
  torch::NoGradGuard noGrad;
  return quantizeWeight().detach().to(at::kFloat);
}

void QuantLinearImpl::setFrozenWeight(const at::Tensor& frozen) {
  if (frozen.defined()) {
    TW_CHECK(frozen.sizes() == weight.sizes(), "QuantLinear frozen weight must have shape ",
             weight.sizes(), ", got ", frozen.sizes());
    frozenWeight_ = frozen.detach().to(at::kFloat).contiguous();
  } else {
    frozenWeight_ = at::Tensor();
  }
}

}  // namespace thinwire::qat

#include "qat/pv_tuner.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "comm/communicator.h"

namespace thinwire::qat {

PvMethod pvMethodFromName(const std::string& name) {
  if (name == "rtn") return PvMethod::kRtn;
  if (name == "p_only") return PvMethod::kPOnly;
  if (name == "ste") return PvMethod::kSte;
  if (name == "pv") return PvMethod::kPv;
  TW_THROW(InvalidArgument, "unknown PV method '", name, "' (expected rtn, p_only, ste or pv)");
}

const char* pvMethodName(PvMethod method) {
  switch (method) {
    case PvMethod::kRtn:
      return "rtn";
    case PvMethod::kPOnly:
      return "p_only";
    case PvMethod::kSte:
      return "ste";
    case PvMethod::kPv:
      return "pv";
  }
  return "?";
}

int64_t pvChangeBudget(double tau, int64_t n) {
  const auto k = static_cast<int64_t>(std::ceil(tau * static_cast<double>(n)));
  return std::clamp<int64_t>(k, 1, n);
}

at::Tensor applyTrustRatio(const at::Tensor& order,
                           const at::Tensor& delta,
                           double rho,
                           double previousNorm) {
  if (rho <= 0 || order.numel() == 0) return order;
  at::Tensor cumulative = at::sqrt(at::cumsum(delta.to(at::kDouble), /*dim=*/0));
  const int64_t below = (cumulative < rho * previousNorm).sum().item<int64_t>();
  return order.slice(0, 0, std::min<int64_t>(order.numel(), 1 + below));
}

PvTuner::PvTuner(std::vector<optim::NamedParameter> quantized,
                 std::vector<optim::NamedParameter> others,
                 const PvTunerOptions& options)
    : options_(options), others_(std::move(others)) {
  TW_CHECK(!quantized.empty(), "PvTuner needs at least one quantized weight");
  TW_CHECK(options.maxCodeChange > 0 && options.maxCodeChange <= 1,
           "PV max code change per step must be in (0, 1], got ", options.maxCodeChange);
  TW_CHECK(options.trustRatio >= 0, "PV trust ratio must be >= 0, got ", options.trustRatio);
  TW_CHECK(options.codeBeta2 >= 0 && options.codeBeta2 < 1, "PV code beta2 must be in [0, 1)");
  at::NoGradGuard noGrad;
  std::vector<optim::NamedParameter> continuous;
  for (auto& item : quantized) {
    TW_CHECK(item.tensor.dim() == 2 && item.tensor.scalar_type() == at::kFloat,
             "PV quantized weight ", item.name, " must be 2-D fp32, got ", item.tensor.sizes());
    PvLayer layer;
    layer.name = item.name;
    layer.weight = item.tensor;
    layer.quantized = quantizeRtn(item.tensor, options.grid);
    layer.quantized.scales.requires_grad_(true);
    layer.quantized.zeros.requires_grad_(true);
    layer.weight.copy_(dequantize(layer.quantized));
    layer.buffer = layer.weight.detach().clone();
    layer.codeSquare = at::zeros_like(layer.buffer);
    continuous.push_back({item.name + ".scales", layer.quantized.scales});
    continuous.push_back({item.name + ".zeros", layer.quantized.zeros});
    layers_.push_back(std::move(layer));
  }
  for (const auto& item : others_) continuous.push_back(item);
  optim::OptimizerOptions adam;
  adam.kind = optim::OptimizerKind::kAdam;
  adam.beta1 = options.beta1;
  adam.beta2 = options.beta2;
  adam.eps = options.eps;
  adam_ = optim::makeOptimizer(std::move(continuous), adam);
}

PvTuner::~PvTuner() = default;

at::Tensor PvTuner::selectForProjection(const PvLayer& layer, const at::Tensor& previous) const {
  if (options_.method == PvMethod::kSte) return {};
  const int64_t n = layer.buffer.numel();
  const int64_t k = pvChangeBudget(options_.maxCodeChange, n);
  at::Tensor drift = (layer.buffer - previous).square().reshape({-1});
  // topk is sorted by decreasing drift (the order the trust ratio walks).
  return std::get<1>(drift.topk(k, /*dim=*/0, /*largest=*/true, /*sorted=*/true));
}

PvStepStats PvTuner::step() {
  at::NoGradGuard noGrad;
  ++steps_;
  PvStepStats stats;
  stats.step = steps_;
  const bool tuneContinuous = options_.method != PvMethod::kRtn;
  const bool updateCodes = options_.method == PvMethod::kPv || options_.method == PvMethod::kSte;

  // 1. Chain rule to the continuous parameters, with the codes and grid of the forward pass.
  std::vector<at::Tensor> denseGrads;
  for (auto& layer : layers_) {
    at::Tensor g = layer.weight.grad();
    if (!g.defined()) g = at::zeros_like(layer.weight);
    denseGrads.push_back(g.detach().clone());
    PvContinuousGradients grads = continuousGradients(layer.quantized, g);
    layer.quantized.scales.mutable_grad() = grads.scales;
    layer.quantized.zeros.mutable_grad() = grads.zeros;
  }

  // 2. P-step on every continuous parameter, and the V-proposal on the buffers.
  if (tuneContinuous) adam_->step(options_.lr);
  if (updateCodes) {
    const double b2 = options_.codeBeta2;
    const double correction = 1.0 - std::pow(b2, static_cast<double>(steps_));
    for (size_t l = 0; l < layers_.size(); ++l) {
      PvLayer& layer = layers_[l];
      const at::Tensor& g = denseGrads[l];
      layer.codeSquare.mul_(b2).addcmul_(g, g, 1.0 - b2);
      at::Tensor denominator = (layer.codeSquare / correction).sqrt_().add_(options_.codeEps);
      layer.buffer.addcdiv_(g, denominator, -options_.codeLr);
    }
  }

  // 3. V-step with the updated scales and zeros.
  std::vector<at::Tensor> oldCodes;
  for (auto& layer : layers_) {
    oldCodes.push_back(layer.quantized.codes.clone());
    if (!updateCodes) continue;
    PvQuantizedWeight& q = layer.quantized;
    at::Tensor previous =
        dequantize(q.codes, q.scales.detach(), q.zeros.detach(), q.grid.groupSize);
    at::Tensor projected = projectCodes(layer.buffer, q.scales.detach(), q.zeros.detach(), q.grid);
    at::Tensor selected = selectForProjection(layer, previous);
    if (!selected.defined()) {
      q.codes.copy_(projected);
      continue;
    }
    at::Tensor flatCodes = q.codes.view({-1});
    at::Tensor candidate = projected.view({-1}).index_select(0, selected);
    if (options_.trustRatio > 0) {
      // Squared change of each selected weight, D(q_new)_j - W_prev,j, in selection order.
      const int64_t g = q.grid.groupSize;
      at::Tensor group = at::div(selected, g, "floor");
      at::Tensor scale = q.scales.detach().reshape({-1}).index_select(0, group);
      at::Tensor delta =
          (scale * (candidate.to(at::kFloat) - flatCodes.index_select(0, selected).to(at::kFloat)))
              .square();
      const double norm = previous.norm().item<double>();
      at::Tensor kept = applyTrustRatio(selected, delta, options_.trustRatio, norm);
      candidate = candidate.slice(0, 0, kept.numel());
      selected = kept;
    }
    flatCodes.index_copy_(0, selected, candidate);
  }
  if (updateCodes) agreeOnCodes();

  // 4. Re-dequantize, statistics, clear gradients.
  for (size_t l = 0; l < layers_.size(); ++l) {
    PvLayer& layer = layers_[l];
    layer.weight.copy_(dequantize(layer.quantized.codes, layer.quantized.scales.detach(),
                                  layer.quantized.zeros.detach(), layer.quantized.grid.groupSize));
    PvLayerStats s;
    s.name = layer.name;
    s.codes = layer.weight.numel();
    s.changed = layer.quantized.codes.ne(oldCodes[l]).sum().item<int64_t>();
    if (options_.method == PvMethod::kSte) {
      s.selected = s.codes;
    } else if (options_.method == PvMethod::kPv) {
      s.selected = pvChangeBudget(options_.maxCodeChange, s.codes);
    }
    stats.codes += s.codes;
    stats.changed += s.changed;
    stats.selected += s.selected;
    stats.maxLayerChangedFraction =
        std::max(stats.maxLayerChangedFraction,
                 static_cast<double>(s.changed) / static_cast<double>(s.codes));
    stats.layers.push_back(s);
    layer.weight.mutable_grad() = at::Tensor();
    layer.quantized.scales.mutable_grad() = at::Tensor();
    layer.quantized.zeros.mutable_grad() = at::Tensor();
  }
  for (auto& item : others_) item.tensor.mutable_grad() = at::Tensor();
  stats.changedFraction = static_cast<double>(stats.changed) / static_cast<double>(stats.codes);
  return stats;
}

void PvTuner::agreeOnCodes() {
  comm::Communicator* comm = options_.communicator;
  if (comm == nullptr || comm->worldSize() == 1) return;
  std::vector<at::Tensor> flat;
  for (const auto& layer : layers_) flat.push_back(layer.quantized.codes.view({-1}));
  at::Tensor all = at::cat(flat);
  comm->broadcast(all, {.root = 0})->wait(options_.timeout);
  int64_t offset = 0;
  for (auto& layer : layers_) {
    const int64_t n = layer.quantized.codes.numel();
    layer.quantized.codes.view({-1}).copy_(all.slice(0, offset, offset + n));
    offset += n;
  }
}

StateDict PvTuner::exportState() const {
  StateDict out;
  for (const auto& layer : layers_) {
    out[layer.name + ".codes"] = layer.quantized.codes.clone();
    out[layer.name + ".scales"] = layer.quantized.scales.detach().clone();
    out[layer.name + ".zeros"] = layer.quantized.zeros.detach().clone();
  }
  for (const auto& item : others_) out[item.name] = item.tensor.detach().clone();
  return out;
}

}  // namespace thinwire::qat

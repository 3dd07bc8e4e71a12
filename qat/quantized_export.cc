#include "qat/quantized_export.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "qat/hadamard.h"
#include "qat/quant_linear.h"

namespace thinwire::qat {
namespace {

struct QuantizedLayer {
  std::string name;  // module path, e.g. "layers.0.attention.q"
  std::shared_ptr<QuantLinearImpl> layer;
};

std::vector<QuantizedLayer> quantizedLayers(torch::nn::Module& model) {
  std::vector<QuantizedLayer> out;
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto layer = std::dynamic_pointer_cast<QuantLinearImpl>(item.value());
    if (layer == nullptr) continue;
    const QatOptions& qat = layer->options().qat;
    if (qat.method == Method::kNone || qat.weightBits == 0) continue;
    out.push_back({item.key(), layer});
  }
  return out;
}

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

int64_t methodCode(Method method) {
  switch (method) {
    case Method::kNone:
      return 0;
    case Method::kQuest:
      return 1;
    case Method::kSte:
      return 2;
    case Method::kLsq:
      return 3;
  }
  return -1;
}

StateDict settingsOf(const QatOptions& qat) {
  StateDict s;
  s["qat.format_version"] = scalarTensor(kExportFormatVersion);
  s["qat.method"] = scalarTensor(methodCode(qat.method));
  s["qat.weight_bits"] = scalarTensor(qat.weightBits);
  s["qat.activation_bits"] = scalarTensor(qat.activationBits);
  s["qat.variant"] = scalarTensor(int64_t{qat.variant == Variant::kHalf ? 1 : 0});
  return s;
}

// Codes and row steps of an LSQ weight: the forward of lsqQuantize, kept as integers.
QuantizedRows lsqRows(const QuantLinearImpl& layer) {
  const int64_t bits = layer.options().qat.weightBits;
  const double bound = (static_cast<double>(int64_t{1} << bits) - 1.0) / 2.0;
  const at::Tensor step = layer.weightStep.detach().to(at::kFloat).reshape({});
  const at::Tensor level =
      at::round(at::clamp(layer.weight.detach().to(at::kFloat) / step, -bound, bound) + 0.5);
  QuantizedRows rows;
  rows.codes = (level - 1.0).to(at::kChar);
  rows.step = step.expand({layer.weight.size(0)}).contiguous();
  return rows;
}

}  // namespace

StateDict exportQuantized(torch::nn::Module& model) {
  torch::NoGradGuard noGrad;
  const std::vector<QuantizedLayer> layers = quantizedLayers(model);
  TW_CHECK(!layers.empty(), "exportQuantized: the model has no quantized QuantLinear layer");
  const QatOptions& qat = layers.front().layer->options().qat;
  StateDict out = settingsOf(qat);
  std::set<std::string> replaced;
  for (const QuantizedLayer& item : layers) {
    const QuantLinearImpl& layer = *item.layer;
    const QatOptions& own = layer.options().qat;
    TW_CHECK(own.method == qat.method && own.weightBits == qat.weightBits &&
                 own.activationBits == qat.activationBits && own.variant == qat.variant,
             "exportQuantized: layer '", item.name, "' has QAT settings that differ from '",
             layers.front().name, "'");
    const QuantizedRows rows = qat.method == Method::kLsq
                                   ? lsqRows(layer)
                                   : quantizeRows(layer.weight, layer.weightQuantizer());
    const std::string weightName = join(item.name, "weight");
    // Stored unsigned, k + 2^(b-1) in [0, 2^b): the checkpoint container has no int8.
    out[weightName + ".codes"] =
        (rows.codes.to(at::kShort) + (int64_t{1} << (qat.weightBits - 1))).to(at::kByte);
    out[weightName + ".step"] = rows.step;
    out[weightName + ".rotated"] = scalarTensor(int64_t{qat.method == Method::kQuest ? 1 : 0});
    replaced.insert(weightName);
  }
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (replaced.count(item.key()) == 0) out[item.key()] = item.value().detach().clone();
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    out[item.key()] = item.value().detach().clone();
  }
  return out;
}

void loadQuantized(torch::nn::Module& model, const StateDict& state) {
  torch::NoGradGuard noGrad;
  const std::vector<QuantizedLayer> layers = quantizedLayers(model);
  TW_CHECK(!layers.empty(), "loadQuantized: the model has no quantized QuantLinear layer");
  const StateDict expected = settingsOf(layers.front().layer->options().qat);
  for (const auto& [key, value] : expected) {
    const at::Tensor& found = requireEntry(state, key);
    if (found.item<int64_t>() != value.item<int64_t>()) {
      TW_THROW(DataError, "quantized export has ", key, " = ", found.item<int64_t>(),
               " but the model's qat settings give ", value.item<int64_t>());
    }
  }
  auto copyInto = [&](const std::string& name, at::Tensor target) {
    const at::Tensor& source = requireEntry(state, name);
    if (!source.sizes().equals(target.sizes())) {
      TW_THROW(DataError, "quantized export: '", name, "' has shape ", source.sizes(),
               " but the model has ", target.sizes());
    }
    target.copy_(source);
  };
  std::set<std::string> replaced;
  for (const QuantizedLayer& item : layers) {
    QuantLinearImpl& layer = *item.layer;
    const std::string weightName = join(item.name, "weight");
    const at::Tensor& stored = requireEntry(state, weightName + ".codes");
    const at::Tensor& step = requireEntry(state, weightName + ".step");
    if (!stored.sizes().equals(layer.weight.sizes()) || stored.scalar_type() != at::kByte ||
        step.dim() != 1 || step.size(0) != layer.weight.size(0)) {
      TW_THROW(DataError, "quantized export: '", weightName, ".codes' / '.step' do not fit ",
               "a weight of shape ", layer.weight.sizes());
    }
    const int64_t offset = int64_t{1} << (layer.options().qat.weightBits - 1);
    const at::Tensor codes = (stored.to(at::kShort) - offset).to(at::kChar);
    const at::Tensor quantized = dequantizeRows(codes, step.to(at::kFloat));
    const bool rotated = requireEntry(state, weightName + ".rotated").item<int64_t>() != 0;
    const at::Tensor original = rotated ? blockHadamard(quantized) : quantized;
    layer.weight.copy_(original);
    layer.setFrozenWeight(layer.weightRotated() ? quantized : original);
    replaced.insert(weightName);
  }
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (replaced.count(item.key()) == 0) copyInto(item.key(), item.value());
  }
  for (const auto& item : model.named_buffers(/*recurse=*/true)) {
    copyInto(item.key(), item.value());
  }
}

}  // namespace thinwire::qat

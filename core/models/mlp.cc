#include "core/models/mlp.h"

#include <ATen/ATen.h>

#include "base/error.h"

namespace thinwire::core {

Mlp::Mlp(const MlpOptions& options) : inFeatures_(options.inFeatures) {
  if (options.inFeatures < 1 || options.numClasses < 1) {
    TW_THROW(ConfigError, "mlp needs input features and classes >= 1, got ", options.inFeatures,
             " and ", options.numClasses);
  }
  std::vector<int64_t> widths = {options.inFeatures};
  for (int64_t width : options.hidden) {
    if (width < 1) TW_THROW(ConfigError, "model.hidden widths must be >= 1, got ", width);
    widths.push_back(width);
  }
  widths.push_back(options.numClasses);
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (size_t i = 0; i + 1 < widths.size(); ++i) {
    torch::nn::Linear linear(torch::nn::LinearOptions(widths[i], widths[i + 1]));
    layers_->push_back(linear);
    linears_.push_back(linear);
  }
}

at::Tensor Mlp::forward(const at::Tensor& inputs) {
  TW_CHECK(inputs.dim() >= 2 && inputs.numel() == inputs.size(0) * inFeatures_,
           "mlp expects inputs [n, ...] with ", inFeatures_, " features per sample, got ",
           inputs.sizes());
  at::Tensor x = inputs.reshape({inputs.size(0), inFeatures_});
  for (size_t i = 0; i < linears_.size(); ++i) {
    x = linears_[i]->forward(x);
    if (i + 1 < linears_.size()) x = at::relu(x);
  }
  return x;
}

}  // namespace thinwire::core

// File: core/models/mlp.h
//
// Mlp: the multi-layer perceptron Flatten -> Linear -> ReLU -> ... -> Linear(numClasses).
// Linear layers are children of a ModuleList named "layers", so parameters are named
// "layers.0.weight", "layers.0.bias", ..., "layers.<hidden.size()>.bias" (the output layer).
//
// Ownership: a torch::nn::Module; hold it by std::shared_ptr (makeModel returns one).
// Threading: as any torch module: forward() from one thread at a time per instance.
//
// Example:
//   MlpOptions options;                                  // 784 -> 2048 -> 2048 -> 10
//   auto mlp = std::make_shared<Mlp>(options);
//   initParametersFromSeed(*mlp, /*seed=*/0);
//   at::Tensor logits = mlp->forward(images);   // images [n, 1, 28, 28] -> logits [n, 10]
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <vector>

#include "core/models/model.h"

namespace thinwire::core {

struct MlpOptions {
  int64_t inFeatures = 784;                    // product of the sample shape
  std::vector<int64_t> hidden = {2048, 2048};  // widths of the hidden layers (may be empty)
  int64_t numClasses = 10;
};

class Mlp : public Model {
 public:
  // Builds the layers with libtorch's default initialisation (use initParametersFromSeed for a
  // deterministic one). Throws ConfigError for a width, inFeatures or numClasses < 1.
  explicit Mlp(const MlpOptions& options);

  // Logits [n, numClasses] for inputs [n, ...] with inFeatures elements per sample (flattened
  // from dimension 1); InvalidArgument otherwise.
  at::Tensor forward(const at::Tensor& inputs) override;

 private:
  int64_t inFeatures_;
  torch::nn::ModuleList layers_;
  std::vector<torch::nn::Linear> linears_;  // the same modules as layers_, typed
};

}  // namespace thinwire::core

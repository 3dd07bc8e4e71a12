// File: core/models/model.h
//
// The models thinwire trains, and the factory that builds the one a config names. A Model is a
// torch::nn::Module with a single-tensor forward; named_parameters() gives the names used by
// per-layer settings (e.g. "layers.0.weight").
//
// Initialisation is deterministic given the seed passed to makeModel(), independent of rank,
// of libtorch's global RNG and of its version (core/models/seeded_init.h); the trainer still
// broadcasts rank 0's weights so that any divergence is impossible. Implementations: Mlp
// (core/models/mlp.h) and Cnn (core/models/cnn.h).
//
// Example:
//   std::shared_ptr<Model> model = makeModel(config.model, {1, 28, 28}, 10, /*seed=*/0);
//   at::Tensor logits = model->forward(batch.inputs);   // [n, 10]
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/config.h"

namespace thinwire::core {

class Model : public torch::nn::Module {
 public:
  // Logits [n, numClasses] for inputs [n, ...sampleShape].
  virtual at::Tensor forward(const at::Tensor& inputs) = 0;
};

// Builds `config.type` ("mlp" or "cnn") for the given sample shape and class count, with weights
// drawn by initParametersFromSeed(model, seed). Blocking. Throws ConfigError for an unknown type,
// a width < 1, or a shape the model cannot take (a CNN needs [channels, height, width] with
// height and width >= 12).
std::shared_ptr<Model> makeModel(const ModelConfig& config,
                                 const std::vector<int64_t>& sampleShape,
                                 int64_t numClasses,
                                 uint64_t seed);

}  // namespace thinwire::core

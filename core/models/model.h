// File: core/models/model.h
//
// The models thinwire trains, and the factory that builds the one a config names. A Model is a
// torch::nn::Module with a single-tensor forward; named_parameters() gives the names used by
// per-layer settings (e.g. "layers.0.weight").
//
// Initialisation is deterministic given the seed passed to makeModel(), independent of rank,
// of libtorch's global RNG and of its version (core/models/seeded_init.h); the trainer still
// broadcasts rank 0's weights so that any divergence is impossible. Implementations: Mlp
// (core/models/mlp.h), Cnn (core/models/cnn.h) and the language model Llama
// (core/models/llama.h), whose forward maps tokens [n, T] to logits [n, T, vocabulary].
//
// Example:
//   std::shared_ptr<Model> model = makeModel(config.model, {1, 28, 28}, 10, /*seed=*/0);
//   at::Tensor logits = model->forward(batch.inputs);   // [n, 10]
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "qat/quant_linear.h"

namespace thinwire::core {

class Model : public torch::nn::Module {
 public:
  // Logits [n, numClasses] for inputs [n, ...sampleShape]; a language model returns
  // [n, T, numClasses] for tokens [n, T].
  virtual at::Tensor forward(const at::Tensor& inputs) = 0;
};

// Builds `config.type` ("mlp", "cnn" or "llama") for the given sample shape and class count, with
// weights drawn by initParametersFromSeed(model, seed) (Llama::initFromSeed for llama, whose
// vocabulary is numClasses). Blocking. Throws ConfigError for an unknown type, a width < 1, or a
// shape the model cannot take (a CNN needs [channels, height, width] with height and width >= 12;
// llama needs [model.seq_len]). `qat` (method other than none, llama only) makes every attention
// and MLP linear a qat::QuantLinear with those settings (docs/qat.md); ConfigError for qat with
// another model type.
std::shared_ptr<Model> makeModel(const ModelConfig& config,
                                 const std::vector<int64_t>& sampleShape,
                                 int64_t numClasses,
                                 uint64_t seed,
                                 const QatConfig& qat = QatConfig{});

// The qat::QatOptions of a validated qat config section.
qat::QatOptions qatOptionsFrom(const QatConfig& config);

// Loads the weights of a checkpoint written by the trainer (the "model.*" entries of
// <checkpointDir>/shared.twc, core/checkpoint.h) into `model`. Blocking; in place. Throws
// DataError for a missing or corrupt file, a missing entry or a shape that differs.
void loadModelState(Model& model, const std::string& checkpointDir);

}  // namespace thinwire::core

#include "core/models/model.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <functional>
#include <numeric>

#include "base/error.h"
#include "core/checkpoint.h"
#include "core/models/cnn.h"
#include "core/models/llama.h"
#include "core/models/mlp.h"
#include "core/models/seeded_init.h"

namespace thinwire::core {

std::shared_ptr<Model> makeModel(const ModelConfig& config,
                                 const std::vector<int64_t>& sampleShape,
                                 int64_t numClasses,
                                 uint64_t seed,
                                 const QatConfig& qat) {
  if (qat.method != "none" && config.type != "llama") {
    TW_THROW(ConfigError, "qat.method ", qat.method, " needs model.type: llama, got '", config.type,
             "'");
  }
  std::shared_ptr<Model> model;
  if (config.type == "mlp") {
    MlpOptions options;
    options.inFeatures = std::accumulate(sampleShape.begin(), sampleShape.end(), int64_t{1},
                                         std::multiplies<int64_t>());
    options.hidden = config.hidden;
    options.numClasses = numClasses;
    model = std::make_shared<Mlp>(options);
  } else if (config.type == "cnn") {
    CnnOptions options;
    options.sampleShape = sampleShape;
    options.channels = config.channels;
    options.hidden = config.cnnHidden;
    options.numClasses = numClasses;
    model = std::make_shared<Cnn>(options);
  } else if (config.type == "llama") {
    if (sampleShape.size() != 1 || sampleShape[0] != config.seqLen) {
      TW_THROW(ConfigError, "model.type llama needs token windows [", config.seqLen,
               "] (data.dataset: text), got a sample shape of ", sampleShape.size(), " dimensions");
    }
    LlamaOptions options;
    options.vocabulary = numClasses;
    options.dModel = config.dModel;
    options.layers = config.layers;
    options.heads = config.heads;
    options.maxSeqLen = config.seqLen;
    options.mlpMultiple = config.mlpMultiple;
    options.qat = qatOptionsFrom(qat);
    auto llama = std::make_shared<Llama>(options);
    llama->initFromSeed(seed);
    return llama;
  } else {
    TW_THROW(ConfigError, "model.type must be mlp, cnn or llama, got '", config.type, "'");
  }
  initParametersFromSeed(*model, seed);
  return model;
}

qat::QatOptions qatOptionsFrom(const QatConfig& config) {
  qat::QatOptions options;
  options.method = qat::methodFromName(config.method);
  options.weightBits = config.wBits;
  options.activationBits = config.aBits;
  options.trust = config.trust;
  options.variant = config.variant == "full" ? qat::Variant::kFull : qat::Variant::kHalf;
  return options;
}

void loadModelState(Model& model, const std::string& checkpointDir) {
  const std::string path = sharedStateFile(checkpointDir);
  const StateDict state = readStateFile(path);
  torch::NoGradGuard noGrad;
  auto load = [&](const std::string& name, at::Tensor target) {
    const auto found = state.find("model." + name);
    if (found == state.end()) {
      TW_THROW(DataError, "checkpoint '", path, "' has no entry 'model.", name,
               "' (was it written by another model?)");
    }
    if (!found->second.sizes().equals(target.sizes())) {
      TW_THROW(DataError, "checkpoint '", path, "': 'model.", name, "' has shape ",
               found->second.sizes(), " but the model has ", target.sizes());
    }
    target.copy_(found->second);
  };
  for (const auto& item : model.named_parameters(true)) load(item.key(), item.value());
  for (const auto& item : model.named_buffers(true)) load(item.key(), item.value());
}

}  // namespace thinwire::core

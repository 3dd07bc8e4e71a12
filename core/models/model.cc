#include "core/models/model.h"

#include <functional>
#include <numeric>

#include "base/error.h"
#include "core/models/cnn.h"
#include "core/models/mlp.h"
#include "core/models/seeded_init.h"

namespace thinwire::core {

std::shared_ptr<Model> makeModel(const ModelConfig& config,
                                 const std::vector<int64_t>& sampleShape,
                                 int64_t numClasses,
                                 uint64_t seed) {
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
  } else {
    TW_THROW(ConfigError, "model.type must be mlp or cnn, got '", config.type, "'");
  }
  initParametersFromSeed(*model, seed);
  return model;
}

}  // namespace thinwire::core

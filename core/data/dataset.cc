#include "core/data/dataset.h"

#include "base/error.h"
#include "core/data/idx_dataset.h"
#include "core/data/synthetic_dataset.h"

namespace thinwire::core {

std::unique_ptr<Dataset> makeDataset(const DataConfig& config, Split split, uint64_t seed) {
  if (config.dataset == "fashion_mnist") {
    IdxDatasetOptions options;
    options.directory = config.path;
    options.split = split;
    return std::make_unique<IdxDataset>(options);
  }
  if (config.dataset == "synthetic") {
    return std::make_unique<SyntheticDataset>(config.synthetic, split, seed);
  }
  TW_THROW(ConfigError, "data.dataset must be fashion_mnist or synthetic, got '", config.dataset,
           "'");
}

}  // namespace thinwire::core

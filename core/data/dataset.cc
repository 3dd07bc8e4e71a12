#include "core/data/dataset.h"

#include "base/error.h"
#include "core/data/idx_dataset.h"
#include "core/data/synthetic_dataset.h"
#include "core/data/text_dataset.h"

namespace thinwire::core {

std::unique_ptr<Dataset> makeDataset(const DataConfig& config,
                                     Split split,
                                     uint64_t seed,
                                     int64_t seqLen) {
  if (config.dataset == "fashion_mnist") {
    IdxDatasetOptions options;
    options.directory = config.path;
    options.split = split;
    return std::make_unique<IdxDataset>(options);
  }
  if (config.dataset == "synthetic") {
    return std::make_unique<SyntheticDataset>(config.synthetic, split, seed);
  }
  if (config.dataset == "text") {
    return std::make_unique<TextDataset>(
        TextDatasetOptions{.directory = config.path,
                           .split = split,
                           .seqLen = seqLen,
                           .validationFraction = config.validationFraction});
  }
  TW_THROW(ConfigError, "data.dataset must be fashion_mnist, synthetic or text, got '",
           config.dataset, "'");
}

}  // namespace thinwire::core

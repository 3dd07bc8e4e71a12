#include "core/data/synthetic_dataset.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "base/error.h"
#include "core/data/seeded_random.h"

namespace thinwire::core {
namespace {

// Stream purposes for mixSeed(); fixed forever so that a seed always names the same data.
constexpr uint64_t kMeansStream = 0x6d65616e73;  // "means"
constexpr uint64_t kTrainStream = 0x747261696e;  // "train"
constexpr uint64_t kTestStream = 0x74657374;     // "test"
// Class means are scaled so that two of them lie about 4 * sqrt(2) ~ 5.7 noise standard
// deviations apart in any dimension (see the banner of synthetic_dataset.h).
constexpr double kMeanSpread = 4.0;

void checkConfig(const SyntheticDataConfig& config) {
  if (config.trainSamples < 1 || config.testSamples < 1 || config.features < 1 ||
      config.classes < 2) {
    TW_THROW(ConfigError, "data.synthetic needs train_samples, test_samples, features >= 1 and ",
             "classes >= 2, got ", config.trainSamples, ", ", config.testSamples, ", ",
             config.features, ", ", config.classes);
  }
}

}  // namespace

SyntheticDataset::SyntheticDataset(const SyntheticDataConfig& config, Split split, uint64_t seed)
    : config_(config), split_(split), seed_(seed) {
  checkConfig(config_);
  const int64_t features = config_.features;
  const int64_t classes = config_.classes;
  const int64_t samples = split == Split::kTrain ? config_.trainSamples : config_.testSamples;

  means_ = at::empty({classes, features}, at::TensorOptions().dtype(at::kFloat));
  {
    SeededRandom rng(mixSeed(seed, kMeansStream));
    const double scale = kMeanSpread / std::sqrt(static_cast<double>(features));
    float* mean = means_.data_ptr<float>();
    for (int64_t i = 0; i < classes * features; ++i) {
      mean[i] = static_cast<float>(scale * rng.normal());
    }
  }

  inputs_ = at::empty({samples, features}, at::TensorOptions().dtype(at::kFloat));
  labels_ = at::empty({samples}, at::TensorOptions().dtype(at::kLong));
  SeededRandom rng(mixSeed(seed, split == Split::kTrain ? kTrainStream : kTestStream));
  const float* mean = means_.data_ptr<float>();
  float* input = inputs_.data_ptr<float>();
  int64_t* label = labels_.data_ptr<int64_t>();
  for (int64_t n = 0; n < samples; ++n) {
    const int64_t y = static_cast<int64_t>(rng.below(static_cast<uint64_t>(classes)));
    label[n] = y;
    const float* classMean = mean + y * features;
    float* row = input + n * features;
    for (int64_t f = 0; f < features; ++f) {
      row[f] = classMean[f] + static_cast<float>(rng.normal());
    }
  }
}

Batch SyntheticDataset::batch(const std::vector<int64_t>& indices) const {
  const int64_t count = size();
  for (int64_t index : indices) {
    TW_CHECK(index >= 0 && index < count, "synthetic sample index ", index, " is outside [0, ",
             count, ")");
  }
  const at::Tensor rows =
      at::tensor(at::ArrayRef<int64_t>(indices), at::TensorOptions().dtype(at::kLong));
  return Batch{inputs_.index_select(0, rows), labels_.index_select(0, rows)};
}

std::string SyntheticDataset::describe() const {
  std::ostringstream out;
  out << "synthetic " << (split_ == Split::kTrain ? "train" : "test") << " (" << size() << " x "
      << config_.features << ", " << config_.classes << " classes, seed " << seed_ << ")";
  return out.str();
}

}  // namespace thinwire::core

// File: core/data/synthetic_dataset.h
//
// SyntheticDataset: a deterministic, learnable classification problem for tests and benchmarks
// that must not depend on files. Each class c has a mean vector mu_c drawn once from N(0, 1) and
// scaled by 4 / sqrt(features), so that two class means are about 5.7 noise standard deviations
// apart whatever the dimension: a linear model can reach well over 90% accuracy, yet the problem
// is not separable by a single feature. A sample of class y (uniform over classes) is
// mu_y + N(0, I).
//
// Everything comes from `seed` through SeededRandom (core/data/seeded_random.h), never from the
// global RNG, and is bit-identical across platforms and libtorch versions. The class means are
// shared by both splits; train and test samples come from different streams, so the test set is
// a fresh draw from the same distribution.
//
// Ownership: the dataset owns its float32 inputs [N, features] and int64 labels [N].
// Threading: immutable after construction; const methods are thread-safe.
//
// Example:
//   SyntheticDataConfig synthetic;            // 4096 train samples, 784 features, 10 classes
//   SyntheticDataset data(synthetic, Split::kTrain, /*seed=*/7);
//   Batch batch = data.batch({3, 1, 4});   // inputs [3, features], labels [3]
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/data/dataset.h"

namespace thinwire::core {

class SyntheticDataset : public Dataset {
 public:
  // Generates the split (blocking; about 0.1 s for 4096 x 784). Throws ConfigError when a size
  // in `config` is < 1 or classes < 2.
  SyntheticDataset(const SyntheticDataConfig& config, Split split, uint64_t seed);

  int64_t size() const override { return labels_.size(0); }
  std::vector<int64_t> sampleShape() const override { return {config_.features}; }
  int64_t numClasses() const override { return config_.classes; }
  // Copies of the rows at `indices`; InvalidArgument for an index outside [0, size()).
  Batch batch(const std::vector<int64_t>& indices) const override;
  std::string describe() const override;

  // The class means, float32 [classes, features] (shared, do not mutate).
  const at::Tensor& classMeans() const { return means_; }

 private:
  SyntheticDataConfig config_;
  Split split_;
  uint64_t seed_;
  at::Tensor means_;
  at::Tensor inputs_;
  at::Tensor labels_;
};

}  // namespace thinwire::core

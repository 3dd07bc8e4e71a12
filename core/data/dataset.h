// File: core/data/dataset.h
//
// A labelled, in-memory, random-access dataset for classification, and the factory that builds
// the one a config names. Samples are addressed by index; a batch is gathered from a list of
// indices (the sampler's output), so any order can be replayed exactly.
//
// Threading: const methods are thread-safe (threads-as-ranks share one Dataset).
//
// Example:
//   std::unique_ptr<Dataset> train = makeDataset(config.data, Split::kTrain, config.run.seed);
//   Batch batch = train->batch({0, 5, 7});   // inputs [3, ...], labels [3] int64
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"

namespace thinwire::core {

enum class Split { kTrain, kTest };

struct Batch {
  at::Tensor inputs;  // float32, [n, ...sampleShape()]; text: int64 tokens [n, T]
  at::Tensor labels;  // int64, [n]; text: the next token of every position, [n, T]
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Shape of one input sample, e.g. {1, 28, 28} for Fashion-MNIST, {features} for synthetic.
  virtual std::vector<int64_t> sampleShape() const = 0;
  virtual int64_t numClasses() const = 0;
  // Gathers the samples at `indices` (each in [0, size()), InvalidArgument otherwise), inputs
  // normalised to float32. Returns fresh tensors the caller owns.
  virtual Batch batch(const std::vector<int64_t>& indices) const = 0;
  // Human-readable origin for logs: "fashion-mnist train (60000) from /usr/share/...".
  virtual std::string describe() const = 0;
};

// Builds the dataset `config.dataset` names: "fashion_mnist" (IdxDataset over config.path,
// core/data/idx_dataset.h), "synthetic" (SyntheticDataset generated from `seed`, which the
// file-backed datasets ignore; core/data/synthetic_dataset.h) or "text" (TextDataset over
// config.path with windows of `seqLen` bytes, which only text uses; core/data/text_dataset.h).
// Blocking: loads everything into memory. Throws DataError when files are missing, truncated or
// corrupt (the message names the file and what was wrong), ConfigError for an unknown name or
// invalid synthetic sizes.
std::unique_ptr<Dataset> makeDataset(const DataConfig& config,
                                     Split split,
                                     uint64_t seed,
                                     int64_t seqLen = 128);

}  // namespace thinwire::core

// File: core/data/distributed_sampler.h
//
// DistributedSampler semantics: every rank derives the same permutation of the training set
// from (seed, epoch); global batch s of the epoch is the slice [s*G, (s+1)*G) of it with
// G = batchPerRank * worldSize, and rank r takes the contiguous sub-slice
// [s*G + r*B, s*G + (r+1)*B). Shards are therefore disjoint within an epoch, the union of all
// ranks' batches is exactly what one rank with batch G would see, and an epoch has
// floor(size / G) steps (the remainder is dropped, as DDP's drop_last).
//
// The permutation of epoch e is a pure function of (seed, e): Fisher-Yates driven by
// SeededRandom(mixSeed(seed, e)), identical on every platform and standard library.
//
// Threading: indices() caches the current epoch's permutation, so one sampler must not be used
// by two threads at once; give each rank (thread) its own, they agree by construction.
//
// Example:
//   DistributedSampler sampler({.datasetSize = 60000, .batchPerRank = 16, .rank = 1,
//                               .worldSize = 4, .seed = 7});
//   std::vector<int64_t> indices = sampler.indices(/*microStep=*/123);
#pragma once

#include <cstdint>
#include <vector>

namespace thinwire::core {

struct DistributedSamplerOptions {
  int64_t datasetSize = 0;
  int64_t batchPerRank = 1;
  int rank = 0;
  int worldSize = 1;
  uint64_t seed = 0;
};

class DistributedSampler {
 public:
  // Throws InvalidArgument when batchPerRank < 1, worldSize < 1, rank outside [0, worldSize)
  // or datasetSize < batchPerRank * worldSize.
  explicit DistributedSampler(DistributedSamplerOptions options);
  // Global micro-batches per epoch (>= 1; InvalidArgument if the dataset is smaller than one
  // global batch).
  int64_t stepsPerEpoch() const { return stepsPerEpoch_; }
  // This rank's batchPerRank sample indices for global micro-step `microStep` (counted from 0
  // across epochs; InvalidArgument if negative). Fresh vector; O(datasetSize) on the first call
  // of an epoch, O(batchPerRank) after.
  std::vector<int64_t> indices(int64_t microStep) const;
  // The whole permutation of [0, datasetSize) used in `epoch` (>= 0).
  std::vector<int64_t> permutation(int64_t epoch) const;
  int64_t epochOf(int64_t microStep) const { return microStep / stepsPerEpoch_; }

 private:
  DistributedSamplerOptions options_;
  int64_t stepsPerEpoch_;
  mutable int64_t cachedEpoch_ = -1;
  mutable std::vector<int64_t> permutation_;
};

}  // namespace thinwire::core

#include "core/data/distributed_sampler.h"

#include <numeric>
#include <utility>

#include "base/error.h"
#include "core/data/seeded_random.h"

namespace thinwire::core {
namespace {

int64_t checkedStepsPerEpoch(const DistributedSamplerOptions& options) {
  TW_CHECK(options.batchPerRank >= 1, "sampler batchPerRank must be >= 1, got ",
           options.batchPerRank);
  TW_CHECK(options.worldSize >= 1, "sampler worldSize must be >= 1, got ", options.worldSize);
  TW_CHECK(options.rank >= 0 && options.rank < options.worldSize, "sampler rank must be in [0, ",
           options.worldSize, "), got ", options.rank);
  const int64_t globalBatch = options.batchPerRank * options.worldSize;
  TW_CHECK(options.datasetSize >= globalBatch, "dataset of ", options.datasetSize,
           " samples is smaller than one global batch of ", globalBatch, " (", options.batchPerRank,
           " per rank x ", options.worldSize, " ranks)");
  return options.datasetSize / globalBatch;
}

}  // namespace

DistributedSampler::DistributedSampler(DistributedSamplerOptions options)
    : options_(options), stepsPerEpoch_(checkedStepsPerEpoch(options)) {}

std::vector<int64_t> DistributedSampler::permutation(int64_t epoch) const {
  TW_CHECK(epoch >= 0, "sampler epoch must be >= 0, got ", epoch);
  std::vector<int64_t> order(static_cast<size_t>(options_.datasetSize));
  std::iota(order.begin(), order.end(), int64_t{0});
  // Fisher-Yates with our own bounded draw (see core/data/seeded_random.h for why not
  // std::shuffle): every rank computes the same order from (seed, epoch) alone.
  SeededRandom rng(mixSeed(options_.seed, static_cast<uint64_t>(epoch)));
  for (size_t i = order.size() - 1; i > 0; --i) {
    const size_t j = static_cast<size_t>(rng.below(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

std::vector<int64_t> DistributedSampler::indices(int64_t microStep) const {
  TW_CHECK(microStep >= 0, "sampler micro-step must be >= 0, got ", microStep);
  const int64_t epoch = microStep / stepsPerEpoch_;
  if (epoch != cachedEpoch_) {
    permutation_ = permutation(epoch);
    cachedEpoch_ = epoch;
  }
  const int64_t step = microStep % stepsPerEpoch_;
  const int64_t begin = step * options_.batchPerRank * options_.worldSize +
                        static_cast<int64_t>(options_.rank) * options_.batchPerRank;
  return std::vector<int64_t>(permutation_.begin() + begin,
                              permutation_.begin() + begin + options_.batchPerRank);
}

}  // namespace thinwire::core

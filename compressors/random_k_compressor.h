// File: compressors/random_k_compressor.h
//
// `RandomKCompressor`: keeps k = max(1, floor(ratio * numel)) positions of
// p = residual + addendScale * addend drawn uniformly without replacement from a private
// generator seeded by LayerParams::seed (specs/compressors.md §6.3). Every rank with the same seed
// draws the same positions, so only the values travel and payloads of several ranks add up
// (isSummable): an allreduce of k values instead of an allgather of (index, value) pairs.
//
// Payload: a 1-D tensor of the k kept values in ascending position order, float32 or, with
// fp16Values, float16 (saturated at +-65504). With `scale` each value is multiplied by numel / k,
// which makes C unbiased (E[C(p)] = p, omega = numel / k - 1); unscaled it is biased and
// k/numel-contractive in expectation, the usual partner of error feedback.
// Residual: p everywhere, p - decode(value) at the kept positions (exactly 0 when unscaled with
// float32 values).
//
// Ownership: owns nothing between calls. Threading: compress() is for one thread at a time per
// instance; decompressAdd() is const and thread-safe.
//
// Example:
//   RandomKCompressor randomK(RandomKOptions{.scale = true});
//   LayerParams params{.ratio = 0.01, .seed = stepLayerSeed};   // same on every rank
//   randomK.compress(residual, gradient, 1.0f, payload, params);
//   randomK.decompressAdd(summedPayload, average, 1.0f / worldSize, params);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compressors/compressor.h"
#include "compressors/payload.h"

namespace thinwire::compressors {

struct RandomKOptions {
  bool scale = false;       // multiply kept values by numel / k (unbiased)
  bool fp16Values = false;  // values on the wire as float16
};

// The k positions (ascending) that random-k keeps for `seed`: a uniformly random k-subset of
// [0, numel), the same on every platform (own generator and bounded draws, Floyd's algorithm).
// Pure; throws InvalidArgument unless 0 <= k <= numel <= INT32_MAX.
std::vector<int32_t> randomKIndices(int64_t numel, int64_t k, uint64_t seed);

class RandomKCompressor : public Compressor {
 public:
  explicit RandomKCompressor(RandomKOptions options = {}) : options_(options) {}

  std::string name() const override { return "randomk"; }
  const RandomKOptions& options() const { return options_; }

  // See Compressor::compress and the banner; positions come from params.seed. numel must be
  // <= INT32_MAX, params.ratio in (0, 1] (InvalidArgument otherwise).
  void compress(at::Tensor& residual,
                const at::Tensor& addend,
                float addendScale,
                Payload& out,
                const LayerParams& params) override;

  // out += alpha * decode(payload), regenerating the positions from params.seed. Throws
  // InvalidArgument when the payload's dtype or its k do not match these options and params.
  void decompressAdd(const Payload& payload,
                     at::Tensor& out,
                     float alpha,
                     const LayerParams& params) const override;

  bool isSummable() const override { return true; }
  // k * 4 bytes (float32 values) or k * 2 (float16).
  int64_t payloadBytes(int64_t numel, const LayerParams& params) const override;
  // Unscaled: k / numel. Scaled: max(0, 2 - numel / k) (E||C(x) - x||^2 = (numel/k - 1)||x||^2).
  double deltaHint(int64_t numel, const LayerParams& params) const override;

 private:
  RandomKOptions options_;
};

}  // namespace thinwire::compressors

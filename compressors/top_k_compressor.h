// File: compressors/top_k_compressor.h
//
// `TopKCompressor`: keeps the k = max(1, floor(ratio * numel)) largest magnitudes of
// p = residual + addendScale * addend (specs/compressors.md §1.1), either exactly or, DGC-style,
// above a threshold estimated from a strided sample of p (§1.2, with the adaptation loop).
//
// Payload (uint8 bytes, count = number of kept entries):
//   [count int32 indices, strictly ascending][count values, float32 or float16 (fp16Values)]
// Exact mode always sends count == k (payloadBytes is fixed); sampled mode sends count <= k
// (payloadBytes is -1, maxPayloadBytes is k * (4 + value bytes)).
//
// Residual (Note [Fused residual] in compressor.h): after compress() it holds exactly p at every
// position not sent and p - decode(value) at sent ones: exactly 0 with float32 values, the float16
// rounding error with float16 values. Either way Delta + residual_new == p bit for bit.
//
// Ordering: magnitudes are compared as |p|; equal magnitudes prefer the lower index. NaN ranks
// below every number (a NaN is sent only when fewer than k non-NaN entries exist); +-inf ranks
// above every finite value.
//
// Ownership: the compressor owns scratch buffers reused between calls (histograms, candidates).
// Threading: compress() uses at::parallel_for; its result does not depend on the thread count.
// One thread calls compress() on an instance at a time; decompressAdd() is const and thread-safe.
//
// Example:
//   TopKCompressor topk(TopKOptions{.sampled = true});
//   Payload payload;
//   topk.compress(errorMemory, gradient, 1.0f, payload, LayerParams{.ratio = 0.01});
//   at::Tensor sum = at::zeros({gradient.numel()});
//   topk.decompressAdd(payload, sum, 1.0f, LayerParams{.ratio = 0.01});
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compressors/compressor.h"
#include "compressors/payload.h"

namespace thinwire::compressors {

struct TopKOptions {
  // false: exact top-k (radix selection on the magnitudes' bit patterns). true: DGC sampled
  // threshold, see Note [Sampled top-k] in top_k_compressor.cc.
  bool sampled = false;
  double sampleRatio = 0.01;  // sampled: fraction of elements sampled for the threshold, (0, 1]
  bool fp16Values = false;    // values on the wire as float16 (saturated at +-65504)
  int maxAdaptations = 10;    // sampled: times the threshold may be lowered by 0.8, >= 0
  // sampled: the sample threshold aims at the middle of [k, upperBound * k] so that the candidate
  // count usually exceeds k and is cut to the exact top-k of the candidates; >= 1.
  double upperBound = 1.3;
  // sampled: the threshold is lowered (by 0.8, rescanning the residual) while fewer than
  // lowerBound * k entries reach it; in (0, 1].
  double lowerBound = 0.8;
};

// k = max(1, floor(ratio * numel)) for numel >= 1, 0 for numel == 0. Throws InvalidArgument
// unless ratio is in (0, 1].
int64_t topKCount(int64_t numel, double ratio);

class TopKCompressor : public Compressor {
 public:
  // Throws InvalidArgument for options outside the documented ranges.
  explicit TopKCompressor(TopKOptions options = {});

  std::string name() const override { return "topk"; }
  const TopKOptions& options() const { return options_; }

  // See Compressor::compress and the banner. numel must be <= INT32_MAX (int32 indices);
  // params.ratio in (0, 1]; sampled mode draws its sample positions from params.rankSeed.
  void compress(at::Tensor& residual,
                const at::Tensor& addend,
                float addendScale,
                Payload& out,
                const LayerParams& params) override;

  // out += alpha * decode(payload): a scatter-add, so repeated indices add up. Throws
  // InvalidArgument when the payload is not uint8, its size is not a whole number of
  // (index, value) entries, it holds more than k entries (exactly k in exact mode), or an index
  // lies outside [0, numel).
  void decompressAdd(const Payload& payload,
                     at::Tensor& out,
                     float alpha,
                     const LayerParams& params) const override;

  bool isSummable() const override { return false; }
  bool isSparse() const override { return true; }
  // Exact: k * (4 + value bytes). Sampled: -1 (the count depends on the data).
  int64_t payloadBytes(int64_t numel, const LayerParams& params) const override;
  int64_t maxPayloadBytes(int64_t numel, const LayerParams& params) const override;
  // k / numel (top-k is k/d-contractive; sampled keeps the largest entries too, see specs §7).
  double deltaHint(int64_t numel, const LayerParams& params) const override;

 private:
  int64_t valueBytes() const { return options_.fp16Values ? 2 : 4; }
  // Leaves residual = p and the k selected positions (ascending) in selected_.
  void selectExact(
      float* residual, const float* addend, float addendScale, int64_t numel, int64_t k);
  // Leaves the kept positions (ascending, <= k) in selected_ and their p values in
  // selectedValues_; the residual holds p elsewhere and 0 at the kept positions.
  void selectSampled(at::Tensor& residual,
                     const at::Tensor& addend,
                     float addendScale,
                     int64_t k,
                     uint64_t rankSeed);
  // Writes the payload from selected_ and selectedValues_ (p) and sets the residual at the kept
  // positions to p - decode(value) (sampled mode with float32 values: the 0 already there).
  void emit(float* residual, int64_t numel, Payload& out);

  TopKOptions options_;
  std::vector<uint32_t> histograms_;     // exact: one histogram per chunk
  std::vector<int32_t> candidates_;      // positions gathered by a selection pass
  std::vector<uint32_t> candidateKeys_;  // their magnitude keys
  std::vector<int32_t> selected_;        // the final positions, ascending
  std::vector<float> selectedValues_;    // p at the selected positions
  std::vector<int64_t> chunkAbove_;      // exact: per chunk, elements above the current bin
  std::vector<float> candidateValues_;   // sampled: p at the candidates
  // sampled: one chunk's candidates, ascending: the first `count` entries of buffers that only
  // grow, so that repeated calls do not reallocate.
  struct Candidates {
    std::vector<int32_t> indices;
    std::vector<float> values;
    int64_t count = 0;
  };
  std::vector<Candidates> chunkCandidates_;  // sampled: all candidates per chunk
  std::vector<Candidates> chunkRescan_;      // sampled: a rescan's new candidates per chunk
  std::vector<uint32_t> keyScratch_;         // sampled: nthLargestKey's working memory
  std::vector<int32_t> dropped_;             // sampled: candidates cut from the top-k
  std::vector<int64_t> chunkBin_;            // exact: per chunk, elements in the current bin
};

}  // namespace thinwire::compressors

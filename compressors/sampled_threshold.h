// File: compressors/sampled_threshold.h
//
// DGC-style threshold selection (specs/compressors.md §1.2): estimate the magnitude that about a
// given fraction of the elements reach from a strided sample, instead of sorting everything.
//   - sampleThreshold(): the estimate alone, from a sample of p = residual + scale * addend
//     computed on the fly at the sample positions (so a fused compress pass can use it before it
//     writes p); TopKCompressor's sampled mode builds its one-pass selection and DGC adaptation
//     loop on it.
//   - SampledThresholdSelector: estimate plus one read-only mask pass over a tensor, the
//     selection the kernel benchmark compares with at::topk.
//   - nthLargestKey(): the radix selection both use, also the exact top-k cut of TopKCompressor's
//     sampled mode.
//
// Ownership: a selector owns the buffers its results view; sampleThreshold() owns nothing.
// Threading: sampleThreshold() is a pure function of its arguments. A selector is used by one
// thread at a time; its mask pass uses at::parallel_for and does not depend on the thread count.
//
// Example:
//   float threshold = sampleThreshold(residual, gradient, 1.0f,
//                                     ThresholdSampleOptions{.fraction = 0.01, .seed = seed});
//   SampledThresholdSelector selector(SampledThresholdOptions{.ratio = 0.01, .seed = 1});
//   SparseSelection kept = selector.select(gradient);   // |x| >= kept.threshold, ascending
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <random>
#include <vector>

namespace thinwire::compressors {

struct ThresholdSampleOptions {
  double fraction = 0.01;     // fraction of elements that should reach the threshold, (0, 1]
  double sampleRatio = 0.01;  // fraction of elements sampled, (0, 1]
  int64_t minSamples = 4096;  // never fewer samples than this (or numel, if smaller), >= 1
  uint64_t seed = 0;          // picks the sample's start position
};

// Blocking, read only. Samples max(ceil(sampleRatio * numel), minSamples) elements (capped at
// numel) as every stride-th element from a seeded start (stride odd unless 1; constant, so the
// hardware prefetcher runs ahead), computes |residual[j] + addendScale * addend[j]| there (addend
// may be undefined: |residual[j]|) and returns the ceil(fraction * samples)-th largest sampled
// magnitude. NaN samples are never chosen; an all-NaN sample gives +inf. With numel <= minSamples
// every element is sampled and the result is exact. `residual` and a defined `addend` are
// contiguous float32 CPU tensors of the same numel >= 1; throws InvalidArgument otherwise and
// for options outside their ranges.
float sampleThreshold(const at::Tensor& residual,
                      const at::Tensor& addend,
                      float addendScale,
                      const ThresholdSampleOptions& options);

// The sample sampleThreshold() draws for a tensor of `numel` elements: positions first + s * stride
// for s < count, and the rank of the threshold among their magnitudes (rank-th largest). The CUDA
// path of TopKCompressor draws the same sample. Pure; throws InvalidArgument like sampleThreshold()
// for options outside their ranges and numel outside [1, INT32_MAX].
struct ThresholdSamplePlan {
  int64_t first = 0;
  int64_t stride = 1;
  int64_t count = 1;
  int64_t rank = 1;
};
ThresholdSamplePlan planThresholdSample(int64_t numel, const ThresholdSampleOptions& options);

// Blocking, pure. Returns the rank-th largest (1-based) of keys[0, count): the value
// std::nth_element with std::greater would put at rank - 1, found by radix selection (histograms
// of the top 11, the next 11 and the last 10 bits, each over the keys left in the chosen bin,
// finishing with std::nth_element once a bin is small), so O(count) whatever the distribution.
// `scratch` is working memory, resized as needed; `keys` must not point into it. Throws
// InvalidArgument unless 1 <= rank <= count.
uint32_t nthLargestKey(const uint32_t* keys,
                       int64_t count,
                       int64_t rank,
                       std::vector<uint32_t>& scratch);

struct SampledThresholdOptions {
  double ratio = 0.01;        // fraction of elements to keep, in (0, 1]
  double sampleRatio = 0.01;  // fraction of elements sampled for the threshold, in (0, 1]
  uint64_t seed = 0;          // seeds the sample positions; later calls continue the stream
};

// A selection: views into the selector's buffers (see SampledThresholdSelector::select).
struct SparseSelection {
  at::Tensor indices;   // int32, ascending positions in the input
  at::Tensor values;    // float32, input[indices] with their signs
  float threshold = 0;  // an element is kept iff |x| >= threshold
};

// Threshold from sampleThreshold() (fraction = ratio, at least 4096 samples), then every element
// whose magnitude reaches it is kept in one mask pass. The kept count is ratio * numel up to
// sampling error (relative spread about 1 / sqrt(ratio * samples)); no adaptation or truncation
// (TopKCompressor's sampled mode adds both). Every kept element is >= every dropped one in
// magnitude; NaN elements are never kept.
class SampledThresholdSelector {
 public:
  // Throws InvalidArgument when ratio or sampleRatio is outside (0, 1].
  explicit SampledThresholdSelector(SampledThresholdOptions options);

  // Blocking; the mask pass uses at::get_num_threads() threads. `input` must be a contiguous
  // float32 CPU tensor with 1 <= numel <= INT32_MAX (InvalidArgument otherwise); it is read only.
  // The result views buffers owned by the selector: valid until the next select() call or the
  // selector's destruction (clone() to keep it).
  SparseSelection select(const at::Tensor& input);

 private:
  SampledThresholdOptions options_;
  std::mt19937_64 random_;
  std::vector<int64_t> chunkCounts_;
  at::Tensor indices_;  // int32, capacity numel: a chunk never overflows its own range
  at::Tensor values_;   // float32, same capacity
};

}  // namespace thinwire::compressors

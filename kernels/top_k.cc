#include "kernels/top_k.h"

#include <ATen/ATen.h>

#include <climits>
#include <cstring>
#include <limits>
#include <tuple>

#include "base/error.h"
#include "kernels/device.h"
#include "kernels/launch.h"

namespace thinwire::kernels {
namespace {

// DGC's factor for lowering the threshold (TopKCompressor's kAdaptationFactor).
constexpr float kAdaptationFactor = 0.8f;

uint32_t magnitudeKey(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  bits &= 0x7fffffffu;
  return bits <= 0x7f800000u ? bits + 1 : 0;
}

// The candidates of one threshold pass, in index order.
struct Candidates {
  at::Tensor indices;
  at::Tensor values;
  int64_t count = 0;
};

// Buffers of the threshold passes over one tensor (see Note [Ordered candidate pass] in
// top_k.cu): slots for every element, the tiles' counts and their prefix sums.
class ThresholdPass {
 public:
  ThresholdPass(at::Tensor& residual, float addendScale, void* stream)
      : residual_(residual), addendScale_(addendScale), stream_(stream) {
    const int64_t numel = residual.numel();
    tiles_ = (numel + detail::kTopKTile - 1) / detail::kTopKTile;
    slotIndices_ = at::empty({numel}, residual.options().dtype(at::kInt));
    slotValues_ = at::empty({numel}, residual.options());
    tileCounts_ = at::empty({tiles_}, residual.options().dtype(at::kInt));
    tileOffsets_ = at::empty({tiles_ + 1}, residual.options().dtype(at::kLong));
  }

  // Blocking (reads the candidate count back).
  Candidates run(const float* addend, uint32_t thresholdKey, bool zeroCandidates) {
    check(detail::launchThresholdPass(
              residual_.data_ptr<float>(), addend, addendScale_, residual_.numel(), thresholdKey,
              zeroCandidates, slotIndices_.data_ptr<int32_t>(), slotValues_.data_ptr<float>(),
              tileCounts_.data_ptr<int32_t>(), stream_),
          "top-k threshold pass");
    check(detail::launchScanTiles(tileCounts_.data_ptr<int32_t>(), tiles_,
                                  tileOffsets_.data_ptr<int64_t>(), stream_),
          "top-k tile scan");
    Candidates found;
    found.count = tileOffsets_[tiles_].item<int64_t>();
    found.indices = at::empty({found.count}, slotIndices_.options());
    found.values = at::empty({found.count}, slotValues_.options());
    check(detail::launchGatherTiles(
              slotIndices_.data_ptr<int32_t>(), slotValues_.data_ptr<float>(),
              tileCounts_.data_ptr<int32_t>(), tileOffsets_.data_ptr<int64_t>(), tiles_,
              found.indices.data_ptr<int32_t>(), found.values.data_ptr<float>(), stream_),
          "top-k gather");
    return found;
  }

 private:
  at::Tensor& residual_;
  float addendScale_;
  void* stream_;
  int64_t tiles_ = 0;
  at::Tensor slotIndices_;
  at::Tensor slotValues_;
  at::Tensor tileCounts_;
  at::Tensor tileOffsets_;
};

// The rank-th largest of non-negative int32 keys (a CUDA tensor), read back to the host
// (blocking). A device radix select (Note [Radix select] in top_k.cu) instead of sorting the keys;
// at::kthvalue runs one slice in one thread block, which measured 20x slower on 10^6 keys.
int32_t nthLargest(const at::Tensor& keys, int64_t rank, void* stream) {
  at::Tensor state = at::empty({2}, keys.options().dtype(at::kLong));
  at::Tensor histograms = at::empty({detail::kRadixSelectHistogramInts}, keys.options());
  check(
      detail::launchRadixSelect(keys.data_ptr<int32_t>(), keys.numel(), rank,
                                state.data_ptr<int64_t>(), histograms.data_ptr<int32_t>(), stream),
      "top-k select");
  int64_t key = 0;
  check(detail::copyToHost(&key, state.data_ptr<int64_t>(), sizeof(key), stream),
        "top-k select read-back");
  return static_cast<int32_t>(key);
}

}  // namespace

TopKSelection topKSelect(at::Tensor& residual,
                         const at::Tensor& addend,
                         float addendScale,
                         const TopKSelectOptions& options) {
  checkCudaFloat(residual, "top-k residual");
  const int64_t numel = residual.numel();
  TW_CHECK(numel <= INT32_MAX, "top-k: numel = ", numel, " exceeds the int32 index range");
  if (addend.defined()) {
    checkCudaFloat(addend, "top-k addend");
    TW_CHECK(addend.numel() == numel && addend.device() == residual.device(), "top-k: addend has ",
             addend.numel(), " elements on ", addend.device(), ", residual ", numel, " on ",
             residual.device());
  }
  TopKSelection result;
  if (numel == 0) {
    result.indices = at::empty({0}, residual.options().dtype(at::kInt));
    result.values = at::empty({0}, residual.options());
    return result;
  }
  const int64_t k = options.k;
  TW_CHECK(k >= 1 && k <= numel, "top-k: k = ", k, " outside [1, ", numel, "]");
  TW_CHECK(options.sampleCount >= 1 && options.sampleRank >= 1 &&
               options.sampleRank <= options.sampleCount && options.sampleStride >= 1 &&
               options.sampleFirst >= 0 &&
               options.sampleFirst + (options.sampleCount - 1) * options.sampleStride < numel,
           "top-k: the threshold sample (first ", options.sampleFirst, ", stride ",
           options.sampleStride, ", count ", options.sampleCount, ", rank ", options.sampleRank,
           ") does not fit ", numel, " elements");
  DeviceScope scope(residual);
  void* stream = scope.stream();
  float* r = residual.data_ptr<float>();
  const float* a = addend.defined() ? addend.data_ptr<float>() : nullptr;

  // The threshold: the sample's rank-th largest magnitude, exactly as sampleThreshold().
  at::Tensor sampleKeys = at::empty({options.sampleCount}, residual.options().dtype(at::kInt));
  check(detail::launchSampleKeys(r, a, addendScale, options.sampleFirst, options.sampleStride,
                                 options.sampleCount, sampleKeys.data_ptr<int32_t>(), stream),
        "top-k sample");
  const int32_t sampleKey = nthLargest(sampleKeys, options.sampleRank, stream);
  float threshold = std::numeric_limits<float>::infinity();
  if (sampleKey != 0) {
    const uint32_t bits = static_cast<uint32_t>(sampleKey) - 1;
    std::memcpy(&threshold, &bits, sizeof(threshold));
  }
  // Zeros carry nothing; a zero threshold would make every zero a candidate.
  threshold = std::max(threshold, std::numeric_limits<float>::denorm_min());

  ThresholdPass pass(residual, addendScale, stream);
  Candidates candidates;
  if (options.sampled) {
    candidates = pass.run(a, magnitudeKey(threshold), /*zeroCandidates=*/true);
    const double lowest = options.lowerBound * static_cast<double>(k);
    for (int adaptation = 0;
         adaptation < options.maxAdaptations && static_cast<double>(candidates.count) < lowest;
         ++adaptation) {
      const float lower = threshold * kAdaptationFactor;
      if (!(lower > 0.0f) || !(lower < threshold)) break;  // inf, or no smaller float left
      threshold = lower;
      // Back to residual = p everywhere; the lower threshold then finds the old candidates again
      // plus the new ones, in index order (the CPU merges the two lists into the same order).
      check(detail::launchScatter(r, candidates.indices.data_ptr<int32_t>(),
                                  candidates.values.data_ptr<float>(), candidates.count, stream),
            "top-k restore");
      candidates = pass.run(nullptr, magnitudeKey(threshold), /*zeroCandidates=*/true);
    }
  } else {
    candidates = pass.run(a, magnitudeKey(threshold), /*zeroCandidates=*/false);
    // Too few above the guess: every element is a candidate (key >= 0), NaN included.
    if (candidates.count < k) candidates = pass.run(nullptr, 0u, /*zeroCandidates=*/false);
  }

  if (candidates.count > k) {
    // The exact top-k of the candidates: keys above the k-th largest, then its ties in index
    // order until k are kept.
    at::Tensor keys = at::empty({candidates.count}, candidates.indices.options());
    check(detail::launchMagnitudeKeys(candidates.values.data_ptr<float>(), candidates.count,
                                      keys.data_ptr<int32_t>(), stream),
          "top-k keys");
    const int32_t kth = nthLargest(keys, k, stream);
    const at::Tensor above = keys > kth;
    const at::Tensor tie = keys == kth;
    const at::Tensor ties = above.sum().neg().add(k);
    const at::Tensor keep = above.logical_or(tie.logical_and(tie.cumsum(0).le(ties)));
    const at::Tensor kept = at::nonzero(keep).reshape({-1});
    result.indices = candidates.indices.index_select(0, kept);
    result.values = candidates.values.index_select(0, kept);
    if (options.sampled) {
      // Dropped candidates go back into the residual, which held 0 there.
      const at::Tensor dropped = at::nonzero(keep.logical_not()).reshape({-1});
      const at::Tensor droppedIndices = candidates.indices.index_select(0, dropped);
      const at::Tensor droppedValues = candidates.values.index_select(0, dropped);
      check(detail::launchScatter(r, droppedIndices.data_ptr<int32_t>(),
                                  droppedValues.data_ptr<float>(), droppedIndices.numel(), stream),
            "top-k write-back");
    }
  } else {
    result.indices = candidates.indices;
    result.values = candidates.values;
  }
  return result;
}

at::Tensor topKEmit(const TopKSelection& selection, bool fp16Values, at::Tensor& residual) {
  checkCudaFloat(residual, "top-k residual");
  const int64_t count = selection.indices.numel();
  TW_CHECK(selection.values.numel() == count && (count == 0 || onKernelDevice(selection.indices)),
           "top-k emit: ", count, " indices and ", selection.values.numel(), " values");
  at::Tensor payload =
      at::empty({count * (4 + (fp16Values ? 2 : 4))}, residual.options().dtype(at::kByte));
  if (count == 0) return payload;
  DeviceScope scope(residual);
  check(detail::launchTopKEmit(
            selection.indices.data_ptr<int32_t>(), selection.values.data_ptr<float>(), count,
            fp16Values, residual.data_ptr<float>(), payload.data_ptr<uint8_t>(), scope.stream()),
        "top-k emit");
  return payload;
}

void topKDecompressAdd(
    const at::Tensor& payload, int64_t count, bool fp16Values, float alpha, at::Tensor& out) {
  checkCudaFloat(out, "top-k decompressAdd output");
  if (count == 0) return;
  TW_CHECK(onKernelDevice(payload) && payload.scalar_type() == at::kByte &&
               payload.is_contiguous() && payload.numel() == count * (4 + (fp16Values ? 2 : 4)),
           "top-k: payload must be ", count * (4 + (fp16Values ? 2 : 4)),
           " contiguous uint8 CUDA bytes, got ", payload.toString(), " of ", payload.numel());
  DeviceScope scope(out);
  at::Tensor badIndex = at::zeros({1}, out.options().dtype(at::kInt));
  check(detail::launchTopKDecompressAdd(payload.data_ptr<uint8_t>(), count, fp16Values, alpha,
                                        out.data_ptr<float>(), out.numel(),
                                        badIndex.data_ptr<int32_t>(), scope.stream()),
        "top-k decompressAdd");
  TW_CHECK(badIndex.item<int32_t>() == 0, "top-k: a payload index lies outside [0, ", out.numel(),
           ")");
}

}  // namespace thinwire::kernels

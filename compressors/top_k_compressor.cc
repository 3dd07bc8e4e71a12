#include "compressors/top_k_compressor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "base/error.h"
#include "compressors/cuda_paths.h"
#include "compressors/sampled_threshold.h"

namespace thinwire::compressors {
namespace {

// Note [Magnitude keys]
// For non-negative IEEE floats the bit patterns order like the values, so |p| is ranked by
// key = (bits & 0x7fffffff) + 1, and NaN (patterns above +inf's 0x7f800000) gets key 0: below
// every number, zero included. Keys fit in 31 bits. Exact selection is a radix select over the
// keys: a histogram of the top 11 bits (built in the same pass that computes p), then, only when
// the bin holding the k-th largest key is still crowded, histograms of the next 12 and the last
// 8 bits restricted to that bin. A final pass gathers the keys above the chosen bin plus the bin
// itself (resolved with nth_element when it is small) or, once the key is exact, the first ties
// in index order: lowest index wins.

// Note [Sampled top-k]
// DGC's selection (specs/compressors.md §1.2) fused with the residual update:
//  1. threshold = sampleThreshold() of p = residual + s * addend at strided sample positions
//     (seeded by LayerParams::rankSeed), computed before p is written, aiming at
//     (1 + upperBound) / 2 * k entries;
//  2. one pass: p = residual + s * addend; |p| >= threshold -> candidate (index, p), residual 0;
//     else residual = p. 12 bytes per element: the roofline of the whole job;
//  3. while fewer than lowerBound * k candidates, at most maxAdaptations times: threshold *= 0.8
//     and rescan the residual (which holds p, and 0 at the candidates) for new candidates;
//  4. more than k candidates: keep their exact top-k (the C++ fix of DGC's first-k-by-index
//     quirk) and write the others back into the residual.
// So kept magnitudes are >= dropped ones, and zeros and NaN are never sent.

struct Level {
  int shift;  // key >> shift is the bin prefix at this level
  int bits;   // bins at this level = 2^bits
};
constexpr Level kLevels[] = {{20, 11}, {8, 12}, {0, 8}};
constexpr int kLevelCount = 3;
constexpr int64_t kMaxBins = int64_t{1} << 12;
// Sub-histograms per chunk in the fused pass: neighbouring elements usually land in the same bin,
// and spreading them over four tables breaks the store-to-load dependency between increments.
constexpr int kSubHistograms = 4;
constexpr int64_t kBlock = 16;
// Below this many elements per thread a parallel loop costs more than it saves.
constexpr int64_t kGrainSize = int64_t{1} << 16;
// Largest float16 magnitude: values beyond saturate there (instead of becoming inf), and the
// residual keeps the rest.
constexpr float kHalfMax = 65504.0f;
// Sampled mode: the threshold never comes from fewer samples than this (or numel, if smaller).
constexpr int64_t kMinSamples = 4096;
// Sampled mode: DGC's factor for lowering the threshold when too few entries reach it.
constexpr float kAdaptationFactor = 0.8f;
// Entries ahead that a loop of scattered residual writes prefetches.
constexpr int64_t kPrefetchDistance = 16;

inline uint32_t magnitudeKey(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  bits &= 0x7fffffffu;
  return bits <= 0x7f800000u ? bits + 1 : 0;
}

int64_t chunkCountFor(int64_t numel) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), numel / kGrainSize));
}

// p = residual + scale * addend stored into residual; histogram of key >> shift into
// `histogram` (kSubHistograms tables of kMaxBins).
void fusedHistogram(float* __restrict residual,
                    const float* __restrict addend,
                    float scale,
                    int64_t numel,
                    uint32_t* __restrict histogram) {
  const int shift = kLevels[0].shift;
  int64_t i = 0;
  for (; i + kBlock <= numel; i += kBlock) {
    float* r = residual + i;
    if (addend != nullptr) {
      const float* a = addend + i;
      for (int64_t j = 0; j < kBlock; ++j) r[j] = r[j] + scale * a[j];
    }
    for (int64_t j = 0; j < kBlock; j += kSubHistograms) {
      for (int s = 0; s < kSubHistograms; ++s) {
        ++histogram[s * kMaxBins + (magnitudeKey(r[j + s]) >> shift)];
      }
    }
  }
  for (; i < numel; ++i) {
    if (addend != nullptr) residual[i] = residual[i] + scale * addend[i];
    ++histogram[magnitudeKey(residual[i]) >> shift];
  }
  for (int s = 1; s < kSubHistograms; ++s) {
    for (int64_t b = 0; b < kMaxBins; ++b) histogram[b] += histogram[s * kMaxBins + b];
  }
}

// Histogram of the `level` bits of the keys whose higher bits equal `prefix`.
void prefixHistogram(const float* __restrict residual,
                     int64_t numel,
                     int level,
                     uint32_t prefix,
                     uint32_t* __restrict histogram) {
  const int prefixShift = kLevels[level - 1].shift;
  const int shift = kLevels[level].shift;
  const uint32_t mask = (uint32_t{1} << kLevels[level].bits) - 1;
  for (int64_t i = 0; i < numel; ++i) {
    const uint32_t key = magnitudeKey(residual[i]);
    if ((key >> prefixShift) == prefix) ++histogram[(key >> shift) & mask];
  }
}

// Appends the positions (offset by `base`) and keys of the elements with key >= highFloor, and
// of those with key in [binFloor, highFloor) while `budget` lasts, in index order. Returns how
// many were written.
int64_t gather(const float* __restrict residual,
               int64_t numel,
               int64_t base,
               uint32_t binFloor,
               uint32_t highFloor,
               int64_t budget,
               int32_t* __restrict positions,
               uint32_t* __restrict keys) {
  // Blocks of 16 are tested as a whole on the raw magnitude bits (see Note [Magnitude keys]):
  // key >= binFloor iff bits > binFloor - 2 for numbers; a NaN passes the block test and fails
  // the exact test below.
  using Lanes = int32_t __attribute__((vector_size(16)));
  const int32_t below = static_cast<int32_t>(binFloor) - 2;
  const Lanes limit = {below, below, below, below};
  const Lanes magnitudeMask = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
  int64_t count = 0;
  auto visit = [&](int64_t j) {
    const uint32_t key = magnitudeKey(residual[j]);
    if (key >= highFloor || (key >= binFloor && budget > 0)) {
      if (key < highFloor) --budget;
      positions[count] = static_cast<int32_t>(base + j);
      keys[count] = key;
      ++count;
    }
  };
  int64_t i = 0;
  for (; i + kBlock <= numel; i += kBlock) {
    Lanes any = {0, 0, 0, 0};
    for (int64_t lane = 0; lane < kBlock; lane += 4) {
      Lanes bits;
      std::memcpy(&bits, residual + i + lane, sizeof(bits));
      any |= (bits & magnitudeMask) > limit;
    }
    uint64_t halves[2];
    std::memcpy(halves, &any, sizeof(halves));
    if ((halves[0] | halves[1]) == 0) continue;
    for (int64_t j = i; j < i + kBlock; ++j) visit(j);
  }
  for (; i < numel; ++i) visit(i);
  return count;
}

// Makes room for `extra` more entries after the first `count` of `indices` / `values`.
void reserveCandidates(std::vector<int32_t>& indices,
                       std::vector<float>& values,
                       int64_t count,
                       int64_t extra) {
  if (count + extra <= static_cast<int64_t>(indices.size())) return;
  const size_t size = std::max<size_t>(2 * indices.size(), static_cast<size_t>(count + extra));
  indices.resize(size);
  values.resize(size);
}

// p = residual + scale * addend stored into residual (kHasAddend; otherwise p = residual, which
// is rewritten only at candidates), except that elements with |p| >= threshold are stored as 0
// and appended as (index offset by `base`, p) to `indices` / `values` after their first `count`
// entries, which grow as needed. Returns the new count. See Note [Sampled top-k].
template <bool kHasAddend>
int64_t thresholdPass(float* __restrict residual,
                      const float* __restrict addend,
                      float scale,
                      int64_t numel,
                      int64_t base,
                      float threshold,
                      std::vector<int32_t>& indices,
                      std::vector<float>& values,
                      int64_t count) {
  int64_t i = 0;
#if defined(__SSE2__)
  // Note [Threshold pass]
  // The whole job is memory bound (12 bytes per element), so the loop must not add work per
  // element: 16 lanes are computed, compared and stored with SSE2, and only a block holding a
  // candidate (about one in six at 1 % density) takes the branch that appends its set mask bits.
  // The float compare is false for NaN, so NaN stays in the residual as the scalar test does;
  // p is mul-then-add like the scalar expression (no FMA), so both agree bit for bit.
  const __m128 scaleLanes = _mm_set1_ps(scale);
  const __m128 thresholdLanes = _mm_set1_ps(threshold);
  const __m128 magnitudeMask = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  for (; i + kBlock <= numel; i += kBlock) {
    float* r = residual + i;
    __m128 p[4];
    int mask = 0;
    for (int lane = 0; lane < 4; ++lane) {
      p[lane] = _mm_loadu_ps(r + 4 * lane);
      if constexpr (kHasAddend) {
        p[lane] = _mm_add_ps(p[lane], _mm_mul_ps(scaleLanes, _mm_loadu_ps(addend + i + 4 * lane)));
      }
      const __m128 hit = _mm_cmpge_ps(_mm_and_ps(p[lane], magnitudeMask), thresholdLanes);
      mask |= _mm_movemask_ps(hit) << (4 * lane);
      if constexpr (kHasAddend) _mm_storeu_ps(r + 4 * lane, _mm_andnot_ps(hit, p[lane]));
    }
    if (mask == 0) continue;
    float blockValues[kBlock];
    for (int lane = 0; lane < 4; ++lane) {
      _mm_storeu_ps(blockValues + 4 * lane, p[lane]);
      if constexpr (!kHasAddend) {
        const __m128 hit = _mm_cmpge_ps(_mm_and_ps(p[lane], magnitudeMask), thresholdLanes);
        _mm_storeu_ps(r + 4 * lane, _mm_andnot_ps(hit, p[lane]));
      }
    }
    reserveCandidates(indices, values, count, kBlock);
    int32_t* outIndices = indices.data();
    float* outValues = values.data();
    for (; mask != 0; mask &= mask - 1) {
      const int lane = __builtin_ctz(static_cast<unsigned>(mask));
      outIndices[count] = static_cast<int32_t>(base + i + lane);
      outValues[count] = blockValues[lane];
      ++count;
    }
  }
#endif
  for (; i < numel; ++i) {
    float p = residual[i];
    if constexpr (kHasAddend) p = p + scale * addend[i];
    if (std::fabs(p) >= threshold) {
      reserveCandidates(indices, values, count, 1);
      indices[count] = static_cast<int32_t>(base + i);
      values[count] = p;
      ++count;
      residual[i] = 0.0f;
    } else if constexpr (kHasAddend) {
      residual[i] = p;
    }
  }
  return count;
}

// Merges the ascending (index, value) entries extraIndices / extraValues [0, extraCount) into the
// first `count` entries of `indices` / `values`; returns the merged count.
int64_t mergeAscending(std::vector<int32_t>& indices,
                       std::vector<float>& values,
                       int64_t count,
                       const std::vector<int32_t>& extraIndices,
                       const std::vector<float>& extraValues,
                       int64_t extraCount) {
  if (extraCount == 0) return count;
  std::vector<int32_t> mergedIndices(count + extraCount);
  std::vector<float> mergedValues(count + extraCount);
  int64_t a = 0;
  int64_t b = 0;
  for (int64_t m = 0; m < count + extraCount; ++m) {
    if (b == extraCount || (a < count && indices[a] < extraIndices[b])) {
      mergedIndices[m] = indices[a];
      mergedValues[m] = values[a++];
    } else {
      mergedIndices[m] = extraIndices[b];
      mergedValues[m] = extraValues[b++];
    }
  }
  indices.swap(mergedIndices);
  values.swap(mergedValues);
  return count + extraCount;
}

void checkRatio(double ratio) {
  TW_CHECK(ratio > 0 && ratio <= 1, "top-k: ratio must be in (0, 1], got ", ratio);
}

void checkFloatTensor(const char* what, const at::Tensor& tensor) {
  TW_CHECK(tensor.defined(), "top-k: ", what, " is undefined");
  TW_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat && tensor.is_contiguous(),
           "top-k: ", what, " must be a contiguous float32 CPU tensor, got ", tensor.toString(),
           tensor.is_contiguous() ? "" : " (not contiguous)");
}

}  // namespace

int64_t topKCount(int64_t numel, double ratio) {
  checkRatio(ratio);
  TW_CHECK(numel >= 0, "top-k: numel must be >= 0, got ", numel);
  if (numel == 0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(ratio * static_cast<double>(numel))));
}

TopKCompressor::TopKCompressor(TopKOptions options) : options_(options) {
  TW_CHECK(options.sampleRatio > 0 && options.sampleRatio <= 1,
           "top-k: sampleRatio must be in (0, 1], got ", options.sampleRatio);
  TW_CHECK(options.maxAdaptations >= 0, "top-k: maxAdaptations must be >= 0, got ",
           options.maxAdaptations);
  TW_CHECK(options.upperBound >= 1, "top-k: upperBound must be >= 1, got ", options.upperBound);
  TW_CHECK(options.lowerBound > 0 && options.lowerBound <= 1,
           "top-k: lowerBound must be in (0, 1], got ", options.lowerBound);
}

void TopKCompressor::compress(at::Tensor& residual,
                              const at::Tensor& addend,
                              float addendScale,
                              Payload& out,
                              const LayerParams& params) {
  checkRatio(params.ratio);
  if (residual.defined() && residual.is_cuda()) {
    return compressTopKOnCuda(options_, residual, addend, addendScale, out, params);
  }
  checkFloatTensor("residual", residual);
  const int64_t numel = residual.numel();
  TW_CHECK(numel <= INT32_MAX, "top-k: numel = ", numel, " exceeds the int32 index range");
  if (addend.defined()) {
    checkFloatTensor("addend", addend);
    TW_CHECK(addend.numel() == numel, "top-k: addend has ", addend.numel(), " elements, residual ",
             numel);
  }
  out.numel = numel;
  out.parts.clear();
  if (numel == 0) {
    out.data = at::empty({0}, at::kByte);
    return;
  }
  const int64_t k = topKCount(numel, params.ratio);
  float* r = residual.data_ptr<float>();
  const float* a = addend.defined() ? addend.data_ptr<float>() : nullptr;
  if (options_.sampled) {
    selectSampled(residual, addend, addendScale, k, params.rankSeed);
  } else {
    selectExact(r, a, addendScale, numel, k);
    selectedValues_.resize(selected_.size());
    for (size_t j = 0; j < selected_.size(); ++j) selectedValues_[j] = r[selected_[j]];
  }
  emit(r, numel, out);
}

void TopKCompressor::selectExact(
    float* residual, const float* addend, float addendScale, int64_t numel, int64_t k) {
  const int64_t chunks = chunkCountFor(numel);
  const int64_t chunkSize = (numel + chunks - 1) / chunks;
  const int64_t histogramStride = kSubHistograms * kMaxBins;
  histograms_.assign(chunks * histogramStride, 0);
  chunkAbove_.assign(chunks, 0);
  chunkBin_.assign(chunks, 0);
  auto chunkBegin = [&](int64_t c) { return std::min(numel, c * chunkSize); };
  auto chunkEnd = [&](int64_t c) { return std::min(numel, (c + 1) * chunkSize); };

  // Walk the levels until the bin holding the k-th largest key is exact, taken whole, or small
  // enough to resolve by sorting. See Note [Magnitude keys].
  uint32_t prefix = 0;
  int64_t need = k;
  int64_t binCount = 0;
  int level = 0;
  bool resolve = false;
  for (;; ++level) {
    if (level > 0) std::fill(histograms_.begin(), histograms_.end(), 0);
    at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last; ++c) {
        uint32_t* histogram = histograms_.data() + c * histogramStride;
        const int64_t begin = chunkBegin(c);
        if (level == 0) {
          fusedHistogram(residual + begin, addend == nullptr ? nullptr : addend + begin,
                         addendScale, chunkEnd(c) - begin, histogram);
        } else {
          prefixHistogram(residual + begin, chunkEnd(c) - begin, level, prefix, histogram);
        }
      }
    });
    const int64_t bins = int64_t{1} << kLevels[level].bits;
    int64_t above = 0;
    int64_t bin = bins - 1;
    for (;; --bin) {
      int64_t total = 0;
      for (int64_t c = 0; c < chunks; ++c) total += histograms_[c * histogramStride + bin];
      if (above + total >= need || bin == 0) {
        binCount = total;
        break;
      }
      above += total;
    }
    for (int64_t c = 0; c < chunks; ++c) {
      const uint32_t* histogram = histograms_.data() + c * histogramStride;
      for (int64_t b = bin + 1; b < bins; ++b) chunkAbove_[c] += histogram[b];
      chunkBin_[c] = histogram[bin];
    }
    need -= above;
    prefix = (prefix << kLevels[level].bits) | static_cast<uint32_t>(bin);
    TW_ASSERT(need >= 1 && need <= binCount, "need ", need, " of a bin of ", binCount);
    if (need == binCount || level == kLevelCount - 1) break;
    if (binCount <= std::max<int64_t>({k, int64_t{1} << 16, numel / 32})) {
      resolve = true;
      break;
    }
  }

  // Gather: everything above the bin, plus the whole bin (taken whole, or resolved below) or,
  // when the key is exact, the first `need` ties in index order.
  const uint32_t binFloor = prefix << kLevels[level].shift;
  const bool exactKey = level == kLevelCount - 1 && need < binCount;
  const uint32_t highFloor = exactKey ? binFloor + 1 : binFloor;
  std::vector<int64_t> offsets(chunks + 1, 0);
  std::vector<int64_t> budgets(chunks, 0);
  int64_t tiesLeft = need;
  for (int64_t c = 0; c < chunks; ++c) {
    budgets[c] = exactKey ? std::min<int64_t>(tiesLeft, chunkBin_[c]) : chunkBin_[c];
    tiesLeft -= budgets[c];
    offsets[c + 1] = offsets[c] + chunkAbove_[c] + budgets[c];
  }
  candidates_.resize(offsets[chunks]);
  candidateKeys_.resize(offsets[chunks]);
  std::vector<int64_t> written(chunks, 0);
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      const int64_t begin = chunkBegin(c);
      written[c] =
          gather(residual + begin, chunkEnd(c) - begin, begin, binFloor, highFloor, budgets[c],
                 candidates_.data() + offsets[c], candidateKeys_.data() + offsets[c]);
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    TW_ASSERT(written[c] == offsets[c + 1] - offsets[c], "chunk ", c, " gathered ", written[c],
              " of ", offsets[c + 1] - offsets[c]);
  }
  if (!resolve) {
    selected_.assign(candidates_.begin(), candidates_.end());
    TW_ASSERT(static_cast<int64_t>(selected_.size()) == k, "selected ", selected_.size(), " of ",
              k);
    return;
  }

  // The bin holds more than `need`: its need-th largest key is the exact threshold.
  const uint64_t binCeil = static_cast<uint64_t>(prefix + 1) << kLevels[level].shift;
  std::vector<uint32_t> inBin;
  inBin.reserve(binCount);
  for (uint32_t key : candidateKeys_) {
    if (key < binCeil) inBin.push_back(key);
  }
  std::nth_element(inBin.begin(), inBin.begin() + (need - 1), inBin.end(), std::greater<>());
  const uint32_t threshold = inBin[need - 1];
  int64_t greater = 0;
  for (uint32_t key : inBin) greater += key > threshold ? 1 : 0;
  int64_t ties = need - greater;
  selected_.clear();
  for (size_t j = 0; j < candidates_.size(); ++j) {
    const uint32_t key = candidateKeys_[j];
    if (key > threshold || (key == threshold && ties-- > 0)) selected_.push_back(candidates_[j]);
  }
  TW_ASSERT(static_cast<int64_t>(selected_.size()) == k, "selected ", selected_.size(), " of ", k);
}

void TopKCompressor::selectSampled(at::Tensor& residual,
                                   const at::Tensor& addend,
                                   float addendScale,
                                   int64_t k,
                                   uint64_t rankSeed) {
  const int64_t numel = residual.numel();
  float* r = residual.data_ptr<float>();
  const float* a = addend.defined() ? addend.data_ptr<float>() : nullptr;
  // Aim at the middle of [k, upperBound * k]: a count above k is cut to the exact top-k of the
  // candidates, which is the best outcome, and one below lowerBound * k costs a rescan.
  const double target = std::min(
      1.0, static_cast<double>(k) * (1.0 + options_.upperBound) / 2.0 / static_cast<double>(numel));
  float threshold = sampleThreshold(residual, addend, addendScale,
                                    ThresholdSampleOptions{.fraction = target,
                                                           .sampleRatio = options_.sampleRatio,
                                                           .minSamples = kMinSamples,
                                                           .seed = rankSeed});
  // Zeros carry nothing; a zero threshold would make every zero a candidate.
  threshold = std::max(threshold, std::numeric_limits<float>::denorm_min());

  const int64_t chunks = chunkCountFor(numel);
  const int64_t chunkSize = (numel + chunks - 1) / chunks;
  chunkCandidates_.resize(chunks);
  chunkRescan_.resize(chunks);
  const int64_t expected = static_cast<int64_t>(
      options_.upperBound * static_cast<double>(k) / static_cast<double>(chunks) + 64);
  auto pass = [&](bool first) {
    at::parallel_for(0, chunks, 1, [&](int64_t firstChunk, int64_t lastChunk) {
      for (int64_t c = firstChunk; c < lastChunk; ++c) {
        const int64_t begin = std::min(numel, c * chunkSize);
        const int64_t length = std::min(numel, (c + 1) * chunkSize) - begin;
        Candidates& found = first ? chunkCandidates_[c] : chunkRescan_[c];
        reserveCandidates(found.indices, found.values, 0, expected);
        // A rescan reads p back from the residual: taken positions hold 0 < threshold.
        if (first && a != nullptr) {
          found.count = thresholdPass<true>(r + begin, a + begin, addendScale, length, begin,
                                            threshold, found.indices, found.values, 0);
        } else {
          found.count = thresholdPass<false>(r + begin, nullptr, addendScale, length, begin,
                                             threshold, found.indices, found.values, 0);
        }
        if (!first) {
          Candidates& all = chunkCandidates_[c];
          all.count = mergeAscending(all.indices, all.values, all.count, found.indices,
                                     found.values, found.count);
        }
      }
    });
    int64_t count = 0;
    for (int64_t c = 0; c < chunks; ++c) count += chunkCandidates_[c].count;
    return count;
  };
  int64_t count = pass(/*first=*/true);
  const double lowest = options_.lowerBound * static_cast<double>(k);
  for (int adaptation = 0;
       adaptation < options_.maxAdaptations && static_cast<double>(count) < lowest; ++adaptation) {
    const float lower = threshold * kAdaptationFactor;
    if (!(lower > 0.0f) || !(lower < threshold)) break;  // inf, or no smaller float left
    threshold = lower;
    count = pass(/*first=*/false);
  }

  candidates_.resize(count);
  candidateValues_.resize(count);
  int64_t offset = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    const Candidates& found = chunkCandidates_[c];
    std::copy(found.indices.begin(), found.indices.begin() + found.count,
              candidates_.begin() + offset);
    std::copy(found.values.begin(), found.values.begin() + found.count,
              candidateValues_.begin() + offset);
    offset += found.count;
  }
  if (count <= k) {
    selected_.swap(candidates_);
    selectedValues_.swap(candidateValues_);
    return;
  }
  // More than k candidates: keep their exact top-k (lowest index first on ties) and put the others
  // back into the residual, which held 0 there.
  candidateKeys_.resize(count);
  for (int64_t j = 0; j < count; ++j) candidateKeys_[j] = magnitudeKey(candidateValues_[j]);
  const uint32_t kth = nthLargestKey(candidateKeys_.data(), count, k, keyScratch_);
  int64_t greater = 0;
  for (uint32_t key : candidateKeys_) greater += key > kth ? 1 : 0;
  int64_t ties = k - greater;
  selected_.resize(k);
  selectedValues_.resize(k);
  dropped_.resize(count - k);
  int64_t kept = 0;
  int64_t dropped = 0;
  for (int64_t j = 0; j < count; ++j) {
    const uint32_t key = candidateKeys_[j];
    if (key > kth || (key == kth && ties-- > 0)) {
      selected_[kept] = candidates_[j];
      selectedValues_[kept] = candidateValues_[j];
      ++kept;
    } else {
      dropped_[dropped++] = static_cast<int32_t>(j);
    }
  }
  TW_ASSERT(kept == k && dropped == count - k, "kept ", kept, " of ", k);
  // The write-backs are scattered over the whole residual, usually out of cache: prefetching a
  // few ahead overlaps their misses instead of paying each in turn.
  for (int64_t d = 0; d < dropped; ++d) {
    if (d + kPrefetchDistance < dropped) {
      __builtin_prefetch(r + candidates_[dropped_[d + kPrefetchDistance]], /*rw=*/1);
    }
    const int32_t j = dropped_[d];
    r[candidates_[j]] = candidateValues_[j];
  }
}

void TopKCompressor::emit(float* residual, int64_t numel, Payload& out) {
  const int64_t count = static_cast<int64_t>(selected_.size());
  const int64_t bytes = count * (4 + valueBytes());
  if (!(out.data.defined() && out.data.scalar_type() == at::kByte && out.data.is_contiguous() &&
        out.data.numel() == bytes)) {
    out.data = at::empty({bytes}, at::kByte);
  }
  out.numel = numel;
  // Nothing kept (every element zero or NaN): an empty payload, whose data pointer is null, and
  // memcpy with a null pointer is undefined even for 0 bytes.
  if (count == 0) return;
  uint8_t* data = out.data.data_ptr<uint8_t>();
  std::memcpy(data, selected_.data(), count * sizeof(int32_t));
  uint8_t* valueData = data + count * sizeof(int32_t);
  if (options_.fp16Values) {
    // p - float(half(p)) is exact (Sterbenz: the rounded value is within a factor 2 of p), so
    // the decoded value plus the new residual is p bit for bit.
    std::vector<c10::Half> halves(count);
    for (int64_t j = 0; j < count; ++j) {
      if (j + kPrefetchDistance < count) {
        __builtin_prefetch(residual + selected_[j + kPrefetchDistance], /*rw=*/1);
      }
      const float p = selectedValues_[j];
      const float saturated = p > kHalfMax ? kHalfMax : (p < -kHalfMax ? -kHalfMax : p);
      halves[j] = c10::Half(saturated);
      residual[selected_[j]] = p - static_cast<float>(halves[j]);
    }
    std::memcpy(valueData, halves.data(), count * sizeof(c10::Half));
  } else {
    std::memcpy(valueData, selectedValues_.data(), count * sizeof(float));
    // The sampled pass already stored 0 at every kept position.
    if (!options_.sampled) {
      for (int64_t j = 0; j < count; ++j) {
        if (j + kPrefetchDistance < count) {
          __builtin_prefetch(residual + selected_[j + kPrefetchDistance], /*rw=*/1);
        }
        residual[selected_[j]] = 0.0f;
      }
    }
  }
}

void TopKCompressor::decompressAdd(const Payload& payload,
                                   at::Tensor& out,
                                   float alpha,
                                   const LayerParams& params) const {
  if (out.defined() && out.is_cuda()) {
    return decompressAddTopKOnCuda(options_, payload, out, alpha, params);
  }
  checkFloatTensor("decompressAdd output", out);
  TW_CHECK(out.numel() == payload.numel, "top-k: decompressAdd output has ", out.numel(),
           " elements, the payload decodes to ", payload.numel);
  const int64_t numel = payload.numel;
  const int64_t k = topKCount(numel, params.ratio);
  const int64_t bytes = payload.wireBytes();
  if (bytes == 0) {
    TW_CHECK(options_.sampled || k == 0, "top-k: empty payload, expected ", k, " entries");
    return;
  }
  TW_CHECK(payload.data.scalar_type() == at::kByte && payload.data.is_contiguous() &&
               payload.data.device().is_cpu(),
           "top-k: payload must be contiguous uint8 bytes, got ", payload.data.toString());
  const int64_t entryBytes = 4 + valueBytes();
  TW_CHECK(bytes % entryBytes == 0, "top-k: payload of ", bytes, " bytes is not a whole number of ",
           entryBytes, "-byte entries");
  const int64_t count = bytes / entryBytes;
  TW_CHECK(options_.sampled ? count <= k : count == k, "top-k: payload holds ", count,
           " entries, expected ", options_.sampled ? "at most " : "", k);
  const uint8_t* data = payload.data.data_ptr<uint8_t>();
  const uint8_t* valueData = data + count * sizeof(int32_t);
  float* o = out.data_ptr<float>();
  for (int64_t j = 0; j < count; ++j) {
    int32_t index = 0;
    std::memcpy(&index, data + j * sizeof(int32_t), sizeof(index));
    TW_CHECK(index >= 0 && index < numel, "top-k: payload index ", index, " outside [0, ", numel,
             ")");
    float value = 0;
    if (options_.fp16Values) {
      c10::Half half;
      std::memcpy(&half, valueData + j * sizeof(c10::Half), sizeof(half));
      value = static_cast<float>(half);
    } else {
      std::memcpy(&value, valueData + j * sizeof(float), sizeof(value));
    }
    o[index] += alpha * value;
  }
}

int64_t TopKCompressor::payloadBytes(int64_t numel, const LayerParams& params) const {
  if (options_.sampled) {
    checkRatio(params.ratio);
    return -1;
  }
  return maxPayloadBytes(numel, params);
}

int64_t TopKCompressor::maxPayloadBytes(int64_t numel, const LayerParams& params) const {
  return topKCount(numel, params.ratio) * (4 + valueBytes());
}

double TopKCompressor::deltaHint(int64_t numel, const LayerParams& params) const {
  if (numel == 0) return 1.0;
  return static_cast<double>(topKCount(numel, params.ratio)) / static_cast<double>(numel);
}

}  // namespace thinwire::compressors

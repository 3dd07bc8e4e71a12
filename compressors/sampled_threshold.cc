#include "compressors/sampled_threshold.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

// Below this many elements per thread a parallel loop costs more than it saves.
constexpr int64_t kGrainSize = int64_t{1} << 15;

uint64_t splitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Note [Sample keys]
// For non-negative IEEE floats the bit patterns order like the values, so |p| is ranked by
// key = (bits & 0x7fffffff) + 1, and NaN (patterns above +inf's 0x7f800000) gets key 0, below
// every number, zero included; key - 1 gives the magnitude back.
inline uint32_t sampleKey(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  bits &= 0x7fffffffu;
  return bits <= 0x7f800000u ? bits + 1 : 0;
}

// nthLargestKey's radix levels: they cover the 32 key bits; below kSmallBin keys a bin is
// resolved by std::nth_element.
struct RadixLevel {
  int shift;
  int bits;
};
constexpr RadixLevel kRadixLevels[] = {{21, 11}, {10, 11}, {0, 10}};
constexpr int kRadixMaxBits = 11;
constexpr int64_t kSmallBin = 512;

void checkInput(const char* what, const at::Tensor& tensor) {
  TW_CHECK(tensor.defined() && tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat &&
               tensor.is_contiguous(),
           what, " must be a contiguous float32 CPU tensor, got ",
           tensor.defined() ? tensor.toString() : std::string("undefined"),
           tensor.defined() && !tensor.is_contiguous() ? " (not contiguous)" : "");
}

int64_t maskPass(const float* __restrict x,
                 int64_t begin,
                 int64_t end,
                 float threshold,
                 int32_t* __restrict indices,
                 float* __restrict values) {
  // Note [Mask pass]
  // At 1 % density most 16-element blocks hold nothing, so each block is first tested as a whole
  // with 4-lane integer compares: for non-negative IEEE floats the bit patterns order like the
  // values, so |x| >= threshold is (bits & 0x7fffffff) >= bits(threshold). GCC does not vectorize
  // that test when written as a scalar loop (it unrolls the 16 iterations first), hence the
  // vector extension. A NaN passes the block test but never the exact test below. A block with a
  // hit is compacted without branches: every element is written at `count`, which only advances
  // past kept ones, and never beyond the element's own offset in [begin, end).
  using Lanes = int32_t __attribute__((vector_size(16)));
  constexpr int64_t kBlock = 16;
  int32_t thresholdBits = 0;
  std::memcpy(&thresholdBits, &threshold, sizeof(thresholdBits));
  // SSE2 has no integer >=; x >= t is x > t - 1 (t >= 0 here, so t - 1 does not wrap).
  const int32_t below = thresholdBits - 1;
  const Lanes limit = {below, below, below, below};
  const Lanes magnitudeMask = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
  int64_t count = 0;
  int64_t i = begin;
  for (; i + kBlock <= end; i += kBlock) {
    Lanes any = {0, 0, 0, 0};
    for (int64_t lane = 0; lane < kBlock; lane += 4) {
      Lanes bits;
      std::memcpy(&bits, x + i + lane, sizeof(bits));
      any |= (bits & magnitudeMask) > limit;
    }
    uint64_t halves[2];  // two 64-bit moves instead of four lane extractions
    std::memcpy(halves, &any, sizeof(halves));
    if ((halves[0] | halves[1]) == 0) continue;
    for (int64_t j = i; j < i + kBlock; ++j) {
      indices[count] = static_cast<int32_t>(j);
      values[count] = x[j];
      count += std::fabs(x[j]) >= threshold ? 1 : 0;
    }
  }
  for (; i < end; ++i) {
    if (std::fabs(x[i]) >= threshold) {
      indices[count] = static_cast<int32_t>(i);
      values[count] = x[i];
      ++count;
    }
  }
  return count;
}

}  // namespace

ThresholdSamplePlan planThresholdSample(int64_t numel, const ThresholdSampleOptions& options) {
  TW_CHECK(options.fraction > 0 && options.fraction <= 1,
           "sampleThreshold: fraction must be in (0, 1], got ", options.fraction);
  TW_CHECK(options.sampleRatio > 0 && options.sampleRatio <= 1,
           "sampleThreshold: sampleRatio must be in (0, 1], got ", options.sampleRatio);
  TW_CHECK(options.minSamples >= 1, "sampleThreshold: minSamples must be >= 1, got ",
           options.minSamples);
  TW_CHECK(numel >= 1 && numel <= INT32_MAX, "sampleThreshold: numel = ", numel,
           ", expected in [1, ", INT32_MAX, "]");
  const int64_t samples = std::min<int64_t>(
      numel, std::max<int64_t>(options.minSamples,
                               static_cast<int64_t>(
                                   std::ceil(options.sampleRatio * static_cast<double>(numel)))));
  // Strided, as DGC samples: a constant stride lets the hardware prefetcher run ahead (a random
  // position per stratum measured 6x slower on a 64 MB input); an odd stride cannot alias with a
  // power-of-two row length.
  int64_t stride = std::max<int64_t>(1, numel / samples);
  if (stride > 1) stride |= 1;
  const int64_t taken = std::min<int64_t>(samples, (numel - 1) / stride + 1);
  const uint64_t starts = static_cast<uint64_t>(numel - (taken - 1) * stride);  // in [1, 2^31)
  // Multiply-shift maps 32 random bits onto [0, starts) without a division.
  const int64_t first = static_cast<int64_t>(((splitMix64(options.seed) >> 32) * starts) >> 32);
  const int64_t rank = std::max<int64_t>(
      1, std::min<int64_t>(taken, static_cast<int64_t>(
                                      std::ceil(options.fraction * static_cast<double>(taken)))));
  return {first, stride, taken, rank};
}

float sampleThreshold(const at::Tensor& residual,
                      const at::Tensor& addend,
                      float addendScale,
                      const ThresholdSampleOptions& options) {
  checkInput("sampleThreshold: residual", residual);
  const int64_t numel = residual.numel();
  const ThresholdSamplePlan plan = planThresholdSample(numel, options);
  const float* r = residual.data_ptr<float>();
  const float* a = nullptr;
  if (addend.defined()) {
    checkInput("sampleThreshold: addend", addend);
    TW_CHECK(addend.numel() == numel, "sampleThreshold: addend has ", addend.numel(),
             " elements, residual ", numel);
    a = addend.data_ptr<float>();
  }
  const int64_t first = plan.first;
  const int64_t stride = plan.stride;
  const int64_t taken = plan.count;
  const int64_t rank = plan.rank;
  // Magnitudes are ranked by their keys (Note [Sample keys]); a NaN's key 0 is never chosen
  // while a number remains.
  std::vector<uint32_t> keys(taken);
  if (a != nullptr) {
    for (int64_t s = 0; s < taken; ++s) {
      const int64_t j = first + s * stride;
      // The same expression as the fused passes that use the threshold, so a sampled element's
      // magnitude is exactly the one they compare.
      keys[s] = sampleKey(r[j] + addendScale * a[j]);
    }
  } else {
    for (int64_t s = 0; s < taken; ++s) keys[s] = sampleKey(r[first + s * stride]);
  }
  std::vector<uint32_t> scratch;
  const uint32_t key = nthLargestKey(keys.data(), taken, rank, scratch);
  // An all-NaN sample: +inf keeps only infinities rather than everything.
  if (key == 0) return std::numeric_limits<float>::infinity();
  const uint32_t bits = key - 1;
  float magnitude = 0;
  std::memcpy(&magnitude, &bits, sizeof(magnitude));
  return magnitude;
}

uint32_t nthLargestKey(const uint32_t* keys,
                       int64_t count,
                       int64_t rank,
                       std::vector<uint32_t>& scratch) {
  TW_CHECK(rank >= 1 && rank <= count, "nthLargestKey: rank = ", rank, ", expected in [1, ", count,
           "]");
  const uint32_t* data = keys;
  int64_t size = count;
  int64_t need = rank;  // the rank within data[0, size)
  uint32_t histogram[int64_t{1} << kRadixMaxBits];
  for (const RadixLevel& level : kRadixLevels) {
    if (size <= kSmallBin) break;
    const int64_t bins = int64_t{1} << level.bits;
    const uint32_t mask = static_cast<uint32_t>(bins - 1);
    std::fill(histogram, histogram + bins, 0u);
    for (int64_t i = 0; i < size; ++i) ++histogram[(data[i] >> level.shift) & mask];
    int64_t bin = bins - 1;
    while (histogram[bin] < need) {  // the bins hold all `size` >= need keys
      need -= histogram[bin];
      --bin;
    }
    // Keep the bin's keys, compacted without branches: every key is written at `kept`, which
    // only advances past keys of the bin. In place once data is the scratch (kept <= i); from
    // the input, one spare slot takes the writes after the last key of the bin.
    if (data == keys) scratch.resize(histogram[bin] + 1);
    uint32_t* out = scratch.data();
    int64_t kept = 0;
    for (int64_t i = 0; i < size; ++i) {
      const uint32_t key = data[i];
      out[kept] = key;
      kept += ((key >> level.shift) & mask) == static_cast<uint32_t>(bin) ? 1 : 0;
    }
    data = out;
    size = kept;
  }
  if (data == keys) scratch.assign(keys, keys + size);
  std::nth_element(scratch.begin(), scratch.begin() + (need - 1), scratch.begin() + size,
                   std::greater<>());
  return scratch[need - 1];
}

SampledThresholdSelector::SampledThresholdSelector(SampledThresholdOptions options)
    : options_(options), random_(options.seed) {
  TW_CHECK(options.ratio > 0 && options.ratio <= 1,
           "SampledThresholdSelector: ratio = ", options.ratio, ", expected in (0, 1]");
  TW_CHECK(options.sampleRatio > 0 && options.sampleRatio <= 1,
           "SampledThresholdSelector: sampleRatio = ", options.sampleRatio, ", expected in (0, 1]");
}

SparseSelection SampledThresholdSelector::select(const at::Tensor& input) {
  checkInput("SampledThresholdSelector::select: input", input);
  const int64_t numel = input.numel();
  TW_CHECK(numel >= 1 && numel <= INT32_MAX, "SampledThresholdSelector::select: numel = ", numel,
           ", expected in [1, ", INT32_MAX, "]");
  const float* x = input.data_ptr<float>();
  const float threshold =
      sampleThreshold(input, at::Tensor(), 1.0f,
                      ThresholdSampleOptions{.fraction = options_.ratio,
                                             .sampleRatio = options_.sampleRatio,
                                             .minSamples = 4096,
                                             .seed = random_()});

  if (!indices_.defined() || indices_.numel() < numel) {
    indices_ = at::empty({numel}, at::kInt);
    values_ = at::empty({numel}, at::kFloat);
  }
  int32_t* indices = indices_.data_ptr<int32_t>();
  float* values = values_.data_ptr<float>();

  // Mask pass in contiguous chunks, one per thread: chunk c writes from its own start offset (the
  // buffers hold numel entries, so no chunk can overflow into the next), then the chunks are
  // moved down to be adjacent, which keeps the indices ascending.
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), numel / kGrainSize));
  const int64_t chunkSize = (numel + chunks - 1) / chunks;
  chunkCounts_.assign(chunks, 0);
  at::parallel_for(0, chunks, 1, [&](int64_t firstChunk, int64_t endChunk) {
    for (int64_t c = firstChunk; c < endChunk; ++c) {
      const int64_t begin = c * chunkSize;
      const int64_t end = std::min(numel, begin + chunkSize);
      if (begin < end) {
        chunkCounts_[c] = maskPass(x, begin, end, threshold, indices + begin, values + begin);
      }
    }
  });
  int64_t count = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * chunkSize;
    if (count != begin) {
      std::copy(indices + begin, indices + begin + chunkCounts_[c], indices + count);
      std::copy(values + begin, values + begin + chunkCounts_[c], values + count);
    }
    count += chunkCounts_[c];
  }
  return {indices_.narrow(0, 0, count), values_.narrow(0, 0, count), threshold};
}

}  // namespace thinwire::compressors

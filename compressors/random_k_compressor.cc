#include "compressors/random_k_compressor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "base/error.h"
#include "compressors/top_k_compressor.h"

namespace thinwire::compressors {
namespace {

constexpr int64_t kGrainSize = int64_t{1} << 16;
constexpr float kHalfMax = 65504.0f;

// SplitMix64: a small generator whose stream is fixed by its seed on every platform (the
// standard distributions are implementation-defined, so ranks built differently could disagree).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t x = (state_ += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  }
  // Uniform in [0, bound), bound >= 1: Lemire's multiply-shift with rejection (exactly uniform).
  uint64_t below(uint64_t bound) {
    __uint128_t product = static_cast<__uint128_t>(next()) * bound;
    uint64_t low = static_cast<uint64_t>(product);
    if (low < bound) {
      const uint64_t rejectBelow = (0 - bound) % bound;
      while (low < rejectBelow) {
        product = static_cast<__uint128_t>(next()) * bound;
        low = static_cast<uint64_t>(product);
      }
    }
    return static_cast<uint64_t>(product >> 64);
  }

 private:
  uint64_t state_;
};

void checkFloatTensor(const char* what, const at::Tensor& tensor) {
  TW_CHECK(tensor.defined(), "random-k: ", what, " is undefined");
  TW_CHECK(tensor.device().is_cpu() && tensor.scalar_type() == at::kFloat && tensor.is_contiguous(),
           "random-k: ", what, " must be a contiguous float32 CPU tensor, got ", tensor.toString(),
           tensor.is_contiguous() ? "" : " (not contiguous)");
}

}  // namespace

std::vector<int32_t> randomKIndices(int64_t numel, int64_t k, uint64_t seed) {
  TW_CHECK(numel >= 0 && numel <= INT32_MAX, "randomKIndices: numel = ", numel,
           ", expected in [0, ", INT32_MAX, "]");
  TW_CHECK(k >= 0 && k <= numel, "randomKIndices: k = ", k, ", expected in [0, ", numel, "]");
  // Floyd's algorithm draws a uniform k-subset with k draws; a bitmap records it and is read back
  // in ascending order (numel / 64 words), so no sort is needed.
  std::vector<uint64_t> taken((numel + 63) / 64, 0);
  auto test = [&](int64_t i) { return (taken[i >> 6] >> (i & 63)) & 1; };
  auto mark = [&](int64_t i) { taken[i >> 6] |= uint64_t{1} << (i & 63); };
  SplitMix64 random(seed);
  for (int64_t j = numel - k; j < numel; ++j) {
    const int64_t t = static_cast<int64_t>(random.below(static_cast<uint64_t>(j) + 1));
    mark(test(t) ? j : t);
  }
  std::vector<int32_t> indices;
  indices.reserve(k);
  for (size_t word = 0; word < taken.size(); ++word) {
    for (uint64_t bits = taken[word]; bits != 0; bits &= bits - 1) {
      indices.push_back(static_cast<int32_t>(word * 64 + __builtin_ctzll(bits)));
    }
  }
  return indices;
}

void RandomKCompressor::compress(at::Tensor& residual,
                                 const at::Tensor& addend,
                                 float addendScale,
                                 Payload& out,
                                 const LayerParams& params) {
  checkFloatTensor("residual", residual);
  const int64_t numel = residual.numel();
  TW_CHECK(numel <= INT32_MAX, "random-k: numel = ", numel, " exceeds the int32 index range");
  const int64_t k = topKCount(numel, params.ratio);  // checks the ratio
  if (addend.defined()) {
    checkFloatTensor("addend", addend);
    TW_CHECK(addend.numel() == numel, "random-k: addend has ", addend.numel(),
             " elements, residual ", numel);
  }
  const at::ScalarType dtype = options_.fp16Values ? at::kHalf : at::kFloat;
  if (!(out.data.defined() && out.data.scalar_type() == dtype && out.data.dim() == 1 &&
        out.data.is_contiguous() && out.data.numel() == k)) {
    out.data = at::empty({k}, at::TensorOptions(dtype));
  }
  out.numel = numel;
  out.parts.clear();
  if (numel == 0) return;

  float* r = residual.data_ptr<float>();
  if (addend.defined()) {
    const float* a = addend.data_ptr<float>();
    at::parallel_for(0, numel, kGrainSize, [=](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) r[i] = r[i] + addendScale * a[i];
    });
  }
  const std::vector<int32_t> indices = randomKIndices(numel, k, params.seed);
  const float factor = options_.scale
                           ? static_cast<float>(static_cast<double>(numel) / static_cast<double>(k))
                           : 1.0f;
  if (options_.fp16Values) {
    c10::Half* values = out.data.data_ptr<c10::Half>();
    for (int64_t j = 0; j < k; ++j) {
      const float p = r[indices[j]];
      const float v = factor * p;
      values[j] = c10::Half(v > kHalfMax ? kHalfMax : (v < -kHalfMax ? -kHalfMax : v));
      r[indices[j]] = p - static_cast<float>(values[j]);
    }
  } else {
    float* values = out.data.data_ptr<float>();
    for (int64_t j = 0; j < k; ++j) {
      const float p = r[indices[j]];
      values[j] = factor * p;
      r[indices[j]] = options_.scale ? p - values[j] : 0.0f;
    }
  }
}

void RandomKCompressor::decompressAdd(const Payload& payload,
                                      at::Tensor& out,
                                      float alpha,
                                      const LayerParams& params) const {
  checkFloatTensor("decompressAdd output", out);
  TW_CHECK(out.numel() == payload.numel, "random-k: decompressAdd output has ", out.numel(),
           " elements, the payload decodes to ", payload.numel);
  const int64_t numel = payload.numel;
  const int64_t k = topKCount(numel, params.ratio);
  if (k == 0) return;
  const at::ScalarType dtype = options_.fp16Values ? at::kHalf : at::kFloat;
  TW_CHECK(payload.data.defined() && payload.data.device().is_cpu() &&
               payload.data.scalar_type() == dtype && payload.data.is_contiguous(),
           "random-k: payload must be a contiguous ", dtype == at::kHalf ? "float16" : "float32",
           " CPU tensor, got ",
           payload.data.defined() ? payload.data.toString() : std::string("undefined"));
  TW_CHECK(payload.data.numel() == k, "random-k: payload holds ", payload.data.numel(),
           " values, expected k = ", k);
  const std::vector<int32_t> indices = randomKIndices(numel, k, params.seed);
  float* o = out.data_ptr<float>();
  if (options_.fp16Values) {
    const c10::Half* values = payload.data.data_ptr<c10::Half>();
    for (int64_t j = 0; j < k; ++j) o[indices[j]] += alpha * static_cast<float>(values[j]);
  } else {
    const float* values = payload.data.data_ptr<float>();
    for (int64_t j = 0; j < k; ++j) o[indices[j]] += alpha * values[j];
  }
}

int64_t RandomKCompressor::payloadBytes(int64_t numel, const LayerParams& params) const {
  return topKCount(numel, params.ratio) * (options_.fp16Values ? 2 : 4);
}

double RandomKCompressor::deltaHint(int64_t numel, const LayerParams& params) const {
  if (numel == 0) return 1.0;
  const double kept = static_cast<double>(topKCount(numel, params.ratio));
  const double total = static_cast<double>(numel);
  return options_.scale ? std::max(0.0, 2.0 - total / kept) : kept / total;
}

}  // namespace thinwire::compressors

#include "compressors/quantize_compressor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "base/error.h"
#include "compressors/cuda_paths.h"

namespace thinwire::compressors {
namespace {

constexpr int kMinBits = 2;
constexpr int kMaxBits = 8;
constexpr int kLanes = 8;
// Elements one at::parallel_for task should at least cover.
constexpr int64_t kParallelGrain = 1 << 15;
// Elements whose levels are computed before their codes are written.
constexpr int64_t kSubBlock = 256;

int checkedBits(const LayerParams& params) {
  TW_CHECK(params.bits >= kMinBits && params.bits <= kMaxBits, "quantize: bits must be in [",
           kMinBits, ", ", kMaxBits, "], got ", params.bits);
  return params.bits;
}

// The j-th output of a splitmix64 generator seeded with `seed` (counter-based, so any element
// can be drawn independently of the others).
uint64_t splitmix64(uint64_t seed, uint64_t j) {
  uint64_t z = seed + (j + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) with 24 random bits: exactly representable in float32, never 1.
float uniform(uint64_t seed, uint64_t j) {
  return static_cast<float>(splitmix64(seed, j) >> 40) * (1.0f / 16777216.0f);
}

// Note [Code groups]
// Eight b-bit codes fill exactly b bytes, so a stream that starts on a byte boundary can be
// written and read in groups of 8 codes: compose the group in a 64-bit integer (code k at bit
// k * b) and move its b bytes lowest first. This is the LSB-first stream of the header, without
// a branch per bit, and independent of the machine's byte order.

// Writes codes to an LSB-first stream that starts on a byte boundary (see Note [Code groups]).
class CodeWriter {
 public:
  CodeWriter(uint8_t* out, int bits) : out_(out), bits_(bits) {}

  void put(uint32_t code) {
    pending_[count_++] = code;
    if (count_ == 8) {
      emit(bits_);
      count_ = 0;
    }
  }

  // Same as put() for levels[0..count), with whole groups composed straight from `levels`.
  void putAll(const int32_t* levels, int64_t count) {
    int64_t i = 0;
    for (; i < count && count_ != 0; ++i) put(static_cast<uint32_t>(levels[i]));
    for (; i + 8 <= count; i += 8) {
      uint64_t group = 0;
      for (int k = 0; k < 8; ++k) group |= static_cast<uint64_t>(levels[i + k]) << (k * bits_);
      write(group, bits_);
    }
    for (; i < count; ++i) put(static_cast<uint32_t>(levels[i]));
  }

  // Writes the codes of an unfinished group; unused high bits of the last byte are 0.
  void flush() {
    if (count_ == 0) return;
    std::fill(pending_ + count_, pending_ + 8, 0U);
    emit((count_ * bits_ + 7) / 8);
    count_ = 0;
  }

 private:
  void emit(int bytes) {
    uint64_t group = 0;
    for (int k = 0; k < 8; ++k) group |= static_cast<uint64_t>(pending_[k]) << (k * bits_);
    write(group, bytes);
  }

  void write(uint64_t group, int bytes) {
    for (int t = 0; t < bytes; ++t) *out_++ = static_cast<uint8_t>(group >> (8 * t));
  }

  uint8_t* out_;
  int bits_;
  uint32_t pending_[8] = {};
  int count_ = 0;
};

// Reads codes from an LSB-first stream that starts on a byte boundary and ends at `end` (see
// Note [Code groups]); never reads at or past `end`.
class CodeReader {
 public:
  CodeReader(const uint8_t* in, const uint8_t* end, int bits)
      : in_(in), end_(end), bits_(bits), mask_((1U << bits) - 1U) {}

  uint32_t get() {
    if (next_ == 8) refill();
    return codes_[next_++];
  }

  // Same as `count` calls of get(), whole groups decoded straight into `levels`.
  void getAll(int32_t* levels, int64_t count) {
    int64_t i = 0;
    for (; i < count && next_ != 8; ++i) levels[i] = static_cast<int32_t>(get());
    for (; i + 8 <= count && end_ - in_ >= bits_; i += 8) {
      uint64_t group = 0;
      for (int t = 0; t < bits_; ++t) group |= static_cast<uint64_t>(in_[t]) << (8 * t);
      in_ += bits_;
      for (int k = 0; k < 8; ++k) {
        levels[i + k] = static_cast<int32_t>((group >> (k * bits_)) & mask_);
      }
    }
    for (; i < count; ++i) levels[i] = static_cast<int32_t>(get());
  }

 private:
  void refill() {
    const int bytes = static_cast<int>(std::min<int64_t>(bits_, end_ - in_));
    uint64_t group = 0;
    for (int t = 0; t < bytes; ++t) group |= static_cast<uint64_t>(in_[t]) << (8 * t);
    in_ += bytes;
    for (int k = 0; k < 8; ++k) codes_[k] = static_cast<uint32_t>(group >> (k * bits_)) & mask_;
    next_ = 0;
  }

  const uint8_t* in_;
  const uint8_t* end_;
  int bits_;
  uint32_t mask_;
  uint32_t codes_[8] = {};
  int next_ = 8;
};

// min(floor((p - lowest) / unit + offset), levels) for unit > 0, in [0, levels]. Written as
// compare-selects (min/max) so that NaN lands on `levels` rather than in an undefined
// conversion, and so the loops around it vectorise.
inline int32_t levelFor(float p, float lowest, float unit, float offset, float levels) {
  float t = (p - lowest) / unit + offset;
  t = t < levels ? t : levels;
  t = t > 0.0f ? t : 0.0f;
  return static_cast<int32_t>(t);  // t >= 0: truncation is floor
}

// For i in [0, count): level_i = levelFor(r_i, ..., offsets ? offsets[i] : 0.5) and r_i -= lowest
// + level_i * unit. The SSE2 path (baseline on x86-64) computes bit-identical results: min_ps and
// max_ps select exactly like levelFor's compares, NaN included.
void quantizeBlock(float* r,
                   int64_t count,
                   float lowest,
                   float unit,
                   float levels,
                   const float* offsets,
                   int32_t* levelOut) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128 lowestV = _mm_set1_ps(lowest);
  const __m128 unitV = _mm_set1_ps(unit);
  const __m128 levelsV = _mm_set1_ps(levels);
  const __m128 zero = _mm_setzero_ps();
  const __m128 half = _mm_set1_ps(0.5f);
  for (; i + 4 <= count; i += 4) {
    const __m128 p = _mm_loadu_ps(r + i);
    const __m128 offset = offsets != nullptr ? _mm_loadu_ps(offsets + i) : half;
    __m128 t = _mm_add_ps(_mm_div_ps(_mm_sub_ps(p, lowestV), unitV), offset);
    t = _mm_max_ps(_mm_min_ps(t, levelsV), zero);
    const __m128i level = _mm_cvttps_epi32(t);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(levelOut + i), level);
    const __m128 decoded = _mm_add_ps(lowestV, _mm_mul_ps(_mm_cvtepi32_ps(level), unitV));
    _mm_storeu_ps(r + i, _mm_sub_ps(p, decoded));
  }
#endif
  for (; i < count; ++i) {
    levelOut[i] = levelFor(r[i], lowest, unit, offsets != nullptr ? offsets[i] : 0.5f, levels);
    r[i] = r[i] - (lowest + static_cast<float>(levelOut[i]) * unit);
  }
}

struct Range {
  float min;
  float max;
};

// Pass 1 over [0, n): r = r + s * a (a may be null: r unchanged); returns min and max of r.
// NaN elements are ignored here (they propagate through the residual instead).
Range accumulate(float* r, const float* a, float s, int64_t n) {
  float lo[kLanes];
  float hi[kLanes];
  std::fill(lo, lo + kLanes, INFINITY);
  std::fill(hi, hi + kLanes, -INFINITY);
  const int64_t full = n - n % kLanes;
  if (a != nullptr) {
    for (int64_t i = 0; i < full; i += kLanes) {
      for (int b = 0; b < kLanes; ++b) {
        const float p = r[i + b] + s * a[i + b];
        r[i + b] = p;
        lo[b] = p < lo[b] ? p : lo[b];
        hi[b] = p > hi[b] ? p : hi[b];
      }
    }
    for (int64_t i = full; i < n; ++i) r[i] = r[i] + s * a[i];
  } else {
    for (int64_t i = 0; i < full; i += kLanes) {
      for (int b = 0; b < kLanes; ++b) {
        const float p = r[i + b];
        lo[b] = p < lo[b] ? p : lo[b];
        hi[b] = p > hi[b] ? p : hi[b];
      }
    }
  }
  Range range{INFINITY, -INFINITY};
  for (int b = 0; b < kLanes; ++b) {
    range.min = std::min(range.min, lo[b]);
    range.max = std::max(range.max, hi[b]);
  }
  for (int64_t i = full; i < n; ++i) {
    range.min = r[i] < range.min ? r[i] : range.min;
    range.max = r[i] > range.max ? r[i] : range.max;
  }
  return range;
}

}  // namespace

QuantizeCompressor::QuantizeCompressor(const QuantizeOptions& options) : options_(options) {
  TW_CHECK(options.bucket > 0, "quantize: bucket must be > 0, got ", options.bucket);
}

void QuantizeCompressor::compress(at::Tensor& residual,
                                  const at::Tensor& addend,
                                  float addendScale,
                                  Payload& out,
                                  const LayerParams& params) {
  const int bits = checkedBits(params);
  if (residual.defined() && residual.is_cuda()) {
    return compressQuantizeOnCuda(options_, bits, residual, addend, addendScale, out, params,
                                  payloadBytes(residual.numel(), params));
  }
  checkFlatFloat(residual, "quantize", "residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkFlatFloat(addend, "quantize", "addend");
    TW_CHECK(addend.numel() == numel, "quantize: addend has ", addend.numel(),
             " elements, residual ", numel);
  }
  const int64_t bytes = payloadBytes(numel, params);
  const bool reusable = out.data.defined() && out.data.scalar_type() == at::kByte &&
                        out.data.is_cpu() && out.data.is_contiguous() && out.data.dim() == 1 &&
                        out.data.numel() == bytes;
  if (!reusable) out.data = at::empty({bytes}, at::kByte);
  out.numel = numel;
  out.parts.clear();
  if (numel == 0) return;

  const int64_t bucket = options_.bucket;
  const int64_t buckets = (numel + bucket - 1) / bucket;
  uint8_t* meta = out.data.data_ptr<uint8_t>();
  uint8_t* codes = meta + 8 * buckets;
  float* r = residual.data_ptr<float>();
  const float* a = addend.defined() ? addend.data_ptr<float>() : nullptr;
  const uint32_t maxLevel = (1U << bits) - 1U;
  const float levels = static_cast<float>(maxLevel);
  const bool stochastic = options_.stochastic;
  const uint64_t seed = params.rankSeed;

  // Tasks start on a bucket, and so on a byte, only when bucket * bits fills whole bytes.
  const bool byteAligned = (bucket * bits) % 8 == 0;
  const int64_t grain = byteAligned ? std::max<int64_t>(1, kParallelGrain / bucket) : buckets;
  at::parallel_for(0, buckets, grain, [&](int64_t begin, int64_t end) {
    CodeWriter writer(codes + begin * bucket * bits / 8, bits);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t start = k * bucket;
      const int64_t len = std::min(bucket, numel - start);
      float* rb = r + start;
      const Range range = accumulate(rb, a == nullptr ? nullptr : a + start, addendScale, len);
      const float unit = (range.max - range.min) / levels;
      const float lowest = range.min;
      std::memcpy(meta + 8 * k, &unit, sizeof(float));
      std::memcpy(meta + 8 * k + 4, &lowest, sizeof(float));
      // Levels and residuals of a sub-block first (vectorised), then the codes.
      for (int64_t sub = 0; sub < len; sub += kSubBlock) {
        const int64_t count = std::min(kSubBlock, len - sub);
        float* rs = rb + sub;
        int32_t levelOf[kSubBlock];
        if (!(unit > 0.0f)) {
          for (int64_t i = 0; i < count; ++i) {
            levelOf[i] = 0;
            rs[i] = rs[i] - lowest;
          }
        } else {
          float offsets[kSubBlock];
          if (stochastic) {
            for (int64_t i = 0; i < count; ++i) {
              offsets[i] = uniform(seed, static_cast<uint64_t>(start + sub + i));
            }
          }
          quantizeBlock(rs, count, lowest, unit, levels, stochastic ? offsets : nullptr, levelOf);
        }
        writer.putAll(levelOf, count);
      }
    }
    writer.flush();
  });
}

void QuantizeCompressor::decompressAdd(const Payload& payload,
                                       at::Tensor& out,
                                       float alpha,
                                       const LayerParams& params) const {
  const int bits = checkedBits(params);
  if (out.defined() && out.is_cuda()) {
    return decompressAddQuantizeOnCuda(options_, bits, payload, out, alpha, params);
  }
  checkFlatFloat(out, "quantize", "out");
  const int64_t numel = out.numel();
  TW_CHECK(payload.numel == numel, "quantize: out has ", numel, " elements, payload ",
           payload.numel);
  if (numel == 0) return;
  const int64_t bytes = payloadBytes(numel, params);
  TW_CHECK(payload.data.defined() && payload.data.scalar_type() == at::kByte &&
               payload.data.is_contiguous() && payload.data.numel() == bytes,
           "quantize: payload must be ", bytes, " uint8 bytes for ", numel, " elements at ", bits,
           " bits, got ",
           payload.data.defined() ? payload.data.toString() : std::string("undefined"), " of ",
           payload.data.defined() ? payload.data.numel() : 0);

  const int64_t bucket = options_.bucket;
  const int64_t buckets = (numel + bucket - 1) / bucket;
  const uint8_t* meta = payload.data.data_ptr<uint8_t>();
  const uint8_t* codes = meta + 8 * buckets;
  float* o = out.data_ptr<float>();
  const bool byteAligned = (bucket * bits) % 8 == 0;
  const int64_t grain = byteAligned ? std::max<int64_t>(1, kParallelGrain / bucket) : buckets;
  at::parallel_for(0, buckets, grain, [&](int64_t begin, int64_t end) {
    CodeReader reader(codes + begin * bucket * bits / 8, meta + bytes, bits);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t start = k * bucket;
      const int64_t len = std::min(bucket, numel - start);
      float unit = 0.0f;
      float lowest = 0.0f;
      std::memcpy(&unit, meta + 8 * k, sizeof(float));
      std::memcpy(&lowest, meta + 8 * k + 4, sizeof(float));
      float* ob = o + start;
      for (int64_t sub = 0; sub < len; sub += kSubBlock) {
        const int64_t count = std::min(kSubBlock, len - sub);
        int32_t levelOf[kSubBlock];
        reader.getAll(levelOf, count);
        for (int64_t i = 0; i < count; ++i) {
          ob[sub + i] += alpha * (lowest + static_cast<float>(levelOf[i]) * unit);
        }
      }
    }
  });
}

int64_t QuantizeCompressor::payloadBytes(int64_t numel, const LayerParams& params) const {
  const int bits = checkedBits(params);
  TW_CHECK(numel >= 0, "quantize: numel must be >= 0, got ", numel);
  const int64_t buckets = (numel + options_.bucket - 1) / options_.bucket;
  return 8 * buckets + (numel * bits + 7) / 8;
}

double QuantizeCompressor::deltaHint(int64_t numel, const LayerParams& params) const {
  const int bits = checkedBits(params);
  const double levels = std::ldexp(1.0, bits) - 1.0;
  const double bucket = static_cast<double>(std::max<int64_t>(1, std::min(options_.bucket, numel)));
  return std::max(0.0, 1.0 - bucket / (2.0 * levels * levels));
}

}  // namespace thinwire::compressors

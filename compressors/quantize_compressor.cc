#include "compressors/quantize_compressor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

constexpr int kMinBits = 2;
constexpr int kMaxBits = 8;
constexpr int kLanes = 8;
// Elements one at::parallel_for task should at least cover.
constexpr int64_t kParallelGrain = 1 << 15;

void checkFloatTensor(const at::Tensor& tensor, const char* what) {
  TW_CHECK(tensor.defined(), "quantize: ", what, " is undefined");
  TW_CHECK(tensor.scalar_type() == at::kFloat && tensor.is_contiguous() && tensor.is_cpu(),
           "quantize: ", what, " must be a contiguous float32 CPU tensor, got ", tensor.toString(),
           tensor.is_contiguous() ? "" : " (non-contiguous)");
}

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

// LSB-first bit stream writer; starts on a byte boundary.
class BitWriter {
 public:
  BitWriter(uint8_t* out, int bits) : out_(out), bits_(bits) {}

  void put(uint32_t code) {
    buffer_ |= static_cast<uint64_t>(code) << filled_;
    filled_ += bits_;
    while (filled_ >= 8) {
      *out_++ = static_cast<uint8_t>(buffer_);
      buffer_ >>= 8;
      filled_ -= 8;
    }
  }

  // Writes the last partial byte; its unused high bits are 0.
  void flush() {
    if (filled_ > 0) *out_ = static_cast<uint8_t>(buffer_);
  }

 private:
  uint8_t* out_;
  int bits_;
  uint64_t buffer_ = 0;
  int filled_ = 0;
};

// LSB-first bit stream reader; starts on a byte boundary and never reads past the byte that
// holds the last bit it returns.
class BitReader {
 public:
  BitReader(const uint8_t* in, int bits) : in_(in), bits_(bits), mask_((1U << bits) - 1U) {}

  uint32_t get() {
    while (filled_ < bits_) {
      buffer_ |= static_cast<uint64_t>(*in_++) << filled_;
      filled_ += 8;
    }
    const uint32_t code = static_cast<uint32_t>(buffer_) & mask_;
    buffer_ >>= bits_;
    filled_ -= bits_;
    return code;
  }

 private:
  const uint8_t* in_;
  int bits_;
  uint32_t mask_;
  uint64_t buffer_ = 0;
  int filled_ = 0;
};

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
  checkFloatTensor(residual, "residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkFloatTensor(addend, "addend");
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
    BitWriter writer(codes + begin * bucket * bits / 8, bits);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t start = k * bucket;
      const int64_t len = std::min(bucket, numel - start);
      float* rb = r + start;
      const Range range = accumulate(rb, a == nullptr ? nullptr : a + start, addendScale, len);
      const float unit = (range.max - range.min) / levels;
      const float lowest = range.min;
      std::memcpy(meta + 8 * k, &unit, sizeof(float));
      std::memcpy(meta + 8 * k + 4, &lowest, sizeof(float));
      for (int64_t i = 0; i < len; ++i) {
        const float p = rb[i];
        uint32_t level = 0;
        if (unit > 0.0f) {
          const float offset = stochastic ? uniform(seed, static_cast<uint64_t>(start + i)) : 0.5f;
          float t = (p - lowest) / unit + offset;
          // Written so that NaN lands on maxLevel rather than in an undefined conversion.
          t = t < levels ? t : levels;
          t = t > 0.0f ? t : 0.0f;
          level = static_cast<uint32_t>(t);  // t >= 0: truncation is floor
        }
        writer.put(level);
        rb[i] = p - (lowest + static_cast<float>(level) * unit);
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
  checkFloatTensor(out, "out");
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
    BitReader reader(codes + begin * bucket * bits / 8, bits);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t start = k * bucket;
      const int64_t len = std::min(bucket, numel - start);
      float unit = 0.0f;
      float lowest = 0.0f;
      std::memcpy(&unit, meta + 8 * k, sizeof(float));
      std::memcpy(&lowest, meta + 8 * k + 4, sizeof(float));
      float* ob = o + start;
      for (int64_t i = 0; i < len; ++i) {
        const float level = static_cast<float>(reader.get());
        ob[i] += alpha * (lowest + level * unit);
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

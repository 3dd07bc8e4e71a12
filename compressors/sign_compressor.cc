#include "compressors/sign_compressor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "base/error.h"
#include "compressors/cuda_paths.h"

namespace thinwire::compressors {
namespace {

// Elements summed in float lanes before the partial sum moves to double: short enough that
// float accumulation loses nothing that matters, long enough to vectorise. A multiple of 8.
constexpr int64_t kBlock = 4096;
// Elements one at::parallel_for task should at least cover (smaller tasks cost more to schedule
// than they save).
constexpr int64_t kParallelGrain = 1 << 15;
constexpr int kLanes = 8;

// Pass 1 over [0, n): r = r + s * a (a may be null: r unchanged) and returns sum |r| (kSquare
// false) or sum r^2. The order of additions is fixed by n alone, so the result does not depend
// on threads.
template <bool kSquare>
double accumulate(float* r, const float* a, float s, int64_t n) {
  double total = 0.0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    const int64_t full = len - len % kLanes;
    float* rb = r + start;
    float lanes[kLanes] = {};
    if (a != nullptr) {
      const float* ab = a + start;
      for (int64_t i = 0; i < full; i += kLanes) {
        for (int b = 0; b < kLanes; ++b) {
          const float p = rb[i + b] + s * ab[i + b];
          rb[i + b] = p;
          lanes[b] += kSquare ? p * p : std::fabs(p);
        }
      }
      for (int64_t i = full; i < len; ++i) {
        const float p = rb[i] + s * ab[i];
        rb[i] = p;
        lanes[i - full] += kSquare ? p * p : std::fabs(p);
      }
    } else {
      for (int64_t i = 0; i < full; i += kLanes) {
        for (int b = 0; b < kLanes; ++b) {
          const float p = rb[i + b];
          lanes[b] += kSquare ? p * p : std::fabs(p);
        }
      }
      for (int64_t i = full; i < len; ++i) {
        const float p = rb[i];
        lanes[i - full] += kSquare ? p * p : std::fabs(p);
      }
    }
    double block = 0.0;
    for (float lane : lanes) block += lane;
    total += block;
  }
  return total;
}

double sumOf(SignScale scale, float* r, const float* a, float s, int64_t n) {
  return scale == SignScale::kL1 ? accumulate<false>(r, a, s, n) : accumulate<true>(r, a, s, n);
}

float scaleOf(SignScale scale, double sum, int64_t len) {
  const double mean = sum / static_cast<double>(len);
  return static_cast<float>(scale == SignScale::kL1 ? mean : std::sqrt(mean));
}

// Scalar pass 2 over elements [begin, end) of r (begin a multiple of 8): bit b of
// bits[j] = (r[8j + b] >= 0), r -= scale * sign(r). Bits past `end` in its byte are 0.
void packScalar(float* r, int64_t begin, int64_t end, float scale, uint8_t* bits) {
  for (int64_t start = begin; start < end; start += 8) {
    const int64_t count = std::min<int64_t>(8, end - start);
    unsigned byte = 0;
    for (int64_t b = 0; b < count; ++b) {
      const float p = r[start + b];
      const bool positive = p >= 0.0f;
      byte |= static_cast<unsigned>(positive) << b;
      r[start + b] = p - (positive ? scale : -scale);
    }
    bits[start / 8] = static_cast<uint8_t>(byte);
  }
}

// Pass 2 over [0, n), n a multiple of 8 except for the tensor's last chunk. The SSE2 path
// (baseline on x86-64) does the same as packScalar, 4 lanes at a time: a compare gives the
// "p >= 0" masks (false for NaN, true for -0), movemask gives the bits LSB-first.
void pack(float* r, int64_t n, float scale, uint8_t* bits) {
  int64_t done = 0;
#if defined(__SSE2__)
  const __m128 zero = _mm_setzero_ps();
  const __m128 plus = _mm_set1_ps(scale);
  const __m128 minus = _mm_set1_ps(-scale);
  for (; done + 8 <= n; done += 8) {
    const __m128 low = _mm_loadu_ps(r + done);
    const __m128 high = _mm_loadu_ps(r + done + 4);
    const __m128 lowMask = _mm_cmpge_ps(low, zero);
    const __m128 highMask = _mm_cmpge_ps(high, zero);
    bits[done / 8] =
        static_cast<uint8_t>(_mm_movemask_ps(lowMask) | (_mm_movemask_ps(highMask) << 4));
    const __m128 lowSign = _mm_or_ps(_mm_and_ps(lowMask, plus), _mm_andnot_ps(lowMask, minus));
    const __m128 highSign = _mm_or_ps(_mm_and_ps(highMask, plus), _mm_andnot_ps(highMask, minus));
    _mm_storeu_ps(r + done, _mm_sub_ps(low, lowSign));
    _mm_storeu_ps(r + done + 4, _mm_sub_ps(high, highSign));
  }
#endif
  packScalar(r, done, n, scale, bits);
}

// out[i] += bit ? value : -value over [0, n), bits LSB-first. SSE2: each byte is broadcast and
// compared against the lane's bit to select +value or -value.
void unpackAdd(const uint8_t* bits, int64_t n, float value, float* out) {
  int64_t done = 0;
#if defined(__SSE2__)
  const __m128 plus = _mm_set1_ps(value);
  const __m128 minus = _mm_set1_ps(-value);
  const __m128i lowBits = _mm_set_epi32(8, 4, 2, 1);
  const __m128i highBits = _mm_set_epi32(128, 64, 32, 16);
  for (; done + 8 <= n; done += 8) {
    const __m128i byte = _mm_set1_epi32(bits[done / 8]);
    const __m128 lowMask = _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_and_si128(byte, lowBits), lowBits));
    const __m128 highMask =
        _mm_castsi128_ps(_mm_cmpeq_epi32(_mm_and_si128(byte, highBits), highBits));
    const __m128 low = _mm_or_ps(_mm_and_ps(lowMask, plus), _mm_andnot_ps(lowMask, minus));
    const __m128 high = _mm_or_ps(_mm_and_ps(highMask, plus), _mm_andnot_ps(highMask, minus));
    _mm_storeu_ps(out + done, _mm_add_ps(_mm_loadu_ps(out + done), low));
    _mm_storeu_ps(out + done + 4, _mm_add_ps(_mm_loadu_ps(out + done + 4), high));
  }
#endif
  const float values[2] = {-value, value};
  for (int64_t i = done; i < n; ++i) out[i] += values[(bits[i / 8] >> (i % 8)) & 1U];
}

}  // namespace

SignCompressor::SignCompressor(const SignOptions& options) : options_(options) {
  TW_CHECK(options.chunk >= 0 && options.chunk % 8 == 0,
           "sign: chunk must be 0 or a positive multiple of 8, got ", options.chunk);
}

int64_t SignCompressor::chunkCount(int64_t numel) const {
  if (numel == 0) return 0;
  if (options_.chunk == 0) return 1;
  return (numel + options_.chunk - 1) / options_.chunk;
}

int64_t SignCompressor::chunkLength(int64_t numel) const {
  return options_.chunk == 0 ? numel : std::min(options_.chunk, numel);
}

void SignCompressor::compress(at::Tensor& residual,
                              const at::Tensor& addend,
                              float addendScale,
                              Payload& out,
                              const LayerParams& params) {
  if (residual.defined() && residual.is_cuda()) {
    return compressSignOnCuda(options_, residual, addend, addendScale, out,
                              payloadBytes(residual.numel(), params));
  }
  checkFlatFloat(residual, "sign", "residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkFlatFloat(addend, "sign", "addend");
    TW_CHECK(addend.numel() == numel, "sign: addend has ", addend.numel(), " elements, residual ",
             numel);
  }
  const int64_t bytes = payloadBytes(numel, params);
  const bool reusable = out.data.defined() && out.data.scalar_type() == at::kByte &&
                        out.data.is_cpu() && out.data.is_contiguous() && out.data.dim() == 1 &&
                        out.data.numel() == bytes;
  if (!reusable) out.data = at::empty({bytes}, at::kByte);
  out.numel = numel;
  out.parts.clear();
  if (numel == 0) return;

  const int64_t chunks = chunkCount(numel);
  uint8_t* scales = out.data.data_ptr<uint8_t>();
  uint8_t* bits = scales + 4 * chunks;
  float* r = residual.data_ptr<float>();
  const float* a = addend.defined() ? addend.data_ptr<float>() : nullptr;
  const SignScale kind = options_.scale;

  if (options_.chunk > 0) {
    const int64_t chunk = options_.chunk;
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / chunk);
    at::parallel_for(0, chunks, grain, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t start = c * chunk;
        const int64_t len = std::min(chunk, numel - start);
        const double sum =
            sumOf(kind, r + start, a == nullptr ? nullptr : a + start, addendScale, len);
        const float scale = scaleOf(kind, sum, len);
        std::memcpy(scales + 4 * c, &scale, sizeof(float));
        pack(r + start, len, scale, bits + start / 8);
      }
    });
    return;
  }

  // One scale for the whole tensor: the sum must be complete before any bit is packed, so the
  // two passes run over the whole tensor. Partial sums per block are added in block order.
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / kBlock);
  std::vector<double> partial(static_cast<size_t>(blocks));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t start = k * kBlock;
      const int64_t len = std::min(kBlock, numel - start);
      partial[static_cast<size_t>(k)] =
          sumOf(kind, r + start, a == nullptr ? nullptr : a + start, addendScale, len);
    }
  });
  double sum = 0.0;
  for (double value : partial) sum += value;
  const float scale = scaleOf(kind, sum, numel);
  std::memcpy(scales, &scale, sizeof(float));
  at::parallel_for(0, blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t start = k * kBlock;
      pack(r + start, std::min(kBlock, numel - start), scale, bits + start / 8);
    }
  });
}

void SignCompressor::decompressAdd(const Payload& payload,
                                   at::Tensor& out,
                                   float alpha,
                                   const LayerParams& params) const {
  if (out.defined() && out.is_cuda()) return decompressAddSignOnCuda(options_, payload, out, alpha);
  checkFlatFloat(out, "sign", "out");
  const int64_t numel = out.numel();
  TW_CHECK(payload.numel == numel, "sign: out has ", numel, " elements, payload ", payload.numel);
  if (numel == 0) return;
  const int64_t bytes = payloadBytes(numel, params);
  TW_CHECK(payload.data.defined() && payload.data.scalar_type() == at::kByte &&
               payload.data.is_contiguous() && payload.data.numel() == bytes,
           "sign: payload must be ", bytes, " uint8 bytes for ", numel, " elements, got ",
           payload.data.defined() ? payload.data.toString() : std::string("undefined"), " of ",
           payload.data.defined() ? payload.data.numel() : 0);

  const int64_t chunks = chunkCount(numel);
  const int64_t chunk = chunkLength(numel);
  const uint8_t* scales = payload.data.data_ptr<uint8_t>();
  const uint8_t* bits = scales + 4 * chunks;
  float* o = out.data_ptr<float>();
  // Chunk 0 means one scale but still splits the work at kBlock for the threads.
  const int64_t piece = options_.chunk > 0 ? chunk : kBlock;
  const int64_t pieces = (numel + piece - 1) / piece;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / piece);
  at::parallel_for(0, pieces, grain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const int64_t start = k * piece;
      float scale = 0.0f;
      std::memcpy(&scale, scales + 4 * (start / chunk), sizeof(float));
      unpackAdd(bits + start / 8, std::min(piece, numel - start), alpha * scale, o + start);
    }
  });
}

int64_t SignCompressor::payloadBytes(int64_t numel, const LayerParams& /*params*/) const {
  TW_CHECK(numel >= 0, "sign: numel must be >= 0, got ", numel);
  return 4 * chunkCount(numel) + (numel + 7) / 8;
}

int64_t SignCompressor::alignment(const LayerParams& /*params*/) const {
  return options_.chunk > 0 ? options_.chunk : 8;
}

double SignCompressor::deltaHint(int64_t numel, const LayerParams& /*params*/) const {
  if (options_.scale == SignScale::kL2) return 0.0;
  if (numel <= 0) return 1.0;
  return 1.0 / static_cast<double>(chunkLength(numel));
}

}  // namespace thinwire::compressors

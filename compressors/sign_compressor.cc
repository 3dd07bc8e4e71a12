#include "compressors/sign_compressor.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

// Elements summed in float lanes before the partial sum moves to double: short enough that
// float accumulation loses nothing that matters, long enough to vectorise. A multiple of 8.
constexpr int64_t kBlock = 4096;
// Elements one at::parallel_for task should at least cover (smaller tasks cost more to schedule
// than they save).
constexpr int64_t kParallelGrain = 1 << 15;
constexpr int kLanes = 8;

void checkFloatTensor(const at::Tensor& tensor, const char* what) {
  TW_CHECK(tensor.defined(), "sign: ", what, " is undefined");
  TW_CHECK(tensor.scalar_type() == at::kFloat && tensor.is_contiguous() && tensor.is_cpu(),
           "sign: ", what, " must be a contiguous float32 CPU tensor, got ", tensor.toString(),
           tensor.is_contiguous() ? "" : " (non-contiguous)");
}

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

// Pass 2 over [0, n), n a multiple of 8 except for the tensor's last chunk: packs bit b of
// bits[j] = (r[8j + b] >= 0) and leaves r = r - scale * sign(r). Bits past n are 0.
void pack(float* r, int64_t n, float scale, uint8_t* bits) {
  const int64_t fullBytes = n / 8;
  for (int64_t j = 0; j < fullBytes; ++j) {
    float* rj = r + 8 * j;
    unsigned byte = 0;
    for (int b = 0; b < 8; ++b) {
      const float p = rj[b];
      const bool positive = p >= 0.0f;
      byte |= static_cast<unsigned>(positive) << b;
      rj[b] = p - (positive ? scale : -scale);
    }
    bits[j] = static_cast<uint8_t>(byte);
  }
  const int64_t rest = n - 8 * fullBytes;
  if (rest > 0) {
    float* rj = r + 8 * fullBytes;
    unsigned byte = 0;
    for (int64_t b = 0; b < rest; ++b) {
      const float p = rj[b];
      const bool positive = p >= 0.0f;
      byte |= static_cast<unsigned>(positive) << b;
      rj[b] = p - (positive ? scale : -scale);
    }
    bits[fullBytes] = static_cast<uint8_t>(byte);
  }
}

// out[i] += bit ? value : -value over [0, n), bits LSB-first.
void unpackAdd(const uint8_t* bits, int64_t n, float value, float* out) {
  const float values[2] = {-value, value};
  const int64_t fullBytes = n / 8;
  for (int64_t j = 0; j < fullBytes; ++j) {
    const unsigned byte = bits[j];
    float* oj = out + 8 * j;
    for (int b = 0; b < 8; ++b) oj[b] += values[(byte >> b) & 1U];
  }
  for (int64_t i = 8 * fullBytes; i < n; ++i) out[i] += values[(bits[i / 8] >> (i % 8)) & 1U];
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
  checkFloatTensor(residual, "residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkFloatTensor(addend, "addend");
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
  checkFloatTensor(out, "out");
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

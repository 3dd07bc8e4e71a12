// File: compressors/sign_compressor.h
//
// `SignCompressor`: scaled 1-bit compression (EF-SignSGD, specs/compressors.md §2). The flat
// tensor p = residual + addendScale * addend is cut into chunks of `chunk` elements (the last one
// may be shorter; chunk 0 = one chunk for the whole tensor) and each chunk is sent as one float32
// scale plus one sign bit per element:
//     C(p)_j = scale(chunk of j) * sign(p_j),   sign(0) := +1 (so is sign(-0))
//     kL1: scale = ||p_chunk||_1 / len   (the optimal scalar, delta-contractive: delta >= 1/len)
//     kL2: scale = ||p_chunk||_2 / sqrt(len)   (norm preserving, DeepSpeed's 1-bit Adam scale;
//          not delta-contractive, a 1-sparse chunk comes back with ~2x its squared norm as error)
// where len is the chunk's own length. The residual keeps p - C(p).
//
// Payload layout (uint8, payloadBytes() = 4 * nChunks + ceil(numel / 8)):
//     [nChunks float32 scales, native byte order][ceil(numel / 8) bytes of sign bits]
// Bit order is LSB-first: element 8j + b is bit b of byte j; bit 1 means p >= 0 (+scale), bit 0
// means p < 0 (-scale). Bits past numel in the last byte are 0. Chunks are multiples of 8, so
// every chunk starts on a byte boundary and a split at alignment() boundaries compresses each
// part exactly as inside the whole (with chunk 0 each part gets its own scale instead).
// NaN elements get bit 0; non-finite inputs make their chunk's scale and residual non-finite.
//
// Ownership: stateless; the payload's storage is reused when the caller hands the same Payload
// back. Threading: chunks are processed with at::parallel_for; results do not depend on the
// number of threads. compress() and decompressAdd() may run concurrently on different tensors.
//
// Example:
//   SignCompressor sign(SignOptions{.chunk = 2048, .scale = SignScale::kL1});
//   Payload payload;
//   sign.compress(errorMemory, gradient, 1.0f, payload, {});   // EF: e <- e + g - C(e + g)
//   sign.decompressAdd(payload, sum, 1.0f / worldSize, {});     // sum += C(e + g) / n
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "compressors/compressor.h"
#include "compressors/payload.h"

namespace thinwire::compressors {

enum class SignScale {
  kL1,  // ||p_chunk||_1 / len: minimises ||C(p) - p||_2, delta-contractive
  kL2,  // ||p_chunk||_2 / sqrt(len): ||C(p)||_2 == ||p||_2 (DeepSpeed 1-bit Adam)
};

struct SignOptions {
  int64_t chunk = 2048;  // elements per scale, a positive multiple of 8; 0 = one scale per tensor
  SignScale scale = SignScale::kL1;
};

class SignCompressor : public Compressor {
 public:
  // Throws InvalidArgument when options.chunk is negative or not a multiple of 8.
  explicit SignCompressor(const SignOptions& options = {});

  std::string name() const override { return "sign"; }

  const SignOptions& options() const { return options_; }

  // Blocking, in place on `residual`. Per chunk, one pass computes p = residual + addendScale *
  // addend into `residual` while summing |p| (or p^2); a second pass over the still cache-hot
  // chunk packs the sign bits and leaves residual = p - scale * sign(p). See Note [Fused
  // residual] in compressor.h. Throws InvalidArgument for non-float32, non-contiguous or
  // mismatched tensors.
  void compress(at::Tensor& residual,
                const at::Tensor& addend,
                float addendScale,
                Payload& out,
                const LayerParams& params) override;

  // Blocking: out_j += alpha * scale * (+1 or -1). Throws InvalidArgument when the payload is not
  // uint8 of payloadBytes(out.numel()) bytes.
  void decompressAdd(const Payload& payload,
                     at::Tensor& out,
                     float alpha,
                     const LayerParams& params) const override;

  // Scales differ between ranks: payloads must be decoded before they are summed.
  bool isSummable() const override { return false; }

  // 4 * nChunks + ceil(numel / 8) bytes; nChunks = ceil(numel / chunk) (1 for chunk 0 and
  // numel > 0, 0 for numel 0).
  int64_t payloadBytes(int64_t numel, const LayerParams& params) const override;

  // chunk, or 8 (one byte of signs) when chunk is 0.
  int64_t alignment(const LayerParams& params) const override;

  // kL1: 1 / (longest chunk length), the worst case of ||p||_1^2 / (len ||p||_2^2) (specs §7);
  // kL2: 0 (not contractive).
  double deltaHint(int64_t numel, const LayerParams& params) const override;

 private:
  int64_t chunkCount(int64_t numel) const;
  int64_t chunkLength(int64_t numel) const;

  SignOptions options_;
};

}  // namespace thinwire::compressors

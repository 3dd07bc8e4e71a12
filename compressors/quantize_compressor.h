// File: compressors/quantize_compressor.h
//
// `QuantizeCompressor`: bucketed max-min b-bit quantization (CGX, specs/compressors.md §6.1).
// p = residual + addendScale * addend is cut into buckets of `bucket` elements (the last one may
// be shorter). Per bucket, with L = 2^b - 1 and b = LayerParams::bits in [2, 8]:
//     unit  = (max - min) / L                         (float32)
//     level = min(floor((p_j - min) / unit + r_j), L)  (0 when unit == 0)
//     C(p)_j = min + level * unit                      (a constant bucket decodes exactly)
// with r_j = 0.5 (nearest level, biased, |C(p)_j - p_j| <= unit / 2) or, with `stochastic`,
// r_j ~ U[0, 1) (unbiased: E[C(p)] = p). The random numbers come from a splitmix64 stream seeded
// with LayerParams::rankSeed: element j of the layer uses the stream's j-th output, top 24 bits
// scaled to [0, 1), so the same seed gives the same payload whatever the thread count. The
// residual keeps p - C(p).
//
// Payload layout (uint8, payloadBytes() = 8 * nBuckets + ceil(numel * b / 8)):
//     [nBuckets x (float32 unit, float32 min), native byte order][codes]
// Codes are one bit stream, b bits per element, LSB-first: bit k of the stream is bit k % 8 of
// byte k / 8, and element j's level occupies stream bits [j * b, (j + 1) * b), lowest bit first.
// Bits past numel * b in the last byte are 0.
// Non-finite inputs make their bucket's payload unspecified and propagate into the residual.
//
// Ownership: stateless; the payload's storage is reused when the caller hands the same Payload
// back. Threading: buckets are processed with at::parallel_for when bucket * b is a multiple of
// 8 (each bucket then starts on a byte); results never depend on the number of threads.
// compress() and decompressAdd() may run concurrently on different tensors.
//
// Example:
//   QuantizeCompressor quantize(QuantizeOptions{.bucket = 512, .stochastic = true});
//   LayerParams params{.bits = 4, .rankSeed = 1234};   // rankSeed: per step, layer and rank
//   Payload payload;
//   quantize.compress(scratch, gradient, 1.0f, payload, params);   // scratch: zeros
//   quantize.decompressAdd(payload, sum, 1.0f / worldSize, params);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "compressors/compressor.h"
#include "compressors/payload.h"

namespace thinwire::compressors {

struct QuantizeOptions {
  int64_t bucket = 512;     // elements per (unit, min) pair, > 0
  bool stochastic = false;  // r ~ U[0, 1) (unbiased) instead of 0.5 (nearest level)
};

class QuantizeCompressor : public Compressor {
 public:
  // Throws InvalidArgument when options.bucket <= 0.
  explicit QuantizeCompressor(const QuantizeOptions& options = {});

  std::string name() const override { return "quantize"; }

  const QuantizeOptions& options() const { return options_; }

  // Blocking, in place on `residual`. Per bucket, one pass computes p = residual + addendScale *
  // addend into `residual` while tracking min and max; a second pass over the cache-hot bucket
  // writes the codes and leaves residual = p - C(p). Uses params.bits and, when stochastic,
  // params.rankSeed. Throws InvalidArgument for bits outside [2, 8] and for non-float32,
  // non-contiguous or mismatched tensors.
  void compress(at::Tensor& residual,
                const at::Tensor& addend,
                float addendScale,
                Payload& out,
                const LayerParams& params) override;

  // Blocking: out_j += alpha * (min + level_j * unit). Throws InvalidArgument for bits outside
  // [2, 8] or a payload that is not uint8 of payloadBytes(out.numel(), params) bytes.
  void decompressAdd(const Payload& payload,
                     at::Tensor& out,
                     float alpha,
                     const LayerParams& params) const override;

  // Units and minima differ between ranks: payloads must be decoded before they are summed.
  bool isSummable() const override { return false; }

  // 8 * ceil(numel / bucket) + ceil(numel * bits / 8) bytes. Throws InvalidArgument for bits
  // outside [2, 8].
  int64_t payloadBytes(int64_t numel, const LayerParams& params) const override;

  // The bucket: a split there quantizes every part exactly as inside the whole.
  int64_t alignment(const LayerParams& /*params*/) const override { return options_.bucket; }

  // max(0, 1 - B / (2 (2^b - 1)^2)) with B = min(bucket, numel): per element the error is at
  // most unit / 2 (in expectation unit^2 / 4 when stochastic) and (max - min)^2 <= 2 ||p||^2
  // (specs §7). 0 where the bound gives no contraction (bucket 512 needs b >= 5).
  double deltaHint(int64_t numel, const LayerParams& params) const override;

 private:
  QuantizeOptions options_;
};

}  // namespace thinwire::compressors

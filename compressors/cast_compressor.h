// File: compressors/cast_compressor.h
//
// `CastCompressor`: sends p = residual + addendScale * addend cast to float16 or bfloat16 (round
// to nearest, ties to even) and leaves the rounding error p - float(cast(p)) in the residual, so
// error feedback around a cast loses nothing over time. Payloads keep their 16-bit dtype and are
// summable: an allreduce adds them without decoding (the sum is rounded to 16 bits again there).
//
// Payload layout: `data` is a float16 (at::kHalf) or bfloat16 (at::kBFloat16) tensor of numel
// elements.
// Range: float16 does not saturate: |p| > 65504 becomes inf (and the residual -inf/NaN), values
// below 2^-24 flush to zero; bfloat16 has float32's range. Scale float16 inputs first if needed.
// The bits of a NaN in the payload are unspecified (they may depend on the CPU).
//
// Ownership: stateless; the payload's storage is reused when the caller hands the same Payload
// back. Threading: compress() and decompressAdd() may run concurrently on different tensors.
//
// Example:
//   CastCompressor bf16(at::kBFloat16);
//   Payload payload;
//   bf16.compress(residual, gradient, 1.0f, payload, {});   // residual = rounding error
//   bf16.decompressAdd(payload, sum, 0.25f, {});            // sum += 0.25 * float(payload)
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "compressors/compressor.h"
#include "compressors/payload.h"

namespace thinwire::compressors {

class CastCompressor : public Compressor {
 public:
  // `dtype` is at::kHalf or at::kBFloat16; throws InvalidArgument otherwise.
  explicit CastCompressor(at::ScalarType dtype);

  // "fp16" or "bf16".
  std::string name() const override;

  at::ScalarType dtype() const { return dtype_; }

  // Blocking, one pass: payload = cast(residual + addendScale * addend) with round to nearest
  // even, residual = p - float(payload). Throws InvalidArgument for non-float32, non-contiguous
  // or mismatched tensors.
  void compress(at::Tensor& residual,
                const at::Tensor& addend,
                float addendScale,
                Payload& out,
                const LayerParams& params) override;

  // Blocking: out += alpha * float(payload). Throws InvalidArgument when the payload is not of
  // this compressor's dtype with out.numel() elements.
  void decompressAdd(const Payload& payload,
                     at::Tensor& out,
                     float alpha,
                     const LayerParams& params) const override;

  bool isSummable() const override { return true; }

  // 2 bytes per element.
  int64_t payloadBytes(int64_t numel, const LayerParams& params) const override;

  // Relative rounding error of round-to-nearest: |C(x)_j - x_j| <= 2^-m |x_j| with m = 11
  // (float16) or 8 (bfloat16), so delta = 1 - 2^-2m: 1 - 2^-22 and 1 - 2^-16. Ignores float16
  // overflow and subnormals (see the banner).
  double deltaHint(int64_t numel, const LayerParams& params) const override;

 private:
  at::ScalarType dtype_;
};

}  // namespace thinwire::compressors

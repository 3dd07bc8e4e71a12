// File: compressors/identity_compressor.h
//
// `IdentityCompressor`: sends p = residual + addendScale * addend as plain float32 (no
// compression). It is the reference every other method is compared against, and the method of
// layers that go uncompressed. Its payloads are summable (an allreduce adds them directly), the
// residual it leaves is exactly 0 and its contraction constant is 1.
//
// Payload layout: `data` is a float32 tensor of numel elements, p itself.
//
// Ownership: stateless; the payload's storage is reused when the caller hands the same Payload
// back. Threading: compress() and decompressAdd() may run concurrently on different tensors.
//
// Example:
//   IdentityCompressor identity;
//   Payload payload;
//   identity.compress(residual, gradient, 1.0f, payload, {});   // payload = residual + gradient
//   identity.decompressAdd(payload, sum, 1.0f, {});             // sum += payload; residual == 0
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "compressors/compressor.h"
#include "compressors/payload.h"

namespace thinwire::compressors {

class IdentityCompressor : public Compressor {
 public:
  IdentityCompressor() = default;

  std::string name() const override { return "identity"; }

  // Blocking, one pass: payload = residual + addendScale * addend (float32), residual = 0
  // exactly. Throws InvalidArgument for non-float32, non-contiguous or mismatched tensors.
  void compress(at::Tensor& residual,
                const at::Tensor& addend,
                float addendScale,
                Payload& out,
                const LayerParams& params) override;

  // Blocking: out += alpha * payload. Throws InvalidArgument when the payload is not float32 of
  // out.numel() elements.
  void decompressAdd(const Payload& payload,
                     at::Tensor& out,
                     float alpha,
                     const LayerParams& params) const override;

  bool isSummable() const override { return true; }

  // 4 bytes per element.
  int64_t payloadBytes(int64_t numel, const LayerParams& params) const override;

  // Exact: C(x) = x.
  double deltaHint(int64_t /*numel*/, const LayerParams& /*params*/) const override { return 1.0; }
};

}  // namespace thinwire::compressors

// File: compressors/payload.h
//
// `Payload`: one rank's compressed message for one layer, exactly the bytes that travel. A
// compressor fills it (Compressor::compress), an aggregator moves it between ranks, and the same
// compressor decodes it (Compressor::decompressAdd).
//
// Layout of `data` is private to the compressor that wrote it (documented in its header); other
// code only moves it as a 1-D contiguous tensor:
//   - summable payloads (identity, fp16/bf16 casts, random-k values) keep their element dtype
//     (float32, float16 or bfloat16), so an allreduce can sum them without decoding;
//   - every other payload is uint8 bytes (indices, values, packed bits and scales back to back).
// A payload split for several destinations (ChunkedCompressor, used by the two-phase aggregator)
// lists the byte size of each destination's part in `parts`; the parts lie back to back in
// `data`, part d for rank d.
//
// Ownership: a Payload owns its tensors (shared storage, like every at::Tensor); compressors may
// reuse a payload's storage across steps when the caller hands the same Payload back.
// Threading: a plain value, not synchronised.
//
// Example:
//   Payload payload;
//   compressor.compress(residual, gradient, 1.0f, payload, params);
//   int64_t bytes = payload.wireBytes();     // what this rank sends for the layer
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace thinwire::compressors {

struct Payload {
  at::Tensor data;             // 1-D contiguous CPU tensor; undefined or empty for numel == 0
  int64_t numel = 0;           // elements of the decoded (dense, float32) tensor
  std::vector<int64_t> parts;  // bytes of each destination's part; empty unless chunked

  // Bytes of `data` (what one copy of this payload costs on the wire).
  int64_t wireBytes() const { return data.defined() ? data.numel() * data.element_size() : 0; }
};

}  // namespace thinwire::compressors

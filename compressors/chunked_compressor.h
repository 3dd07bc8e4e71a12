// File: compressors/chunked_compressor.h
//
// `ChunkedCompressor`: wraps any compressor and compresses a layer as `parts` contiguous ranges,
// one per destination rank, each on its own (specs/compressors.md §2.3, §5.2: the worker side of
// the two-phase aggregation). The payload is the parts' bytes back to back, part d first for d =
// 0, 1, ...; Payload::parts lists the byte size of each part (0 for an empty range).
//
// Ranges (chunkRange): boundaries are multiples of inner.alignment(params), so every range
// compresses exactly as it would inside the whole tensor for methods whose state is local to an
// aligned block (sign with per-chunk scales, bucketed quantization); ranges are as equal as the
// alignment allows and trailing ones may be empty (numel < parts * alignment). Methods with a
// per-tensor choice apply it per range: top-k keeps max(1, floor(ratio * length)) of each range.
//
// Payload dtype (Note [Chunked payload dtype]): `data` keeps the inner compressor's dtype
// (float32/float16/bfloat16 for summable methods, uint8 otherwise) and `parts` are always bytes,
// i.e. elements * element_size of that dtype. The inner compressor must write one dtype for every
// range (every thinwire compressor does); decompressAdd reads each part in the payload's dtype.
//
// Also here: bytesOf / payloadFromBytes, the byte views aggregators use to move payloads of any
// dtype through uint8 collectives.
//
// Ownership: borrows `inner` (it must outlive the wrapper); owns scratch payloads, one per part.
// Threading: like every Compressor, one thread at a time per instance (scratch); decompressAdd is
// const and as thread-safe as the inner compressor's.
//
// Example:
//   ChunkedCompressor chunked(sign, comm.worldSize());
//   Payload message;
//   chunked.compress(residual, gradient, 1.0f, message, params);   // message.parts[d]: bytes
//   ChunkRange mine = ChunkedCompressor::chunkRange(numel, n, sign.alignment(params), rank);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compressors/compressor.h"
#include "compressors/payload.h"

namespace thinwire::compressors {

// A contiguous range of a flat tensor, in elements.
struct ChunkRange {
  int64_t offset = 0;
  int64_t length = 0;
};

class ChunkedCompressor : public Compressor {
 public:
  // `inner` is borrowed for the wrapper's lifetime. Throws InvalidArgument when parts < 1.
  ChunkedCompressor(Compressor& inner, int parts);

  Compressor& inner() const { return *inner_; }
  int parts() const { return parts_; }

  // Range `index` (0 <= index < parts) of `numel` elements split into `parts` ranges whose
  // boundaries are multiples of `alignment` (>= 1): the ceil(numel / alignment) aligned blocks
  // are dealt out as evenly as possible, earlier ranges taking the extra blocks, and the last
  // block may be partial. Pure; throws InvalidArgument for out-of-range arguments.
  static ChunkRange chunkRange(int64_t numel, int parts, int64_t alignment, int index);

  // "chunked_<inner name>".
  std::string name() const override;

  // Blocking, in place on `residual` (see Compressor::compress): compresses each range with the
  // inner compressor and the same params, so that residual = p - decode(out) holds range by
  // range. out.parts receives the bytes of each part; out.numel the whole numel. Throws
  // InvalidArgument as the inner compressor does, and Error when the inner compressor writes
  // different dtypes for different ranges.
  void compress(at::Tensor& residual,
                const at::Tensor& addend,
                float addendScale,
                Payload& out,
                const LayerParams& params) override;

  // Blocking: out += alpha * decode(payload), every part decoded by the inner compressor into
  // its range. Throws InvalidArgument when payload.parts does not have `parts` entries, when
  // they do not add up to the payload's bytes, or when `out` is not float32 with payload.numel
  // elements.
  void decompressAdd(const Payload& payload,
                     at::Tensor& out,
                     float alpha,
                     const LayerParams& params) const override;

  // Concatenated parts sum elementwise exactly when the inner payloads do.
  bool isSummable() const override { return inner_->isSummable(); }
  // Sum of the inner compressor's sizes of the ranges; -1 when any of them is data dependent.
  int64_t payloadBytes(int64_t numel, const LayerParams& params) const override;
  int64_t maxPayloadBytes(int64_t numel, const LayerParams& params) const override;
  int64_t alignment(const LayerParams& params) const override { return inner_->alignment(params); }
  // Minimum over the non-empty ranges of the inner delta: ||C(x)-x||^2 sums over ranges, so the
  // weakest range bounds the whole.
  double deltaHint(int64_t numel, const LayerParams& params) const override;

 private:
  Compressor* inner_;
  int parts_;
  std::vector<Payload> partPayloads_;  // scratch: each range's inner payload, reused
};

// A flat uint8 view of payload.data's bytes (shares storage); an empty uint8 tensor when data is
// undefined.
at::Tensor bytesOf(const Payload& payload);

// A payload of `numel` decoded elements whose data is `length` bytes of the uint8 tensor `bytes`
// starting at byte `offset`, read as `dtype`. Shares storage with `bytes` when `offset` is a
// multiple of dtype's element size, else copies (a view would be misaligned). Throws
// InvalidArgument when the range is outside `bytes` or `length` is not a whole number of
// elements. `parts` is left empty.
Payload payloadFromBytes(
    const at::Tensor& bytes, int64_t offset, int64_t length, at::ScalarType dtype, int64_t numel);

// Note [Chunked payload dtype]
// A summable payload split in chunks must stay summable: the allreduce aggregator sums `data` in
// its own dtype, so the concatenation keeps the parts' float dtype rather than a uint8 view
// (summing bytes would be wrong). Counting parts in bytes instead of elements keeps one unit for
// every payload, which is what the collectives that move parts (uint8 all-to-all) need.

}  // namespace thinwire::compressors

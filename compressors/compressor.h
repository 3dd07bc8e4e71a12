// File: compressors/compressor.h
//
// The `Compressor` interface: what a rank sends for one layer (specs/compressors.md §0). A
// compressor is stateless across steps — residuals, EF21/EControl trackers and DGC momenta live
// in a Feedback policy (feedback.h), server-side errors in an aggregator — so one instance serves
// every layer that uses the same method, and shared randomness comes from `LayerParams::seed`.
//
// The central operation is fused (see Note [Fused residual]):
//     p = residual + addendScale * addend        (addend optional)
//     payload = C(p)
//     residual = p - decode(payload)
// in as few passes over memory as the method allows. Error feedback is this call with the EF
// memory as `residual` and the gradient as `addend`; without feedback, `residual` is a scratch
// copy of the gradient and the result is discarded.
//
// Ownership: a compressor owns nothing beyond scratch buffers reused between calls.
// Threading: one thread per compressor instance at a time (scratch buffers); decompressAdd is
// const and thread-safe unless a subclass says otherwise.
//
// Example:
//   std::unique_ptr<Compressor> topk = makeCompressor({.kind = CompressorKind::kTopK});
//   LayerParams params{.ratio = 0.01};
//   Payload payload;
//   topk->compress(errorMemory, gradient, 1.0f, payload, params);   // EF: e <- e + g - C(e + g)
//   at::Tensor out = at::zeros({gradient.numel()});
//   topk->decompressAdd(payload, out, 1.0f, params);              // out += C(e + g)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>

#include "compressors/payload.h"

namespace thinwire::compressors {

enum class CompressorKind {
  kIdentity,  // float32 as is (summable)
  kFp16,      // float16 cast (summable)
  kBf16,      // bfloat16 cast (summable)
  kTopK,      // k largest magnitudes, exact or DGC sampled threshold; int32 indices
  kRandomK,   // k shared-seed random positions, values only (summable)
  kSign,      // scaled sign, 1 bit per element + per-chunk scales
  kQuantize,  // bucketed max-min b-bit quantizer
};

// Per-layer, per-step knobs. The engine fills them from the config (and, later, a layer-wise
// policy) identically on every rank; fields a method does not use are ignored.
struct LayerParams {
  double ratio = 0.01;    // top-k, random-k: kept fraction, k = max(1, floor(ratio * numel))
  int bits = 4;           // quantize: bits per element, 2..8
  uint64_t seed = 0;      // shared randomness of this (step, layer), identical on every rank
  uint64_t rankSeed = 0;  // private randomness of this (step, layer, rank): stochastic rounding
};

class Compressor {
 public:
  virtual ~Compressor() = default;

  // Short name as in configs: "identity", "fp16", "bf16", "topk", "randomk", "sign", "quantize".
  virtual std::string name() const = 0;

  // Blocking, in place on `residual`. Computes p = residual + addendScale * addend (addend may be
  // undefined: p = residual), writes C(p) into `out` (reusing its storage when it fits; out.numel
  // = residual.numel()) and leaves residual = p - decode(out). `residual` and a defined `addend`
  // are contiguous float32 CPU tensors with the same numel; any shape is read as flat. numel == 0
  // gives an empty payload. Throws InvalidArgument for other dtypes, sizes or out-of-range
  // params. Non-finite inputs propagate into the residual; the payload is unspecified then.
  virtual void compress(at::Tensor& residual,
                        const at::Tensor& addend,
                        float addendScale,
                        Payload& out,
                        const LayerParams& params) = 0;

  // Blocking: out += alpha * decode(payload), `out` a contiguous float32 tensor of
  // payload.numel elements. Colliding indices of a sparse payload add up. `params` must be the
  // ones the payload was compressed with (random-k needs its seed). Throws InvalidArgument when
  // the payload's size does not match what these params produce.
  virtual void decompressAdd(const Payload& payload,
                             at::Tensor& out,
                             float alpha,
                             const LayerParams& params) const = 0;

  // True when the elementwise sum of several ranks' payloads (same numel and params) is the
  // payload of the sum of their decodings: such payloads can be allreduced without decoding.
  virtual bool isSummable() const = 0;

  // True when the payload is a sparse selection ((index, value) pairs): its decodings add up
  // without loss, whereas re-compressing a sum (two-phase) drops part of it. The cost model
  // therefore gathers sparse payloads while that beats a dense float32 allreduce (Note
  // [Aggregator cost model]).
  virtual bool isSparse() const { return false; }

  // Bytes compress() produces for `numel` elements with `params` when that is known in advance
  // (the same on every rank); -1 when the size depends on the data (threshold selection).
  virtual int64_t payloadBytes(int64_t numel, const LayerParams& params) const = 0;

  // Upper bound of payloadBytes() for any data: what buffers and the cost model assume.
  virtual int64_t maxPayloadBytes(int64_t numel, const LayerParams& params) const {
    return payloadBytes(numel, params);
  }

  // Element boundaries a chunked split must respect so that each chunk compresses on its own
  // exactly as inside the whole (sign: 8 elements per byte times its scale chunk; quantize: its
  // bucket). 1 when any split works.
  virtual int64_t alignment(const LayerParams& /*params*/) const { return 1; }

  // Contraction guarantee: E||C(x) - x||^2 <= (1 - delta) ||x||^2 for every x (specs §7). 0 when
  // the method is not delta-contractive. EControl derives its default eta from it.
  virtual double deltaHint(int64_t numel, const LayerParams& params) const = 0;
};

// Throws InvalidArgument ("<owner>: <what> must be a contiguous float32 CPU tensor, got ...")
// unless `tensor` is defined, float32, contiguous and on the CPU: the check every compressor makes
// on its residual, addend and output arguments.
void checkFlatFloat(const at::Tensor& tensor, const char* owner, const char* what);

struct CompressorOptions {
  CompressorKind kind = CompressorKind::kIdentity;
  // top-k
  bool sampledThreshold = false;  // DGC sampled threshold (false: exact selection)
  double sampleRatio = 0.01;      // DGC: fraction of elements sampled for the threshold
  bool fp16Values = false;        // top-k, random-k: values on the wire as float16
  // random-k
  bool scaleRandomK = false;  // scale kept values by numel / k (unbiased; default biased, for EF)
  // sign
  int64_t signChunk = 2048;  // elements per scale (a multiple of 8); 0 = one scale per tensor
  // quantize
  int64_t quantizeBucket = 512;  // elements per max-min bucket
  bool stochasticRounding = false;
};

// Builds the compressor `options.kind` names. Throws InvalidArgument for out-of-range options.
std::unique_ptr<Compressor> makeCompressor(const CompressorOptions& options);

// Parses a config word ("identity", "fp16", "bf16", "topk", "randomk", "sign", "quantize").
CompressorKind parseCompressorKind(const std::string& name);

// Note [Fused residual]
// Error feedback, EF21 and EControl all need C(p) and p - C(p) for a p that is a sum of state and
// gradient. Doing the sum, the compression and the residual update in one call lets a method walk
// memory once: sampled top-k computes the threshold from a sample of p, then one pass reads
// residual and addend, writes the kept (index, value) pairs and stores p or 0 back into residual
// (12 bytes per element); sign with per-chunk scales sums |p| of a cache-sized chunk and packs it
// while the chunk is still in cache. For top-k the residual is exact: kept entries become exactly
// 0 and the others exactly p, so Delta + e_new == e_old + g holds bit for bit.

}  // namespace thinwire::compressors

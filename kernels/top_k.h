// File: kernels/top_k.h
//
// Top-k selection on the GPU (specs/compressors.md §1.1-1.2), the CUDA path of TopKCompressor:
// a threshold from a strided sample of p = residual + s * addend, one fused pass that writes p and
// compacts the candidates (|p| at or above the threshold) in index order, and an exact refinement
// of the candidates to the k largest magnitudes (equal magnitudes: lower index first; NaN below
// every number). Sampled mode is DGC's (the threshold lowered by 0.8 while fewer than
// lowerBound * k entries reach it); exact mode lowers the threshold to "everything" when the
// sample's guess finds fewer than k, so the selection equals the CPU's exact top-k.
// Given the same sample plan, both modes select exactly what TopKCompressor selects on the CPU,
// and the residual and payload bytes are identical.
//
// Ownership: results are new CUDA tensors. Threading: call from one thread per tensor; kernels
// run on libtorch's current stream (kernels/device.h). Blocking: a few device-to-host reads of
// counts (the payload size depends on the data).
//
// Example:
//   TopKSelection kept = topKSelect(residual, gradient, 1.0f, options);   // all CUDA
//   at::Tensor payload = topKEmit(kept, /*fp16Values=*/false, residual);
//   topKDecompressAdd(payload, kept.indices.numel(), false, 1.0f, sum);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace thinwire::kernels {

struct TopKSelectOptions {
  int64_t k = 1;         // entries to keep, 1 <= k <= numel
  bool sampled = false;  // DGC sampled threshold (may keep fewer than k) instead of exact top-k
  // The threshold sample (compressors::planThresholdSample): elements first + s * stride for
  // s < sampleCount; the threshold is their sampleRank-th largest magnitude.
  int64_t sampleFirst = 0;
  int64_t sampleStride = 1;
  int64_t sampleCount = 1;
  int64_t sampleRank = 1;
  int maxAdaptations = 10;  // sampled: times the threshold may be lowered by 0.8
  double lowerBound = 0.8;  // sampled: lower it while fewer than lowerBound * k entries reach it
};

struct TopKSelection {
  at::Tensor indices;  // int32, strictly ascending positions
  at::Tensor values;   // float32, p at those positions
};

// In place on `residual` (contiguous float32 CUDA; `addend` undefined or the same), numel <=
// INT32_MAX. Afterwards residual = p at every position not selected; at selected positions it is
// unspecified until topKEmit() writes it. Throws InvalidArgument for bad tensors or options,
// Error on CUDA failures.
TopKSelection topKSelect(at::Tensor& residual,
                         const at::Tensor& addend,
                         float addendScale,
                         const TopKSelectOptions& options);

// TopKCompressor's payload for `selection` as uint8 CUDA bytes, [count int32 indices][count
// values, float32 or float16 saturated at +-65504], and the residual at the selected positions:
// 0, or with fp16Values the rounding error p - float(half(p)).
at::Tensor topKEmit(const TopKSelection& selection, bool fp16Values, at::Tensor& residual);

// Fused decompress-add: out[index] += alpha * value for the `count` entries of `payload` (uint8
// CUDA bytes laid out as topKEmit writes them); repeated indices add up. Blocking (reads back an
// error flag); throws InvalidArgument when an index lies outside [0, out.numel()).
void topKDecompressAdd(
    const at::Tensor& payload, int64_t count, bool fp16Values, float alpha, at::Tensor& out);

}  // namespace thinwire::kernels

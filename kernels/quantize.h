// File: kernels/quantize.h
//
// Bucketed max-min b-bit quantization with fused error feedback on the GPU, the CUDA path of
// QuantizeCompressor (specs/compressors.md §6.1): per bucket (unit, min), levels rounded to the
// nearest or stochastically (QuantizeCompressor's splitmix64 stream), codes packed LSB-first,
// residual = p - C(p); and the fused dequantize-add. Bit-identical to the CPU implementation.
//
// Ownership: the caller owns the payload tensor, sized by QuantizeCompressor::payloadBytes().
// Threading: kernels run on libtorch's current stream (kernels/device.h); asynchronous.
//
// Example:
//   QuantizeKernelOptions options{.bucket = 512, .bits = 4};
//   quantizeCompress(residual, gradient, 1.0f, options, payload);
//   dequantizeAdd(payload, options, 1.0f / worldSize, sum);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace thinwire::kernels {

struct QuantizeKernelOptions {
  int64_t bucket = 512;     // elements per (unit, min) pair, > 0
  int bits = 4;             // 2..8
  bool stochastic = false;  // r ~ U[0, 1) from the stream of `seed` instead of 0.5
  uint64_t seed = 0;        // LayerParams::rankSeed
};

// In place on `residual`; writes [nBuckets x (float32 unit, float32 min)][codes] into `payload`
// (contiguous uint8 CUDA of 8 * nBuckets + ceil(numel * bits / 8) bytes). Throws InvalidArgument
// for bad tensors or options, Error on CUDA failures.
void quantizeCompress(at::Tensor& residual,
                      const at::Tensor& addend,
                      float addendScale,
                      const QuantizeKernelOptions& options,
                      at::Tensor& payload);

// Fused decompress-add: out += alpha * C(p) decoded from `payload`.
void dequantizeAdd(const at::Tensor& payload,
                   const QuantizeKernelOptions& options,
                   float alpha,
                   at::Tensor& out);

}  // namespace thinwire::kernels

// File: kernels/sign.h
//
// 1-bit (scaled sign) compression with fused error feedback on the GPU, the CUDA path of
// SignCompressor (specs/compressors.md §2): p = residual + s * addend, one scale per chunk (L1:
// mean |p|, L2: RMS), sign bits LSB-first, residual = p - C(p). The payload bytes, the residual
// and the decompress-add are bit-identical to the CPU's (same float lanes, same double sums).
// Chunks of up to 4096 elements run as one fused kernel (12 bytes per element from memory);
// longer chunks and a whole-tensor scale take three passes.
//
// Ownership: the caller owns the payload tensor, sized by SignCompressor::payloadBytes().
// Threading: kernels run on libtorch's current stream (kernels/device.h); asynchronous.
//
// Example:
//   at::Tensor payload = at::empty({bytes}, residual.options().dtype(at::kByte));
//   signCompress(residual, gradient, 1.0f, {.chunk = 2048}, payload);
//   signDecompressAdd(payload, {.chunk = 2048}, 1.0f / worldSize, sum);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace thinwire::kernels {

struct SignKernelOptions {
  int64_t chunk = 2048;  // elements per scale, a positive multiple of 8; 0 = one scale
  bool l2 = false;       // scale = RMS of the chunk instead of its mean magnitude
};

// In place on `residual`; writes [nChunks float32 scales][ceil(numel / 8) sign bytes] into
// `payload` (contiguous uint8 CUDA of exactly that size). Throws InvalidArgument for bad tensors
// or options, Error on CUDA failures.
void signCompress(at::Tensor& residual,
                  const at::Tensor& addend,
                  float addendScale,
                  const SignKernelOptions& options,
                  at::Tensor& payload);

// Fused decompress-add: out += alpha * C(p) decoded from `payload`.
void signDecompressAdd(const at::Tensor& payload,
                       const SignKernelOptions& options,
                       float alpha,
                       at::Tensor& out);

}  // namespace thinwire::kernels

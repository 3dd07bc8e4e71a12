// File: compressors/cuda_paths.h
//
// The CUDA paths of the compressors that have GPU kernels (thinwire::kernels): TopKCompressor,
// SignCompressor and QuantizeCompressor call these when the residual (compress) or the output
// (decompressAdd) is a CUDA tensor, and keep their CPU code untouched otherwise. Each path takes
// the same arguments, produces the same payload bytes (as a uint8 CUDA tensor on the residual's
// device) and the same residual as the CPU code, bit for bit (tests/gpu checks it), and throws
// the same InvalidArgument cases. decompressAdd accepts a payload on the CPU or on the GPU (an
// aggregator may have moved it through a CPU backend) and copies it to the output's device.
// Built without CUDA (THINWIRE_WITH_CUDA off), every function throws InvalidArgument.
//
// Ownership: as the compressors' compress/decompressAdd. Threading: as theirs; the kernels run on
// libtorch's current CUDA stream.
//
// Example (inside TopKCompressor::compress):
//   if (residual.is_cuda()) return compressTopKOnCuda(options_, residual, addend, addendScale,
//                                                     out, params);
#pragma once

#include <ATen/core/Tensor.h>

#include "compressors/compressor.h"
#include "compressors/payload.h"
#include "compressors/quantize_compressor.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"

namespace thinwire::compressors {

void compressTopKOnCuda(const TopKOptions& options,
                        at::Tensor& residual,
                        const at::Tensor& addend,
                        float addendScale,
                        Payload& out,
                        const LayerParams& params);
void decompressAddTopKOnCuda(const TopKOptions& options,
                             const Payload& payload,
                             at::Tensor& out,
                             float alpha,
                             const LayerParams& params);

// `payloadBytes`: SignCompressor::payloadBytes() for the residual's numel.
void compressSignOnCuda(const SignOptions& options,
                        at::Tensor& residual,
                        const at::Tensor& addend,
                        float addendScale,
                        Payload& out,
                        int64_t payloadBytes);
void decompressAddSignOnCuda(const SignOptions& options,
                             const Payload& payload,
                             at::Tensor& out,
                             float alpha);

// `bits`: the checked LayerParams::bits; `payloadBytes`: QuantizeCompressor::payloadBytes().
void compressQuantizeOnCuda(const QuantizeOptions& options,
                            int bits,
                            at::Tensor& residual,
                            const at::Tensor& addend,
                            float addendScale,
                            Payload& out,
                            const LayerParams& params,
                            int64_t payloadBytes);
void decompressAddQuantizeOnCuda(const QuantizeOptions& options,
                                 int bits,
                                 const Payload& payload,
                                 at::Tensor& out,
                                 float alpha,
                                 const LayerParams& params);

}  // namespace thinwire::compressors

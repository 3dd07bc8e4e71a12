// File: kernels/quest.h
//
// QuEST's row quantizer on the GPU, the CUDA path of qat::fakeQuantize / quantizeRows /
// blockHadamard (specs/qat.md §1): per row, the block Hadamard transform (H128, 7 butterfly
// stages), the RMS, clip c = alpha * RMS + 1e-8, rounding to the centred grid, the trust mask
// |u| <= maskScale * c, optionally the rotation back; and the masked, rotated backward. The
// rotation and the per-element arithmetic repeat the CPU's roundings; the row's sum of squares is
// a tree sum in double (the CPU's is sequential), which can move sigma by one float ulp in rare
// rows (about 1e-7 of them).
//
// Ownership: results are new CUDA tensors; the *InPlace functions write into the caller's tensor.
// Threading: kernels run on libtorch's current stream (kernels/device.h); asynchronous.
//
// Example:
//   QuestKernelOptions options{.bits = 4, .alpha = 2.513930578568423f, .maskScale = 16.f / 15};
//   QuestRows rows = questQuantize(x2d, options, /*wantMask=*/true, /*wantCodes=*/false);
//   questBackwardInPlace(grad2d, rows.mask, options);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace thinwire::kernels {

struct QuestKernelOptions {
  int64_t bits = 4;         // 1..8
  bool hadamard = true;     // rotate rows first (QuEST); false for plain STE rows
  bool rotateBack = false;  // Full variant: rotate the quantized rows back
  float alpha = 0;          // the Gaussian-optimal clip multiplier of `bits`
  float maskScale = 1;      // s of the trust mask
};

struct QuestRows {
  at::Tensor values;  // [rows, d] float32: the fake-quantized rows
  at::Tensor mask;    // [rows, d] bool, or undefined
  at::Tensor codes;   // [rows, d] int8 (rounded level - 1), or undefined
  at::Tensor steps;   // [rows] float32, or undefined
};

// `input`: contiguous float32 CUDA [rows, d] (d a multiple of 128 with hadamard). Throws
// InvalidArgument for bad tensors or options, Error on CUDA failures.
QuestRows questQuantize(const at::Tensor& input,
                        const QuestKernelOptions& options,
                        bool wantMask,
                        bool wantCodes);

// In place on `gradient` [rows, d]: Full ((G H) . M) H, Half (G . M) H, no rotation G . M; `mask`
// undefined means no masking (straight-through).
void questBackwardInPlace(at::Tensor& gradient,
                          const at::Tensor& mask,
                          const QuestKernelOptions& options);

// In place: every 128-block of every row of `data` [rows, d] multiplied by the normalised H128.
void blockHadamardInPlace(at::Tensor& data);

}  // namespace thinwire::kernels

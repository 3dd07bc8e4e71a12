// File: qat/cuda_rows.h
//
// The CUDA path of the QuEST row kernel (qat/quantizer.cc, Note [Row kernel]) and of the block
// Hadamard transform (qat/hadamard.cc), over thinwire::kernels: quantizer.cc and hadamard.cc call
// these when their fp32 working tensor is on a CUDA device and keep their CPU loops otherwise.
// Results match the CPU's bit for bit except in rows whose fp64 sum of squares rounds differently
// (see kernels/quest.h). Built without CUDA, every function throws InvalidArgument.
//
// Ownership: returns new CUDA tensors; the *InPlace functions write into the caller's tensor.
// Threading: thread-safe; kernels run on libtorch's current CUDA stream.
//
// Example (inside FakeQuantizeFunction::forward):
//   CudaRows rows = quantizeRowsOnCuda(input.view({n, d}), {.bits = 4}, true, false);
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace thinwire::qat {

struct CudaRowPlan {
  int64_t bits = 4;
  bool hadamard = true;
  bool rotateBack = false;
  float maskScale = 1.0f;
};

struct CudaRows {
  at::Tensor values;  // [rows, d] fp32
  at::Tensor mask;    // [rows, d] bool when asked for
  at::Tensor codes;   // [rows, d] int8 when asked for
  at::Tensor steps;   // [rows] fp32 when codes were asked for
};

// `input`: contiguous fp32 CUDA [rows, d].
CudaRows quantizeRowsOnCuda(const at::Tensor& input,
                            const CudaRowPlan& plan,
                            bool wantMask,
                            bool wantCodes);

// In place on `gradient` [rows, d]: Full ((G H) . M) H, Half (G . M) H, no rotation G . M; an
// undefined mask skips the masking.
void backwardRowsOnCudaInPlace(at::Tensor& gradient,
                               const at::Tensor& mask,
                               bool rotateBack,
                               bool hadamard);

// In place on `data` [rows, d], d a multiple of 128.
void hadamardRowsOnCudaInPlace(at::Tensor& data);

}  // namespace thinwire::qat

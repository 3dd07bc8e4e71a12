// File: qat/hadamard.h
//
// The block Walsh-Hadamard transform QuEST rotates rows with: the last dimension d (a multiple
// of 128) is cut into d/128 blocks and each block is multiplied by H128, the Sylvester
// (natural-order) Hadamard matrix normalised by 1/sqrt(128), H[i][j] = (-1)^popcount(i & j) /
// sqrt(128). H128 is symmetric and orthogonal, so the transform is its own inverse and
// preserves every row's RMS. Computed as a fast Walsh-Hadamard transform (7 butterfly stages,
// O(d log 128) per row, in SSE2 registers on x86-64), never as a dense matmul.
//
// Ownership: pure functions; the raw-pointer kernel works in place on memory the caller owns.
// Threading: thread-safe; blockHadamard() parallelises over rows with at::parallel_for.
//
// Example:
//   at::Tensor x = at::randn({4, 256});
//   at::Tensor u = qat::blockHadamard(x);           // x . blockdiag(H128, H128), differentiable
//   at::Tensor back = qat::blockHadamard(u);        // == x (H is an involution)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace thinwire::qat {

inline constexpr int64_t kHadamardBlock = 128;

// Transforms `length` floats at `data` in place, block by block (length % 128 == 0, checked by
// the callers). Blocking, no allocation.
void fwhtBlocksInPlace(float* data, int64_t length);

// Writes the transform of `length` floats at `source` to `target` (length % 128 == 0, checked by
// the callers); in place when the two are equal, otherwise they must not overlap. Bit for bit
// the result of copying and then calling fwhtBlocksInPlace: every butterfly adds and subtracts
// the same operands in the same stage, only the order of independent butterflies differs (see
// Note [Vector butterflies] in hadamard.cc). Blocking, no allocation.
void fwhtBlocks(const float* source, float* target, int64_t length);

// x . blockdiag(H128, ..., H128) over the last dimension. Any float dtype; the arithmetic is
// fp32 and the result has x's dtype. Differentiable: the gradient of the input is G . H (H is
// symmetric). Throws InvalidArgument when x is 0-D or its last dimension is not a multiple of 128.
at::Tensor blockHadamard(const at::Tensor& x);

}  // namespace thinwire::qat

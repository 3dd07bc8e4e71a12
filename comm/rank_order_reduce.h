// File: comm/rank_order_reduce.h
//
// The elementwise reduction the in-process (local) and TCP backends share, so that both give the
// same bits: contributions are combined in rank order 0..n-1 in the dtype's accumulate type
// (float for float16/bfloat16), and the result is cast once when it is written out; kAverage
// divides after that cast, as the MPI backend's average does.
//
// Threading: pure functions on the caller's tensors.
//
// Example:
//   std::vector<at::Tensor> parts = {rank0Block, rank1Block, rank2Block};   // same numel, dtype
//   at::Tensor sum = reduceInRankOrder(parts, ReduceOp::kAverage);
//   writeReduced(output, sum, ReduceOp::kAverage, /*worldSize=*/3);
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "comm/communicator.h"

namespace thinwire::comm {

// float for float16 and bfloat16, the dtype itself otherwise.
at::ScalarType accumulateType(at::ScalarType dtype);

// Elementwise op over `parts` (non-empty, equal numel and dtype, contiguous), adding in rank order
// in the accumulate type. kAverage sums here (writeReduced divides). Returns a new contiguous
// tensor in the accumulate type.
at::Tensor reduceInRankOrder(const std::vector<at::Tensor>& parts, ReduceOp op);

// Copies `reduced` (numel == output.numel()) into `output`, cast to output's dtype, then divides
// by worldSize for kAverage. `output` must be contiguous.
void writeReduced(at::Tensor output, const at::Tensor& reduced, ReduceOp op, int worldSize);

}  // namespace thinwire::comm

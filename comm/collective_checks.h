// File: comm/collective_checks.h
//
// Argument validation shared by every backend, so that all of them refuse the same calls with
// the same InvalidArgument messages before any communication starts (see the contract in
// comm/communicator.h). Each message names the collective, the offending value and what was
// expected, e.g. "allgather: output has 7 elements, expected worldSize (4) * input.numel() (2) =
// 8".
//
// Threading: pure functions of their arguments; call them on the issuing thread.
//
// Example:
//   std::unique_ptr<Work> MyCommunicator::allreduce(at::Tensor& inout,
//                                                   const AllreduceOptions& options) {
//     checkAllreduceArgs(inout, options.op);   // throws InvalidArgument
//     return queue_.submit(describeCollective("allreduce", sequence_++, inout), ...);
//   }
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace thinwire::comm {

// Throws InvalidArgument unless `tensor` is defined, on the CPU (or on a CUDA device, for
// backends that pass allowCuda: NCCL), contiguous and of a supported dtype. `op` and `name`
// ("allreduce", "inout") appear in the message.
void checkTensor(const char* op,
                 const char* name,
                 const at::Tensor& tensor,
                 bool allowCuda = false);

// Throws InvalidArgument for kAverage on a non-floating dtype.
void checkReduceOp(const char* op, ReduceOp reduceOp, at::ScalarType dtype);

// Throws InvalidArgument unless `counts` has worldSize entries, all >= 0. Returns their sum.
int64_t checkCounts(const char* op,
                    const char* name,
                    const std::vector<int64_t>& counts,
                    int worldSize);

// True when the byte ranges of `a` and `b` intersect (empty tensors never overlap).
bool overlaps(const at::Tensor& a, const at::Tensor& b);

// One check per collective of Communicator; each throws InvalidArgument naming the collective.
// allowCuda: the backend also takes CUDA tensors (NCCL).
void checkAllreduceArgs(const at::Tensor& inout, ReduceOp op, bool allowCuda = false);
void checkAllgatherArgs(const at::Tensor& input,
                        const at::Tensor& output,
                        int worldSize,
                        bool allowCuda = false);
void checkAllgathervArgs(const at::Tensor& input,
                         const at::Tensor& output,
                         const std::vector<int64_t>& counts,
                         int rank,
                         int worldSize,
                         bool allowCuda = false);
void checkAllToAllArgs(const at::Tensor& input,
                       const at::Tensor& output,
                       const std::vector<int64_t>& sendCounts,
                       const std::vector<int64_t>& recvCounts,
                       int worldSize,
                       bool allowCuda = false);
void checkReduceScatterArgs(const at::Tensor& input,
                            const at::Tensor& output,
                            const std::vector<int64_t>& counts,
                            ReduceOp op,
                            int rank,
                            int worldSize,
                            bool allowCuda = false);
void checkBroadcastArgs(const at::Tensor& inout, int root, int worldSize, bool allowCuda = false);

// "allreduce #12 of 4096 Float elements": the Work description used in timeout messages.
std::string describeCollective(const std::string& op, int64_t sequence, const at::Tensor& tensor);

// Exclusive prefix sums of `counts` (offsets of each rank's block).
std::vector<int64_t> offsetsOf(const std::vector<int64_t>& counts);

}  // namespace thinwire::comm

// File: comm/communicator.h
//
// The collective layer: a `Communicator` is a fixed group of ranks that run collectives on CPU
// tensors; every collective is asynchronous and returns a `Work` handle.
//
// Contract shared by every collective (see Note [Collective contract]):
//   - Every rank of the group calls the same collectives in the same order with the same sizes,
//     dtypes and options. Sizes that differ per rank are passed explicitly (`counts`).
//   - Tensors must be contiguous CPU tensors of a supported dtype: float32, float16, bfloat16,
//     int32, int64, uint8. Anything else throws InvalidArgument at the call, before any
//     communication.
//   - The caller keeps every tensor alive and does not read or write it until wait() on the
//     returned Work has returned (or isCompleted() is true).
//   - Operations issued by one caller thread complete in issue order.
//   - wait(timeout) blocks at most `timeout`; on expiry it throws TimeoutError. A failed operation
//     stores its error and wait() rethrows it (CommError). After any CommError or TimeoutError
//     the communicator is in an unknown state: call abort() and recreate it.
//
// Threading: one thread issues collectives on a given Communicator (the trainer's thread or the
// autograd thread it hands over to); wait()/isCompleted() may be called from any thread.
//
// Example:
//   std::unique_ptr<Communicator> comm = makeLocalWorld(4)[rank];   // or MpiCommunicator
//   at::Tensor grad = ...;                                            // same shape on all ranks
//   comm->allreduce(grad, {.op = ReduceOp::kAverage})->wait(kDefaultTimeout);
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/work.h"

namespace thinwire::comm {

// Default bound for every wait: long enough for 256 MB over a slow link, short enough that a dead
// peer is reported within minutes rather than never.
inline constexpr std::chrono::milliseconds kDefaultTimeout{std::chrono::seconds(300)};

enum class ReduceOp {
  kSum,      // elementwise sum
  kAverage,  // sum divided by worldSize(); floating-point dtypes only
  kMax,      // elementwise maximum
  kMin,      // elementwise minimum
};

std::string toString(ReduceOp op);

struct AllreduceOptions {
  ReduceOp op = ReduceOp::kSum;
};

struct ReduceScatterOptions {
  ReduceOp op = ReduceOp::kSum;
};

struct BroadcastOptions {
  int root = 0;
};

// Returns true for the dtypes every backend supports (see the file comment).
bool isSupportedDtype(at::ScalarType dtype);

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int worldSize() const = 0;
  // Short name of the backend: "mpi", "local", "nccl", "tcp".
  virtual std::string backendName() const = 0;

  // In place: every rank's `inout` (same numel and dtype everywhere) becomes op(all ranks' inout).
  [[nodiscard]] virtual std::unique_ptr<Work> allreduce(at::Tensor& inout,
                                                        const AllreduceOptions& options) = 0;

  // Equal sizes: `output` (numel = worldSize * input.numel()) receives rank r's input at offset
  // r * input.numel(). `input` and `output` must not overlap.
  [[nodiscard]] virtual std::unique_ptr<Work> allgather(const at::Tensor& input,
                                                        at::Tensor& output) = 0;

  // Variable sizes: rank r contributes counts[r] elements (counts identical on every rank,
  // counts[rank()] == input.numel()); `output` (numel = sum(counts)) receives rank r's input at
  // offset sum(counts[0..r)).
  [[nodiscard]] virtual std::unique_ptr<Work> allgatherv(const at::Tensor& input,
                                                         at::Tensor& output,
                                                         const std::vector<int64_t>& counts) = 0;

  // Variable sizes: `input` holds sendCounts[d] elements for destination d, in rank order;
  // `output` receives recvCounts[s] elements from source s, in rank order. sendCounts of rank s
  // towards d must equal recvCounts of rank d from s.
  [[nodiscard]] virtual std::unique_ptr<Work> allToAll(const at::Tensor& input,
                                                       at::Tensor& output,
                                                       const std::vector<int64_t>& sendCounts,
                                                       const std::vector<int64_t>& recvCounts) = 0;

  // `input` (numel = sum(counts), identical counts on every rank) is reduced elementwise across
  // ranks; rank r receives the reduced block r (counts[r] elements, offset sum(counts[0..r))) in
  // `output`. Blocks may be unequal and empty, so sizes not divisible by worldSize() work.
  [[nodiscard]] virtual std::unique_ptr<Work> reduceScatter(
      const at::Tensor& input,
      at::Tensor& output,
      const std::vector<int64_t>& counts,
      const ReduceScatterOptions& options) = 0;

  // In place: every rank's `inout` becomes the root's.
  [[nodiscard]] virtual std::unique_ptr<Work> broadcast(at::Tensor& inout,
                                                        const BroadcastOptions& options) = 0;

  // Completes once every rank has called barrier().
  [[nodiscard]] virtual std::unique_ptr<Work> barrier() = 0;

  // Unblocks pending operations (they fail with CommError) and, for process backends, ends the
  // whole job with a non-zero exit. The communicator is unusable afterwards. noexcept by design.
  virtual void abort(const std::string& reason) noexcept = 0;
};

// Note [Collective contract]
// Lock-step issue order is what lets backends match operations without tags: the k-th collective
// of every rank is the same operation. A data-dependent size (sparse top-k) is agreed first by an
// allgather of counts, then used by an allgatherv — two collectives, identical on every rank.

}  // namespace thinwire::comm

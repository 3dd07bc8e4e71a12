// File: comm/local/local_communicator.h
//
// The threads-as-ranks backend (gloo's test transport idea): makeLocalWorld(n) returns n
// communicators that share one in-memory rendezvous; rank r is driven by thread r. Used by the
// multirank test tier to run the real collective code paths without processes.
//
// Results are deterministic: reductions add the ranks' values in rank order 0..n-1 in the dtype's
// accumulate type (float for float16/bfloat16, the dtype itself otherwise), then cast once, so a
// single-process reference that sums in the same order matches bit for bit.
//
// Ownership: each returned communicator owns its worker thread; all of them share (own jointly)
// the rendezvous state, which lives until the last one is destroyed.
// Threading: as for every Communicator, one thread issues collectives per communicator; each
// communicator runs its collectives on its own worker thread, in issue order.
// Failure: every internal wait is bounded by LocalWorldOptions::timeout (TimeoutError naming the
// op and the missing ranks). abort() on any rank, a timeout, a mismatched collective or the
// destruction of a rank that others wait for breaks the whole world: every pending and later
// operation of every rank fails with CommError. Nothing ends the process.
//
// Example:
//   auto world = makeLocalWorld(4, {.timeout = std::chrono::seconds(30)});
//   std::vector<std::thread> threads;
//   for (int r = 0; r < 4; ++r) threads.emplace_back([&, r] {
//     at::Tensor t = at::full({8}, r);
//     world[r]->allreduce(t, {})->wait(kDefaultTimeout);   // every rank now holds 0+1+2+3
//   });
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/op_queue.h"

namespace thinwire::comm {

struct LocalWorldOptions {
  // Bound on every internal rendezvous wait (a rank waiting for the others to join an op).
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

class LocalWorld;

class LocalCommunicator : public Communicator {
 public:
  // Use makeLocalWorld(); `world` is shared by every rank of the group.
  LocalCommunicator(std::shared_ptr<LocalWorld> world, int rank);
  // Marks this rank as gone (ranks waiting for it fail with CommError), lets queued operations
  // finish or fail, and joins the worker thread.
  ~LocalCommunicator() override;

  int rank() const override { return rank_; }
  int worldSize() const override;
  std::string backendName() const override { return "local"; }

  [[nodiscard]] std::unique_ptr<Work> allreduce(at::Tensor& inout,
                                                const AllreduceOptions& options) override;
  [[nodiscard]] std::unique_ptr<Work> allgather(const at::Tensor& input,
                                                at::Tensor& output) override;
  [[nodiscard]] std::unique_ptr<Work> allgatherv(const at::Tensor& input,
                                                 at::Tensor& output,
                                                 const std::vector<int64_t>& counts) override;
  [[nodiscard]] std::unique_ptr<Work> allToAll(const at::Tensor& input,
                                               at::Tensor& output,
                                               const std::vector<int64_t>& sendCounts,
                                               const std::vector<int64_t>& recvCounts) override;
  [[nodiscard]] std::unique_ptr<Work> reduceScatter(const at::Tensor& input,
                                                    at::Tensor& output,
                                                    const std::vector<int64_t>& counts,
                                                    const ReduceScatterOptions& options) override;
  [[nodiscard]] std::unique_ptr<Work> broadcast(at::Tensor& inout,
                                                const BroadcastOptions& options) override;
  [[nodiscard]] std::unique_ptr<Work> barrier() override;

  // Breaks the whole local world: pending and later operations of every rank fail with
  // CommError naming this rank and `reason`. Does not end the process.
  void abort(const std::string& reason) noexcept override;

 private:
  std::shared_ptr<LocalWorld> world_;
  int rank_;
  int64_t sequence_ = 0;
  OpQueue queue_;
};

// Creates `worldSize` (>= 1, else InvalidArgument) communicators over one shared rendezvous;
// element r has rank r.
std::vector<std::unique_ptr<Communicator>> makeLocalWorld(int worldSize,
                                                          LocalWorldOptions options = {});

}  // namespace thinwire::comm

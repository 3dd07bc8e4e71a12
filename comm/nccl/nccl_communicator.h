// File: comm/nccl/nccl_communicator.h
//
// The NCCL backend: a Communicator over one ncclComm_t, one CUDA device per rank. Collectives take
// contiguous CUDA tensors of the rank's device (zero copy) or CPU tensors (staged through pinned
// host memory and device buffers, so the conformance suite and the CPU-side gradient buckets run
// unchanged); the dtypes and argument checks are every backend's (comm/collective_checks.h).
//
// Rendezvous: a world of one needs none. Otherwise rank 0 creates the ncclUniqueId and it reaches
// the others over a bootstrap Communicator (a broadcast of its 128 bytes; MPI under mpirun, see
// makeCommunicator) or over a Store (comm/store.h) under a key, waited for with the timeout.
//
// Note [NCCL stream ordering]
// Every operation runs on the communicator's own non-blocking CUDA stream, in issue order. At the
// call it waits (cudaStreamWaitEvent, no host block) for the work queued so far on the caller's
// current stream (libtorch's current CUDA stream of the device; the legacy default stream when
// libtorch has no CUDA), so a CUDA tensor is read only after the kernels that produced it. wait()
// blocks the host until the operation's completion event has fired (polling it, and NCCL's
// asynchronous error, at most `timeout`) and then makes the caller's current stream wait for that
// event, so later kernels see the result. Staged CPU tensors are copied back on completion, before
// wait() or isCompleted() returns. kAverage divides on the device with ncclAvg for CUDA tensors
// (NCCL scales before it sums: last-bit differences from sum-then-divide are possible for world
// sizes that are not powers of two) and after an exact sum for staged CPU tensors.
//
// Errors: every NCCL and CUDA return code is converted where it is called into a CommError naming
// the call, the NCCL version and rank/worldSize (TW_NCCL_CHECK / TW_CUDA_CHECK in the .cc); an
// asynchronous NCCL error is stored in the Work and rethrown by wait(). After a CommError or
// TimeoutError the communicator is in an unknown state: abort() it.
//
// Ownership: owns its ncclComm_t, stream and bootstrap communicator (if any), released in reverse
// order by the destructor, which first waits for queued work (bounded by the timeout).
// Threading: one thread issues collectives; wait()/isCompleted() from any thread.
//
// Example:
//   NcclCommunicator comm(NcclCommunicatorOptions{.device = 0});          // world of one
//   at::Tensor grad = at::ones({1024}, at::device(at::kCUDA));
//   comm.allreduce(grad, {.op = ReduceOp::kAverage})->wait(kDefaultTimeout);
//   NcclCommunicator world(std::move(mpiCommunicator), {.device = localRank});   // n ranks
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/store.h"

namespace thinwire::comm {

struct NcclCommunicatorOptions {
  int device = 0;                                       // CUDA device of this rank
  std::chrono::milliseconds timeout = kDefaultTimeout;  // rendezvous and destructor bound
  std::string storeKey = "nccl/unique_id";              // Store rendezvous: the id's key
};

class NcclCommunicator : public Communicator {
 public:
  // A world of one rank on options.device. Blocking (creates the NCCL communicator). Throws
  // CommError when CUDA or NCCL fail (no device, no driver).
  explicit NcclCommunicator(const NcclCommunicatorOptions& options = {});
  // rank and worldSize are the bootstrap's; rank 0's unique id is broadcast over it. Owns the
  // bootstrap (an MPI communicator keeps MPI initialised while this lives). Blocking and
  // collective over the bootstrap; InvalidArgument for a null bootstrap.
  NcclCommunicator(std::unique_ptr<Communicator> bootstrap, const NcclCommunicatorOptions& options);
  // Rendezvous over `store` (borrowed for the constructor only): rank 0 sets options.storeKey,
  // the others get it within options.timeout (TimeoutError otherwise).
  NcclCommunicator(Store& store, int rank, int worldSize, const NcclCommunicatorOptions& options);
  ~NcclCommunicator() override;

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int worldSize() const override { return worldSize_; }
  std::string backendName() const override { return "nccl"; }
  int device() const { return options_.device; }
  // "2.28.9": the NCCL library's version (ncclGetVersion).
  static std::string ncclVersion();

  // All collectives: validated at the call (InvalidArgument, before anything is enqueued),
  // asynchronous (see Note [NCCL stream ordering]). allgatherv is one ncclBroadcast per rank,
  // allToAll ncclSend/ncclRecv pairs, reduceScatter one ncclReduce per block, all in one NCCL
  // group; an output that overlaps the input is read from a copy of the input first.
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

  // Logs `reason`, aborts the NCCL communicator (pending operations fail) and ends the process
  // with exit code 1, so that no rank waits on this one. Callable from any thread.
  void abort(const std::string& reason) noexcept override;

 private:
  struct State;   // NCCL and CUDA handles; defined in the .cc to keep nccl.h private to comm
  struct Staged;  // one operation's device view of its tensors

  void initialise(const std::vector<uint8_t>& uniqueId);
  // Enqueues `body` on the stream between the staging copies and returns its Work.
  std::unique_ptr<Work> run(
      const std::string& description,
      std::vector<at::Tensor> inputs,
      std::vector<at::Tensor> outputs,
      int64_t averageDivisor,
      const std::function<void(const std::vector<void*>&, const std::vector<void*>&)>& body);

  NcclCommunicatorOptions options_;
  std::unique_ptr<Communicator> bootstrap_;
  std::unique_ptr<State> state_;
  int rank_ = 0;
  int worldSize_ = 1;
  int64_t sequence_ = 0;
};

}  // namespace thinwire::comm

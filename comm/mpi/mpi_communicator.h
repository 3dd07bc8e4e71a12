// File: comm/mpi/mpi_communicator.h
//
// The MPI backend: a Communicator over a private duplicate of MPI_COMM_WORLD (so thinwire's
// traffic never matches anyone else's), with MPI_ERRORS_RETURN so that every MPI error becomes a
// CommError at the call site (TW_MPI_CHECK). float16/bfloat16 travel as 2-byte MPI datatypes and
// are reduced by user-defined MPI ops that compute in float.
//
// Ownership: shares ownership of the MpiEnvironment it is built from (MPI stays initialised while
// any communicator lives). Owns its worker thread and its MPI handles (communicator, datatypes,
// ops), which are released on the worker thread by the destructor.
// Threading: every MPI call of a communicator runs on its worker thread, in issue order, so the
// issuing thread overlaps computation with blocking MPI collectives. Several communicators may
// run at once only with MPI_THREAD_MULTIPLE (checked at construction).
// Failure policy: wait() timeouts and CommErrors leave MPI in an unknown state; the caller then
// calls abort(), which ends the whole job with a non-zero exit (MPI_Abort) so that no rank hangs.
//
// Example:
//   auto environment = std::make_shared<MpiEnvironment>();
//   MpiCommunicator comm(environment);
//   std::unique_ptr<Work> work = comm.allreduce(grad, {.op = ReduceOp::kAverage});
//   computeSomethingElse();
//   work->wait(kDefaultTimeout);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "comm/op_queue.h"

namespace thinwire::comm {

struct MpiCommunicatorOptions {
  // allreduce of a float32 tensor with op kSum/kAverage and at least this many bytes runs
  // thinwire's ring (see Note [Ring allreduce] in the .cc) instead of MPI_Allreduce; 0 = never.
  // The default is where the ring measured faster than Open MPI 4.1's own choice on TCP links.
  int64_t ringMinBytes = int64_t{64} << 10;
};

class MpiCommunicator : public Communicator {
 public:
  // Blocking and collective over MPI_COMM_WORLD (MPI_Comm_dup): every process constructs its
  // communicators in the same order. Throws InvalidArgument for a null environment, CommError
  // when MPI fails or when a second communicator is created without MPI_THREAD_MULTIPLE.
  explicit MpiCommunicator(std::shared_ptr<MpiEnvironment> environment,
                           const MpiCommunicatorOptions& options = {});
  // Lets queued operations finish, frees the MPI handles on the worker thread and joins it.
  // Does not wait for peers beyond what already queued operations need.
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int worldSize() const override { return worldSize_; }
  std::string backendName() const override { return "mpi"; }

  // All collectives: validated at the call (InvalidArgument, also for element counts or
  // offsets above INT_MAX, MPI's count type), then run asynchronously on the worker thread.
  // allreduce works in place on the tensor's memory: one MPI_Allreduce with MPI_IN_PLACE, or for
  // large float32 sums the ring (MpiCommunicatorOptions::ringMinBytes), which needs one extra
  // buffer of size/n. kAverage divides the sum in place afterwards. allToAll and reduceScatter
  // accept an output that overlaps the input (the input is copied first, as MPI forbids aliasing).
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

  // Logs `reason` to stderr, then MPI_Abort(comm, 1): the whole job ends with a non-zero exit.
  // Callable from any thread; does not return in practice.
  void abort(const std::string& reason) noexcept override;

 private:
  struct Handles;  // MPI objects; defined in the .cc to keep <mpi.h> private to comm

  // Runs on the worker thread: ring reduce-scatter then ring allgather, in place (float32 sum).
  void ringAllreduce(at::Tensor& inout);
  // Waits for `count` MPI_Requests (typed void* to keep <mpi.h> out of this header), testing
  // and sleeping instead of spinning (Note [Polite waits]).
  void waitPolitely(void* requests, int count);

  std::shared_ptr<MpiEnvironment> environment_;
  MpiCommunicatorOptions options_;
  std::unique_ptr<Handles> handles_;
  std::vector<float> ringScratch_;  // reduce-scatter receive rows; worker thread only
  int ringSegmentFloats_ = 8192;    // fixed by the first large ring (Note [Ring segments])
  bool ringSegmentsChosen_ = false;
  int measuredRings_ = 0;
  double fastestRingBytesPerSecond_ = 0;
  int rank_ = 0;
  int worldSize_ = 1;
  int64_t sequence_ = 0;
  OpQueue queue_;  // declared last: stopped and joined before the handles go away
};

}  // namespace thinwire::comm

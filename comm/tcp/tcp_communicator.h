// File: comm/tcp/tcp_communicator.h
//
// The TCP backend: a Communicator that needs no MPI. Ranks find each other through a rendezvous
// comm::Store (a TcpStore on rank 0's TcpStoreServer, see comm/tcp/tcp_store.h), then talk over a
// full mesh of TCP connections (Boost.Asio, TCP_NODELAY). This is what lets a job whose processes
// were started by plain `srun`, a scheduler without MPI support or by hand run thinwire.
//
// Results are deterministic and identical on every rank: allreduce is a reduce-scatter in which
// the owner of each block adds the ranks' contributions in rank order 0..n-1 (in the dtype's
// accumulate type, as the local backend does), followed by an allgather of the finished blocks,
// so a float allreduce equals the local backend's bit for bit (Note [TCP collectives] in the .cc).
//
// Ownership: borrows the Store only during construction (the rendezvous); owns its sockets, its
// io_context and its worker thread (an OpQueue). The destructor lets queued operations finish,
// then closes every connection.
// Threading: one thread issues collectives; all socket I/O runs on the worker thread, so the
// issuing thread overlaps computation with communication. abort() may be called from any thread.
// Failure: every connect, accept, read and write is bounded by options.timeout. A peer that
// closes its connection fails the running operation with CommError, a peer that stays silent
// with TimeoutError; both name the peer rank and the collective. After either the communicator
// is broken: later operations fail at once with CommError.
//
// Example:
//   TcpStore store({.host = "10.0.0.1", .port = 29500});
//   TcpCommunicator comm(store, {.rank = rank, .worldSize = 4, .listenHost = "10.0.0.7"});
//   comm.allreduce(grad, {.op = ReduceOp::kAverage})->wait(kDefaultTimeout);
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/op_queue.h"
#include "comm/store.h"

namespace thinwire::comm {

struct TcpCommunicatorOptions {
  int rank = 0;
  int worldSize = 1;
  // Bound on the rendezvous (waiting for every rank's address, connecting and accepting) and on
  // every collective's socket I/O (measured from the start of each exchange step).
  std::chrono::milliseconds timeout = kDefaultTimeout;
  // The IP address this rank listens on (on an ephemeral port). Loopback unless the ranks run on
  // several hosts; "0.0.0.0" listens on every interface (then set advertiseHost).
  std::string listenHost = "127.0.0.1";
  // The host name or address peers connect to; "" = listenHost.
  std::string advertiseHost;
  // Store keys are "<keyPrefix>/address/<rank>": give each communicator of a job its own prefix.
  std::string keyPrefix = "tcp";
  // abort() ends the process with exit code 1 after closing the connections (what a rank of a
  // real job needs: no peer may keep waiting). false for ranks that are threads of one test.
  bool exitOnAbort = true;
  // Elements above this many bytes are reduced in pieces of about this size, which bounds the
  // receive scratch memory of an allreduce (Note [TCP collectives]). Must be > 0.
  int64_t segmentBytes = int64_t{16} << 20;
};

class TcpCommunicator : public Communicator {
 public:
  // Blocking, collective over the ranks that share `store` and options.keyPrefix: listens,
  // publishes "host:port" under "<keyPrefix>/address/<rank>", waits for every rank's address,
  // and connects the mesh (the higher rank of each pair connects, the lower accepts; the first
  // bytes name the connecting rank, which is checked). Throws InvalidArgument for a bad
  // rank/worldSize/timeout, TimeoutError naming the ranks that did not appear within
  // options.timeout, CommError when a socket cannot be bound, connected or identified.
  TcpCommunicator(Store& store, TcpCommunicatorOptions options);
  // Lets queued operations finish (or fail), joins the worker, then closes every connection.
  ~TcpCommunicator() override;

  TcpCommunicator(const TcpCommunicator&) = delete;
  TcpCommunicator& operator=(const TcpCommunicator&) = delete;

  int rank() const override { return options_.rank; }
  int worldSize() const override { return options_.worldSize; }
  std::string backendName() const override { return "tcp"; }

  // All collectives: validated at the call (collective_checks.h, InvalidArgument), then run
  // asynchronously on the worker thread. allreduce and broadcast work in place; kAverage divides
  // the rank-order sum afterwards (in the tensor's dtype), as every backend does. allToAll and
  // reduceScatter accept an output that overlaps the input (the input is read before any output
  // is written). Scratch memory: an allreduce or reduceScatter receives the other ranks' blocks
  // of at most options.segmentBytes at a time.
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

  // Logs `reason` to stderr and shuts every connection down, so pending operations here fail
  // with CommError and every peer sees this rank close. With options.exitOnAbort (the default)
  // it then ends the process with exit code 1 and does not return. Callable from any thread.
  void abort(const std::string& reason) noexcept override;

 private:
  class Mesh;       // the sockets and their io_context; defined in the .cc (Boost.Asio stays there)
  struct Transfer;  // one point-to-point piece of an exchange step

  // Runs on the worker thread: one step in which every transfer runs concurrently. Each peer
  // appears at most once per direction. Throws CommError / TimeoutError naming the peer.
  void exchange(const std::string& what, const std::vector<Transfer>& transfers);
  // Throws CommError when the communicator is broken (an earlier failure or abort()).
  void checkUsable(const std::string& what) const;
  void markBroken(const std::string& reason);
  // Construction: listen, publish, wait for every address, connect and accept.
  void connectMesh(Store& store);
  // Worker thread: the bodies of the collectives (Note [TCP collectives]).
  void runAllreduce(const std::string& what, at::Tensor& inout, ReduceOp op);
  void runReduceScatter(const std::string& what,
                        const at::Tensor& input,
                        at::Tensor& output,
                        const std::vector<int64_t>& counts,
                        ReduceOp op);
  void runGather(const std::string& what,
                 const at::Tensor& input,
                 at::Tensor& output,
                 const std::vector<int64_t>& counts);

  TcpCommunicatorOptions options_;
  std::unique_ptr<Mesh> mesh_;
  mutable std::mutex brokenMutex_;
  std::string brokenReason_;  // "" while usable
  std::atomic<bool> broken_{false};
  int64_t sequence_ = 0;  // issuing thread
  int64_t step_ = 0;      // worker thread: exchange steps so far, checked by the receiver
  at::Tensor scratch_;    // worker thread: receive rows of reductions, reused
  OpQueue queue_;         // declared last: stopped and joined before the mesh goes away
};

}  // namespace thinwire::comm

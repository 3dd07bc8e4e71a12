// File: comm/make_communicator.h
//
// The one place that turns a backend choice into this process's Communicator (an explicit switch
// over CommunicatorOptions::Backend, no registry).
//
// Ownership: the caller owns the returned communicator. For kMpi the communicator shares
// ownership of a fresh MpiEnvironment, so MPI stays initialised exactly as long as the
// communicator lives and MPI_Finalize runs when it is destroyed: destroy it on the main thread,
// at the end of the process. A process that needs several MPI communicators builds one
// std::make_shared<MpiEnvironment>() itself and constructs each MpiCommunicator from it.
// Threading: call on the main thread.
//
// Example:
//   CommunicatorOptions options;
//   options.backend = parseBackend(config.comm.backend);   // "mpi" or "local"
//   std::unique_ptr<Communicator> comm = makeCommunicator(options);
//   comm->allreduce(grad, {.op = ReduceOp::kAverage})->wait(options.timeout);
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace thinwire::comm {

struct CommunicatorOptions {
  enum class Backend {
    kMpi,    // one rank per process, over MPI_COMM_WORLD (launched by mpirun or srun)
    kLocal,  // a single-rank local world: runs without MPI or a launcher
    kNccl,   // NCCL over the CUDA device localRank % devices; the id travels over MPI when the
             // launcher started several ranks (THINWIRE_WITH_CUDA builds only)
  };
  Backend backend = Backend::kMpi;
  // kLocal: bound on its internal waits. Callers also pass it to Work::wait().
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

// Parses "mpi" | "local" | "nccl"; throws InvalidArgument naming the value otherwise.
CommunicatorOptions::Backend parseBackend(const std::string& name);
std::string toString(CommunicatorOptions::Backend backend);

// Blocking (kMpi initialises MPI if needed and duplicates MPI_COMM_WORLD, collectively). Throws
// CommError when MPI cannot be initialised.
std::unique_ptr<Communicator> makeCommunicator(const CommunicatorOptions& options);

}  // namespace thinwire::comm

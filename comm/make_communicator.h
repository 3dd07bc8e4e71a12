// File: comm/make_communicator.h
//
// The one place that turns a backend choice into this process's Communicator (an explicit switch
// over CommunicatorOptions::Backend, no registry).
//
// Ownership: the caller owns the returned communicator. For kTcp the rendezvous store lives only
// while the communicator is built (rank 0 serves it, every rank is a client; see makeCommunicator).
// For kMpi the communicator shares
// ownership of a fresh MpiEnvironment, so MPI stays initialised exactly as long as the
// communicator lives and MPI_Finalize runs when it is destroyed: destroy it on the main thread,
// at the end of the process. A process that needs several MPI communicators builds one
// std::make_shared<MpiEnvironment>() itself and constructs each MpiCommunicator from it.
// Threading: call on the main thread.
//
// Example:
//   CommunicatorOptions options;
//   options.backend = parseBackend(config.comm.backend);   // "mpi", "local", "nccl" or "tcp"
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
    kNccl,   // NCCL over the CUDA device localRank % devices (THINWIRE_WITH_CUDA builds only);
             // several ranks exchange the id through the rendezvous store at
             // WorldInfo::storeAddress when set (THINWIRE_STORE, no MPI needed), else over MPI
    kTcp,    // one rank per process over TCP sockets, no MPI: bootstrapped through a rendezvous
             // store at WorldInfo::storeAddress (THINWIRE_STORE), any launcher (srun, by hand)
  };
  Backend backend = Backend::kMpi;
  // kLocal, kTcp: bound on internal waits (kTcp: the rendezvous and every socket operation).
  // Callers also pass it to Work::wait().
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

// Parses "mpi" | "local" | "nccl" | "tcp"; throws InvalidArgument naming the value otherwise.
CommunicatorOptions::Backend parseBackend(const std::string& name);
std::string toString(CommunicatorOptions::Backend backend);

// Blocking (kMpi initialises MPI if needed and duplicates MPI_COMM_WORLD, collectively). Throws
// CommError when MPI cannot be initialised.
// kTcp, collective over the WorldInfo::fromEnvironment() ranks: rank 0 serves the rendezvous
// store on the port of storeAddress (bound to its host when that is an IP address, else to every
// interface), every rank connects to it, publishes its own listening address and connects the
// mesh; a final barrier proves every rank is done with the store before rank 0 stops serving
// it. Ranks listen on loopback when the store host is a loopback address or every rank is on
// this host, else on the address that routes to the store host. A single rank needs no store
// address. Throws ConfigError when several ranks have no store address (naming the variables
// to set), CommError when the store port cannot be bound, TimeoutError when a rank does not
// appear within options.timeout.
std::unique_ptr<Communicator> makeCommunicator(const CommunicatorOptions& options);

}  // namespace thinwire::comm

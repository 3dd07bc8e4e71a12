// File: comm/mpi/mpi_environment.h
//
// RAII ownership of MPI initialisation for the process. Constructing an MpiEnvironment calls
// MPI_Init_thread (requesting MPI_THREAD_MULTIPLE, accepting MPI_THREAD_SERIALIZED) unless MPI is
// already initialised; destroying the environment that initialised MPI calls MPI_Finalize.
//
// Ownership: hold it in a std::shared_ptr. Every MpiCommunicator shares ownership of the
// environment it was built from, so MPI stays initialised until the last communicator and the
// last other holder are gone. Create one environment per process (in main()) and build every
// communicator from it; an environment constructed while MPI is already initialised (by another
// environment or by the host program) never finalises.
// Threading: construct and destroy it on the process's main thread (MPI_Finalize must run on the
// thread that initialised MPI); threadLevel() may be called from any thread.
//
// Example:
//   auto environment = std::make_shared<MpiEnvironment>();
//   MpiCommunicator comm(environment);
//   comm.allreduce(grad, {})->wait(kDefaultTimeout);
#pragma once

#include <atomic>
#include <string>

namespace thinwire::comm {

class MpiEnvironment {
 public:
  // Blocking (MPI_Init_thread is collective over the job). Throws CommError if MPI was already
  // finalised, if initialisation fails, or if the provided thread level is below
  // MPI_THREAD_SERIALIZED (thinwire calls MPI from a worker thread, never concurrently per
  // communicator).
  MpiEnvironment();
  // Calls MPI_Finalize if this environment initialised MPI and it is not finalised yet. noexcept:
  // a failure is logged to stderr.
  ~MpiEnvironment();

  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  // The thread support level MPI provided (MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE).
  int threadLevel() const { return threadLevel_; }
  // True when MPI_THREAD_MULTIPLE is available, i.e. several communicators may run at once.
  bool threadMultiple() const;
  // True when this object initialised MPI (and will finalise it).
  bool ownsInitialization() const { return ownsInitialization_; }

  // First line of MPI_Get_library_version(), e.g. "Open MPI v4.1.4, ...". Callable any time.
  static std::string libraryVersion();

 private:
  friend class MpiCommunicator;

  int threadLevel_ = 0;
  bool ownsInitialization_ = false;
  // Communicators built from this environment; more than one needs MPI_THREAD_MULTIPLE.
  std::atomic<int> liveCommunicators_{0};
};

}  // namespace thinwire::comm

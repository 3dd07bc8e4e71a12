// File: comm/mpi/mpi_check.h
//
// TW_MPI_CHECK converts an MPI error code into a thinwire::CommError at the call site. The
// message names the call, file:line, rank/worldSize, MPI's error string and the MPI library
// version. Communicators use MPI_ERRORS_RETURN so that codes reach this check instead of
// aborting inside MPI.
//
// Threading: thread-safe (only queries MPI).
//
// Example:
//   TW_MPI_CHECK(MPI_Barrier(comm));   // throws CommError "MPI_Barrier(comm) failed on rank 1/4:
//                                      // MPI_ERR_COMM: invalid communicator (Open MPI v4.1.4...)"
#pragma once

#include <mpi.h>

#include <string>

#include "base/error.h"

namespace thinwire::comm {

// "<call> failed on rank r/n: <MPI error string> (<MPI library version>)".
std::string describeMpiError(const char* call, int code);

}  // namespace thinwire::comm

#define TW_MPI_CHECK(call)                                                       \
  do {                                                                           \
    const int twMpiCode = (call);                                                \
    if (twMpiCode != MPI_SUCCESS) {                                              \
      TW_THROW(CommError, ::thinwire::comm::describeMpiError(#call, twMpiCode)); \
    }                                                                            \
  } while (false)

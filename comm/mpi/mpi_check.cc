#include "comm/mpi/mpi_check.h"

#include "comm/mpi/mpi_environment.h"

namespace thinwire::comm {

std::string describeMpiError(const char* call, int code) {
  char message[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  std::string errorText = MPI_Error_string(code, message, &length) == MPI_SUCCESS
                              ? std::string(message, length > 0 ? length : 0)
                              : "MPI error code " + std::to_string(code);
  int rank = -1;
  int worldSize = -1;
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &worldSize);
  }
  return detail::concat(call, " failed on rank ", rank, "/", worldSize, ": ", errorText, " (",
                        MpiEnvironment::libraryVersion(), ")");
}

}  // namespace thinwire::comm

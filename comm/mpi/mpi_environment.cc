#include "comm/mpi/mpi_environment.h"

#include <mpi.h>

#include <iostream>

#include "base/error.h"
#include "comm/mpi/mpi_check.h"

namespace thinwire::comm {
namespace {

const char* threadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return "unknown";
  }
}

}  // namespace

MpiEnvironment::MpiEnvironment() {
  int finalized = 0;
  TW_MPI_CHECK(MPI_Finalized(&finalized));
  if (finalized) {
    TW_THROW(CommError,
             "MPI was already finalised in this process; MPI cannot be initialised "
             "twice (keep one MpiEnvironment alive for the whole process)");
  }
  int initialized = 0;
  TW_MPI_CHECK(MPI_Initialized(&initialized));
  if (initialized) {
    TW_MPI_CHECK(MPI_Query_thread(&threadLevel_));
  } else {
    TW_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &threadLevel_));
    ownsInitialization_ = true;
  }
  if (threadLevel_ < MPI_THREAD_SERIALIZED) {
    std::string provided = threadLevelName(threadLevel_);
    if (ownsInitialization_) MPI_Finalize();
    TW_THROW(CommError, "MPI provides thread level ", provided,
             ", expected at least MPI_THREAD_SERIALIZED (thinwire runs MPI on a worker thread); ",
             libraryVersion());
  }
}

MpiEnvironment::~MpiEnvironment() {
  if (!ownsInitialization_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  int code = MPI_Finalize();
  if (code != MPI_SUCCESS) {
    std::cerr << "thinwire: " << describeMpiError("MPI_Finalize()", code) << "\n";
  }
}

bool MpiEnvironment::threadMultiple() const { return threadLevel_ >= MPI_THREAD_MULTIPLE; }

std::string MpiEnvironment::libraryVersion() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  if (MPI_Get_library_version(version, &length) != MPI_SUCCESS) return "unknown MPI library";
  std::string text(version, length > 0 ? length : 0);
  size_t newline = text.find_first_of("\r\n");
  if (newline != std::string::npos) text.resize(newline);
  while (!text.empty() && (text.back() == '\0' || text.back() == ' ')) text.pop_back();
  return text;
}

}  // namespace thinwire::comm

// gtest main for the MPI test tier, shared by every module's mpi test binary: initialises MPI once
// for the process, runs every test on every rank, and makes every rank exit non-zero when any
// assertion failed on any rank. Ranks other than 0 print only their failures (prefixed with the
// rank) to keep the log readable.
#include <gtest/gtest.h>
#include <mpi.h>

#include <iostream>
#include <memory>

#include "comm/mpi/mpi_environment.h"

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::cerr << "[rank " << rank_ << "] " << (result.file_name() ? result.file_name() : "?") << ":"
              << result.line_number() << ": " << result.message() << "\n";
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  int failed = 1;
  {
    auto environment = std::make_shared<thinwire::comm::MpiEnvironment>();
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    ::testing::InitGoogleTest(&argc, argv);
    if (rank != 0) {
      ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
      delete listeners.Release(listeners.default_result_printer());
      listeners.Append(new RankFailurePrinter(rank));
    }
    int localFailed = RUN_ALL_TESTS() != 0 ? 1 : 0;
    MPI_Allreduce(&localFailed, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0 && failed) std::cerr << argv[0] << ": a test failed on at least one rank\n";
  }
  return failed;
}

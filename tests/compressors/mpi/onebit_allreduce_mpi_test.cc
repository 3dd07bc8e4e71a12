// OneBitAllreduce on the MPI backend against the single-process reference of specs §5.2
// (tests/compressors/onebit_cases.h). Started by ctest as `mpiexec -n N compressors_mpi_tests`
// for N in 1, 2, 3, 4, 7; every rank runs every case.
#include <gtest/gtest.h>

#include <memory>

#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "tests/compressors/onebit_cases.h"

namespace thinwire::compressors {
namespace {

TEST(MpiOneBitAllreduceTest, MatchesReferenceBitForBit) {
  // main() holds the live MPI environment; this one shares it and never finalises MPI.
  comm::MpiCommunicator comm(std::make_shared<comm::MpiEnvironment>());
  ::thinwire::testing::runOneBitAllreduceCase(comm, {.masked = false});
}

TEST(MpiOneBitAllreduceTest, MaskedMatchesReferenceBitForBit) {
  comm::MpiCommunicator comm(std::make_shared<comm::MpiEnvironment>());
  ::thinwire::testing::runOneBitAllreduceCase(comm, {.masked = true});
}

}  // namespace
}  // namespace thinwire::compressors

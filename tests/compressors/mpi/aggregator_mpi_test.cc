// Runs the aggregator suite (tests/compressors/aggregator_cases.h) on the MPI backend. Started by
// ctest as `mpiexec -n N compressors_mpi_tests` for N in 1, 2, 3, 4, 7; every rank runs every
// case.
#include <gtest/gtest.h>

#include <memory>

#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "tests/compressors/aggregator_cases.h"

namespace thinwire::compressors {
namespace {

using testing::AggregatorCase;
using testing::aggregatorCases;

class MpiAggregatorTest : public ::testing::TestWithParam<AggregatorCase> {};

TEST_P(MpiAggregatorTest, MatchesSingleProcessReference) {
  // main() holds the live MPI environment; this one shares it and never finalises MPI.
  comm::MpiCommunicator comm(std::make_shared<comm::MpiEnvironment>());
  testing::runAggregatorCase(GetParam(), comm);
}

INSTANTIATE_TEST_SUITE_P(AllCases,
                         MpiAggregatorTest,
                         ::testing::ValuesIn(aggregatorCases()),
                         [](const ::testing::TestParamInfo<AggregatorCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace thinwire::compressors

// L-GreCo on the MPI backend: after every step of a run with re-solves every few steps, all
// ranks hold the same per-layer settings and report (tests/compressors/layerwise_cases.h), for
// top-k, quantize and PowerSGD. Started with the aggregator suite by the same mpiexec lines.
#include <gtest/gtest.h>

#include <memory>

#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "tests/compressors/layerwise_cases.h"

namespace thinwire::compressors {
namespace {

class MpiLayerwiseTest : public ::testing::TestWithParam<LayerwiseFamily> {};

TEST_P(MpiLayerwiseTest, AllRanksHoldTheSameSettingsAfterEverySolve) {
  comm::MpiCommunicator comm(std::make_shared<comm::MpiEnvironment>());
  EXPECT_EQ(testing::runLayerwiseAgreement(comm, GetParam(), 12), 2);  // solves at 6 and 10
}

INSTANTIATE_TEST_SUITE_P(Families,
                         MpiLayerwiseTest,
                         ::testing::Values(LayerwiseFamily::kTopK,
                                           LayerwiseFamily::kQuantize,
                                           LayerwiseFamily::kLowRank));

}  // namespace
}  // namespace thinwire::compressors

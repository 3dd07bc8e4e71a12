// Runs the backend conformance suite (tests/comm/conformance_cases.h) on the MPI backend. Started
// by ctest as `mpiexec -n N comm_mpi_tests` for N in 1, 2, 3, 4, 7; every rank runs every test.
#include <gtest/gtest.h>
#include <mpi.h>

#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "tests/comm/conformance_cases.h"

namespace thinwire::comm {
namespace {

using testing::ConformanceCase;
using testing::conformanceCases;

// The MPI environment that main() created is live; this one shares the initialised MPI and
// never finalises it.
std::unique_ptr<Communicator> makeWorldCommunicator() {
  return std::make_unique<MpiCommunicator>(std::make_shared<MpiEnvironment>());
}

class MpiConformanceTest : public ::testing::TestWithParam<ConformanceCase> {};

TEST_P(MpiConformanceTest, MatchesSingleProcessReference) {
  std::unique_ptr<Communicator> comm = makeWorldCommunicator();
  EXPECT_EQ(comm->backendName(), "mpi");
  GetParam().run(*comm);
}

INSTANTIATE_TEST_SUITE_P(AllCases,
                         MpiConformanceTest,
                         ::testing::ValuesIn(conformanceCases()),
                         [](const ::testing::TestParamInfo<ConformanceCase>& info) {
                           return info.param.name;
                         });

TEST(MpiCommunicatorTest, MatchesTheLauncherWorld) {
  std::unique_ptr<Communicator> comm = makeWorldCommunicator();
  int rank = -1;
  int worldSize = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &worldSize);
  EXPECT_EQ(comm->rank(), rank);
  EXPECT_EQ(comm->worldSize(), worldSize);
}

TEST(MpiCommunicatorTest, SeveralCommunicatorsRunIndependently) {
  auto environment = std::make_shared<MpiEnvironment>();
  ASSERT_TRUE(environment->threadMultiple()) << MpiEnvironment::libraryVersion();
  MpiCommunicator first(environment);
  MpiCommunicator second(environment);
  at::Tensor a = at::full({1000}, first.rank() + 1, at::kLong);
  at::Tensor b = at::full({10}, 2 * second.rank(), at::kLong);
  std::unique_ptr<Work> workB = second.allreduce(b, {.op = ReduceOp::kMax});
  std::unique_ptr<Work> workA = first.allreduce(a, {});
  workA->wait(testing::kTestTimeout);
  workB->wait(testing::kTestTimeout);
  const int64_t n = first.worldSize();
  EXPECT_TRUE(at::equal(a, at::full({1000}, n * (n + 1) / 2, at::kLong)));
  EXPECT_TRUE(at::equal(b, at::full({10}, 2 * (n - 1), at::kLong)));
}

TEST(MpiCommunicatorTest, CountsAboveIntMaxAreRejectedAtTheCall) {
  std::unique_ptr<Communicator> comm = makeWorldCommunicator();
  at::Tensor input = at::zeros({1}, at::kFloat);
  at::Tensor output = at::zeros({1}, at::kFloat);
  std::vector<int64_t> counts(comm->worldSize(), 0);
  counts[comm->rank()] = 1;
  counts[(comm->rank() + 1) % comm->worldSize()] += int64_t{3} << 31;
  try {
    (void)comm->allgatherv(input, output, counts);
    ADD_FAILURE() << "allgatherv accepted a count above INT_MAX";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("allgatherv"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace thinwire::comm

namespace thinwire::comm {
namespace {

// Run only by the comm_mpi_abort_ends_the_job ctest entry (it ends the job on purpose): one rank
// aborts while the others wait in a barrier; mpiexec must exit non-zero promptly.
TEST(MpiAbortTest, DISABLED_AbortEndsTheWholeJob) {
  std::unique_ptr<Communicator> comm = makeWorldCommunicator();
  if (comm->rank() == comm->worldSize() - 1) {
    comm->abort("test abort from the last rank");
  } else {
    comm->barrier()->wait(std::chrono::seconds(20));
  }
  ADD_FAILURE() << "rank " << comm->rank() << " is still running after abort()";
}

}  // namespace
}  // namespace thinwire::comm

// Runs the backend conformance suite (tests/comm/conformance_cases.h) on the MPI backend. Started
// by ctest as `mpiexec -n N comm_mpi_tests` for N in 1, 2, 3, 4, 7; every rank runs every test.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>

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

// The same suite with the ring allreduce forced on for every float32 sum, however small, so the
// ring's chunking (chunks of 0 or 1 elements, uneven remainders) meets every case the suite has.
class MpiRingConformanceTest : public ::testing::TestWithParam<ConformanceCase> {};

TEST_P(MpiRingConformanceTest, MatchesSingleProcessReference) {
  MpiCommunicator comm(std::make_shared<MpiEnvironment>(), {.ringMinBytes = 4});
  GetParam().run(comm);
}

INSTANTIATE_TEST_SUITE_P(AllCases,
                         MpiRingConformanceTest,
                         ::testing::ValuesIn(conformanceCases()),
                         [](const ::testing::TestParamInfo<ConformanceCase>& info) {
                           return info.param.name;
                         });

// Large float32 sums take the ring by default. Every rank must hold the same bits (each chunk
// is reduced once and copied), and the values must match a float64 sum over ranks computed here.
TEST(MpiCommunicatorTest, RingAllreduceOfLargeBuffersIsExactAndIdenticalOnEveryRank) {
  MpiCommunicator comm(std::make_shared<MpiEnvironment>());
  const int64_t n = comm.worldSize();
  for (const int64_t count : {int64_t{262144}, int64_t{300007}}) {  // 1 MiB, and uneven chunks
    for (const ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
      auto valueOf = [](int64_t rank, int64_t i) {
        return static_cast<float>(((i * 7919 + rank * 104729) % 2001) - 1000) / 64.0f;
      };
      at::Tensor data = at::empty({count}, at::kFloat);
      float* values = data.data_ptr<float>();
      for (int64_t i = 0; i < count; ++i) values[i] = valueOf(comm.rank(), i);
      comm.allreduce(data, {.op = op})->wait(testing::kTestTimeout);
      // Multiples of 1/64 below 2^14 in magnitude: every partial sum is exact in float32.
      int64_t wrong = 0;
      for (int64_t i = 0; i < count; ++i) {
        double expected = 0;
        for (int64_t r = 0; r < n; ++r) expected += valueOf(r, i);
        if (op == ReduceOp::kAverage) expected /= static_cast<double>(n);
        if (std::abs(values[i] - expected) > 1e-6 * (1 + std::abs(expected))) ++wrong;
      }
      EXPECT_EQ(wrong, 0) << "count " << count << " op " << toString(op);
      at::Tensor gathered = at::empty({n * count}, at::kFloat);
      comm.allgather(data, gathered)->wait(testing::kTestTimeout);
      for (int64_t r = 1; r < n; ++r) {
        EXPECT_TRUE(at::equal(gathered.narrow(0, 0, count), gathered.narrow(0, r * count, count)))
            << "rank " << r << " differs from rank 0, count " << count;
      }
    }
  }
}

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

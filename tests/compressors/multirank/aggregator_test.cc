// Runs the aggregator suite (tests/compressors/aggregator_cases.h) on the local backend, one
// thread per rank, for world sizes 1, 2, 3, 4 and 7.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "compressors/two_phase_aggregator.h"
#include "tests/compressors/aggregator_cases.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::compressors {
namespace {

using testing::AggregatorCase;
using testing::aggregatorCases;

class LocalAggregatorTest : public ::testing::TestWithParam<std::tuple<AggregatorCase, int>> {};

TEST_P(LocalAggregatorTest, MatchesSingleProcessReference) {
  const auto& [aggregatorCase, worldSize] = GetParam();
  std::vector<std::unique_ptr<comm::Communicator>> world =
      comm::makeLocalWorld(worldSize, {.timeout = std::chrono::seconds(60)});
  ::thinwire::testing::runOnEveryRank(world,
                                      [&aggregatorCase = aggregatorCase](comm::Communicator& comm) {
                                        testing::runAggregatorCase(aggregatorCase, comm);
                                      });
}

INSTANTIATE_TEST_SUITE_P(AllCases,
                         LocalAggregatorTest,
                         ::testing::Combine(::testing::ValuesIn(aggregatorCases()),
                                            ::testing::Values(1, 2, 3, 4, 7)),
                         [](const ::testing::TestParamInfo<std::tuple<AggregatorCase, int>>& info) {
                           return std::get<0>(info.param).name + "_n" +
                                  std::to_string(std::get<1>(info.param));
                         });

// The allreduce aggregator refuses a payload it cannot sum, on every rank, before communicating.
TEST(LocalAggregatorTest, AllreduceRefusesNonSummablePayloads) {
  std::vector<std::unique_ptr<comm::Communicator>> world =
      comm::makeLocalWorld(2, {.timeout = std::chrono::seconds(60)});
  ::thinwire::testing::runOnEveryRank(world, [](comm::Communicator& comm) {
    SignCompressor sign(SignOptions{.chunk = 64});
    AggregationTask task;
    at::Tensor residual = at::ones({100}, at::kFloat);
    sign.compress(residual, at::Tensor(), 1.0f, task.payload, task.params);
    task.compressor = &sign;
    task.output = at::empty({100}, at::kFloat);
    std::vector<AggregationTask> tasks;
    tasks.push_back(std::move(task));
    std::unique_ptr<Aggregator> allreduce = makeAggregator(AggregatorKind::kAllreduce);
    EXPECT_THROW(allreduce->run(tasks, comm, testing::kTestTimeout), InvalidArgument);
  });
}

// A two-phase payload that was not chunked for this world size is refused before communicating.
TEST(LocalAggregatorTest, TwoPhaseRefusesPayloadsNotChunkedPerRank) {
  std::vector<std::unique_ptr<comm::Communicator>> world =
      comm::makeLocalWorld(3, {.timeout = std::chrono::seconds(60)});
  ::thinwire::testing::runOnEveryRank(world, [](comm::Communicator& comm) {
    SignCompressor sign(SignOptions{.chunk = 64});
    ChunkedCompressor chunked(sign, 2);
    AggregationTask task;
    at::Tensor residual = at::ones({200}, at::kFloat);
    chunked.compress(residual, at::Tensor(), 1.0f, task.payload, task.params);
    task.compressor = &sign;
    task.output = at::empty({200}, at::kFloat);
    std::vector<AggregationTask> tasks;
    tasks.push_back(std::move(task));
    std::unique_ptr<Aggregator> twoPhase = makeAggregator(AggregatorKind::kTwoPhase);
    EXPECT_THROW(twoPhase->run(tasks, comm, testing::kTestTimeout), InvalidArgument);
  });
}

// The server errors start empty, and after one step hold exactly the error of re-compressing each
// chunk's average: server_error + C(avg) == avg, with C(avg) what every rank's output holds for
// this rank's chunk and avg the mean of the ranks' decoded messages (gathered here).
TEST(LocalAggregatorTest, TwoPhaseServerErrorIsTheRecompressionError) {
  constexpr int kWorldSize = 3;
  constexpr int64_t kNumel = 300;
  std::vector<std::unique_ptr<comm::Communicator>> world =
      comm::makeLocalWorld(kWorldSize, {.timeout = std::chrono::seconds(60)});
  ::thinwire::testing::runOnEveryRank(world, [](comm::Communicator& comm) {
    SignCompressor sign(SignOptions{.chunk = 64});
    ChunkedCompressor chunked(sign, kWorldSize);
    TwoPhaseAggregator twoPhase;
    EXPECT_TRUE(twoPhase.state().empty());
    at::Tensor input = (at::arange(kNumel, at::kFloat) * (comm.rank() + 1)).sin();
    AggregationTask task;
    task.layer = 5;
    task.compressor = &chunked;
    at::Tensor residual = input.clone();
    chunked.compress(residual, at::Tensor(), 1.0f, task.payload, task.params);
    task.output = at::empty({kNumel}, at::kFloat);
    std::vector<AggregationTask> tasks;
    tasks.push_back(std::move(task));
    twoPhase.run(tasks, comm, testing::kTestTimeout);

    at::Tensor decoded = input - residual;  // this rank's message, decoded
    at::Tensor all = at::empty({kNumel * kWorldSize}, at::kFloat);
    comm.allgather(decoded, all)->wait(testing::kTestTimeout);
    at::Tensor average = all.view({kWorldSize, kNumel}).sum(0) / kWorldSize;
    const StateDict state = twoPhase.state();
    ASSERT_EQ(state.size(), 1u);
    const at::Tensor& serverError = state.at("5.server_error");
    const ChunkRange range = ChunkedCompressor::chunkRange(kNumel, kWorldSize, 64, comm.rank());
    ASSERT_EQ(serverError.numel(), range.length);
    at::Tensor chunkAverage = average.narrow(0, range.offset, range.length);
    at::Tensor chunkOutput = tasks[0].output.narrow(0, range.offset, range.length);
    EXPECT_TRUE(at::allclose(serverError + chunkOutput, chunkAverage, 1e-5, 1e-5));
    EXPECT_GT(serverError.abs().max().item<float>(), 0.01f);
  });
}

}  // namespace
}  // namespace thinwire::compressors

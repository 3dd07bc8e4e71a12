// Runs the backend conformance suite (tests/comm/conformance_cases.h) on the local backend, one
// thread per rank, for world sizes 1, 2, 3, 4 and 7.
#include <gtest/gtest.h>

#include <thread>

#include "comm/local/local_communicator.h"
#include "tests/comm/conformance_cases.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::comm {
namespace {

using testing::ConformanceCase;
using testing::conformanceCases;

// Runs `body` on every rank of a fresh local world, one thread each. An exception on one rank
// aborts the world so that the others fail fast instead of waiting for the timeout.
void runOnEveryRank(int worldSize, const std::function<void(Communicator&)>& body) {
  std::vector<std::unique_ptr<Communicator>> world =
      makeLocalWorld(worldSize, LocalWorldOptions{.timeout = std::chrono::seconds(60)});
  ::thinwire::testing::runOnEveryRank(world, body);
}

class LocalConformanceTest : public ::testing::TestWithParam<std::tuple<ConformanceCase, int>> {};

TEST_P(LocalConformanceTest, MatchesSingleProcessReference) {
  const auto& [conformanceCase, worldSize] = GetParam();
  runOnEveryRank(worldSize, conformanceCase.run);
}

INSTANTIATE_TEST_SUITE_P(
    AllCases,
    LocalConformanceTest,
    ::testing::Combine(::testing::ValuesIn(conformanceCases()), ::testing::Values(1, 2, 3, 4, 7)),
    [](const ::testing::TestParamInfo<std::tuple<ConformanceCase, int>>& info) {
      return std::get<0>(info.param).name + "_n" + std::to_string(std::get<1>(info.param));
    });

}  // namespace
}  // namespace thinwire::comm

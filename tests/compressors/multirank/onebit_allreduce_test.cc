// OneBitAllreduce on the local backend (ranks as threads) against the single-process reference of
// specs §5.2 (tests/compressors/onebit_reference.h), for world sizes 1, 2, 3, 4 and 7; and the
// error feedback's unbiasedness over time.
#include "compressors/onebit_allreduce.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "comm/local/local_communicator.h"
#include "tests/compressors/onebit_cases.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::compressors {
namespace {

class LocalOneBitAllreduceTest : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(LocalOneBitAllreduceTest, MatchesReferenceBitForBit) {
  const auto& [worldSize, masked] = GetParam();
  auto world = comm::makeLocalWorld(worldSize, {.timeout = std::chrono::seconds(60)});
  ::thinwire::testing::runOnEveryRank(world, [masked = masked](comm::Communicator& comm) {
    ::thinwire::testing::runOneBitAllreduceCase(comm, {.masked = masked});
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes,
                         LocalOneBitAllreduceTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 7), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<std::tuple<int, bool>>& info) {
                           return "n" + std::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_masked" : "");
                         });

// Feeding the same per-rank inputs every call, the running mean of the outputs approaches the
// true average (error feedback is unbiased over time): the deviation after 400 calls is far below
// the one after 10 (O(1/T) with bounded errors).
TEST(LocalOneBitAllreduceTest, RunningMeanConvergesToTheTrueAverage) {
  constexpr int kWorldSize = 4;
  constexpr int64_t kNumel = 64;
  auto world = comm::makeLocalWorld(kWorldSize, {.timeout = std::chrono::seconds(60)});
  ::thinwire::testing::runOnEveryRank(world, [](comm::Communicator& comm) {
    std::vector<float> truth(kNumel, 0.0f);
    for (int r = 0; r < kWorldSize; ++r) {
      const std::vector<float> input = ::thinwire::testing::oneBitInput(0, r, 0, kNumel);
      for (int64_t k = 0; k < kNumel; ++k) truth[k] += input[k] / kWorldSize;
    }
    const std::vector<float> mine = ::thinwire::testing::oneBitInput(0, comm.rank(), 0, kNumel);
    OneBitAllreduce onebit;
    std::vector<double> sum(kNumel, 0.0);
    double deviationAt10 = 0, deviationAt400 = 0;
    for (int call = 1; call <= 400; ++call) {
      std::vector<at::Tensor> tensors = {at::tensor(mine)};
      onebit.run(tensors, comm);
      for (int64_t k = 0; k < kNumel; ++k) sum[k] += tensors[0][k].item<float>();
      if (call == 10 || call == 400) {
        double deviation = 0;
        for (int64_t k = 0; k < kNumel; ++k) {
          deviation = std::max(deviation, std::fabs(sum[k] / call - truth[k]));
        }
        (call == 10 ? deviationAt10 : deviationAt400) = deviation;
      }
    }
    EXPECT_LT(deviationAt400, deviationAt10 / 10) << deviationAt10 << " -> " << deviationAt400;
  });
}

}  // namespace
}  // namespace thinwire::compressors

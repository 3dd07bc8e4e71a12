// OneBitAllreduce in one process: the padding rule, world size 1 (no compression), argument and
// state checks. The multi-rank arithmetic is checked in multirank/ and mpi/.
#include "compressors/onebit_allreduce.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "base/error.h"
#include "comm/local/local_communicator.h"

namespace thinwire::compressors {
namespace {

TEST(OneBitAllreduceTest, PadsToAMultipleOfWorldSizeTimesLcmWithEight) {
  // n * lcm(n, 8): 8 (n=1), 16 (n=2), 72 (n=3), 32 (n=4), 392 (n=7).
  EXPECT_EQ(OneBitAllreduce::paddedNumel(1, 1), 8);
  EXPECT_EQ(OneBitAllreduce::paddedNumel(16, 2), 16);
  EXPECT_EQ(OneBitAllreduce::paddedNumel(17, 2), 32);
  EXPECT_EQ(OneBitAllreduce::paddedNumel(1, 3), 72);
  EXPECT_EQ(OneBitAllreduce::paddedNumel(73, 3), 144);
  EXPECT_EQ(OneBitAllreduce::paddedNumel(33, 4), 64);
  EXPECT_EQ(OneBitAllreduce::paddedNumel(1, 7), 392);
  EXPECT_EQ(OneBitAllreduce::paddedNumel(0, 7), 0);
}

TEST(OneBitAllreduceTest, WorldSizeOneLeavesTheInputAndSendsNothing) {
  auto world = comm::makeLocalWorld(1);
  OneBitAllreduce onebit;
  at::Tensor x = at::randn({5, 3});
  const at::Tensor original = x.clone();
  at::Tensor mask = at::ones({15}, at::kBool);
  mask[4] = false;
  std::vector<at::Tensor> tensors = {x};
  onebit.run(tensors, *world[0], {mask.view({5, 3})});
  at::Tensor expected = original.clone();
  expected.view({-1})[4] = 0.0f;
  EXPECT_TRUE(at::equal(x, expected));
  EXPECT_EQ(onebit.bytesSent(), 0);
  EXPECT_TRUE(onebit.state().empty());
}

TEST(OneBitAllreduceTest, RefusesNonFloatOrNonContiguousTensorsAndWrongMasks) {
  auto world = comm::makeLocalWorld(1);
  OneBitAllreduce onebit;
  std::vector<at::Tensor> doubles = {at::zeros({4}, at::kDouble)};
  EXPECT_THROW(onebit.run(doubles, *world[0]), InvalidArgument);
  std::vector<at::Tensor> strided = {at::zeros({4, 4}).t()};
  EXPECT_THROW(onebit.run(strided, *world[0]), InvalidArgument);
  std::vector<at::Tensor> floats = {at::zeros({4})};
  EXPECT_THROW(onebit.run(floats, *world[0], {at::ones({3}, at::kBool)}), InvalidArgument);
  EXPECT_THROW(onebit.run(floats, *world[0], {at::ones({4}, at::kFloat)}), InvalidArgument);
}

TEST(OneBitAllreduceTest, LoadStateRoundTripsAndRefusesForeignEntries) {
  OneBitAllreduce onebit;
  StateDict state = {{"0.worker_error", at::arange(8, at::kFloat)},
                     {"0.server_error", at::arange(4, at::kFloat)},
                     {"1.worker_error", at::ones({16})},
                     {"1.server_error", at::ones({8})}};
  onebit.loadState(state);
  const StateDict saved = onebit.state();
  ASSERT_EQ(saved.size(), 4u);
  for (const auto& [key, tensor] : state) EXPECT_TRUE(at::equal(saved.at(key), tensor)) << key;
  EXPECT_THROW(onebit.loadState({{"0.residual", at::zeros({8})}}), DataError);
  EXPECT_THROW(onebit.loadState({{"0.worker_error", at::zeros({8}, at::kDouble)},
                                 {"0.server_error", at::zeros({4})}}),
               DataError);
  EXPECT_THROW(
      onebit.loadState({{"0.worker_error", at::zeros({8})}, {"1.worker_error", at::zeros({8})}}),
      DataError);
}

TEST(OneBitAllreduceTest, RefusesATensorListOfOtherSizesThanItsErrors) {
  auto world = comm::makeLocalWorld(2, {.timeout = std::chrono::seconds(10)});
  OneBitAllreduce onebit;
  // Errors for 2 ranks and numel 16 (padded 16, chunk 8); a 40-element tensor does not fit.
  onebit.loadState({{"0.worker_error", at::zeros({16})}, {"0.server_error", at::zeros({8})}});
  std::vector<at::Tensor> tensors = {at::zeros({40})};
  EXPECT_THROW(onebit.run(tensors, *world[0]), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::compressors

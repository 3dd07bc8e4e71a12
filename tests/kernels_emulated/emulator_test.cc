// The emulator (kernels/emulation) against the CUDA semantics it stands for: warp collectives
// against their definitions, the reverse order exposing a missing barrier, the faults it must
// report, and the device's launch limits.
#include "kernels/emulation/emulator.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/kernels_emulated/probe_kernels.h"

namespace thinwire::kernels {
namespace {

using emulation::Order;

constexpr int kInvalidConfiguration = 9;  // cudaErrorInvalidConfiguration

class OrderScope {
 public:
  explicit OrderScope(Order order) : previous_(emulation::order()) { emulation::setOrder(order); }
  ~OrderScope() { emulation::setOrder(previous_); }

 private:
  Order previous_;
};

std::string faultOf(int (*launch)(float*)) {
  std::vector<float> out(32, 0.0f);
  try {
    launch(out.data());
  } catch (const std::logic_error& e) {
    return e.what();
  }
  return "";
}

TEST(EmulatorTest, BlockSumIsTheSameInBothOrdersWithItsBarriers) {
  const int blocks = 3;
  const int threads = 256;
  std::vector<float> in(blocks * threads);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 97);
  std::vector<float> expected(blocks, 0.0f);
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < threads; ++t) expected[b] += in[b * threads + t];  // small integers: exact
  }
  for (Order order : {Order::kForward, Order::kReverse}) {
    OrderScope scope(order);
    std::vector<float> out(blocks, -1.0f);
    ASSERT_EQ(probe::blockSums(in.data(), blocks, threads, true, out.data()), 0);
    EXPECT_EQ(out, expected) << (order == Order::kForward ? "forward" : "reverse");
  }
}

TEST(EmulatorTest, ReverseOrderExposesAMissingBarrier) {
  const int threads = 256;
  std::vector<float> in(threads, 1.0f);
  std::vector<float> forward(1, 0.0f);
  std::vector<float> reverse(1, 0.0f);
  {
    OrderScope scope(Order::kForward);
    ASSERT_EQ(probe::blockSums(in.data(), 1, threads, false, forward.data()), 0);
  }
  {
    OrderScope scope(Order::kReverse);
    ASSERT_EQ(probe::blockSums(in.data(), 1, threads, false, reverse.data()), 0);
  }
  // Without barriers each thread runs its whole tree at once: in forward order thread 0 adds
  // partners that have not added theirs yet, in reverse order they have.
  EXPECT_NE(forward[0], reverse[0]);
  EXPECT_NE(forward[0], 256.0f);
  EXPECT_EQ(reverse[0], 256.0f);
}

TEST(EmulatorTest, WarpCollectivesFollowTheirDefinitions) {
  const int threads = 64;
  std::vector<uint32_t> in(threads);
  for (int t = 0; t < threads; ++t) in[t] = 1000u + 7u * static_cast<uint32_t>(t);
  std::vector<uint32_t> out(4 * threads, 0u);
  ASSERT_EQ(probe::warpCollectives(in.data(), out.data()), 0);
  uint32_t ballot = 0;
  for (int lane = 0; lane < 32; lane += 3) ballot |= 1u << lane;
  for (int t = 0; t < threads; ++t) {
    const int warp = t / 32 * 32;
    const int lane = t % 32;
    EXPECT_EQ(out[4 * t], in[warp + (lane + 3) % 32]) << "shfl, thread " << t;
    EXPECT_EQ(out[4 * t + 1], in[lane + 5 < 32 ? t + 5 : t]) << "shfl_down, thread " << t;
    EXPECT_EQ(out[4 * t + 2], in[warp + (lane ^ 6)]) << "shfl_xor, thread " << t;
    EXPECT_EQ(out[4 * t + 3], ballot) << "ballot, thread " << t;
  }
}

TEST(EmulatorTest, ReportsAShuffleWithExitedLanes) {
  const std::string message = faultOf(probe::shuffleAfterExit);
  EXPECT_NE(message.find("exited"), std::string::npos) << message;
}

TEST(EmulatorTest, ReportsABlockThatCannotProgress) {
  const std::string message = faultOf(probe::barrierAgainstShuffle);
  EXPECT_NE(message.find("cannot progress"), std::string::npos) << message;
}

TEST(EmulatorTest, EnforcesTheDeviceLaunchLimits) {
  std::vector<float> out(2048, 0.0f);
  EXPECT_EQ(probe::launchWithShared(1024, 4096, false, out.data()), 0);
  EXPECT_EQ(out[0], 1023.0f);
  EXPECT_EQ(probe::launchWithShared(2048, 8192, false, out.data()), kInvalidConfiguration);
  EXPECT_EQ(probe::blockSums(out.data(), 0, 32, true, out.data()), kInvalidConfiguration);
  // Over the default 48 KiB of dynamic shared memory only after cudaFuncSetAttribute.
  EXPECT_EQ(probe::launchWithShared(32, 64 * 1024, false, out.data()), kInvalidConfiguration);
  EXPECT_EQ(probe::launchWithShared(32, 64 * 1024, true, out.data()), 0);
  EXPECT_EQ(out[0], 31.0f);
}

}  // namespace
}  // namespace thinwire::kernels

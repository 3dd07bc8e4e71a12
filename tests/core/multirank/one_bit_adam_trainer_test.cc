// The trainer with optim.name: onebit_adam (threads as ranks over the local backend): with
// freeze_step beyond the run it is AdamW bit for bit; after the freeze the trainer sends no
// gradients (only the optimizer's two 1-bit collectives per step go on the wire); resuming in
// the compression stage repeats the uninterrupted run bit for bit.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "compressors/onebit_allreduce.h"
#include "core/config.h"
#include "core/trainer.h"
#include "tests/core/multirank/run_ranks.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

class OneBitAdamTrainerTest : public ::testing::Test {
 protected:
  Config oneBit(const std::string& name, int64_t freezeStep) {
    Config c = smallConfig(dir_.string(), name);
    c.train.steps = 30;
    c.optim.name = "onebit_adam";
    c.optim.lr = 0.01;
    c.optim.momentum = 0;
    c.optim.nesterov = false;
    c.optim.beta2 = 0.99;
    c.optim.weightDecay = 0.01;
    c.optim.freezeStep = freezeStep;
    return c;
  }

  static void expectSameLosses(const TrainResult& a, const TrainResult& b, size_t offset = 0) {
    ASSERT_EQ(a.steps.size() + offset, b.steps.size());
    for (size_t i = 0; i < a.steps.size(); ++i) {
      EXPECT_EQ(a.steps[i].loss, b.steps[offset + i].loss) << "step " << a.steps[i].step;
    }
  }

  ::thinwire::testing::TempDir tmp_{"thinwire-onebit-trainer"};
  std::filesystem::path dir_ = tmp_.path();
};

TEST_F(OneBitAdamTrainerTest, WithoutFreezeItIsAdamWBitForBit) {
  Config adamw = oneBit("adamw", 1000);
  adamw.optim.name = "adamw";
  const TrainResult reference = runRanks(adamw, 3);
  const TrainResult warmupOnly = runRanks(oneBit("warmup-only", 1000), 3);
  expectSameLosses(warmupOnly, reference);
  EXPECT_EQ(warmupOnly.finalTestLoss, reference.finalTestLoss);
  EXPECT_EQ(warmupOnly.sync.wireBytes, reference.sync.wireBytes);
}

TEST_F(OneBitAdamTrainerTest, AfterTheFreezeOnlyTheOptimizersCollectivesAreSent) {
  constexpr int kRanks = 3, kFreeze = 10, kSteps = 30;
  const TrainResult dense = runRanks(oneBit("dense", 1000), kRanks);
  const TrainResult onebit = runRanks(oneBit("onebit", kFreeze), kRanks);
  // smallConfig's MLP: 32 -> 64 -> 32 -> 4 with biases.
  const std::vector<int64_t> numels = {64 * 32, 64, 32 * 64, 32, 4 * 32, 4};
  int64_t total = 0, block = 4 * static_cast<int64_t>(numels.size());
  for (int64_t numel : numels) {
    total += numel;
    block += compressors::OneBitAllreduce::paddedNumel(numel, kRanks) / kRanks / 8;
  }
  // GradSync counts 2 (n-1)/n * 4 bytes per bucket element (rounded per bucket).
  ASSERT_EQ(dense.sync.wireBytes % kSteps, 0);
  const int64_t fp32PerStep = dense.sync.wireBytes / kSteps;
  ASSERT_NEAR(static_cast<double>(fp32PerStep), 2.0 * (kRanks - 1) * 4 * total / kRanks, 16.0)
      << "the model is not smallConfig's MLP";
  EXPECT_EQ(onebit.sync.wireBytes,
            kFreeze * fp32PerStep + (kSteps - kFreeze) * 2 * (kRanks - 1) * block);
  // Training still works through the switch.
  EXPECT_LT(onebit.steps.back().loss, 0.9 * onebit.steps.front().loss);
}

TEST_F(OneBitAdamTrainerTest, ResumeInTheCompressionStageIsBitExact) {
  constexpr int kRanks = 3, kSplit = 17;
  const TrainResult uninterrupted = runRanks(oneBit("full", 10), kRanks);
  Config split = oneBit("split", 10);
  split.train.stopAfter = kSplit;
  const TrainResult first = runRanks(split, kRanks);
  ASSERT_EQ(first.lastStep, kSplit);
  split.train.stopAfter = 0;
  split.train.resume = "auto";
  const TrainResult second = runRanks(split, kRanks);
  ASSERT_EQ(second.startStep, kSplit);
  expectSameLosses(second, uninterrupted, kSplit);
  EXPECT_EQ(second.finalTestLoss, uninterrupted.finalTestLoss);
}

}  // namespace
}  // namespace thinwire::core

// Trainer behaviour across ranks (threads over the local backend): data-parallel equivalence
// with a single large-batch rank, bit-exact resume, and refusal of corrupt checkpoints.
#include "core/trainer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "core/checkpoint.h"
#include "tests/core/multirank/run_ranks.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

class TrainerTest : public ::testing::Test {
 protected:
  ::thinwire::testing::TempDir tmp_{"thinwire-trainer"};
  const std::filesystem::path dir_ = tmp_.path();
};

TEST_F(TrainerTest, FourRanksOfSixteenFollowOneRankOfSixtyFour) {
  Config one = smallConfig(dir_.string(), "one");
  one.train.batchPerRank = 64;
  Config four = smallConfig(dir_.string(), "four");
  four.train.batchPerRank = 16;

  TrainResult a = runRanks(one, 1);
  TrainResult b = runRanks(four, 4);
  ASSERT_EQ(a.steps.size(), 50U);
  ASSERT_EQ(b.steps.size(), 50U);
  for (size_t i = 0; i < a.steps.size(); ++i) {
    EXPECT_NEAR(b.steps[i].loss, a.steps[i].loss, 1e-4 * std::max(1.0, a.steps[i].loss))
        << "step " << a.steps[i].step;
  }
  // Training did something: a wrong averaging (sum instead of mean) or a dropped bucket would
  // also show up as a diverging trajectory above.
  EXPECT_LT(a.steps.back().loss, 0.8 * a.steps.front().loss);
  EXPECT_GT(b.sync.bytesSent, 0);
  EXPECT_NEAR(b.finalTestAccuracy, a.finalTestAccuracy, 0.02);
}

// Each bucket's parameters step as soon as the bucket is averaged (Note [Optimizer overlap]);
// gradient clipping forces the whole-model step after all buckets. A clipping bound no gradient
// reaches changes nothing else, so the two paths must give bit-identical losses.
TEST_F(TrainerTest, PerBucketOptimizerStepsEqualTheWholeModelStep) {
  for (const std::string optimizer : {"sgd", "adamw"}) {
    Config perBucket = smallConfig(dir_.string(), "per-bucket-" + optimizer);
    perBucket.optim.name = optimizer;
    perBucket.train.steps = 20;
    Config whole = perBucket;
    whole.run.name = "whole-" + optimizer;
    whole.train.clipGradNorm = 1e30;
    TrainResult a = runRanks(perBucket, 3);
    TrainResult b = runRanks(whole, 3);
    ASSERT_EQ(a.steps.size(), 20U);
    ASSERT_EQ(b.steps.size(), a.steps.size());
    for (size_t i = 0; i < a.steps.size(); ++i) {
      EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << optimizer << " step " << a.steps[i].step;
    }
    EXPECT_LT(a.steps.back().loss, a.steps.front().loss) << optimizer;
  }
}

TEST_F(TrainerTest, GradientAccumulationEqualsTheLargerBatch) {
  // 2 ranks x 16 samples x 2 micro-steps see the same 64 samples per optimizer step as 1 rank
  // x 64: micro-step m covers global micro-batch m, so micro-steps 2s and 2s+1 of both ranks
  // together are exactly the 64-sample global batch s.
  Config oneBig = smallConfig(dir_.string(), "oneBig");
  oneBig.train.steps = 20;
  oneBig.train.batchPerRank = 64;
  Config twoAccum = smallConfig(dir_.string(), "twoAccum");
  twoAccum.train.steps = 20;
  twoAccum.train.batchPerRank = 16;
  twoAccum.train.gradAccumulation = 2;
  TrainResult big = runRanks(oneBig, 1);
  TrainResult acc = runRanks(twoAccum, 2);
  ASSERT_EQ(big.steps.size(), acc.steps.size());
  for (size_t i = 0; i < big.steps.size(); ++i) {
    EXPECT_NEAR(acc.steps[i].loss, big.steps[i].loss, 1e-4 * std::max(1.0, big.steps[i].loss))
        << "step " << big.steps[i].step;
  }
}

TEST_F(TrainerTest, ResumedRunRepeatsTheUninterruptedLossesBitForBit) {
  Config full = smallConfig(dir_.string(), "full");
  full.train.steps = 100;
  full.optim.name = "adamw";
  full.optim.lr = 0.003;
  full.optim.weightDecay = 0.01;
  TrainResult uninterrupted = runRanks(full, 2);
  ASSERT_EQ(uninterrupted.steps.size(), 100U);

  Config split = full;
  split.run.name = "split";
  split.train.stopAfter = 50;
  TrainResult first = runRanks(split, 2);
  EXPECT_TRUE(first.stoppedEarly);
  EXPECT_EQ(first.lastStep, 50);
  split.train.stopAfter = 0;
  split.train.resume = "auto";
  TrainResult second = runRanks(split, 2);
  EXPECT_EQ(second.startStep, 50);
  EXPECT_FALSE(second.resumedFrom.empty());
  ASSERT_EQ(second.steps.size(), 50U);
  for (size_t i = 0; i < second.steps.size(); ++i) {
    EXPECT_EQ(second.steps[i].step, uninterrupted.steps[50 + i].step);
    EXPECT_EQ(second.steps[i].loss, uninterrupted.steps[50 + i].loss)
        << "step " << second.steps[i].step;  // bitwise: EXPECT_EQ on doubles
  }
  EXPECT_EQ(second.finalTestLoss, uninterrupted.finalTestLoss);
}

// Note [Stop requests]: one rank asked to stop (as by a signal) after its 13th step; every rank
// stops after step 15, the next multiple of stop_check_every, with a checkpoint and a last
// metrics record, and resuming from it repeats the uninterrupted run bit for bit. With log_every
// 1 the agreement rides in the metrics allreduce; with 2 it does at step 10 only and runs alone
// at steps 5 and 15.
TEST_F(TrainerTest, AStopRequestOnOneRankStopsEveryRankAtTheNextCheckWithACheckpoint) {
  // The reference runs without agreements, so a metrics record that the agreement's allreduce
  // carried must match one summed alone.
  Config full = smallConfig(dir_.string(), "uninterrupted");
  full.train.steps = 30;
  full.train.stopCheckEvery = 0;
  const TrainResult uninterrupted = runRanks(full, 3);
  ASSERT_EQ(uninterrupted.steps.size(), 30U);
  EXPECT_FALSE(uninterrupted.stoppedOnRequest);

  for (const int64_t logEvery : {1, 2}) {
    SCOPED_TRACE("log_every " + std::to_string(logEvery));
    Config split = full;
    split.run.name = "stopped-log" + std::to_string(logEvery);
    split.run.logEvery = logEvery;
    split.train.stopCheckEvery = 5;
    // Rank 1 answers "asked" from its third poll on, the others never do; every rank must be
    // polled after steps 5, 10 and 15 only, or the agreement's collectives would not line up.
    std::vector<std::atomic<int>> polls(3);
    const TrainResult stopped = runRanks(split, 3, [&](int rank) {
      TrainerOptions options;
      options.stopRequested = [&, rank] { return ++polls[rank] >= 3 && rank == 1; };
      return options;
    });
    EXPECT_TRUE(stopped.stoppedOnRequest);
    EXPECT_TRUE(stopped.stoppedEarly);
    EXPECT_EQ(stopped.lastStep, 15);
    for (int rank = 0; rank < 3; ++rank) EXPECT_EQ(polls[rank].load(), 3) << "rank " << rank;
    ASSERT_EQ(stopped.steps.size(), logEvery == 1 ? 15U : 8U);  // 2, 4, ..., 14, then 15
    EXPECT_EQ(stopped.steps.back().step, 15);
    if (logEvery == 1) {
      for (size_t i = 0; i < stopped.steps.size(); ++i) {
        EXPECT_EQ(stopped.steps[i].loss, uninterrupted.steps[i].loss) << "step " << i + 1;
      }
    }
    EXPECT_TRUE(std::filesystem::exists(dir_ / split.run.name / "checkpoints" / "step-00000015"));

    split.run.logEvery = 1;
    split.train.resume = "auto";
    const TrainResult resumed = runRanks(split, 3);
    EXPECT_EQ(resumed.startStep, 15);
    EXPECT_FALSE(resumed.stoppedOnRequest);
    ASSERT_EQ(resumed.steps.size(), 15U);
    for (size_t i = 0; i < resumed.steps.size(); ++i) {
      EXPECT_EQ(resumed.steps[i].loss, uninterrupted.steps[15 + i].loss)
          << "step " << resumed.steps[i].step;
    }
    EXPECT_EQ(resumed.finalTestLoss, uninterrupted.finalTestLoss);
  }

  // train.stop_check_every 0: nobody is polled, the request is never seen.
  Config unchecked = full;
  unchecked.run.name = "unchecked";
  unchecked.train.steps = 12;
  std::atomic<int> uncheckedPolls{0};
  const TrainResult ignored = runRanks(unchecked, 2, [&](int) {
    TrainerOptions options;
    options.stopRequested = [&] { return ++uncheckedPolls > 0; };
    return options;
  });
  EXPECT_EQ(ignored.lastStep, 12);
  EXPECT_FALSE(ignored.stoppedOnRequest);
  EXPECT_EQ(uncheckedPolls.load(), 0);
}

TEST_F(TrainerTest, CorruptCheckpointIsRefusedWithAClearError) {
  Config config = smallConfig(dir_.string(), "corrupt");
  config.train.steps = 10;
  config.train.stopAfter = 5;
  runRanks(config, 1);
  auto latest = latestCheckpoint((dir_ / "corrupt" / "checkpoints").string());
  ASSERT_TRUE(latest.has_value());
  const std::string file = sharedStateFile(*latest);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(file) - 10));
    char byte = 0;
    f.read(&byte, 1);
    f.seekp(static_cast<std::streamoff>(std::filesystem::file_size(file) - 10));
    byte = static_cast<char>(byte ^ 0x5a);
    f.write(&byte, 1);
  }
  config.train.stopAfter = 0;
  config.train.resume = "auto";
  try {
    runRanks(config, 1);
    FAIL() << "a corrupt checkpoint was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace thinwire::core

// The trainer with gradient compression (threads as ranks over the local backend): degenerate
// methods reproduce uncompressed training, compressed runs agree on every rank, and resuming in
// the middle of compressed training repeats the uninterrupted run bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "core/config.h"
#include "core/trainer.h"
#include "tests/core/multirank/run_ranks.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

class CompressedTrainerTest : public ::testing::Test {
 protected:
  // smallConfig's tensors are small; compress every matrix.
  Config compressed(const std::string& name,
                    const std::string& method,
                    const std::string& feedback) {
    Config c = smallConfig(dir_.string(), name);
    c.train.steps = 30;
    c.compression.method = method;
    c.compression.feedback = feedback;
    c.compression.minNumel = 1;
    c.compression.errorEvery = 5;
    return c;
  }

  static void expectSameLosses(const TrainResult& a, const TrainResult& b) {
    ASSERT_EQ(a.steps.size(), b.steps.size());
    for (size_t i = 0; i < a.steps.size(); ++i) {
      EXPECT_EQ(a.steps[i].loss, b.steps[i].loss) << "step " << a.steps[i].step;
    }
  }

  ::thinwire::testing::TempDir tmp_{"thinwire-compressed-trainer"};
  const std::filesystem::path dir_ = tmp_.path();
};

TEST_F(CompressedTrainerTest, IdentityWithoutAndWithErrorFeedbackEqualsUncompressedBitForBit) {
  Config plain = compressed("plain", "none", "ef");
  const TrainResult reference = runRanks(plain, 4);
  for (const std::string feedback : {"none", "ef"}) {
    SCOPED_TRACE(feedback);
    const TrainResult identity = runRanks(compressed("id-" + feedback, "identity", feedback), 4);
    expectSameLosses(identity, reference);
    EXPECT_EQ(identity.finalTestLoss, reference.finalTestLoss);
  }
}

TEST_F(CompressedTrainerTest, IdentityWithTrackingFeedbackFollowsUncompressedTraining) {
  // EF21 and EControl track the mean gradient as h <- h + mean(g_i - h_i): equal to the mean in
  // exact arithmetic, not bit for bit in float32.
  const TrainResult reference = runRanks(compressed("plain", "none", "ef"), 4);
  for (const std::string feedback : {"ef21", "econtrol"}) {
    SCOPED_TRACE(feedback);
    const TrainResult identity = runRanks(compressed("id-" + feedback, "identity", feedback), 4);
    ASSERT_EQ(identity.steps.size(), reference.steps.size());
    for (size_t i = 0; i < identity.steps.size(); ++i) {
      EXPECT_NEAR(identity.steps[i].loss, reference.steps[i].loss,
                  1e-4 * std::abs(reference.steps[i].loss))
          << "step " << identity.steps[i].step;
    }
  }
}

TEST_F(CompressedTrainerTest, FullDensityTopKEqualsUncompressed) {
  Config topk = compressed("topk-full", "topk", "ef");
  topk.compression.ratio = 1.0;
  topk.compression.aggregator = "allgather";
  const TrainResult full = runRanks(topk, 2);
  const TrainResult reference = runRanks(compressed("plain", "none", "ef"), 2);
  expectSameLosses(full, reference);
}

TEST_F(CompressedTrainerTest, CompressedTrainingLowersTheLossOnEveryRankAlike) {
  // runRanks() fails the test when ranks disagree on any loss.
  for (const auto& [method, feedback] :
       std::vector<std::pair<std::string, std::string>>{{"topk", "ef"},
                                                        {"sign", "ef"},
                                                        {"topk", "econtrol"},
                                                        {"quantize", "ef"},
                                                        {"randomk", "ef"},
                                                        {"powersgd", "ef"}}) {
    SCOPED_TRACE(method + "+" + feedback);
    Config c = compressed(method + "-" + feedback, method, feedback);
    c.compression.ratio = 0.1;
    c.train.steps = 40;
    const TrainResult result = runRanks(c, 3);
    ASSERT_EQ(result.steps.size(), 40U);
    double first = 0, last = 0;
    for (int i = 0; i < 5; ++i) first += result.steps[i].loss / 5;
    for (int i = 35; i < 40; ++i) last += result.steps[i].loss / 5;
    EXPECT_LT(last, 0.8 * first);
    EXPECT_GT(result.sync.wireBytes, 0);
  }
}

TEST_F(CompressedTrainerTest, ResumeInTheMiddleOfCompressedTrainingIsBitExact) {
  // top-k with error feedback (per-rank residuals) and sign with the two-phase aggregator (server
  // errors), on 3 ranks so that chunks are uneven.
  for (const auto& [method, aggregator] : std::vector<std::pair<std::string, std::string>>{
           {"topk", "allgather"}, {"sign", "two_phase"}}) {
    SCOPED_TRACE(method);
    Config full = compressed("full-" + method, method, "ef");
    full.compression.aggregator = aggregator;
    full.compression.ratio = 0.05;
    const TrainResult uninterrupted = runRanks(full, 3);

    Config split = full;
    split.run.name = "split-" + method;
    split.train.stopAfter = 13;
    const TrainResult first = runRanks(split, 3);
    ASSERT_EQ(first.lastStep, 13);
    split.train.stopAfter = 0;
    split.train.resume = "auto";
    const TrainResult second = runRanks(split, 3);
    ASSERT_EQ(second.startStep, 13);
    ASSERT_EQ(second.steps.size(), uninterrupted.steps.size() - 13);
    for (size_t i = 0; i < second.steps.size(); ++i) {
      EXPECT_EQ(second.steps[i].loss, uninterrupted.steps[13 + i].loss)
          << "step " << second.steps[i].step;
    }
    EXPECT_EQ(second.finalTestLoss, uninterrupted.finalTestLoss);
  }
}

TEST_F(CompressedTrainerTest, ResumeWithoutTheCompressionStateIsRefused) {
  // Dropping error-feedback memory on resume silently changes the trajectory (DeepSpeed does);
  // thinwire refuses instead.
  Config c = compressed("lost", "topk", "ef");
  c.train.stopAfter = 5;
  runRanks(c, 2);
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_ / "lost")) {
    if (entry.path().filename() == "rank-0001.twc") std::filesystem::remove(entry.path());
  }
  c.train.stopAfter = 0;
  c.train.resume = "auto";
  try {
    runRanks(c, 2);
    FAIL() << "resume without rank 1's state file succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("compression state"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace thinwire::core

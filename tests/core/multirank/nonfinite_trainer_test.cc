// train.nonfinite on threads-as-ranks: NaN/Inf injected into ONE rank's gradient never reaches
// error-feedback, compressor or optimizer state. `skip` drops the step on every rank (the
// checkpoints written just before and just after it are bit-identical, model, optimizer and every
// rank's feedback memories included); `stop` makes every rank fail naming the step and the rank.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "base/logging.h"
#include "comm/local/local_communicator.h"
#include "core/checkpoint.h"
#include "core/nonfinite.h"
#include "core/trainer.h"
#include "tests/core/multirank/run_ranks.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

constexpr int kRanks = 4;
constexpr int kBadRank = 2;
constexpr int64_t kBadStep = 3;  // 0-based: the fourth step

struct RankOutcome {
  TrainResult result;
  std::string error;  // what() of the exception, "" when run() returned
  bool nonFiniteError = false;
};

// Trains `config` on kRanks threads; rank kBadRank's gradients at kBadStep are replaced by
// `poison` (NaN or Inf) in every element of the first parameter.
std::vector<RankOutcome> trainPoisoned(const Config& config, float poison) {
  auto world = comm::makeLocalWorld(kRanks);
  std::vector<RankOutcome> outcomes(kRanks);
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      TrainerOptions options;
      bool first = true;
      std::string firstName;
      options.gradientFault = [r, poison, first, firstName](int64_t step, const std::string& name,
                                                            const at::Tensor& grad) mutable {
        if (first) {
          firstName = name;
          first = false;
        }
        if (r != kBadRank || step != kBadStep || name != firstName) return grad;
        at::Tensor bad = grad.clone();
        bad.fill_(poison);
        return bad;
      };
      try {
        Logger log({.rank = r, .level = LogLevel::kError});
        Trainer trainer(config, *world[r], log, options);
        outcomes[r].result = trainer.run();
      } catch (const NonFiniteGradientError& e) {
        outcomes[r].error = e.what();
        outcomes[r].nonFiniteError = true;
      } catch (const std::exception& e) {
        outcomes[r].error = e.what();
        world[r]->abort("test rank failed");
      }
    });
  }
  for (auto& t : threads) t.join();
  return outcomes;
}

Config poisonConfig(const std::string& dir, const std::string& name, bool compressed) {
  Config c = smallConfig(dir, name);
  c.train.steps = 6;
  c.train.checkpointEvery = 1;
  c.train.checkpointKeep = 10;
  c.train.evalBatch = 512;
  c.optim.schedule.name = "constant";
  c.optim.schedule.warmupSteps = 0;
  c.comm.overlap = "on";  // buckets start during backward: the check must still come first
  c.train.nonfinite = "skip";
  if (compressed) {
    c.compression.method = "topk";
    c.compression.feedback = "ef";
    c.compression.ratio = 0.1;
    c.compression.minNumel = 1;  // every layer compressed, every layer with a residual
  }
  return c;
}

std::string checkpointDir(const Config& c, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return runDirectory(c) + "/checkpoints/" + name;
}

// Every tensor of the checkpoint (shared state and every rank's), keyed "shared...." and
// "rank<r>....".
StateDict checkpointState(const Config& c, int64_t step) {
  StateDict all;
  const std::string dir = checkpointDir(c, step);
  mergeWithPrefix(all, readStateFile(sharedStateFile(dir)), "shared");
  for (int r = 0; r < kRanks; ++r) {
    mergeWithPrefix(all, readStateFile(rankStateFile(dir, r)), "rank" + std::to_string(r));
  }
  return all;
}

void expectAllFinite(const StateDict& state, const std::string& where) {
  for (const auto& [key, value] : state) {
    if (!at::isFloatingType(value.scalar_type())) continue;
    EXPECT_TRUE(at::isfinite(value).all().item<bool>()) << where << ": " << key << " is not finite";
  }
}

// Counts entries that differ between two checkpoints (same keys expected).
int countChanged(const StateDict& a, const StateDict& b, const std::string& prefix) {
  int changed = 0;
  for (const auto& [key, value] : a) {
    if (key.rfind(prefix, 0) != 0 || key.find("rng") != std::string::npos) continue;
    auto other = b.find(key);
    EXPECT_NE(other, b.end()) << key;
    if (other == b.end()) continue;
    if (!at::equal(value, other->second)) ++changed;
  }
  return changed;
}

void expectSkippedCleanly(const Config& c, const std::vector<RankOutcome>& outcomes) {
  for (int r = 0; r < kRanks; ++r) {
    ASSERT_TRUE(outcomes[r].error.empty()) << "rank " << r << ": " << outcomes[r].error;
    EXPECT_EQ(outcomes[r].result.skippedSteps, 1) << "rank " << r;
    EXPECT_EQ(outcomes[r].result.lastStep, 6) << "rank " << r;
  }
  for (int64_t step = 1; step <= 6; ++step) {
    expectAllFinite(checkpointState(c, step), "checkpoint " + std::to_string(step));
  }
  const StateDict before = checkpointState(c, kBadStep);     // after steps 0..2
  const StateDict after = checkpointState(c, kBadStep + 1);  // after the skipped step 3
  const StateDict later = checkpointState(c, kBadStep + 2);  // after step 4, trained
  // The skipped step changed nothing: model, optimizer (momentum), every rank's feedback.
  EXPECT_EQ(countChanged(before, after, "shared.model"), 0);
  EXPECT_EQ(countChanged(before, after, "shared.optim"), 0);
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(countChanged(before, after, "rank" + std::to_string(r) + ".compression"), 0)
        << "rank " << r;
  }
  // ... while the next step trained as usual (so the comparison above can fail).
  EXPECT_GT(countChanged(after, later, "shared.model"), 0);
}

TEST(NonFiniteTrainerTest, SkipDropsTheStepBeforeErrorFeedbackOnEveryRank) {
  testing::TempDir tmp("thinwire-nonfinite");
  const Config c = poisonConfig(tmp.path(), "skip_topk", /*compressed=*/true);
  const auto outcomes = trainPoisoned(c, std::numeric_limits<float>::quiet_NaN());
  expectSkippedCleanly(c, outcomes);
  // The error-feedback residuals exist (else the comparison would be vacuous).
  const StateDict state = checkpointState(c, kBadStep);
  int residuals = 0;
  for (const auto& [key, value] : state) {
    if (key.rfind("rank0.compression", 0) == 0) ++residuals;
  }
  EXPECT_GT(residuals, 0);
}

TEST(NonFiniteTrainerTest, SkipDropsAnInfGradientOfPlainAveragingOnEveryRank) {
  testing::TempDir tmp("thinwire-nonfinite");
  const Config c = poisonConfig(tmp.path(), "skip_plain", /*compressed=*/false);
  expectSkippedCleanly(c, trainPoisoned(c, std::numeric_limits<float>::infinity()));
}

TEST(NonFiniteTrainerTest, StopFailsEveryRankNamingTheStepAndTheRank) {
  testing::TempDir tmp("thinwire-nonfinite");
  Config c = poisonConfig(tmp.path(), "stop", /*compressed=*/true);
  c.train.nonfinite = "stop";
  const auto outcomes = trainPoisoned(c, std::numeric_limits<float>::quiet_NaN());
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(outcomes[r].nonFiniteError) << "rank " << r << ": " << outcomes[r].error;
    EXPECT_NE(outcomes[r].error.find("at step " + std::to_string(kBadStep + 1) + " on rank " +
                                     std::to_string(kBadRank)),
              std::string::npos)
        << outcomes[r].error;
  }
  // No checkpoint was written past the last good step, and what was written is finite.
  expectAllFinite(checkpointState(c, kBadStep), "last checkpoint");
}

TEST(NonFiniteTrainerTest, OneRankRunChecksItsOwnGradients) {
  testing::TempDir tmp("thinwire-nonfinite");
  Config c = poisonConfig(tmp.path(), "single", /*compressed=*/false);
  auto world = comm::makeLocalWorld(1);
  TrainerOptions options;
  options.gradientFault = [](int64_t step, const std::string&, const at::Tensor& grad) {
    return step == kBadStep ? grad * std::numeric_limits<float>::quiet_NaN() : grad;
  };
  Logger log({.rank = 0, .level = LogLevel::kError});
  Trainer trainer(c, *world[0], log, options);
  const TrainResult result = trainer.run();
  EXPECT_EQ(result.skippedSteps, 1);
  const std::string dir3 = checkpointDir(c, kBadStep), dir4 = checkpointDir(c, kBadStep + 1);
  const StateDict before = readStateFile(sharedStateFile(dir3));
  const StateDict after = readStateFile(sharedStateFile(dir4));
  expectAllFinite(after, "checkpoint 4");
  for (const auto& [key, value] : before) {
    if (key.rfind("model", 0) == 0) {
      EXPECT_TRUE(at::equal(value, after.at(key))) << key;
    }
  }
}

}  // namespace
}  // namespace thinwire::core

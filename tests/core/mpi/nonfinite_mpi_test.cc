// train.nonfinite over MPI (run under mpiexec -n 4): NaN injected into one rank's gradient. With
// `skip` every rank drops the same step and the error-feedback and optimizer state after it are
// finite and unchanged by it; with `stop` every rank fails naming the step and the rank.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <limits>
#include <string>

#include "base/logging.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "core/checkpoint.h"
#include "core/nonfinite.h"
#include "core/trainer.h"

namespace thinwire::core {
namespace {

constexpr int64_t kBadStep = 2;  // 0-based

int worldRank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int worldSize() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// One directory for every rank: rank 0 names it and broadcasts it.
std::string sharedDirectory(const std::string& name) {
  char path[256] = {};
  if (worldRank() == 0) {
    const std::string dir = (std::filesystem::temp_directory_path() /
                             ("thinwire-nonfinite-mpi-" + std::to_string(::getpid()) + "-" + name))
                                .string();
    std::filesystem::create_directories(dir);
    std::snprintf(path, sizeof(path), "%s", dir.c_str());
  }
  MPI_Bcast(path, sizeof(path), MPI_CHAR, 0, MPI_COMM_WORLD);
  return path;
}

Config mpiConfig(const std::string& dir, const std::string& policy) {
  Config c;
  c.run.name = "nonfinite";
  c.run.outputDir = dir;
  c.run.seed = 3;
  c.run.progress = false;
  c.data.dataset = "synthetic";
  c.data.synthetic = {.trainSamples = 2048, .testSamples = 256, .features = 32, .classes = 4};
  c.model.type = "mlp";
  c.model.hidden = {32};
  c.train.steps = 4;
  c.train.batchPerRank = 32;
  c.train.evalBatch = 256;
  c.train.checkpointEvery = 1;
  c.train.checkpointKeep = 10;
  c.train.resume = "never";
  c.train.nonfinite = policy;
  c.optim.name = "sgd";
  c.optim.lr = 0.05;
  c.optim.momentum = 0.9;
  c.compression.method = "topk";
  c.compression.feedback = "ef";
  c.compression.ratio = 0.1;
  c.compression.minNumel = 1;
  c.comm.backend = "mpi";
  c.comm.bucketMb = 0.004;
  c.comm.overlap = "on";
  c.comm.timeoutS = 60;
  return c;
}

TrainerOptions poisonRank(int badRank) {
  TrainerOptions options;
  const int rank = worldRank();
  options.gradientFault = [rank, badRank](int64_t step, const std::string& name,
                                          const at::Tensor& grad) {
    if (rank != badRank || step != kBadStep || name.find("weight") == std::string::npos) {
      return grad;
    }
    return grad * std::numeric_limits<float>::quiet_NaN();
  };
  return options;
}

std::string checkpointDir(const Config& c, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return runDirectory(c) + "/checkpoints/" + name;
}

TEST(NonFiniteMpiTest, SkipDropsTheSameStepOnEveryRankAndKeepsStateFinite) {
  const std::string dir = sharedDirectory("skip");
  const Config c = mpiConfig(dir, "skip");
  comm::MpiCommunicator comm(std::make_shared<comm::MpiEnvironment>());
  Logger log({.rank = comm.rank(), .level = LogLevel::kError});
  const int badRank = worldSize() - 1;
  TrainResult result;
  {
    Trainer trainer(c, comm, log, poisonRank(badRank));
    result = trainer.run();
  }
  EXPECT_EQ(result.skippedSteps, 1);
  // Every rank skipped exactly one step (the same one: the checkpoints below show which).
  int64_t total = 0;
  MPI_Allreduce(&result.skippedSteps, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(total, worldSize());
  // This rank's error-feedback state and the shared model/optimizer: finite everywhere, and the
  // skipped step (kBadStep, between checkpoints kBadStep and kBadStep + 1) changed none of it.
  const StateDict before = readStateFile(rankStateFile(checkpointDir(c, kBadStep), comm.rank()));
  const StateDict after = readStateFile(rankStateFile(checkpointDir(c, kBadStep + 1), comm.rank()));
  const StateDict sharedBefore = readStateFile(sharedStateFile(checkpointDir(c, kBadStep)));
  const StateDict sharedAfter = readStateFile(sharedStateFile(checkpointDir(c, kBadStep + 1)));
  const StateDict sharedLast = readStateFile(sharedStateFile(checkpointDir(c, 4)));
  int residuals = 0;
  for (const auto& [key, value] : after) {
    if (key.rfind("compression", 0) != 0) continue;
    ++residuals;
    EXPECT_TRUE(at::isfinite(value).all().item<bool>()) << key;
    EXPECT_TRUE(at::equal(value, before.at(key))) << key << " changed in the skipped step";
  }
  EXPECT_GT(residuals, 0);
  for (const auto& [key, value] : sharedAfter) {
    if (key.rfind("model", 0) != 0 && key.rfind("optim", 0) != 0) continue;
    if (!at::isFloatingType(value.scalar_type())) continue;
    EXPECT_TRUE(at::isfinite(value).all().item<bool>()) << key;
    EXPECT_TRUE(at::equal(value, sharedBefore.at(key))) << key << " changed in the skipped step";
    EXPECT_TRUE(at::isfinite(sharedLast.at(key)).all().item<bool>()) << key;
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (comm.rank() == 0) std::filesystem::remove_all(dir);
}

TEST(NonFiniteMpiTest, StopFailsEveryRankNamingTheStepAndTheRank) {
  const std::string dir = sharedDirectory("stop");
  const Config c = mpiConfig(dir, "stop");
  comm::MpiCommunicator comm(std::make_shared<comm::MpiEnvironment>());
  Logger log({.rank = comm.rank(), .level = LogLevel::kOff});
  const int badRank = 1 % worldSize();
  std::string error;
  try {
    Trainer trainer(c, comm, log, poisonRank(badRank));
    trainer.run();
  } catch (const NonFiniteGradientError& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("at step " + std::to_string(kBadStep + 1) + " on rank " +
                       std::to_string(badRank) + " "),
            std::string::npos)
      << "rank " << comm.rank() << ": '" << error << "'";
  MPI_Barrier(MPI_COMM_WORLD);
  if (comm.rank() == 0) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace thinwire::core

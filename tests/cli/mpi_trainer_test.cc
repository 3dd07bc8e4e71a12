// mpi tier: the trainer over real MPI processes follows the same trajectory as the same job with
// ranks as threads (local backend) and as one rank with the whole global batch.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/cli/run_process.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::testing {
namespace {

// The "loss" of every {"kind":"train",...} record of a metrics.jsonl file.
std::vector<double> trainLosses(const std::string& file) {
  std::ifstream in(file);
  std::vector<double> losses;
  std::string line;
  const std::string key = "\"loss\":";
  while (std::getline(in, line)) {
    if (line.find("\"kind\":\"train\"") == std::string::npos) continue;
    const auto at = line.find(key);
    if (at != std::string::npos) losses.push_back(std::stod(line.substr(at + key.size())));
  }
  return losses;
}

TEST(MpiTrainerTest, MpiRanksMatchThreadRanksAndOneLargeBatchRank) {
  TempDir tmp("thinwire-mpi-trainer");
  const std::filesystem::path dir = tmp.path();
  const std::string config = (dir / "job.yaml").string();
  writeFile(config, "run:\n  output_dir: " + (dir / "runs").string() +
                        "\n  log_every: 1\n  progress: false\n  seed: 3\n"
                        "data:\n  dataset: synthetic\n  synthetic:\n    train_samples: 2048\n"
                        "    test_samples: 256\n    features: 32\n    classes: 4\n"
                        "model:\n  hidden: [64, 32]\n"
                        "train:\n  steps: 30\n  batch_per_rank: 16\n  resume: never\n"
                        "optim:\n  lr: 0.05\n  momentum: 0.9\n"
                        "comm:\n  bucket_mb: 0.004\n");
  const std::string log = (dir / "log.txt").string();
  ProcessResult mpi =
      runCommand({THINWIRE_MPIEXEC, "-n", "4", "--oversubscribe", "--allow-run-as-root",
                  "--bind-to", "none", thinwireBinary(), "train", config, "--set", "run.name=mpi"},
                 log, 240);
  ASSERT_EQ(mpi.exitCode, 0) << mpi.output;
  ProcessResult local = runCommand({thinwireBinary(), "train", config, "--set", "run.name=local",
                                    "--set", "comm.backend=local", "--set", "launch.ranks=4"},
                                   log, 240);
  ASSERT_EQ(local.exitCode, 0) << local.output;
  ProcessResult single = runCommand(
      {thinwireBinary(), "train", config, "--set", "run.name=single", "--set", "comm.backend=local",
       "--set", "launch.ranks=1", "--set", "train.batch_per_rank=64"},
      log, 240);
  ASSERT_EQ(single.exitCode, 0) << single.output;
  // `thinwire train CONFIG` without mpirun: the MPI backend in a world of one (Open MPI's
  // singleton), the same run as `single`.
  ProcessResult singleton =
      runCommand({thinwireBinary(), "train", config, "--set", "run.name=singleton", "--set",
                  "launch.ranks=1", "--set", "train.batch_per_rank=64"},
                 log, 240);
  ASSERT_EQ(singleton.exitCode, 0) << singleton.output;

  const auto a = trainLosses((dir / "runs" / "mpi" / "metrics.jsonl").string());
  const auto b = trainLosses((dir / "runs" / "local" / "metrics.jsonl").string());
  const auto c = trainLosses((dir / "runs" / "single" / "metrics.jsonl").string());
  ASSERT_EQ(a.size(), 30U);
  ASSERT_EQ(b.size(), 30U);
  ASSERT_EQ(c.size(), 30U);
  EXPECT_EQ(trainLosses((dir / "runs" / "singleton" / "metrics.jsonl").string()), c);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-4 * std::max(1.0, b[i])) << "step " << i + 1;
    EXPECT_NEAR(a[i], c[i], 1e-4 * std::max(1.0, c[i])) << "step " << i + 1;
  }
  EXPECT_LT(a.back(), 0.8 * a.front());
}

}  // namespace
}  // namespace thinwire::testing

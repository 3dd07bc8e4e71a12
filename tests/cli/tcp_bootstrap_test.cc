// comm.backend tcp end to end: a `thinwire train` job of 4 plain processes (no mpirun; the ranks
// come from SLURM-style variables, as `srun` sets them, and meet through THINWIRE_STORE) trains
// like the same job under mpirun with the MPI backend, and bit for bit like the tcp job started
// by mpirun (where the tcp backend ignores MPI). A killed rank ends the others within the bound.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/cli/run_process.h"
#include "tests/testing/free_port.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::testing {
namespace {

constexpr int kRanks = 4;
constexpr int kSteps = 20;

// The "loss" field of every {"kind":"train",...} record, as written (text: compared exactly).
std::vector<std::string> trainLosses(const std::string& file) {
  std::ifstream in(file);
  std::vector<std::string> losses;
  std::string line;
  const std::string key = "\"loss\":";
  while (std::getline(in, line)) {
    if (line.find("\"kind\":\"train\"") == std::string::npos) continue;
    const auto at = line.find(key);
    if (at == std::string::npos) continue;
    const auto begin = at + key.size();
    losses.push_back(line.substr(begin, line.find_first_of(",}", begin) - begin));
  }
  return losses;
}

std::string readBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The final checkpoint's shared state (model and optimizer) of run `name`.
std::string finalSharedState(const std::filesystem::path& runs, const std::string& name) {
  char step[32];
  std::snprintf(step, sizeof(step), "step-%08d", kSteps);
  return readBytes(runs / name / "checkpoints" / step / "shared.twc");
}

// What `srun` would give rank `rank` of a 4-task job on one node, plus the store address.
std::vector<std::string> rankEnvironment(int rank, int port) {
  return {"env",
          "-u",
          "OMPI_COMM_WORLD_RANK",
          "-u",
          "PMIX_RANK",
          "SLURM_PROCID=" + std::to_string(rank),
          "SLURM_NTASKS=" + std::to_string(kRanks),
          "SLURM_LOCALID=" + std::to_string(rank),
          "SLURM_NTASKS_PER_NODE=" + std::to_string(kRanks),
          "THINWIRE_STORE=127.0.0.1:" + std::to_string(port),
          "OMP_NUM_THREADS=1"};
}

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class TcpBootstrapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = (dir() / "job.yaml").string();
    writeFile(config_, "run:\n  output_dir: " + (dir() / "runs").string() +
                           "\n  log_every: 1\n  progress: false\n  seed: 3\n"
                           "data:\n  dataset: synthetic\n  synthetic:\n    train_samples: 2048\n"
                           "    test_samples: 256\n    features: 32\n    classes: 4\n"
                           "model:\n  hidden: [64, 32]\n"
                           "train:\n  steps: " +
                           std::to_string(kSteps) +
                           "\n  batch_per_rank: 16\n  resume: never\n  threads: 1\n"
                           "optim:\n  lr: 0.05\n  momentum: 0.9\n"
                           "comm:\n  bucket_mb: 0.004\n  timeout_s: 60\n");
  }

  std::filesystem::path dir() const { return tmp_.path(); }

  // Starts the 4 ranks of `name` as plain processes, each under `timeout`.
  std::vector<pid_t> startPlainRanks(const std::string& name,
                                     int port,
                                     const std::vector<std::string>& extra = {}) {
    std::vector<pid_t> pids;
    for (int rank = 0; rank < kRanks; ++rank) {
      std::vector<std::string> argv =
          concat({"timeout", "-s", "KILL", "300"}, rankEnvironment(rank, port));
      argv = concat(argv, {thinwireBinary(), "train", config_, "--set", "run.name=" + name, "--set",
                           "comm.backend=tcp"});
      argv = concat(argv, extra);
      pids.push_back(startProcess(argv, logPath(name, rank)));
    }
    return pids;
  }

  std::string logPath(const std::string& name, int rank) const {
    return (dir() / (name + ".rank" + std::to_string(rank) + ".log")).string();
  }

  ProcessResult runUnderMpirun(const std::string& name, const std::string& backend) {
    const int port = freeLoopbackPort();
    return runCommand({"timeout",
                       "-s",
                       "KILL",
                       "300",
                       "env",
                       "THINWIRE_STORE=127.0.0.1:" + std::to_string(port),
                       "OMP_NUM_THREADS=1",
                       THINWIRE_MPIEXEC,
                       "-n",
                       std::to_string(kRanks),
                       "--oversubscribe",
                       "--allow-run-as-root",
                       "--bind-to",
                       "none",
                       thinwireBinary(),
                       "train",
                       config_,
                       "--set",
                       "run.name=" + name,
                       "--set",
                       "comm.backend=" + backend},
                      (dir() / (name + ".log")).string(), 300);
  }

  TempDir tmp_{"thinwire-tcp-bootstrap"};
  std::string config_;
};

TEST_F(TcpBootstrapTest, PlainProcessesThroughTheStoreEqualTheMpirunJobs) {
  const int port = freeLoopbackPort();
  ASSERT_GT(port, 0);
  std::vector<pid_t> pids = startPlainRanks("plain", port);
  for (int rank = 0; rank < kRanks; ++rank) {
    ProcessResult result = waitProcess(pids[rank], logPath("plain", rank), 300);
    ASSERT_FALSE(result.timedOut) << "rank " << rank << "\n" << result.output;
    ASSERT_EQ(result.exitCode, 0) << "rank " << rank << "\n" << result.output;
    if (rank == 0) {
      EXPECT_NE(result.output.find("(tcp)"), std::string::npos) << result.output;
    }
  }
  ProcessResult tcpUnderMpirun = runUnderMpirun("tcp_mpirun", "tcp");
  ASSERT_EQ(tcpUnderMpirun.exitCode, 0) << tcpUnderMpirun.output;
  ProcessResult mpi = runUnderMpirun("mpi", "mpi");
  ASSERT_EQ(mpi.exitCode, 0) << mpi.output;

  const std::filesystem::path runs = dir() / "runs";
  const std::vector<std::string> plain = trainLosses((runs / "plain" / "metrics.jsonl").string());
  const std::vector<std::string> viaMpirun =
      trainLosses((runs / "tcp_mpirun" / "metrics.jsonl").string());
  const std::vector<std::string> viaMpi = trainLosses((runs / "mpi" / "metrics.jsonl").string());
  ASSERT_EQ(plain.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(viaMpirun.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(viaMpi.size(), static_cast<size_t>(kSteps));
  // The same backend whoever started the processes: the same bits.
  EXPECT_EQ(plain, viaMpirun);
  const std::string plainState = finalSharedState(runs, "plain");
  ASSERT_FALSE(plainState.empty());
  EXPECT_TRUE(plainState == finalSharedState(runs, "tcp_mpirun"))
      << "final checkpoints of the two tcp jobs differ";
  // MPI reduces in another order: equal within float rounding.
  for (int step = 0; step < kSteps; ++step) {
    const double a = std::stod(plain[step]);
    const double b = std::stod(viaMpi[step]);
    EXPECT_NEAR(a, b, 1e-4 * std::max(1.0, b)) << "step " << step + 1;
  }
  EXPECT_LT(std::stod(plain.back()), 0.8 * std::stod(plain.front()));
}

// Without mpirun nothing tears the job down for us: the survivors must notice the dead rank
// (closed sockets, else the watchdog or the collective timeout) and exit non-zero.
TEST_F(TcpBootstrapTest, AKilledRankEndsTheOthersNonZero) {
  const int port = freeLoopbackPort();
  ASSERT_GT(port, 0);
  std::vector<pid_t> pids = startPlainRanks(
      "killed", port, {"--set", "train.steps=100000", "--set", "comm.timeout_s=30"});
  const std::string metrics = (dir() / "runs" / "killed" / "metrics.jsonl").string();
  const auto start = std::chrono::steady_clock::now();
  while (trainLosses(metrics).size() < 5 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(120)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const bool started = trainLosses(metrics).size() >= 5;
  // `timeout` is each rank's process; the rank itself is its child.
  const std::string children = readBytes("/proc/" + std::to_string(pids[2]) + "/task/" +
                                         std::to_string(pids[2]) + "/children");
  const pid_t rank2 = static_cast<pid_t>(std::atol(children.c_str()));
  if (started && rank2 > 0) ::kill(rank2, SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  for (int rank = 0; rank < kRanks; ++rank) {
    ProcessResult result = waitProcess(pids[rank], logPath("killed", rank), 90);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
    EXPECT_FALSE(result.timedOut) << "rank " << rank << " still ran 90 s after the kill\n"
                                  << result.output;
    EXPECT_NE(result.exitCode, 0) << "rank " << rank << "\n" << result.output;
    if (rank != 2) {
      EXPECT_LT(seconds, 45.0) << "rank " << rank;
      EXPECT_NE(result.output.find("rank 2"), std::string::npos) << result.output;
    }
  }
  ASSERT_TRUE(started) << "training did not start";
  ASSERT_GT(rank2, 0) << "no rank process under timeout: '" << children << "'";
}

}  // namespace
}  // namespace thinwire::testing

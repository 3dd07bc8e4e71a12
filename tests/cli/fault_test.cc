// Fault tier: a rank of a real 4-rank mpirun job is killed with SIGKILL mid-run; every other rank
// must exit and mpirun must return non-zero within 60 s with a message naming the failure. And a
// job asked to stop by a signal stops with a checkpoint and resumes from it.
#include <dirent.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/cli/run_process.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::testing {
namespace {

// Pids of running `thinwire` rank processes whose command line mentions `marker`.
std::vector<pid_t> rankProcesses(const std::string& marker) {
  std::vector<pid_t> pids;
  const std::string binary = std::filesystem::canonical(thinwireBinary()).string();
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code error;
    const auto exe = std::filesystem::read_symlink(entry.path() / "exe", error);
    if (error || exe.string() != binary) continue;
    std::ifstream cmdline(entry.path() / "cmdline");
    std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    if (args.find(marker) == std::string::npos) continue;
    // Skip zombies: a killed rank stays listed until reaped.
    std::ifstream stat(entry.path() / "stat");
    std::string statLine;
    std::getline(stat, statLine);
    const auto close = statLine.rfind(')');
    if (close != std::string::npos && close + 2 < statLine.size() && statLine[close + 2] == 'Z') {
      continue;
    }
    pids.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return pids;
}

size_t countLines(const std::string& file) {
  std::ifstream in(file);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

// Waits (bounded) until `file` has at least `lines` lines.
bool waitForLines(const std::string& file, size_t lines) {
  const auto start = std::chrono::steady_clock::now();
  while (countLines(file) < lines &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(90)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return countLines(file) >= lines;
}

// Writes DIR/NAME.yaml: a synthetic-data job far longer than any test waits, run NAME under
// DIR/runs, every step logged; `trainExtra` adds keys under `train:`. Returns its path.
std::string writeLongJob(const std::filesystem::path& dir,
                         const std::string& name,
                         const std::string& trainExtra = "") {
  const std::string config = (dir / (name + ".yaml")).string();
  writeFile(config, "run:\n  name: " + name + "\n  output_dir: " + (dir / "runs").string() +
                        "\n  log_every: 1\n  progress: false\n"
                        "data:\n  dataset: synthetic\n  synthetic:\n    train_samples: 4096\n"
                        "    test_samples: 256\n    features: 64\n    classes: 4\n"
                        "model:\n  hidden: [256, 256]\n"
                        "train:\n  steps: 100000\n  batch_per_rank: 32\n" +
                        trainExtra + "comm:\n  timeout_s: 30\n");
  return config;
}

// `mpirun -n 4 ... thinwire train CONFIG`, with the flags this machine needs.
std::vector<std::string> fourRankJob(const std::string& config) {
  return {THINWIRE_MPIEXEC,
          "-n",
          "4",
          "--oversubscribe",
          "--allow-run-as-root",
          "--bind-to",
          "none",
          thinwireBinary(),
          "train",
          config};
}

TEST(FaultTest, KilledRankMakesTheWholeJobFailFast) {
  TempDir tmp("thinwire-fault");
  const std::filesystem::path dir = tmp.path();
  const std::string config = writeLongJob(dir, "fault");
  const std::string log = (dir / "mpirun.log").string();
  pid_t job = startProcess(fourRankJob(config), log);
  const std::string metrics = (dir / "runs" / "fault" / "metrics.jsonl").string();
  ASSERT_TRUE(waitForLines(metrics, 5)) << "training did not start";
  std::vector<pid_t> ranks = rankProcesses(config);
  ASSERT_EQ(ranks.size(), 4U);
  ASSERT_EQ(kill(ranks[2], SIGKILL), 0);

  ProcessResult result = waitProcess(job, log, 60);
  EXPECT_FALSE(result.timedOut) << "the job did not end within 60 s of the kill\n" << result.output;
  EXPECT_NE(result.exitCode, 0) << result.output;
  // Open MPI names the process that died and its signal.
  EXPECT_TRUE(result.output.find("signal 9") != std::string::npos ||
              result.output.find("Killed") != std::string::npos)
      << result.output;
  // Every rank is gone.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(rankProcesses(config).empty());
}

// The step N of the line "stopped at step N on a signal", or -1.
int64_t stoppedAtStep(const std::string& output) {
  const std::string key = "stopped at step ";
  const auto at = output.find(key);
  if (at == std::string::npos || output.find("on a signal", at) == std::string::npos) return -1;
  return std::stoll(output.substr(at + key.size()));
}

// Note [Stop requests]: SIGTERM to one rank, then SIGUSR1 to mpirun (which forwards it to every
// rank): each time every rank stops at a multiple of train.stop_check_every with a checkpoint
// and the job exits with status 75; the next start resumes from that checkpoint.
TEST(FaultTest, SignalledJobStopsWithACheckpointAndResumes) {
  TempDir tmp("thinwire-stop");
  const std::filesystem::path dir = tmp.path();
  const std::string config =
      writeLongJob(dir, "stop", "  stop_check_every: 7\n  checkpoint_every: 0\n");
  const std::string metrics = (dir / "runs" / "stop" / "metrics.jsonl").string();
  const std::string log = (dir / "mpirun.log").string();
  const std::vector<std::string> job = fourRankJob(config);

  // 1. SIGTERM to rank 2 alone.
  pid_t mpirun = startProcess(job, log);
  ASSERT_TRUE(waitForLines(metrics, 5)) << "training did not start";
  std::vector<pid_t> ranks = rankProcesses(config);
  ASSERT_EQ(ranks.size(), 4U);
  ASSERT_EQ(kill(ranks[2], SIGTERM), 0);
  ProcessResult first = waitProcess(mpirun, log, 60);
  ASSERT_FALSE(first.timedOut) << first.output;
  EXPECT_EQ(first.exitCode, 75) << first.output;
  EXPECT_NE(first.output.find("SIGTERM: stopping with a checkpoint"), std::string::npos)
      << first.output;
  const int64_t firstStop = stoppedAtStep(first.output);
  ASSERT_GT(firstStop, 0) << first.output;
  EXPECT_EQ(firstStop % 7, 0);
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(firstStop));
  EXPECT_TRUE(std::filesystem::exists(dir / "runs" / "stop" / "checkpoints" / name)) << name;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(rankProcesses(config).empty());

  // 2. Resumed; SIGUSR1 to mpirun.
  const size_t linesBefore = countLines(metrics);
  mpirun = startProcess(job, log);
  ASSERT_TRUE(waitForLines(metrics, linesBefore + 5)) << "the resumed job did not train";
  ASSERT_EQ(kill(mpirun, SIGUSR1), 0);
  ProcessResult second = waitProcess(mpirun, log, 60);
  ASSERT_FALSE(second.timedOut) << second.output;
  EXPECT_EQ(second.exitCode, 75) << second.output;
  EXPECT_NE(second.output.find("resumed from"), std::string::npos) << second.output;
  const int64_t secondStop = stoppedAtStep(second.output);
  EXPECT_GT(secondStop, firstStop) << second.output;
  EXPECT_EQ(secondStop % 7, 0);

  // 3. Resumed again, to a planned stop three steps on: it starts where the signal stopped it.
  std::vector<std::string> planned = job;
  planned.insert(planned.end(), {"--set", "train.stop_after=" + std::to_string(secondStop + 3)});
  ProcessResult third = runCommand(planned, log, 120);
  EXPECT_EQ(third.exitCode, 0) << third.output;
  EXPECT_NE(third.output.find(" at step " + std::to_string(secondStop) + "\n"), std::string::npos)
      << third.output;
  EXPECT_NE(third.output.find("stopped at step " + std::to_string(secondStop + 3) +
                              " (train.stop_after)"),
            std::string::npos)
      << third.output;
}

}  // namespace
}  // namespace thinwire::testing

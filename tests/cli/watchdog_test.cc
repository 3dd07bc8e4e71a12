// The watchdog in real MPI runs (mpi tier, 4 ranks): one rank is killed with SIGKILL, or stopped
// with SIGSTOP, while the job trains; every other rank must exit non-zero within comm.timeout_s
// with a report naming that rank and the collective it was in. mpirun runs with ORTE's recovery
// on, so it does not tear the job down itself on the kill: what ends the others is the watchdog
// (as under a launcher that does not supervise its ranks). Each rank's exit status is printed by
// a wrapping shell.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/cli/run_process.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::testing {
namespace {

constexpr double kTimeoutSeconds = 6;  // comm.timeout_s; the heartbeat timeout is half of it

// The pid of the running `thinwire` rank `rank` of the job whose command line mentions `marker`
// (-1 when none).
pid_t rankProcess(const std::string& marker, int rank) {
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
    std::ifstream environ(entry.path() / "environ");
    std::string env((std::istreambuf_iterator<char>(environ)), std::istreambuf_iterator<char>());
    const std::string want = std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0';
    if (env.find(want) != std::string::npos) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

size_t countLines(const std::string& file) {
  std::ifstream in(file);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

// Runs a 4-rank job, sends `signal` to rank `victim` once it trains, and checks the others'
// reports.
void expectWatchdogReports(int signal, int victim, const std::string& tag) {
  TempDir tmp("thinwire-watchdog");
  const std::filesystem::path dir = tmp.path();
  const std::string config = (dir / (tag + ".yaml")).string();
  writeFile(config, "run:\n  name: " + tag + "\n  output_dir: " + (dir / "runs").string() +
                        "\n  log_every: 1\n  progress: false\n"
                        "data:\n  dataset: synthetic\n  synthetic:\n    train_samples: 2048\n"
                        "    test_samples: 256\n    features: 32\n    classes: 4\n"
                        "model:\n  hidden: [64]\n"
                        "train:\n  steps: 100000\n  batch_per_rank: 16\n"
                        "comm:\n  timeout_s: 6\n  heartbeat_s: 0.25\n  bucket_mb: 0.004\n");
  const std::string log = (dir / "mpirun.log").string();
  // Each rank runs under a shell that reports its exit status: with recovery on, mpirun's own
  // status says nothing about the ranks'.
  const std::string rankCommand = "'" + thinwireBinary() + "' train '" + config +
                                  "'; echo \"rank $OMPI_COMM_WORLD_RANK exited with $?\"";
  const pid_t job = startProcess(
      {THINWIRE_MPIEXEC, "-n", "4", "--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
       "--mca", "orte_enable_recovery", "1", "sh", "-c", rankCommand},
      log);
  const std::string metrics = (dir / "runs" / tag / "metrics.jsonl").string();
  const auto start = std::chrono::steady_clock::now();
  while (countLines(metrics) < 3 &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // A few heartbeats after training started, so every rank has published what it does.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  std::vector<pid_t> ranks;
  for (int r = 0; r < 4; ++r) ranks.push_back(rankProcess(config, r));
  if (countLines(metrics) < 3 || ranks[victim] < 0) {
    kill(-job, SIGKILL);
    const ProcessResult failed = waitProcess(job, log, 10);
    FAIL() << "training did not start\n" << failed.output;
  }
  ASSERT_EQ(kill(ranks[victim], signal), 0);
  const auto signalled = std::chrono::steady_clock::now();

  // Every other rank must exit within the collective timeout.
  auto exitLines = [&] {
    std::ifstream in(log);
    std::string line;
    std::vector<std::string> found;
    while (std::getline(in, line)) {
      if (line.rfind("rank ", 0) == 0 && line.find(" exited with ") != std::string::npos) {
        found.push_back(line);
      }
    }
    return found;
  };
  while (exitLines().size() < 3 && std::chrono::steady_clock::now() - signalled <
                                       std::chrono::duration<double>(kTimeoutSeconds + 5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
  // The stopped rank never exits by itself; end it so mpirun can finish.
  kill(ranks[victim], SIGKILL);
  const ProcessResult result = waitProcess(job, log, 20);
  EXPECT_FALSE(result.timedOut) << result.output;
  EXPECT_LT(seconds, kTimeoutSeconds) << result.output;
  for (int r = 0; r < 4; ++r) {
    if (r == victim) continue;
    const std::string exited = "rank " + std::to_string(r) + " exited with ";
    const size_t at = result.output.find(exited);
    ASSERT_NE(at, std::string::npos) << result.output;
    EXPECT_NE(result.output.compare(at + exited.size(), 2, "0\n"), 0)
        << "rank " << r << " exited with 0\n"
        << result.output;
    // Its report names the victim, what the victim was doing, and the collective this rank
    // was waiting in.
    const std::string prefix =
        " r" + std::to_string(r) + "] watchdog: rank " + std::to_string(victim) + " silent for ";
    std::istringstream lines(result.output);
    std::string line, report;
    while (std::getline(lines, line)) {
      if (line.find(prefix) != std::string::npos) report = line;
    }
    ASSERT_FALSE(report.empty()) << "rank " << r << " did not report rank " << victim << "\n"
                                 << result.output;
    EXPECT_NE(report.find("last activity: "), std::string::npos) << report;
    EXPECT_NE(report.find(") is in collective: "), std::string::npos) << report;
  }
}

TEST(WatchdogTest, KilledRankIsNamedByEveryOtherRankWithinTheTimeout) {
  expectWatchdogReports(SIGKILL, 2, "killed");
}

TEST(WatchdogTest, StoppedRankIsNamedByEveryOtherRankWithinTheTimeout) {
  expectWatchdogReports(SIGSTOP, 1, "stopped");
}

}  // namespace
}  // namespace thinwire::testing

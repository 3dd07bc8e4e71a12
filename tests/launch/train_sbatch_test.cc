// Runs launch/slurm/train.sbatch under bash with stand-ins for srun, mpirun and thinwire that
// print their arguments, so the script's argument passing is checked without SLURM.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace thinwire::launch {
namespace {

class TrainSbatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = std::filesystem::temp_directory_path() /
                 ("thinwire_sbatch_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(directory_ / "bin");
    // Each stand-in prints its name and its arguments in <> so that word boundaries show.
    for (const char* name : {"srun", "mpirun", "thinwire"}) {
      writeExecutable(directory_ / "bin" / name,
                      std::string("#!/bin/sh\nprintf '") + name +
                          "'; for a in \"$@\"; do printf ' <%s>' \"$a\"; done; echo\n");
    }
    std::ofstream(directory_ / "exp.yaml") << "train:\n  steps: 5\n";
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  static void writeExecutable(const std::filesystem::path& path, const std::string& text) {
    std::ofstream(path) << text;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  }

  // Runs the script from the temporary directory; returns stdout, and the exit status in `status`.
  std::string run(const std::string& environment, const std::string& arguments, int& status) {
    const std::string script = std::string(THINWIRE_SOURCE_DIR) + "/launch/slurm/train.sbatch";
    const std::string command =
        "cd " + directory_.string() + " && env PATH=" + (directory_ / "bin").string() +
        ":/usr/bin:/bin SLURM_SUBMIT_DIR=" + directory_.string() + " THINWIRE=bin/thinwire " +
        environment + " bash " + script + " " + arguments + " 2>/dev/null";
    FILE* pipe = popen(command.c_str(), "r");
    std::string output;
    if (pipe == nullptr) return output;
    char chunk[512];
    while (fgets(chunk, sizeof(chunk), pipe) != nullptr) output += chunk;
    status = pclose(pipe);
    return output;
  }

  std::filesystem::path directory_;
};

TEST_F(TrainSbatchTest, SrunRunsTrainOnTheConfigWithThreadsAndOverrides) {
  int status = -1;
  const std::string output =
      run("SLURM_CPUS_PER_TASK=2", "exp.yaml --set 'run.name=a b' --set optim.lr=0.2", status);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("srun <--mpi=pmix> <--cpu-bind=none> <--kill-on-bad-exit=1> "
                        "<bin/thinwire> <train> <exp.yaml> <--set> <train.threads=2> <--set> "
                        "<run.name=a b> <--set> <optim.lr=0.2>\n"),
            std::string::npos)
      << output;
}

TEST_F(TrainSbatchTest, MpirunLauncherForwardsTheThreadVariables) {
  int status = -1;
  const std::string output = run("THINWIRE_LAUNCHER=mpirun", "exp.yaml", status);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("mpirun <--bind-to> <none> <-x> <OMP_NUM_THREADS> <-x> "
                        "<OPENBLAS_NUM_THREADS> <bin/thinwire> <train> <exp.yaml> <--set> "
                        "<train.threads=1>\n"),
            std::string::npos)
      << output;
}

TEST_F(TrainSbatchTest, RefusesAMissingConfigOrAnUnknownLauncher) {
  int status = 0;
  EXPECT_EQ(run("", "", status).find("<train>"), std::string::npos);
  EXPECT_NE(status, 0);
  status = 0;
  EXPECT_EQ(run("", "missing.yaml", status).find("<train>"), std::string::npos);
  EXPECT_NE(status, 0);
  status = 0;
  EXPECT_EQ(run("THINWIRE_LAUNCHER=pbs", "exp.yaml", status).find("<train>"), std::string::npos);
  EXPECT_NE(status, 0);
}

}  // namespace
}  // namespace thinwire::launch

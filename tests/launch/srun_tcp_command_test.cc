// srun without MPI for comm.backend tcp: srunCommand() and launch/slurm/train.sbatch's
// THINWIRE_LAUNCHER=tcp (run under bash with stand-ins for srun and scontrol that print their
// arguments), checked against argument lists written by hand from srun_command.h and the script.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/config.h"
#include "launch/srun_command.h"

namespace thinwire::launch {
namespace {

using Argv = std::vector<std::string>;

TEST(SrunTcpCommandTest, TcpBackendRunsWithoutMpiAndExportsTheStore) {
  const core::Config config = core::Config::fromString(
      "comm:\n  backend: tcp\nlaunch:\n  transport: tcp\n  srun_args: [--exclusive]\n");
  SrunRequest request{"s.yaml", 8, "tw", {"optim.lr=0.2"}};
  request.storeAddress = "node017:29517";
  const Argv expected = {"srun",
                         "--ntasks",
                         "8",
                         "--mpi=none",
                         "--cpu-bind=none",
                         "--exclusive",
                         "env",
                         "OMP_NUM_THREADS=1",
                         "OPENBLAS_NUM_THREADS=1",
                         "THINWIRE_STORE=node017:29517",
                         "tw",
                         "train",
                         "s.yaml",
                         "--set",
                         "optim.lr=0.2"};
  EXPECT_EQ(srunCommand(config, request), expected);
}

TEST(SrunTcpCommandTest, TcpBackendNeedsAStoreAddress) {
  const core::Config config = core::Config::fromString("comm:\n  backend: tcp\n");
  for (const char* address : {"", "node017", ":29500", "node017:"}) {
    SrunRequest request{"s.yaml", 0, "tw", {}};
    request.storeAddress = address;
    EXPECT_THROW((void)srunCommand(config, request), InvalidArgument) << address;
  }
}

// train.sbatch with THINWIRE_LAUNCHER=tcp: srun without PMI, the first node of the allocation
// as the store host, comm.backend=tcp after the caller's overrides.
TEST(SrunTcpCommandTest, SbatchTcpLauncherStartsPlainSrunWithTheStoreOnTheFirstNode) {
  const std::filesystem::path directory =
      std::filesystem::temp_directory_path() /
      ("thinwire_sbatch_tcp_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(directory / "bin");
  auto writeExecutable = [](const std::filesystem::path& path, const std::string& text) {
    std::ofstream(path) << text;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  };
  // srun prints its arguments in <> and the store variable it inherited.
  writeExecutable(directory / "bin" / "srun",
                  "#!/bin/sh\nprintf 'srun'; for a in \"$@\"; do printf ' <%s>' \"$a\"; done; "
                  "echo; echo \"store=$THINWIRE_STORE\"\n");
  writeExecutable(directory / "bin" / "scontrol",
                  "#!/bin/sh\n[ \"$1 $2 $3\" = 'show hostnames n[3-4]' ] && printf 'n3\\nn4\\n'\n");
  writeExecutable(directory / "bin" / "thinwire", "#!/bin/sh\n");
  std::ofstream(directory / "exp.yaml") << "train:\n  steps: 5\n";
  const std::string script = std::string(THINWIRE_SOURCE_DIR) + "/launch/slurm/train.sbatch";
  const std::string command =
      "cd " + directory.string() + " && env PATH=" + (directory / "bin").string() +
      ":/usr/bin:/bin SLURM_SUBMIT_DIR=" + directory.string() +
      " THINWIRE=bin/thinwire THINWIRE_LAUNCHER=tcp SLURM_JOB_NODELIST='n[3-4]' SLURM_JOB_ID=1234"
      " bash " +
      script + " exp.yaml --set optim.lr=0.2 2>/dev/null";
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char chunk[512];
  while (fgets(chunk, sizeof(chunk), pipe) != nullptr) output += chunk;
  const int status = pclose(pipe);
  std::filesystem::remove_all(directory);
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find("srun <--mpi=none> <--cpu-bind=none> <--kill-on-bad-exit=1> "
                        "<bin/thinwire> <train> <exp.yaml> <--set> <train.threads=1> <--set> "
                        "<optim.lr=0.2> <--set> <comm.backend=tcp>\n"),
            std::string::npos)
      << output;
  // 29500 + 1234 % 1000.
  EXPECT_NE(output.find("store=n3:29734\n"), std::string::npos) << output;
}

}  // namespace
}  // namespace thinwire::launch

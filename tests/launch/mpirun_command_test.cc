#include "launch/mpirun_command.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/config.h"

namespace thinwire::launch {
namespace {

using Argv = std::vector<std::string>;

core::Config configFrom(const std::string& yaml) {
  return core::Config::fromString(yaml, "test.yaml");
}

// The expected vectors below are written by hand from the documented rules, not printed by the
// code under test.

TEST(MpirunCommandTest, DefaultsRunFourRanksOnThisMachine) {
  const Argv argv =
      mpirunCommand(configFrom(""), MpirunRequest{"exp.yaml", 0, "", "/bin/tw", {}, false});
  const Argv expected = {"mpirun",    "-n",
                         "4",         "--oversubscribe",
                         "--bind-to", "none",
                         "-x",        "OMP_NUM_THREADS=1",
                         "-x",        "OPENBLAS_NUM_THREADS=1",
                         "/bin/tw",   "train",
                         "exp.yaml"};
  EXPECT_EQ(argv, expected);
}

TEST(MpirunCommandTest, HostfileRanksAndRootFromConfigOrRequest) {
  const core::Config config = configFrom(
      "launch:\n  ranks: 8\n  hostfile: hosts.txt\n  oversubscribe: false\n  bind_to: core\n"
      "  mpirun: /opt/ompi/bin/mpirun\ntrain:\n  threads: 2\n");
  const Argv fromConfig = mpirunCommand(config, MpirunRequest{"a.yaml", 0, "", "tw", {}, true});
  const Argv expected = {"/opt/ompi/bin/mpirun",
                         "-n",
                         "8",
                         "--hostfile",
                         "hosts.txt",
                         "--bind-to",
                         "core",
                         "--allow-run-as-root",
                         "-x",
                         "OMP_NUM_THREADS=2",
                         "-x",
                         "OPENBLAS_NUM_THREADS=2",
                         "tw",
                         "train",
                         "a.yaml"};
  EXPECT_EQ(fromConfig, expected);

  // The request wins over the config for ranks and hostfile.
  const Argv fromRequest =
      mpirunCommand(config, MpirunRequest{"a.yaml", 3, "other_hosts", "tw", {}, false});
  const Argv expectedRequest = {"/opt/ompi/bin/mpirun",
                                "-n",
                                "3",
                                "--hostfile",
                                "other_hosts",
                                "--bind-to",
                                "core",
                                "-x",
                                "OMP_NUM_THREADS=2",
                                "-x",
                                "OPENBLAS_NUM_THREADS=2",
                                "tw",
                                "train",
                                "a.yaml"};
  EXPECT_EQ(fromRequest, expectedRequest);
}

TEST(MpirunCommandTest, TcpTransportWithInterface) {
  const core::Config config =
      configFrom("launch:\n  ranks: 2\n  transport: tcp\n  tcp_interface: lo\n");
  const Argv argv = mpirunCommand(config, MpirunRequest{"c.yaml", 0, "", "tw", {}, false});
  const Argv expected = {"mpirun",
                         "-n",
                         "2",
                         "--oversubscribe",
                         "--bind-to",
                         "none",
                         "--mca",
                         "pml",
                         "ob1",
                         "--mca",
                         "btl",
                         "tcp,self",
                         "--mca",
                         "btl_tcp_if_include",
                         "lo",
                         "-x",
                         "OMP_NUM_THREADS=1",
                         "-x",
                         "OPENBLAS_NUM_THREADS=1",
                         "tw",
                         "train",
                         "c.yaml"};
  EXPECT_EQ(argv, expected);
}

TEST(MpirunCommandTest, TcpWithoutInterfaceAndSharedMemory) {
  const Argv tcp = mpirunCommand(configFrom("launch: {ranks: 2, transport: tcp}"),
                                 MpirunRequest{"c.yaml", 0, "", "tw", {}, false});
  const Argv expectedTcp = {"mpirun",    "-n",
                            "2",         "--oversubscribe",
                            "--bind-to", "none",
                            "--mca",     "pml",
                            "ob1",       "--mca",
                            "btl",       "tcp,self",
                            "-x",        "OMP_NUM_THREADS=1",
                            "-x",        "OPENBLAS_NUM_THREADS=1",
                            "tw",        "train",
                            "c.yaml"};
  EXPECT_EQ(tcp, expectedTcp);

  const Argv shm = mpirunCommand(configFrom("launch: {ranks: 2, transport: shm}"),
                                 MpirunRequest{"c.yaml", 0, "", "tw", {}, true});
  const Argv expectedShm = {"mpirun",
                            "-n",
                            "2",
                            "--oversubscribe",
                            "--bind-to",
                            "none",
                            "--allow-run-as-root",
                            "--mca",
                            "btl",
                            "self,vader",
                            "-x",
                            "OMP_NUM_THREADS=1",
                            "-x",
                            "OPENBLAS_NUM_THREADS=1",
                            "tw",
                            "train",
                            "c.yaml"};
  EXPECT_EQ(shm, expectedShm);
}

TEST(MpirunCommandTest, ExtraArgsGoBeforeTheProgram) {
  const core::Config config = configFrom(
      "launch:\n  ranks: 1\n  extra_args: [--mca, btl_base_verbose, \"30\", --tag-output]\n");
  const Argv argv = mpirunCommand(config, MpirunRequest{"e.yaml", 0, "", "tw", {}, false});
  const Argv expected = {"mpirun",    "-n",
                         "1",         "--oversubscribe",
                         "--bind-to", "none",
                         "-x",        "OMP_NUM_THREADS=1",
                         "-x",        "OPENBLAS_NUM_THREADS=1",
                         "--mca",     "btl_base_verbose",
                         "30",        "--tag-output",
                         "tw",        "train",
                         "e.yaml"};
  EXPECT_EQ(argv, expected);
}

TEST(MpirunCommandTest, OverridesAreForwardedVerbatimInOrder) {
  const Argv argv = mpirunCommand(
      configFrom("launch: {ranks: 2}"),
      MpirunRequest{"o.yaml",
                    0,
                    "",
                    "tw",
                    {"run.name=my run", "model.hidden=[512, 512]", "run.name=it's \"quoted\""},
                    false});
  const Argv expected = {"mpirun",
                         "-n",
                         "2",
                         "--oversubscribe",
                         "--bind-to",
                         "none",
                         "-x",
                         "OMP_NUM_THREADS=1",
                         "-x",
                         "OPENBLAS_NUM_THREADS=1",
                         "tw",
                         "train",
                         "o.yaml",
                         "--set",
                         "run.name=my run",
                         "--set",
                         "model.hidden=[512, 512]",
                         "--set",
                         "run.name=it's \"quoted\""};
  EXPECT_EQ(argv, expected);
  EXPECT_EQ(shellQuote(argv),
            "mpirun -n 2 --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x "
            "OPENBLAS_NUM_THREADS=1 tw train o.yaml --set 'run.name=my run' --set "
            "'model.hidden=[512, 512]' --set 'run.name=it'\\''s \"quoted\"'");
}

TEST(MpirunCommandTest, ConfigPathDefaultsToTheSourceAndBadRequestsThrow) {
  core::Config config;
  config.sourcePath = "from/source.yaml";
  const Argv argv = mpirunCommand(config, MpirunRequest{"", 2, "", "tw", {}, false});
  EXPECT_EQ(argv.back(), "from/source.yaml");

  EXPECT_THROW((void)mpirunCommand(core::Config{}, MpirunRequest{"", 2, "", "tw", {}, false}),
               InvalidArgument);
  EXPECT_THROW((void)mpirunCommand(config, MpirunRequest{"a.yaml", 2, "", "", {}, false}),
               InvalidArgument);
  EXPECT_THROW((void)mpirunCommand(config, MpirunRequest{"a.yaml", -1, "", "tw", {}, false}),
               InvalidArgument);
}

TEST(ShellQuoteTest, QuotesOnlyWhatTheShellWouldSplitOrExpand) {
  EXPECT_EQ(shellQuote({}), "");
  EXPECT_EQ(shellQuote({"a", "b-c", "x=1,2", "/p/q.yaml", "u@h:%+_"}),
            "a b-c x=1,2 /p/q.yaml u@h:%+_");
  EXPECT_EQ(shellQuote({""}), "''");
  EXPECT_EQ(shellQuote({"two words"}), "'two words'");
  EXPECT_EQ(shellQuote({"$HOME", "*", "a;b", "[1]", "~"}), "'$HOME' '*' 'a;b' '[1]' '~'");
  EXPECT_EQ(shellQuote({"it's"}), "'it'\\''s'");
}

// The round trip through a real shell: sh splits the quoted line back into the same words.
TEST(ShellQuoteTest, ShellSplitsTheLineBackIntoTheSameArguments) {
  const Argv args = {"plain", "two words", "it's", "", "$HOME \"x\"", "tab\there", "a\\b"};
  const std::string command = "for a in " + shellQuote(args) + "; do printf '<%s>' \"$a\"; done";
  FILE* pipe = popen(("sh -c " + shellQuote({command})).c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char chunk[256];
  while (fgets(chunk, sizeof(chunk), pipe) != nullptr) output += chunk;
  ASSERT_EQ(pclose(pipe), 0);
  EXPECT_EQ(output, "<plain><two words><it's><><$HOME \"x\"><tab\there><a\\b>");
}

}  // namespace
}  // namespace thinwire::launch

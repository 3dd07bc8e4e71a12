#include "launch/srun_command.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/error.h"
#include "core/config.h"

namespace thinwire::launch {
namespace {

using Argv = std::vector<std::string>;

// Expected vectors are written by hand from the rules in srun_command.h.

TEST(SrunCommandTest, DefaultsUseTheAllocationsTaskCount) {
  const Argv argv = srunCommand(core::Config{}, SrunRequest{"exp.yaml", 0, "/bin/tw", {}});
  const Argv expected = {"srun",
                         "--mpi=pmix",
                         "--cpu-bind=none",
                         "env",
                         "OMP_NUM_THREADS=1",
                         "OPENBLAS_NUM_THREADS=1",
                         "/bin/tw",
                         "train",
                         "exp.yaml"};
  EXPECT_EQ(argv, expected);
}

TEST(SrunCommandTest, RanksBindingTransportArgsAndOverrides) {
  const core::Config config = core::Config::fromString(
      "launch:\n  bind_to: socket\n  transport: tcp\n  tcp_interface: ib0\n  srun_mpi: pmi2\n"
      "  srun_args: [--exclusive, --kill-on-bad-exit=1]\ntrain:\n  threads: 4\n");
  const Argv argv =
      srunCommand(config, SrunRequest{"s.yaml", 8, "tw", {"optim.lr=0.2", "run.name=a b"}});
  const Argv expected = {"srun",
                         "--ntasks",
                         "8",
                         "--mpi=pmi2",
                         "--cpu-bind=sockets",
                         "--exclusive",
                         "--kill-on-bad-exit=1",
                         "env",
                         "OMP_NUM_THREADS=4",
                         "OPENBLAS_NUM_THREADS=4",
                         "OMPI_MCA_pml=ob1",
                         "OMPI_MCA_btl=tcp,self",
                         "OMPI_MCA_btl_tcp_if_include=ib0",
                         "tw",
                         "train",
                         "s.yaml",
                         "--set",
                         "optim.lr=0.2",
                         "--set",
                         "run.name=a b"};
  EXPECT_EQ(argv, expected);
}

TEST(SrunCommandTest, SharedMemoryAndCoreBinding) {
  const core::Config config =
      core::Config::fromString("launch:\n  bind_to: core\n  transport: shm\n");
  const Argv argv = srunCommand(config, SrunRequest{"s.yaml", 2, "tw", {}});
  const Argv expected = {"srun",
                         "--ntasks",
                         "2",
                         "--mpi=pmix",
                         "--cpu-bind=cores",
                         "env",
                         "OMP_NUM_THREADS=1",
                         "OPENBLAS_NUM_THREADS=1",
                         "OMPI_MCA_btl=self,vader",
                         "tw",
                         "train",
                         "s.yaml"};
  EXPECT_EQ(argv, expected);
}

TEST(SrunCommandTest, BadRequestsThrow) {
  EXPECT_THROW((void)srunCommand(core::Config{}, SrunRequest{"", 0, "tw", {}}), InvalidArgument);
  EXPECT_THROW((void)srunCommand(core::Config{}, SrunRequest{"a.yaml", 0, "", {}}),
               InvalidArgument);
  EXPECT_THROW((void)srunCommand(core::Config{}, SrunRequest{"a.yaml", -2, "tw", {}}),
               InvalidArgument);
}

}  // namespace
}  // namespace thinwire::launch

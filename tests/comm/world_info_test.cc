// WorldInfo::fromEnvironment() parsing. Each test sets variables in this single-threaded process
// and restores the original environment afterwards.
#include "comm/world_info.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>

#include "base/error.h"

namespace thinwire::comm {
namespace {

const char* const kLauncherVariables[] = {"OMPI_COMM_WORLD_RANK",
                                          "OMPI_COMM_WORLD_SIZE",
                                          "OMPI_COMM_WORLD_LOCAL_RANK",
                                          "OMPI_COMM_WORLD_LOCAL_SIZE",
                                          "PMIX_RANK",
                                          "OMPI_MCA_ess",
                                          "SLURM_PROCID",
                                          "SLURM_NTASKS",
                                          "SLURM_LOCALID",
                                          "SLURM_NODEID",
                                          "SLURM_TASKS_PER_NODE",
                                          "SLURM_NTASKS_PER_NODE"};

class WorldInfoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kLauncherVariables) {
      const char* value = std::getenv(name);
      if (value != nullptr) saved_[name] = value;
      unsetenv(name);
    }
  }
  void TearDown() override {
    for (const char* name : kLauncherVariables) unsetenv(name);
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
  }
  void set(const char* name, const char* value) { setenv(name, value, 1); }

 private:
  std::map<std::string, std::string> saved_;
};

TEST_F(WorldInfoTest, DefaultsToASingleRankWithoutLauncher) {
  WorldInfo info = WorldInfo::fromEnvironment();
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.worldSize, 1);
  EXPECT_EQ(info.localRank, 0);
  EXPECT_EQ(info.localSize, 1);
  EXPECT_EQ(info.launcher, "none");
}

TEST_F(WorldInfoTest, ReadsOpenMpiVariables) {
  set("OMPI_COMM_WORLD_RANK", "5");
  set("OMPI_COMM_WORLD_SIZE", "8");
  set("OMPI_COMM_WORLD_LOCAL_RANK", "1");
  set("OMPI_COMM_WORLD_LOCAL_SIZE", "4");
  set("SLURM_PROCID", "0");  // Open MPI's own variables take precedence
  WorldInfo info = WorldInfo::fromEnvironment();
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.worldSize, 8);
  EXPECT_EQ(info.localRank, 1);
  EXPECT_EQ(info.localSize, 4);
  EXPECT_EQ(info.launcher, "mpirun");
}

TEST_F(WorldInfoTest, ReadsPmixRankWithTheSizeFromSlurm) {
  set("PMIX_RANK", "2");
  set("SLURM_NTASKS", "3");
  WorldInfo info = WorldInfo::fromEnvironment();
  EXPECT_EQ(info.rank, 2);
  EXPECT_EQ(info.worldSize, 3);
  EXPECT_EQ(info.launcher, "mpirun");
}

TEST_F(WorldInfoTest, RejectsPmixRankWithoutAWorldSize) {
  set("PMIX_RANK", "2");
  EXPECT_THROW(WorldInfo::fromEnvironment(), InvalidArgument);
}

// What MPI_Init exports into a process started without mpirun (Open MPI 4.1).
TEST_F(WorldInfoTest, OpenMpiSingletonIsAWorldOfOne) {
  set("PMIX_RANK", "0");
  set("OMPI_MCA_ess", "singleton");
  WorldInfo info = WorldInfo::fromEnvironment();
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.worldSize, 1);
  EXPECT_EQ(info.localSize, 1);
  EXPECT_EQ(info.launcher, "none");
  // Under mpirun the launcher's variables still decide.
  set("OMPI_COMM_WORLD_RANK", "1");
  set("OMPI_COMM_WORLD_SIZE", "2");
  EXPECT_EQ(WorldInfo::fromEnvironment().worldSize, 2);
}

TEST_F(WorldInfoTest, ReadsSlurmVariablesAndTasksPerNode) {
  set("SLURM_PROCID", "6");
  set("SLURM_NTASKS", "7");
  set("SLURM_LOCALID", "0");
  set("SLURM_NODEID", "3");
  set("SLURM_TASKS_PER_NODE", "2(x3),1");  // nodes 0-2 run two tasks, node 3 runs one
  WorldInfo info = WorldInfo::fromEnvironment();
  EXPECT_EQ(info.rank, 6);
  EXPECT_EQ(info.worldSize, 7);
  EXPECT_EQ(info.localRank, 0);
  EXPECT_EQ(info.localSize, 1);
  EXPECT_EQ(info.launcher, "slurm");

  set("SLURM_NODEID", "1");
  set("SLURM_LOCALID", "1");
  set("SLURM_PROCID", "3");
  EXPECT_EQ(WorldInfo::fromEnvironment().localSize, 2);
}

TEST_F(WorldInfoTest, RejectsMalformedValues) {
  for (const char* bad : {"", "abc", "-1", "3x", " 2", "99999999999"}) {
    set("OMPI_COMM_WORLD_RANK", bad);
    set("OMPI_COMM_WORLD_SIZE", "4");
    EXPECT_THROW(WorldInfo::fromEnvironment(), InvalidArgument) << "'" << bad << "'";
  }
}

TEST_F(WorldInfoTest, RejectsARankOutsideTheWorld) {
  set("OMPI_COMM_WORLD_RANK", "4");
  set("OMPI_COMM_WORLD_SIZE", "4");
  try {
    WorldInfo::fromEnvironment();
    ADD_FAILURE() << "rank 4 of 4 accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("rank 4"), std::string::npos) << e.what();
  }
  set("OMPI_COMM_WORLD_RANK", "0");
  set("OMPI_COMM_WORLD_SIZE", "0");
  EXPECT_THROW(WorldInfo::fromEnvironment(), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::comm

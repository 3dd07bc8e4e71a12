// makeCommunicator(kTcp) and the store address in WorldInfo: which variables name the store,
// what happens without one, and a single rank that needs none. The variables are process-wide,
// so these run one rank per test (several ranks of one process would all read the same rank).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <map>
#include <optional>
#include <string>

#include "base/error.h"
#include "comm/make_communicator.h"
#include "comm/world_info.h"
#include "tests/testing/free_port.h"

namespace thinwire::comm {
namespace {

// Sets (or, for nullopt, unsets) variables for one test and restores them afterwards.
class ScopedEnvironment {
 public:
  explicit ScopedEnvironment(const std::map<std::string, std::optional<std::string>>& values) {
    for (const auto& [name, value] : values) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      apply(name, value);
    }
  }
  ~ScopedEnvironment() {
    for (const auto& [name, value] : saved_) apply(name, value);
  }

 private:
  static void apply(const std::string& name, const std::optional<std::string>& value) {
    if (value) {
      ::setenv(name.c_str(), value->c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
  std::map<std::string, std::optional<std::string>> saved_;
};

// Every launcher variable WorldInfo reads, unset: a process started by hand.
std::map<std::string, std::optional<std::string>> bareProcess() {
  std::map<std::string, std::optional<std::string>> values;
  for (const char* name :
       {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
        "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_NODEID", "THINWIRE_STORE",
        "MASTER_ADDR", "MASTER_PORT"}) {
    values[name] = std::nullopt;
  }
  return values;
}

TEST(TcpMakeCommunicatorTest, ParsesAndPrintsTheBackendName) {
  EXPECT_EQ(parseBackend("tcp"), CommunicatorOptions::Backend::kTcp);
  EXPECT_EQ(toString(CommunicatorOptions::Backend::kTcp), "tcp");
  try {
    (void)parseBackend("gloo");
    ADD_FAILURE() << "gloo accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("tcp"), std::string::npos) << e.what();
  }
}

TEST(TcpMakeCommunicatorTest, StoreAddressComesFromThinwireStoreThenMasterAddrAndPort) {
  auto values = bareProcess();
  {
    ScopedEnvironment environment(values);
    EXPECT_EQ(WorldInfo::fromEnvironment().storeAddress, "");
  }
  values["MASTER_ADDR"] = "node3";
  {
    ScopedEnvironment environment(values);  // MASTER_ADDR alone names no store
    EXPECT_EQ(WorldInfo::fromEnvironment().storeAddress, "");
  }
  values["MASTER_PORT"] = "29501";
  {
    ScopedEnvironment environment(values);
    EXPECT_EQ(WorldInfo::fromEnvironment().storeAddress, "node3:29501");
  }
  values["THINWIRE_STORE"] = "10.1.2.3:4000";
  {
    ScopedEnvironment environment(values);
    EXPECT_EQ(WorldInfo::fromEnvironment().storeAddress, "10.1.2.3:4000");
  }
  for (const char* bad : {"node3", ":4000", "node3:", "node3:0", "node3:70000", "node3:x"}) {
    values["THINWIRE_STORE"] = bad;
    ScopedEnvironment environment(values);
    EXPECT_THROW(WorldInfo::fromEnvironment(), InvalidArgument) << bad;
  }
}

TEST(TcpMakeCommunicatorTest, SeveralRanksWithoutAStoreAreAConfigErrorNamingTheVariables) {
  auto values = bareProcess();
  values["SLURM_PROCID"] = "1";
  values["SLURM_NTASKS"] = "2";
  ScopedEnvironment environment(values);
  try {
    (void)makeCommunicator({.backend = CommunicatorOptions::Backend::kTcp});
    ADD_FAILURE() << "a 2-rank tcp job started without a store";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("THINWIRE_STORE=HOST:PORT"), std::string::npos)
        << e.what();
  }
}

// A single rank works with no store address, and with one (rank 0 then serves it).
TEST(TcpMakeCommunicatorTest, ASingleRankRunsWithOrWithoutAStoreAddress) {
  auto values = bareProcess();
  for (bool withStore : {false, true}) {
    if (withStore) {
      values["MASTER_ADDR"] = "127.0.0.1";
      values["MASTER_PORT"] = std::to_string(thinwire::testing::freeLoopbackPort());
    }
    ScopedEnvironment environment(values);
    std::unique_ptr<Communicator> comm = makeCommunicator(
        {.backend = CommunicatorOptions::Backend::kTcp, .timeout = std::chrono::seconds(20)});
    EXPECT_EQ(comm->backendName(), "tcp");
    EXPECT_EQ(comm->rank(), 0);
    EXPECT_EQ(comm->worldSize(), 1);
    at::Tensor tensor = at::full({5}, 3.5f);
    comm->allreduce(tensor, {.op = ReduceOp::kAverage})->wait(std::chrono::seconds(20));
    EXPECT_TRUE(at::equal(tensor, at::full({5}, 3.5f))) << withStore;
  }
}

}  // namespace
}  // namespace thinwire::comm

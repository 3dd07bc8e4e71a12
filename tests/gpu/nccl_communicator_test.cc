// The NCCL backend: the backend conformance suite (tests/comm/conformance_cases.h, CPU tensors
// staged through the GPU) on a world of one, the same collectives on CUDA tensors, and the suite
// on several ranks (threads, one GPU each, rendezvous over a TcpStore) when the machine has
// several GPUs.
#include "comm/nccl/nccl_communicator.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/tcp/tcp_store.h"
#include "tests/comm/conformance_cases.h"
#include "tests/gpu/gpu_test_support.h"

namespace thinwire::comm {
namespace {

using testing::ConformanceCase;
using testing::conformanceCases;

class NcclConformanceTest : public ::testing::TestWithParam<ConformanceCase> {};

TEST_P(NcclConformanceTest, WorldOfOneMatchesTheReference) {
  TW_REQUIRE_GPU();
  NcclCommunicator comm(NcclCommunicatorOptions{.device = 0});
  EXPECT_EQ(comm.backendName(), "nccl");
  EXPECT_EQ(comm.worldSize(), 1);
  GetParam().run(comm);
}

TEST_P(NcclConformanceTest, SeveralRanksMatchTheReference) {
  TW_REQUIRE_GPU();
  const int ranks = std::min(kernels::deviceCount(), 4);
  if (ranks < 2) GTEST_SKIP() << "one GPU: NCCL runs one rank per device, no multi-rank test";
  TcpStoreServer server(TcpStoreServerOptions{});
  std::vector<std::thread> threads;
  for (int rank = 0; rank < ranks; ++rank) {
    threads.emplace_back([&, rank] {
      TcpStore store(TcpStoreOptions{.port = server.port()});
      NcclCommunicator comm(store, rank, ranks, NcclCommunicatorOptions{.device = rank});
      GetParam().run(comm);
    });
  }
  for (std::thread& thread : threads) thread.join();
}

INSTANTIATE_TEST_SUITE_P(AllCases,
                         NcclConformanceTest,
                         ::testing::ValuesIn(conformanceCases()),
                         [](const ::testing::TestParamInfo<ConformanceCase>& info) {
                           return info.param.name;
                         });

TEST(NcclCommunicatorTest, CollectivesOnCudaTensorsStayOnTheDevice) {
  TW_REQUIRE_GPU();
  NcclCommunicator comm(NcclCommunicatorOptions{.device = 0});
  const at::TensorOptions onGpu = at::TensorOptions(at::kFloat).device(at::kCUDA, 0);
  at::Tensor values = at::arange(1000, onGpu) * 0.5f;
  const at::Tensor expected = values.clone();
  comm.allreduce(values, {.op = ReduceOp::kAverage})->wait(testing::kTestTimeout);
  EXPECT_TRUE(at::equal(values, expected));
  at::Tensor gathered = at::zeros({1000}, onGpu);
  comm.allgatherv(values, gathered, {1000})->wait(testing::kTestTimeout);
  EXPECT_TRUE(at::equal(gathered, expected));
  at::Tensor routed = at::zeros({1000}, onGpu);
  comm.allToAll(values, routed, {1000}, {1000})->wait(testing::kTestTimeout);
  EXPECT_TRUE(at::equal(routed, expected));
  // Output aliasing the input (the rank's own block): read from a copy first.
  at::Tensor block = values.narrow(0, 0, 1000);
  comm.reduceScatter(values, block, {1000}, {.op = ReduceOp::kSum})->wait(testing::kTestTimeout);
  EXPECT_TRUE(at::equal(values, expected));
  comm.broadcast(values, {.root = 0})->wait(testing::kTestTimeout);
  EXPECT_TRUE(at::equal(values, expected));
  EXPECT_TRUE(values.is_cuda());
  // Kernels queued on the caller's stream before the call are seen by the collective.
  at::Tensor ordered = at::zeros({1 << 20}, onGpu);
  ordered.add_(3.0f);
  comm.allreduce(ordered, {})->wait(testing::kTestTimeout);
  EXPECT_EQ(ordered.sum().item<double>(), 3.0 * (1 << 20));
}

TEST(NcclCommunicatorTest, ErrorsNameTheNcclVersionAndRank) {
  TW_REQUIRE_GPU();
  const std::string version = NcclCommunicator::ncclVersion();
  EXPECT_NE(version, "unknown");
  try {
    NcclCommunicator comm(NcclCommunicatorOptions{.device = kernels::deviceCount()});
    ADD_FAILURE() << "a device beyond the visible ones was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("device"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace thinwire::comm

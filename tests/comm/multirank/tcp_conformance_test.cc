// Runs the backend conformance suite (tests/comm/conformance_cases.h) on the TCP backend, ranks
// as threads of this process over loopback sockets, for world sizes 1, 2, 3, 4 and 7; then the
// TCP backend's own promises: rank-order reductions equal to the local backend's bit for bit,
// and bounded, rank-naming failures (a silent rank, a closed peer, a rank that never starts).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "comm/tcp/tcp_communicator.h"
#include "comm/tcp/tcp_store.h"
#include "tests/comm/conformance_cases.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::comm {
namespace {

using testing::ConformanceCase;
using testing::conformanceCases;
using Clock = std::chrono::steady_clock;

struct TcpWorldOptions {
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  int64_t segmentBytes = int64_t{16} << 20;
  // Ranks that construct a communicator; the others never appear. Empty: all.
  std::vector<int> present;
};

// Builds the communicators of `worldSize` thread ranks the way separate processes would: one
// store server on loopback, one store client per rank, every rank constructing concurrently.
// A rank whose construction threw has a null entry and its error in `errors`.
std::vector<std::unique_ptr<Communicator>> makeTcpWorld(
    int worldSize,
    const TcpWorldOptions& options = {},
    std::vector<std::string>* errors = nullptr) {
  TcpStoreServer server({.host = "127.0.0.1", .port = 0});
  std::vector<std::unique_ptr<Communicator>> world(worldSize);
  std::vector<std::string> failures(worldSize);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < worldSize; ++rank) {
    if (!options.present.empty() &&
        std::find(options.present.begin(), options.present.end(), rank) == options.present.end()) {
      continue;
    }
    threads.emplace_back([&, rank] {
      try {
        TcpStore store({.host = "127.0.0.1", .port = server.port()});
        world[rank] = std::make_unique<TcpCommunicator>(
            store, TcpCommunicatorOptions{.rank = rank,
                                          .worldSize = worldSize,
                                          .timeout = options.timeout,
                                          .keyPrefix = "test",
                                          .exitOnAbort = false,
                                          .segmentBytes = options.segmentBytes});
      } catch (const std::exception& e) {
        failures[rank] = e.what();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  if (errors != nullptr) *errors = failures;
  return world;
}

class TcpConformanceTest : public ::testing::TestWithParam<std::tuple<ConformanceCase, int>> {};

TEST_P(TcpConformanceTest, MatchesSingleProcessReference) {
  const auto& [conformanceCase, worldSize] = GetParam();
  std::vector<std::unique_ptr<Communicator>> world = makeTcpWorld(worldSize);
  for (int rank = 0; rank < worldSize; ++rank) ASSERT_NE(world[rank], nullptr) << rank;
  EXPECT_EQ(world[0]->backendName(), "tcp");
  ::thinwire::testing::runOnEveryRank(world, conformanceCase.run);
}

INSTANTIATE_TEST_SUITE_P(
    AllCases,
    TcpConformanceTest,
    ::testing::Combine(::testing::ValuesIn(conformanceCases()), ::testing::Values(1, 2, 3, 4, 7)),
    [](const ::testing::TestParamInfo<std::tuple<ConformanceCase, int>>& info) {
      return std::get<0>(info.param).name + "_n" + std::to_string(std::get<1>(info.param));
    });

// Random values (not small integers): the rounding of every partial sum shows, so only the same
// additions in the same order give the same bits.
at::Tensor randomInput(int rank, int64_t numel, at::ScalarType dtype, int salt) {
  at::Generator generator = at::detail::createCPUGenerator(1000 * salt + rank);
  return (at::randn({numel}, generator, at::kFloat) * (1 + rank)).to(dtype);
}

// Runs allreduce(op) of randomInput on every rank of `world` and returns every rank's result.
std::vector<at::Tensor> allreduceOnEveryRank(std::vector<std::unique_ptr<Communicator>>& world,
                                             int64_t numel,
                                             at::ScalarType dtype,
                                             ReduceOp op,
                                             int salt) {
  std::vector<at::Tensor> results(world.size());
  ::thinwire::testing::runOnEveryRank(world, [&](Communicator& comm) {
    at::Tensor tensor = randomInput(comm.rank(), numel, dtype, salt);
    comm.allreduce(tensor, {.op = op})->wait(testing::kTestTimeout);
    results[comm.rank()] = tensor;
  });
  return results;
}

bool sameBits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.numel() != b.numel()) return false;
  const at::ScalarType asInt = a.element_size() == 4 ? at::kInt : at::kShort;
  return at::equal(a.view(asInt), b.view(asInt));
}

TEST(TcpCommunicatorTest, AllreduceIsBitIdenticalToTheLocalBackendAndAcrossRanks) {
  // segmentBytes of 4 KiB: a 100003-element tensor crosses many segments, whose boundaries must
  // not change a single bit.
  int salt = 0;
  for (int worldSize : {3, 4}) {
    std::vector<std::unique_ptr<Communicator>> tcp =
        makeTcpWorld(worldSize, {.segmentBytes = 4096});
    std::vector<std::unique_ptr<Communicator>> local = makeLocalWorld(worldSize);
    for (auto [dtype, op] :
         {std::pair{at::kFloat, ReduceOp::kSum}, std::pair{at::kFloat, ReduceOp::kAverage},
          std::pair{at::kHalf, ReduceOp::kSum}, std::pair{at::kBFloat16, ReduceOp::kAverage}}) {
      ++salt;
      const int64_t numel = 100003;
      std::vector<at::Tensor> viaTcp = allreduceOnEveryRank(tcp, numel, dtype, op, salt);
      std::vector<at::Tensor> viaLocal = allreduceOnEveryRank(local, numel, dtype, op, salt);
      // Independent reference: the rank-order sum written out, in float, cast once.
      at::Tensor sum = randomInput(0, numel, dtype, salt).to(at::kFloat);
      for (int r = 1; r < worldSize; ++r) sum = sum + randomInput(r, numel, dtype, salt);
      at::Tensor reference = sum.to(dtype);
      if (op == ReduceOp::kAverage) reference.div_(worldSize);
      const std::string context = "n=" + std::to_string(worldSize) + " " +
                                  std::string(c10::toString(dtype)) + " " + toString(op);
      for (int r = 0; r < worldSize; ++r) {
        EXPECT_TRUE(sameBits(viaTcp[r], viaLocal[r])) << context << " rank " << r;
        EXPECT_TRUE(sameBits(viaTcp[r], viaTcp[0])) << context << " rank " << r;
        EXPECT_TRUE(sameBits(viaTcp[r], reference)) << context << " rank " << r;
      }
    }
  }
}

TEST(TcpCommunicatorTest, ReduceScatterInPiecesMatchesTheLocalBackendBitForBit) {
  const int worldSize = 3;
  std::vector<std::unique_ptr<Communicator>> tcp = makeTcpWorld(worldSize, {.segmentBytes = 1024});
  std::vector<std::unique_ptr<Communicator>> local = makeLocalWorld(worldSize);
  const std::vector<int64_t> counts = {5000, 0, 1237};
  auto run = [&](std::vector<std::unique_ptr<Communicator>>& world) {
    std::vector<at::Tensor> outputs(worldSize);
    ::thinwire::testing::runOnEveryRank(world, [&](Communicator& comm) {
      at::Tensor input = randomInput(comm.rank(), 6237, at::kFloat, 77);
      at::Tensor output = at::empty({counts[comm.rank()]}, at::kFloat);
      comm.reduceScatter(input, output, counts, {.op = ReduceOp::kAverage})
          ->wait(testing::kTestTimeout);
      outputs[comm.rank()] = output;
    });
    return outputs;
  };
  std::vector<at::Tensor> viaTcp = run(tcp);
  std::vector<at::Tensor> viaLocal = run(local);
  for (int r = 0; r < worldSize; ++r) EXPECT_TRUE(sameBits(viaTcp[r], viaLocal[r])) << r;
}

TEST(TcpCommunicatorTest, ASilentRankTimesOutTheOthersNamingIt) {
  const auto timeout = std::chrono::milliseconds(1500);
  std::vector<std::unique_ptr<Communicator>> world = makeTcpWorld(3, {.timeout = timeout});
  std::vector<std::string> messages(3);
  std::vector<double> seconds(3, 0);
  std::vector<std::thread> threads;
  for (int rank : {0, 1}) {
    threads.emplace_back([&, rank] {
      at::Tensor tensor = at::ones({1000}, at::kFloat);
      const auto start = Clock::now();
      try {
        world[rank]->allreduce(tensor, {})->wait(std::chrono::seconds(30));
        messages[rank] = "completed";
      } catch (const TimeoutError& e) {
        messages[rank] = std::string("TimeoutError: ") + e.what();
      } catch (const std::exception& e) {
        messages[rank] = std::string("other: ") + e.what();
      }
      seconds[rank] = std::chrono::duration<double>(Clock::now() - start).count();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int rank : {0, 1}) {
    EXPECT_EQ(messages[rank].rfind("TimeoutError: ", 0), 0U) << messages[rank];
    EXPECT_NE(messages[rank].find("rank(s) 2 "), std::string::npos) << messages[rank];
    EXPECT_NE(messages[rank].find("allreduce"), std::string::npos) << messages[rank];
    EXPECT_GE(seconds[rank], 1.4) << rank;
    EXPECT_LT(seconds[rank], 10.0) << rank;
  }
  // The communicator is broken after the timeout: the next operation fails at once.
  EXPECT_THROW(world[0]->barrier()->wait(std::chrono::seconds(5)), CommError);
}

// A peer that closes its connections (destroyed, or its process ended) fails the others' pending
// collective with CommError (not a timeout) naming it, long before the timeout.
TEST(TcpCommunicatorTest, APeerThatClosesFailsTheOthersWithCommErrorNamingIt) {
  std::vector<std::unique_ptr<Communicator>> world =
      makeTcpWorld(3, {.timeout = std::chrono::seconds(60)});
  std::vector<std::string> messages(3);
  std::vector<double> seconds(3, 0);
  std::vector<std::thread> threads;
  for (int rank : {0, 1}) {
    threads.emplace_back([&, rank] {
      at::Tensor tensor = at::ones({100000}, at::kFloat);
      const auto start = Clock::now();
      try {
        world[rank]->allreduce(tensor, {})->wait(std::chrono::seconds(60));
        messages[rank] = "completed";
      } catch (const TimeoutError& e) {
        messages[rank] = std::string("TimeoutError: ") + e.what();
      } catch (const CommError& e) {
        messages[rank] = std::string("CommError: ") + e.what();
      }
      seconds[rank] = std::chrono::duration<double>(Clock::now() - start).count();
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  world[2].reset();
  for (std::thread& thread : threads) thread.join();
  for (int rank : {0, 1}) {
    EXPECT_EQ(messages[rank].rfind("CommError: ", 0), 0U) << messages[rank];
    EXPECT_NE(messages[rank].find("rank 2 closed the connection"), std::string::npos)
        << messages[rank];
    EXPECT_LT(seconds[rank], 20.0) << rank;
  }
}

TEST(TcpCommunicatorTest, AbortFailsPendingOperationsHereAndAtThePeers) {
  std::vector<std::unique_ptr<Communicator>> world = makeTcpWorld(2);
  std::string message;
  std::thread waiter([&] {
    at::Tensor tensor = at::ones({10}, at::kFloat);
    try {
      world[0]->allreduce(tensor, {})->wait(std::chrono::seconds(60));
      message = "completed";
    } catch (const TimeoutError& e) {
      message = std::string("TimeoutError: ") + e.what();
    } catch (const CommError& e) {
      message = std::string("CommError: ") + e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  world[1]->abort("test abort");
  waiter.join();
  EXPECT_EQ(message.rfind("CommError: ", 0), 0U) << message;
  EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
  at::Tensor tensor = at::ones({10}, at::kFloat);
  try {
    world[1]->allreduce(tensor, {})->wait(std::chrono::seconds(5));
    ADD_FAILURE() << "an aborted communicator completed an allreduce";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("test abort"), std::string::npos) << e.what();
  }
}

TEST(TcpCommunicatorTest, MismatchedCollectivesFailWithCommError) {
  std::vector<std::unique_ptr<Communicator>> world = makeTcpWorld(2);
  std::vector<std::string> messages(2);
  ::thinwire::testing::runOnEveryRank(world, [&](Communicator& comm) {
    at::Tensor tensor = at::ones({comm.rank() == 0 ? 4 : 5}, at::kFloat);
    try {
      comm.broadcast(tensor, {.root = 0})->wait(std::chrono::seconds(30));
    } catch (const CommError& e) {
      messages[comm.rank()] = e.what();
    }
  });
  EXPECT_NE(messages[1].find("same collectives"), std::string::npos) << messages[1];
}

TEST(TcpCommunicatorTest, ConstructionTimesOutNamingARankThatNeverAppears) {
  std::vector<std::string> errors;
  const auto start = Clock::now();
  std::vector<std::unique_ptr<Communicator>> world =
      makeTcpWorld(3, {.timeout = std::chrono::milliseconds(1000), .present = {0, 1}}, &errors);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (int rank : {0, 1}) {
    EXPECT_EQ(world[rank], nullptr);
    EXPECT_NE(errors[rank].find("rank(s) 2 of 3 did not publish"), std::string::npos)
        << errors[rank];
  }
  EXPECT_LT(seconds, 15.0);
}

TEST(TcpCommunicatorTest, RefusesBadOptions) {
  TcpStoreServer server({.host = "127.0.0.1", .port = 0});
  TcpStore store({.host = "127.0.0.1", .port = server.port()});
  EXPECT_THROW(TcpCommunicator(store, {.rank = 2, .worldSize = 2}), InvalidArgument);
  EXPECT_THROW(TcpCommunicator(store, {.rank = 0, .worldSize = 0}), InvalidArgument);
  EXPECT_THROW(TcpCommunicator(store, {.rank = 0, .worldSize = 1, .timeout = {}}), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::comm

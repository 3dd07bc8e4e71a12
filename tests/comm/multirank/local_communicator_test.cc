// Behaviour specific to the local backend: bit-exact rank-order reductions, timeouts, abort,
// mismatched collectives and vanished ranks.
#include "comm/local/local_communicator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <thread>

#include "base/error.h"
#include "base/timer.h"
#include "comm/make_communicator.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::comm {
namespace {

using namespace std::chrono_literals;

using ::thinwire::testing::runOnEveryRank;

at::Tensor randomInput(int rank, int64_t numel, at::ScalarType dtype) {
  at::Generator generator = at::detail::createCPUGenerator(1234 + rank);
  return at::randn({numel}, generator, at::TensorOptions().dtype(at::kFloat)).mul_(100).to(dtype);
}

// Independent reference: a plain loop over ranks in order, accumulating in float.
at::Tensor rankOrderSum(int worldSize, int64_t numel, at::ScalarType dtype) {
  std::vector<float> sum(numel, 0.0f);
  for (int rank = 0; rank < worldSize; ++rank) {
    at::Tensor values = randomInput(rank, numel, dtype).to(at::kFloat).contiguous();
    const float* data = values.data_ptr<float>();
    for (int64_t i = 0; i < numel; ++i) sum[i] = rank == 0 ? data[i] : sum[i] + data[i];
  }
  return at::from_blob(sum.data(), {numel}, at::kFloat).clone().to(dtype);
}

TEST(LocalCommunicatorTest, FloatSumsAreBitExactRankOrderSums) {
  const int worldSize = 7;
  const int64_t numel = 4099;
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    at::Tensor expected = rankOrderSum(worldSize, numel, dtype);
    std::vector<int64_t> counts(worldSize, numel / worldSize);
    counts.back() += numel % worldSize;
    auto world = makeLocalWorld(worldSize, {.timeout = 30s});
    runOnEveryRank(world, [&](Communicator& comm) {
      at::Tensor tensor = randomInput(comm.rank(), numel, dtype);
      at::Tensor block = at::empty({counts[comm.rank()]}, tensor.options());
      comm.reduceScatter(tensor, block, counts, {})->wait(30s);
      comm.allreduce(tensor, {})->wait(30s);
      EXPECT_TRUE(at::equal(tensor, expected)) << "rank " << comm.rank() << " " << dtype;
      int64_t offset = (numel / worldSize) * comm.rank();
      EXPECT_TRUE(at::equal(block, expected.narrow(0, offset, counts[comm.rank()])))
          << "rank " << comm.rank() << " " << dtype;
    });
  }
}

TEST(LocalCommunicatorTest, WaitTimesOutWhenARankNeverJoins) {
  auto world = makeLocalWorld(2, {.timeout = 300ms});
  at::Tensor tensor = at::ones({8});
  Stopwatch watch;
  std::unique_ptr<Work> work = world[0]->allreduce(tensor, {});
  EXPECT_THROW(work->wait(20ms), TimeoutError);  // the caller's own bound
  try {
    work->wait(10s);  // the backend's internal bound fires first
    ADD_FAILURE() << "allreduce completed without rank 1";
  } catch (const TimeoutError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("allreduce"), std::string::npos) << message;
    EXPECT_NE(message.find("rank(s) 1"), std::string::npos) << message;
  }
  EXPECT_LT(watch.seconds(), 5.0);
  // The world is broken now: later operations fail at once instead of mis-matching.
  EXPECT_THROW(world[0]->barrier()->wait(10s), CommError);
}

TEST(LocalCommunicatorTest, AbortUnblocksEveryWaitingRank) {
  auto world = makeLocalWorld(3, {.timeout = 60s});
  at::Tensor a = at::ones({8});
  at::Tensor b = at::ones({8});
  Stopwatch watch;
  std::unique_ptr<Work> first = world[0]->allreduce(a, {});
  std::unique_ptr<Work> second = world[1]->allreduce(b, {});
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(first->isCompleted());
  world[2]->abort("rank 2 saw a bad gradient");
  for (Work* work : {first.get(), second.get()}) {
    try {
      work->wait(10s);
      ADD_FAILURE() << "allreduce completed after abort";
    } catch (const TimeoutError& e) {
      ADD_FAILURE() << "abort surfaced as a timeout: " << e.what();
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("bad gradient"), std::string::npos) << e.what();
    }
  }
  EXPECT_LT(watch.seconds(), 5.0);
  EXPECT_THROW(world[0]->barrier()->wait(10s), CommError);
}

TEST(LocalCommunicatorTest, MismatchedCollectivesFailOnEveryRank) {
  auto world = makeLocalWorld(2, {.timeout = 30s});
  at::Tensor a = at::ones({4});
  at::Tensor b = at::ones({4});
  std::unique_ptr<Work> reduce = world[0]->allreduce(a, {});
  std::unique_ptr<Work> cast = world[1]->broadcast(b, {});
  for (Work* work : {reduce.get(), cast.get()}) {
    try {
      work->wait(10s);
      ADD_FAILURE() << "mismatched collectives completed";
    } catch (const CommError& e) {
      EXPECT_NE(std::string(e.what()).find("same order"), std::string::npos) << e.what();
    }
  }
}

TEST(LocalCommunicatorTest, DestroyingARankFailsThePeersWaitingForIt) {
  auto world = makeLocalWorld(2, {.timeout = 60s});
  at::Tensor tensor = at::ones({4});
  Stopwatch watch;
  std::unique_ptr<Work> work = world[0]->allreduce(tensor, {});
  world[1].reset();
  EXPECT_THROW(work->wait(10s), CommError);
  EXPECT_LT(watch.seconds(), 5.0);
}

TEST(LocalCommunicatorTest, RejectsAWorldWithoutRanks) {
  EXPECT_THROW(makeLocalWorld(0), InvalidArgument);
  EXPECT_THROW(makeLocalWorld(2, {.timeout = 0ms}), InvalidArgument);
}

TEST(LocalCommunicatorTest, FactoryBuildsASingleRankLocalCommunicator) {
  CommunicatorOptions options;
  options.backend = parseBackend("local");
  std::unique_ptr<Communicator> comm = makeCommunicator(options);
  EXPECT_EQ(comm->backendName(), "local");
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->worldSize(), 1);
  at::Tensor tensor = at::arange(5, at::kFloat);
  comm->allreduce(tensor, {.op = ReduceOp::kAverage})->wait(10s);
  EXPECT_TRUE(at::equal(tensor, at::arange(5, at::kFloat)));
}

}  // namespace
}  // namespace thinwire::comm

// Heartbeat over the TCP store: a silent rank is reported within the timeout with its last
// activity; live ranks are never reported; a dead store is reported; mismatched collectives
// raise one stall warning.
#include "comm/heartbeat.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "comm/tcp/tcp_store.h"

namespace thinwire::comm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

struct Recorder {
  std::mutex mutex;
  std::vector<PeerFailure> failures;
  std::vector<double> at;  // seconds after `start`
  std::vector<std::string> stalls;
  Clock::time_point start = Clock::now();
  std::function<void(const PeerFailure&)> failure() {
    return [this](const PeerFailure& f) {
      std::lock_guard<std::mutex> lock(mutex);
      failures.push_back(f);
      at.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    };
  }
  std::function<void(const std::string&)> stall() {
    return [this](const std::string& s) {
      std::lock_guard<std::mutex> lock(mutex);
      stalls.push_back(s);
    };
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mutex);
    return failures.size();
  }
};

HeartbeatOptions fast(int rank, int n) {
  return {.rank = rank,
          .worldSize = n,
          .interval = milliseconds(50),
          .timeout = milliseconds(1000),
          .stallAfter = milliseconds(200),
          .keyPrefix = "job/"};
}

TcpStoreOptions clientOf(const TcpStoreServer& server) {
  TcpStoreOptions options;
  options.port = server.port();
  options.connectTimeout = milliseconds(300);
  options.opTimeout = milliseconds(300);
  options.grace = milliseconds(200);
  return options;
}

TEST(HeartbeatTest, LiveRanksAreNeverReported) {
  TcpStoreServer server({});
  Recorder recorder;
  std::vector<std::unique_ptr<TcpStore>> stores;
  std::vector<std::unique_ptr<Heartbeat>> beats;
  for (int r = 0; r < 3; ++r) stores.push_back(std::make_unique<TcpStore>(clientOf(server)));
  for (int r = 0; r < 3; ++r) {
    beats.push_back(std::make_unique<Heartbeat>(*stores[r], fast(r, 3), recorder.failure()));
  }
  std::this_thread::sleep_for(milliseconds(2200));  // more than twice the timeout
  beats.clear();
  EXPECT_EQ(recorder.count(), 0u);
}

TEST(HeartbeatTest, AStoppedRankIsReportedWithinTheTimeoutWithItsActivity) {
  TcpStoreServer server({});
  Recorder recorder;
  TcpStore s0(clientOf(server)), s1(clientOf(server)), s2(clientOf(server));
  Heartbeat b0(s0, fast(0, 3), recorder.failure());
  Heartbeat b1(s1, fast(1, 3), recorder.failure());
  auto b2 = std::make_unique<Heartbeat>(s2, fast(2, 3), recorder.failure());
  b2->setActivity("collective: allreduce bucket 1 step 7");
  std::this_thread::sleep_for(milliseconds(300));
  recorder.start = Clock::now();
  b2.reset();  // rank 2 stops beating, like a killed or SIGSTOP-ed process
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (recorder.count() < 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_EQ(recorder.count(), 2u) << "both live ranks must report rank 2";
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(recorder.failures[i].rank, 2);
    EXPECT_EQ(recorder.failures[i].activity, "collective: allreduce bucket 1 step 7");
    EXPECT_GE(recorder.at[i], 1.0 - 0.1);  // not before the timeout (two beats of slack)
    EXPECT_LE(recorder.at[i], 1.0 + 1.5);  // soon after it (slack for a loaded machine)
    const std::string line = describe(recorder.failures[i]);
    EXPECT_NE(line.find("rank 2"), std::string::npos) << line;
    EXPECT_NE(line.find("allreduce bucket 1"), std::string::npos) << line;
  }
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(recorder.count(), 2u) << "a failed peer is reported once";
}

TEST(HeartbeatTest, ARankThatNeverStartsIsReported) {
  TcpStoreServer server({});
  Recorder recorder;
  TcpStore s0(clientOf(server));
  Heartbeat b0(s0, fast(0, 2), recorder.failure());
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (recorder.count() < 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_EQ(recorder.count(), 1u);
  EXPECT_EQ(recorder.failures[0].rank, 1);
  EXPECT_NE(describe(recorder.failures[0]).find("never reported"), std::string::npos);
}

TEST(HeartbeatTest, ADeadStoreIsReported) {
  auto server = std::make_unique<TcpStoreServer>(TcpStoreServerOptions{});
  Recorder recorder;
  TcpStore s0(clientOf(*server));
  Heartbeat b0(s0, fast(0, 1), recorder.failure());
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(recorder.count(), 0u);
  server->stop();
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (recorder.count() < 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_EQ(recorder.count(), 1u);
  EXPECT_EQ(recorder.failures[0].rank, -1);
  EXPECT_NE(describe(recorder.failures[0]).find("store"), std::string::npos);
}

TEST(HeartbeatTest, MismatchedCollectivesRaiseOneStallWarning) {
  TcpStoreServer server({});
  Recorder recorder;
  TcpStore s0(clientOf(server)), s1(clientOf(server));
  Heartbeat b0(s0, fast(0, 2), recorder.failure(), recorder.stall());
  Heartbeat b1(s1, fast(1, 2), recorder.failure(), recorder.stall());
  b0.setActivity("collective: allreduce bucket 1 step 3");
  b1.setActivity("collective: allreduce bucket 1 step 3");
  std::this_thread::sleep_for(milliseconds(400));
  {
    std::lock_guard<std::mutex> lock(recorder.mutex);
    EXPECT_TRUE(recorder.stalls.empty()) << "agreeing ranks raised a stall";
  }
  b1.setActivity("collective: allreduce bucket 2 step 3");
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(recorder.mutex);
      if (recorder.stalls.size() >= 2 || Clock::now() > deadline) break;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  std::this_thread::sleep_for(milliseconds(300));
  std::lock_guard<std::mutex> lock(recorder.mutex);
  ASSERT_FALSE(recorder.stalls.empty());
  EXPECT_LE(recorder.stalls.size(), 2u);  // once per inspecting rank, not once per beat
  EXPECT_NE(recorder.stalls[0].find("rank 0: allreduce bucket 1"), std::string::npos)
      << recorder.stalls[0];
  EXPECT_NE(recorder.stalls[0].find("rank 1: allreduce bucket 2"), std::string::npos)
      << recorder.stalls[0];
  EXPECT_TRUE(recorder.failures.empty());
}

TEST(HeartbeatTest, BadOptionsAreRefused) {
  TcpStoreServer server({});
  TcpStore store(clientOf(server));
  Recorder recorder;
  EXPECT_THROW(Heartbeat(store, fast(2, 2), recorder.failure()), InvalidArgument);
  HeartbeatOptions tight = fast(0, 2);
  tight.timeout = tight.interval;
  EXPECT_THROW(Heartbeat(store, tight, recorder.failure()), InvalidArgument);
  EXPECT_THROW(Heartbeat(store, fast(0, 2), nullptr), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::comm

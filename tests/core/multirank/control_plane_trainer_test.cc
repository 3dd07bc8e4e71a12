// The control plane in real (threads-as-ranks) runs: comm.timeline writes one merged Chrome trace
// with forward, backward, compress, communicate, decompress and optimizer spans on every rank,
// and comm.status serves the live metrics on rank 0 while the run trains.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "base/logging.h"
#include "comm/local/local_communicator.h"
#include "comm/tcp/status_server.h"
#include "core/trainer.h"
#include "tests/core/multirank/run_ranks.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

TEST(ControlPlaneTrainerTest, TimelineHasAllSixSpanKindsOnEveryRank) {
  testing::TempDir tmp("thinwire-timeline");
  Config c = smallConfig(tmp.path(), "traced");
  c.train.steps = 3;
  c.compression.method = "topk";
  c.compression.feedback = "ef";
  c.compression.ratio = 0.1;
  c.compression.minNumel = 1;
  c.comm.timeline = "trace.json";
  constexpr int kRanks = 3;
  runRanks(c, kRanks);
  const std::string merged = runDirectory(c) + "/trace.json";
  ASSERT_TRUE(std::filesystem::exists(merged));
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(
        std::filesystem::exists(runDirectory(c) + "/trace.rank" + std::to_string(r) + ".json"));
  }
  // Independent check with Python's json module: valid JSON, every rank (pid) has every span.
  ASSERT_EQ(std::system("/usr/bin/python3 -c 'import json' 2>/dev/null"), 0)
      << "/usr/bin/python3 is needed for the independent trace check";
  const std::string script = tmp.path() + "/check.py";
  std::ofstream(script)
      << "import json, sys\n"
         "d = json.load(open(sys.argv[1]))\n"
         "want = {'forward', 'backward', 'compress', 'communicate', 'decompress', 'optimizer'}\n"
         "ranks = int(sys.argv[2])\n"
         "for r in range(ranks):\n"
         "    names = {e['name'] for e in d['traceEvents'] if e['ph'] == 'X' and e['pid'] == r}\n"
         "    missing = want - names\n"
         "    assert not missing, f'rank {r} lacks {missing}'\n"
         "    durations = [e['dur'] for e in d['traceEvents'] if e['ph'] == 'X' and e['pid'] == "
         "r]\n"
         "    assert all(x >= 0 for x in durations)\n";
  const std::string command =
      "/usr/bin/python3 " + script + " " + merged + " " + std::to_string(kRanks);
  EXPECT_EQ(std::system(command.c_str()), 0) << "trace check failed for " << merged;
}

// A port that was free a moment ago (the endpoint binds it again right away).
uint16_t freePort() {
  comm::StatusServer probe({.host = "127.0.0.1", .port = 0});
  const uint16_t port = probe.port();
  probe.stop();
  return port;
}

TEST(ControlPlaneTrainerTest, StatusEndpointServesLiveMetricsDuringTheRun) {
  testing::TempDir tmp("thinwire-status");
  Config c = smallConfig(tmp.path(), "watched");
  c.train.steps = 400;
  const std::string address = "127.0.0.1:" + std::to_string(freePort());
  c.comm.status = address;
  constexpr int kRanks = 2;
  auto world = comm::makeLocalWorld(kRanks);
  std::atomic<bool> done{false};
  std::string finished;
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      Logger log({.rank = r, .level = LogLevel::kWarn});
      Trainer trainer(c, *world[r], log);
      trainer.run();
      // The endpoint lives as long as the trainer: the final document says "finished".
      if (r == 0) finished = comm::fetchStatus(address, std::chrono::seconds(5));
      done = true;
    });
  }
  std::string live;
  const auto start = std::chrono::steady_clock::now();
  while (!done && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    try {
      const std::string body = comm::fetchStatus(address, std::chrono::seconds(2));
      if (body.find("\"kind\":\"train\"") != std::string::npos) {
        live = body;
        break;
      }
    } catch (const CommError&) {
      // Not listening yet.
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (auto& t : threads) t.join();
  ASSERT_FALSE(live.empty()) << "no training metrics were served while the run trained";
  EXPECT_NE(live.find("\"run\":\"watched\""), std::string::npos) << live;
  EXPECT_NE(live.find("\"state\":\"training\""), std::string::npos) << live;
  EXPECT_NE(live.find("\"ranks\":2"), std::string::npos) << live;
  EXPECT_NE(live.find("\"loss\":"), std::string::npos) << live;
  EXPECT_NE(live.find("\"skipped_steps\":0"), std::string::npos) << live;
  EXPECT_NE(finished.find("\"state\":\"finished\""), std::string::npos) << finished;
  EXPECT_NE(finished.find("\"kind\":\"summary\""), std::string::npos) << finished;
}

}  // namespace
}  // namespace thinwire::core

// Unit tests of the control-plane wiring: the comm.* / train.nonfinite keys, the options the keys
// give, the non-finite helpers, and a one-rank ControlPlane's timeline and status endpoint.
#include "core/control_plane.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "comm/local/local_communicator.h"
#include "comm/tcp/status_server.h"
#include "core/nonfinite.h"
#include "tests/testing/error_message.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

using thinwire::testing::errorMessageOf;

TEST(ControlPlaneConfigTest, NewKeysParseWithTheirDefaults) {
  const Config defaults = Config::fromString("run:\n  name: x\n");
  EXPECT_EQ(defaults.train.nonfinite, "stop");
  EXPECT_EQ(defaults.comm.heartbeatS, 1.0);
  EXPECT_EQ(defaults.comm.storeHost, "auto");
  EXPECT_EQ(defaults.comm.timeline, "");
  EXPECT_EQ(defaults.comm.status, "");
  const Config set = Config::fromString(
      "train:\n  nonfinite: skip\ncomm:\n  heartbeat_s: 0.5\n  timeline: t.json\n"
      "  status: 127.0.0.1:0\n");
  EXPECT_EQ(set.train.nonfinite, "skip");
  EXPECT_EQ(set.comm.heartbeatS, 0.5);
  EXPECT_EQ(set.comm.timeline, "t.json");
  EXPECT_EQ(set.comm.status, "127.0.0.1:0");
}

TEST(ControlPlaneConfigTest, BadValuesNameTheKey) {
  auto error = [](const std::string& yaml) {
    return errorMessageOf<ConfigError>([&] { Config::fromString(yaml, "cfg.yaml"); });
  };
  EXPECT_NE(error("train:\n  nonfinite: ignore\n").find("train.nonfinite"), std::string::npos);
  const std::string beat = error("comm:\n  timeout_s: 2\n  heartbeat_s: 1\n");
  EXPECT_NE(beat.find("comm.heartbeat_s"), std::string::npos) << beat;
  EXPECT_NE(beat.find("comm.timeout_s / 4"), std::string::npos) << beat;
  for (const char* bad : {"localhost", ":80", "host:99999", "host:8x", "host:"}) {
    const std::string what = error(std::string("comm:\n  status: '") + bad + "'\n");
    EXPECT_NE(what.find("comm.status"), std::string::npos) << bad << ": " << what;
  }
}

TEST(ControlPlaneTest, OptionsFollowTheKeys) {
  Config c = Config::fromString("comm:\n  timeout_s: 40\n  heartbeat_s: 2\n  timeline: t.json\n");
  const ControlPlaneOptions options = controlPlaneOptions(c, "/runs/x", 4, nullptr);
  EXPECT_EQ(options.heartbeatInterval, std::chrono::milliseconds(2000));
  EXPECT_EQ(options.heartbeatTimeout, std::chrono::milliseconds(20000));  // half the timeout
  EXPECT_EQ(options.timelinePath, "/runs/x/t.json");
  EXPECT_EQ(options.ranksOnThisHost, 4);
  c.comm.timeline = "/abs/t.json";
  EXPECT_EQ(controlPlaneOptions(c, "/runs/x", 1, nullptr).timelinePath, "/abs/t.json");
}

TEST(NonFiniteTest, FindsNaNAndInfAnywhere) {
  at::Tensor ok = at::randn({1000});
  EXPECT_TRUE(allFinite({ok, at::Tensor()}));
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    at::Tensor t = ok.clone();
    t[997] = bad;
    EXPECT_FALSE(allFinite({ok, t})) << bad;
  }
  // Finite values whose sum overflows are still finite.
  at::Tensor huge = at::full({4}, 3e38f);
  EXPECT_TRUE(allFinite({huge}));
}

TEST(NonFiniteTest, MessageNamesStepRanksAndPolicy) {
  EXPECT_EQ(nonFiniteMessage(12, {1}, NonFinitePolicy::kStop),
            "non-finite gradient (NaN or Inf) at step 12 on rank 1 (train.nonfinite: stop)");
  EXPECT_EQ(nonFiniteMessage(3, {0, 2}, NonFinitePolicy::kSkip),
            "non-finite gradient (NaN or Inf) at step 3 on ranks 0, 2 (train.nonfinite: skip)");
  EXPECT_EQ(parseNonFinitePolicy("off"), NonFinitePolicy::kOff);
  EXPECT_THROW(parseNonFinitePolicy("maybe"), InvalidArgument);
}

TEST(ControlPlaneTest, OneRankWritesTheMergedTimelineAndServesStatus) {
  thinwire::testing::TempDir tmp("thinwire-plane");
  auto world = comm::makeLocalWorld(1);
  Logger log({.rank = 0, .level = LogLevel::kWarn});
  const std::string path = tmp.path() + "/sub/trace.json";
  ControlPlane plane(*world[0], {.timelinePath = path, .statusAddress = "127.0.0.1:0"}, log);
  EXPECT_FALSE(plane.watchdogOn());
  ASSERT_NE(plane.timeline(), nullptr);
  { Timeline::Span span(plane.timeline(), "forward", "compute"); }
  ASSERT_NE(plane.statusPort(), 0);
  plane.publishStatus(R"({"step":1})");
  EXPECT_EQ(
      comm::fetchStatus("127.0.0.1:" + std::to_string(plane.statusPort()), std::chrono::seconds(5)),
      "{\"step\":1}\n");  // the server ends the body with a newline
  plane.finish(std::chrono::seconds(5));
  EXPECT_TRUE(std::filesystem::exists(tmp.path() + "/sub/trace.rank0.json"));
  ASSERT_TRUE(std::filesystem::exists(path));
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"forward\""), std::string::npos) << text;
}

}  // namespace
}  // namespace thinwire::core

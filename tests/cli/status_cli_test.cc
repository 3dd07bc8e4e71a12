// `thinwire status HOST:PORT` against a status endpoint fed by a fake metrics source (the test
// publishes the document), and its errors: nothing listening, a malformed address.
#include <gtest/gtest.h>

#include <string>

#include "comm/tcp/status_server.h"
#include "tests/cli/run_process.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::testing {
namespace {

TEST(StatusCliTest, PrintsThePublishedDocument) {
  TempDir tmp("thinwire-status-cli");
  comm::StatusServer server({.host = "127.0.0.1", .port = 0});
  const std::string document =
      R"({"run":"fake","state":"training","metrics":{"step":17,"loss":0.5}})";
  server.publish(document);
  const std::string address = "127.0.0.1:" + std::to_string(server.port());
  const ProcessResult result =
      runCommand({thinwireBinary(), "status", address}, tmp.path() + "/out.log", 30);
  EXPECT_EQ(result.exitCode, 0) << result.output;
  EXPECT_EQ(result.output, document + "\n");
  // A new document is what the next call prints.
  server.publish(R"({"state":"finished"})");
  const ProcessResult again =
      runCommand({thinwireBinary(), "status", address}, tmp.path() + "/out2.log", 30);
  EXPECT_EQ(again.output, "{\"state\":\"finished\"}\n");
}

TEST(StatusCliTest, NothingListeningFailsWithARuntimeError) {
  TempDir tmp("thinwire-status-cli");
  uint16_t port = 0;
  {
    comm::StatusServer probe({.host = "127.0.0.1", .port = 0});
    port = probe.port();
  }
  const ProcessResult result = runCommand(
      {thinwireBinary(), "status", "127.0.0.1:" + std::to_string(port), "--timeout", "2"},
      tmp.path() + "/out.log", 30);
  EXPECT_EQ(result.exitCode, 1) << result.output;
  EXPECT_NE(result.output.find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << result.output;
}

TEST(StatusCliTest, MalformedArgumentsAreUsageErrors) {
  TempDir tmp("thinwire-status-cli");
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"status"}, {"status", "localhost"}, {"status", "127.0.0.1:1", "--timeout", "x"}}) {
    std::vector<std::string> argv = {thinwireBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    const ProcessResult result = runCommand(argv, tmp.path() + "/out.log", 30);
    EXPECT_EQ(result.exitCode, 2) << args.size() << "\n" << result.output;
  }
}

}  // namespace
}  // namespace thinwire::testing

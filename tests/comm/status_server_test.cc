// The status endpoint: serves the latest published JSON, answers bad requests with the right
// HTTP codes, and its client fails within its bound.
#include "comm/tcp/status_server.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "base/error.h"

namespace thinwire::comm {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::string addressOf(const StatusServer& server) {
  return "127.0.0.1:" + std::to_string(server.port());
}

// Sends `request` verbatim and returns everything the server answers until it closes.
std::string rawExchange(uint16_t port, const std::string& request) {
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(socket, asio::buffer(request));
  std::string answer;
  boost::system::error_code ec;
  char buffer[4096];
  for (;;) {
    const size_t n = socket.read_some(asio::buffer(buffer), ec);
    answer.append(buffer, n);
    if (ec) break;
  }
  return answer;
}

TEST(StatusServerTest, ServesTheLatestPublishedDocument) {
  StatusServer server({});
  EXPECT_EQ(fetchStatus(addressOf(server), seconds(5)), "{}\n");
  server.publish(R"({"step": 10, "loss": 2.5})");
  EXPECT_EQ(fetchStatus(addressOf(server), seconds(5)), "{\"step\": 10, \"loss\": 2.5}\n");
  server.publish(R"({"step": 20})");
  EXPECT_EQ(fetchStatus(addressOf(server), seconds(5)), "{\"step\": 20}\n");
}

TEST(StatusServerTest, AnswersWithHttpStatusCodes) {
  StatusServer server({});
  server.publish("{\"a\": 1}");
  const std::string ok = rawExchange(server.port(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << ok;
  EXPECT_NE(ok.find("Content-Type: application/json"), std::string::npos) << ok;
  EXPECT_NE(ok.find("Content-Length: 9\r\n"), std::string::npos) << ok;  // "{"a": 1}\n"
  EXPECT_EQ(rawExchange(server.port(), "GET /nope HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 404", 0), 0u);
  EXPECT_EQ(rawExchange(server.port(), "POST /status HTTP/1.0\r\n\r\n").rfind("HTTP/1.0 405", 0),
            0u);
  EXPECT_EQ(rawExchange(server.port(), "hello there\r\n\r\n").rfind("HTTP/1.0 400", 0), 0u);
  const std::string huge = "GET /status HTTP/1.0\r\nX: " + std::string(10000, 'a') + "\r\n\r\n";
  EXPECT_EQ(rawExchange(server.port(), huge).rfind("HTTP/1.0 400", 0), 0u);
  // Still serving after all that.
  EXPECT_EQ(fetchStatus(addressOf(server), seconds(5)), "{\"a\": 1}\n");
}

TEST(StatusServerTest, ClientErrorsAreBoundedAndNamed) {
  EXPECT_THROW(fetchStatus("no-port", seconds(1)), InvalidArgument);
  EXPECT_THROW(fetchStatus("127.0.0.1:http", seconds(1)), InvalidArgument);
  uint16_t closedPort = 0;
  {
    StatusServer probe({});
    closedPort = probe.port();
  }
  EXPECT_THROW(fetchStatus("127.0.0.1:" + std::to_string(closedPort), seconds(2)), CommError);

  // A listener that accepts and never answers: TimeoutError, not a hang.
  asio::io_context io;
  asio::ip::tcp::acceptor silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(
      fetchStatus("127.0.0.1:" + std::to_string(silent.local_endpoint().port()), milliseconds(300)),
      TimeoutError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(3));
}

TEST(StatusServerTest, StopIsIdempotentAndEndsServing) {
  StatusServer server({});
  const std::string address = addressOf(server);
  server.stop();
  server.stop();
  EXPECT_THROW(fetchStatus(address, seconds(2)), CommError);
}

}  // namespace
}  // namespace thinwire::comm

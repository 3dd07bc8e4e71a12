// The rendezvous store over TCP: semantics (set/get/add/wait/check, prefixes), every wait
// bounded, errors that name what is missing, and a server that survives bad clients.
#include "comm/tcp/tcp_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "comm/store.h"

namespace thinwire::comm {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

TcpStoreOptions clientOf(const TcpStoreServer& server) {
  TcpStoreOptions options;
  options.port = server.port();
  options.connectTimeout = seconds(10);
  options.opTimeout = seconds(10);
  options.grace = seconds(5);
  return options;
}

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

TEST(TcpStoreTest, SetThenGetReturnsTheBytesAndSetOverwrites) {
  TcpStoreServer server({});
  TcpStore store(clientOf(server));
  const std::string binary("a\0b\xff", 4);
  store.set("k", binary);
  EXPECT_EQ(store.get("k", seconds(1)), binary);
  store.set("k", "second");
  EXPECT_EQ(store.get("k", seconds(1)), "second");
  store.set("empty", "");
  EXPECT_EQ(store.get("empty", seconds(1)), "");
  EXPECT_EQ(server.size(), 2u);
}

TEST(TcpStoreTest, GetWaitsForAnotherClientsSet) {
  TcpStoreServer server({});
  TcpStore reader(clientOf(server));
  TcpStore writer(clientOf(server));
  std::thread later([&] {
    std::this_thread::sleep_for(milliseconds(200));
    writer.set("ready", "yes");
  });
  const auto start = Clock::now();
  EXPECT_EQ(reader.get("ready", seconds(10)), "yes");
  EXPECT_GE(secondsSince(start), 0.15);  // it really waited for the set
  later.join();
}

TEST(TcpStoreTest, GetTimesOutWithinItsBoundNamingTheKey) {
  TcpStoreServer server({});
  TcpStore store(clientOf(server));
  const auto start = Clock::now();
  try {
    store.get("never", milliseconds(300));
    FAIL() << "get of a missing key returned";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("'never'"), std::string::npos) << e.what();
  }
  const double waited = secondsSince(start);
  EXPECT_GE(waited, 0.25);
  EXPECT_LT(waited, 3.0);
  // The connection is still usable after a timeout.
  store.set("after", "1");
  EXPECT_EQ(store.get("after", seconds(1)), "1");
}

TEST(TcpStoreTest, WaitNamesOnlyTheMissingKeys) {
  TcpStoreServer server({});
  TcpStore store(clientOf(server));
  store.set("a", "1");
  store.set("c", "3");
  try {
    store.wait({"a", "b", "c", "d"}, milliseconds(200));
    FAIL() << "wait with missing keys returned";
  } catch (const TimeoutError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("'b', 'd'"), std::string::npos) << message;
    EXPECT_EQ(message.find("'a'"), std::string::npos) << message;
  }
  store.set("b", "2");
  store.set("d", "4");
  store.wait({"a", "b", "c", "d"}, seconds(1));
}

TEST(TcpStoreTest, WaitWakesWhenTheLastKeyArrives) {
  TcpStoreServer server({});
  TcpStore waiter(clientOf(server));
  TcpStore writer(clientOf(server));
  std::atomic<bool> returned{false};
  std::thread t([&] {
    waiter.wait({"x", "y"}, seconds(10));
    returned = true;
  });
  writer.set("x", "1");
  std::this_thread::sleep_for(milliseconds(150));
  EXPECT_FALSE(returned.load()) << "wait returned with 'y' still missing";
  writer.set("y", "1");
  t.join();
  EXPECT_TRUE(returned.load());
}

TEST(TcpStoreTest, CheckNeverBlocks) {
  TcpStoreServer server({});
  TcpStore store(clientOf(server));
  EXPECT_FALSE(store.check({"a"}));
  store.set("a", "1");
  EXPECT_TRUE(store.check({"a"}));
  EXPECT_FALSE(store.check({"a", "b"}));
  EXPECT_TRUE(store.check({}));
}

TEST(TcpStoreTest, AddIsAtomicAcrossClients) {
  TcpStoreServer server({});
  constexpr int kClients = 4, kAdds = 50;
  std::vector<std::thread> threads;
  std::vector<std::vector<int64_t>> seen(kClients);
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      TcpStore store(clientOf(server));
      for (int i = 0; i < kAdds; ++i) seen[c].push_back(store.add("counter", 1));
    });
  }
  for (auto& t : threads) t.join();
  // Every intermediate value 1..N was returned exactly once: no lost or duplicated update.
  std::vector<int> hits(kClients * kAdds + 1, 0);
  for (const auto& values : seen) {
    for (int64_t v : values) {
      ASSERT_GE(v, 1);
      ASSERT_LE(v, kClients * kAdds);
      ++hits[static_cast<size_t>(v)];
    }
  }
  for (size_t v = 1; v < hits.size(); ++v) EXPECT_EQ(hits[v], 1) << "value " << v;
  TcpStore store(clientOf(server));
  EXPECT_EQ(store.get("counter", seconds(1)), std::to_string(kClients * kAdds));
  EXPECT_EQ(store.add("counter", -kClients * kAdds), 0);
}

TEST(TcpStoreTest, AddOnANonNumberIsInvalidArgumentAndKeepsTheValue) {
  TcpStoreServer server({});
  TcpStore store(clientOf(server));
  store.set("name", "abc");
  EXPECT_THROW(store.add("name", 1), InvalidArgument);
  EXPECT_EQ(store.get("name", seconds(1)), "abc");
  EXPECT_EQ(store.add("fresh", -3), -3);
}

TEST(TcpStoreTest, PrefixStoresDoNotSeeEachOthersKeys) {
  TcpStoreServer server({});
  TcpStore base(clientOf(server));
  PrefixStore job1("job1", base);
  PrefixStore job2("job2", base);
  job1.set("rank0", "a");
  job2.set("rank0", "b");
  EXPECT_EQ(job1.get("rank0", seconds(1)), "a");
  EXPECT_EQ(job2.get("rank0", seconds(1)), "b");
  EXPECT_EQ(base.get("job1/rank0", seconds(1)), "a");
  EXPECT_EQ(job1.add("n", 2), 2);
  EXPECT_FALSE(job2.check({"n"}));
  PrefixStore nested("generation3", job1);
  nested.set("k", "v");
  EXPECT_TRUE(base.check({"job1/generation3/k"}));
  EXPECT_THROW(PrefixStore("", base), InvalidArgument);
}

TEST(TcpStoreTest, ClientConnectsToAServerThatStartsLater) {
  // Reserve a free port, release it, then start the server on it after the client began.
  uint16_t port = 0;
  {
    TcpStoreServer probe({});
    port = probe.port();
  }
  std::unique_ptr<TcpStoreServer> server;
  std::thread starter([&] {
    std::this_thread::sleep_for(milliseconds(300));
    server = std::make_unique<TcpStoreServer>(TcpStoreServerOptions{.port = port});
  });
  TcpStoreOptions options;
  options.port = port;
  options.connectTimeout = seconds(10);
  TcpStore store(options);
  starter.join();
  store.set("k", "v");
  EXPECT_EQ(store.get("k", seconds(1)), "v");
}

TEST(TcpStoreTest, NoServerIsATimeoutNamingTheAddress) {
  uint16_t port = 0;
  {
    TcpStoreServer probe({});
    port = probe.port();
  }
  TcpStoreOptions options;
  options.port = port;
  options.connectTimeout = milliseconds(400);
  const auto start = Clock::now();
  try {
    TcpStore store(options);
    FAIL() << "connected to a port nobody listens on";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find(":" + std::to_string(port)), std::string::npos)
        << e.what();
  }
  EXPECT_LT(secondsSince(start), 5.0);
}

TEST(TcpStoreTest, StoppedServerIsACommErrorNotAHang) {
  auto server = std::make_unique<TcpStoreServer>(TcpStoreServerOptions{});
  TcpStoreOptions options = clientOf(*server);
  options.connectTimeout = milliseconds(300);
  TcpStore store(options);
  store.set("k", "v");
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(200));
    server->stop();
  });
  const auto start = Clock::now();
  // The pending wait is cut by the stop: CommError (connection lost) well before its timeout.
  EXPECT_THROW(store.wait({"never"}, seconds(30)), CommError);
  EXPECT_LT(secondsSince(start), 5.0);
  stopper.join();
  // Later calls cannot reconnect: a bounded error too.
  EXPECT_THROW(store.set("k", "v"), CommError);
}

TEST(TcpStoreTest, GarbageFromOneClientDoesNotDisturbTheOthers) {
  TcpStoreServer server({});
  TcpStore good(clientOf(server));
  good.set("k", "v");
  {
    namespace asio = boost::asio;
    asio::io_context io;
    asio::ip::tcp::socket socket(io);
    socket.connect({asio::ip::make_address("127.0.0.1"), server.port()});
    const char frame[] = {5, 0, 0, 0, 99, 1, 2, 3, 4};  // length 5, unknown op 99
    asio::write(socket, asio::buffer(frame, sizeof(frame)));
    const char huge[] = {'\xff', '\xff', '\xff', '\xff'};  // a 4 GiB frame: refused
    boost::system::error_code ignored;
    asio::write(socket, asio::buffer(huge, sizeof(huge)), ignored);
  }
  EXPECT_EQ(good.get("k", seconds(1)), "v");
  good.set("k2", "v2");
  EXPECT_EQ(good.get("k2", seconds(1)), "v2");
}

TEST(TcpStoreTest, BadOptionsAreRefused) {
  EXPECT_THROW(TcpStore(TcpStoreOptions{.host = "127.0.0.1", .port = 0}), InvalidArgument);
  EXPECT_THROW(TcpStoreServer(TcpStoreServerOptions{.host = "not an address"}), CommError);
  TcpStoreServer first({});
  EXPECT_THROW(TcpStoreServer(TcpStoreServerOptions{.port = first.port()}), CommError);
}

}  // namespace
}  // namespace thinwire::comm

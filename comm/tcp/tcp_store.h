// File: comm/tcp/tcp_store.h
//
// The rendezvous store over TCP (Boost.Asio): `TcpStoreServer` holds the keys and serves any
// number of `TcpStore` clients; a client is a comm::Store (comm/store.h). The server runs on rank
// 0 or in the launcher; every rank, rank 0 included, talks to it through a client.
//
// Protocol (one request, one response, in order, per connection): a frame is a little-endian u32
// body length (at most 64 MiB) and the body. Request body: u8 op (1 set, 2 get, 3 add, 4 wait,
// 5 check) and its fields (strings as u32 length + bytes, integers as little-endian i64, key
// lists as u32 count + strings; get and wait carry their timeout in milliseconds). Response body:
// u8 status (0 ok, 1 timeout, 2 invalid argument, 3 protocol error) and the result (get: string,
// add: i64, check: u8) or a message. The server keeps a get/wait pending until its keys are all
// set or its timeout passes (a timer per waiter), so clients never poll.
//
// Failure: a client retries connecting until `connectTimeout` (the server may start later),
// then throws TimeoutError naming host:port. Every request is bounded: get/wait by their timeout
// plus `grace` (time for the server's own timeout answer to arrive), the others by `opTimeout`.
// A lost connection or a server that does not answer in time is CommError / TimeoutError, and
// the client reconnects on its next call. A malformed frame closes that connection on the server
// only; the server keeps serving the others.
//
// Ownership: the server owns its thread, listening socket, connections and the data; the
// destructor (or stop()) closes them all and joins the thread. A client owns one connection.
// Threading: the server's state lives on its own thread (all handlers run there, no locks);
// a client serialises its callers with a mutex, so one client may be shared by threads.
//
// Example:
//   TcpStoreServer server({.host = "127.0.0.1", .port = 0});            // port 0: any free port
//   TcpStore a({.host = "127.0.0.1", .port = server.port()});
//   TcpStore b({.host = "127.0.0.1", .port = server.port()});
//   std::thread t([&] { b.set("ready", "1"); });
//   a.get("ready", std::chrono::seconds(10));                          // "1"
//   t.join();
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/store.h"

namespace thinwire::comm {

struct TcpStoreServerOptions {
  std::string host = "127.0.0.1";  // address to listen on; loopback unless told otherwise
  uint16_t port = 0;               // 0: the system picks a free port, see port()
};

class TcpStoreServer {
 public:
  // Binds and starts serving on a background thread. CommError when the address cannot be bound
  // (in use, not local, malformed).
  explicit TcpStoreServer(TcpStoreServerOptions options);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;

  // The port it listens on (the chosen one when options.port was 0).
  uint16_t port() const;
  // Number of keys currently stored (for tests and the status endpoint). Thread-safe.
  size_t size() const;
  // Closes every connection and the listening socket and joins the thread; idempotent. Clients
  // waiting on it get CommError.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

struct TcpStoreOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::chrono::milliseconds connectTimeout{std::chrono::seconds(60)};
  std::chrono::milliseconds opTimeout{std::chrono::seconds(60)};  // set, add, check
  std::chrono::milliseconds grace{std::chrono::seconds(10)};      // added to get/wait timeouts
};

class TcpStore : public Store {
 public:
  // Connects (retrying until options.connectTimeout). InvalidArgument for port 0 or an empty
  // host; TimeoutError when nothing answers in time.
  explicit TcpStore(TcpStoreOptions options);
  ~TcpStore() override;
  TcpStore(const TcpStore&) = delete;
  TcpStore& operator=(const TcpStore&) = delete;

  void set(const std::string& key, const std::string& value) override;
  std::string get(const std::string& key, std::chrono::milliseconds timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override;
  bool check(const std::vector<std::string>& keys) override;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace thinwire::comm

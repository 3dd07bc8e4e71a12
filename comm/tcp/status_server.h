// File: comm/tcp/status_server.h
//
// The live-status endpoint of a job: `StatusServer` (rank 0) answers `GET /status` (and `GET /`)
// over plain HTTP/1.0 with the latest JSON document handed to publish(); `fetchStatus()` is the
// client behind `thinwire status HOST:PORT`. Loopback by default: exposing it on a cluster
// network is an explicit choice of address.
//
// Responses: 200 application/json for /status and /; 404 for other paths; 405 for methods other
// than GET; 400 for a request that is not HTTP or whose header exceeds 8 KiB. A connection that
// sends nothing for 5 s is closed. Before the first publish() the document is {}.
//
// Ownership: the server owns its thread, sockets and the document. Threading: publish() is safe
// from any thread; the server thread only reads a copy taken under a mutex.
//
// Example:
//   StatusServer status({.host = "127.0.0.1", .port = 0});
//   status.publish(R"({"step": 120, "loss": 1.83})");
//   std::string body = fetchStatus("127.0.0.1:" + std::to_string(status.port()), 5s);
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace thinwire::comm {

struct StatusServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port, see port()
};

class StatusServer {
 public:
  // Binds and serves on a background thread. CommError when the address cannot be bound.
  explicit StatusServer(StatusServerOptions options);
  ~StatusServer();
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

  uint16_t port() const;
  // Replaces the document served from now on (a complete JSON value; not validated).
  void publish(std::string json);
  // Closes everything and joins the thread; idempotent.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// GETs http://HOST:PORT/status and returns the body. `address` is "HOST:PORT". InvalidArgument
// for a malformed address; TimeoutError when no complete answer arrives within `timeout`;
// CommError for a refused connection or a non-200 status (the message carries the status line).
std::string fetchStatus(const std::string& address, std::chrono::milliseconds timeout);

}  // namespace thinwire::comm

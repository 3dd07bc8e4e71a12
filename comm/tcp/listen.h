// File: comm/tcp/listen.h
//
// Internal to comm/tcp (it exposes Boost.Asio types, which stay private to comm): the listening
// socket set-up shared by the control-plane servers (rendezvous store, status endpoint).
//
// Threading: call before the acceptor's io_context runs.
//
// Example:
//   boost::asio::ip::tcp::acceptor acceptor(io);
//   listenOn(acceptor, "127.0.0.1", 0, "store server");   // acceptor.local_endpoint().port()
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <string>

namespace thinwire::comm {

// Opens `acceptor` on host:port (port 0: any free port) with SO_REUSEADDR and starts listening.
// Throws CommError, prefixed with `what`, when host is not an IP address or the bind fails (port
// in use, address not local).
void listenOn(boost::asio::ip::tcp::acceptor& acceptor,
              const std::string& host,
              uint16_t port,
              const char* what);

}  // namespace thinwire::comm

// File: tests/testing/free_port.h
//
// A loopback TCP port for tests that must name a port before anything listens on it (a store
// address handed to several processes): bound to port 0, read back, released. Another process
// may take it in between; the tests that use it start their listener right away.
//
// Example:
//   const int port = freeLoopbackPort();   // -1 if no socket could be bound
//   setenv("THINWIRE_STORE", ("127.0.0.1:" + std::to_string(port)).c_str(), 1);
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace thinwire::testing {

inline int freeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace thinwire::testing

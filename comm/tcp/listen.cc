#include "comm/tcp/listen.h"

#include "base/error.h"

namespace thinwire::comm {

void listenOn(boost::asio::ip::tcp::acceptor& acceptor,
              const std::string& host,
              uint16_t port,
              const char* what) {
  namespace asio = boost::asio;
  using tcp = asio::ip::tcp;
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) TW_THROW(CommError, what, ": '", host, "' is not an IP address (", ec.message(), ")");
  const tcp::endpoint endpoint(address, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) TW_THROW(CommError, what, ": cannot listen on ", host, ":", port, ": ", ec.message());
}

}  // namespace thinwire::comm

#include "comm/tcp/status_server.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <istream>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "base/error.h"
#include "base/text.h"
#include "comm/tcp/listen.h"

namespace thinwire::comm {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr size_t kMaxHeader = 8192;
constexpr auto kIdle = std::chrono::seconds(5);

std::string response(int code,
                     const char* reason,
                     const std::string& type,
                     const std::string& body) {
  return "HTTP/1.0 " + std::to_string(code) + " " + reason + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

class StatusServer::Impl {
 public:
  struct Connection {
    explicit Connection(tcp::socket s, asio::io_context& io) : socket(std::move(s)), timer(io) {}
    tcp::socket socket;
    asio::steady_timer timer;
    asio::streambuf request{kMaxHeader};
    std::string reply;
  };

  explicit Impl(const StatusServerOptions& options) : acceptor_(io_) {
    listenOn(acceptor_, options.host, options.port, "status server");
    port_ = acceptor_.local_endpoint().port();
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Impl() { stop(); }

  uint16_t port() const { return port_; }

  void publish(std::string json) {
    std::lock_guard<std::mutex> lock(documentMutex_);
    document_ = std::move(json);
  }

  void stop() {
    std::lock_guard<std::mutex> lock(stopMutex_);
    if (stopped_) return;
    stopped_ = true;
    asio::post(io_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      for (const auto& c : connections_) {
        c->timer.cancel();
        c->socket.close(ignored);
      }
      connections_.clear();
    });
    if (thread_.joinable()) thread_.join();
  }

 private:
  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;
      auto connection = std::make_shared<Connection>(std::move(socket), io_);
      connections_.insert(connection);
      connection->timer.expires_after(kIdle);
      connection->timer.async_wait([this, connection](boost::system::error_code e) {
        if (!e) close(connection);
      });
      asio::async_read_until(
          connection->socket, connection->request, "\r\n\r\n",
          [this, connection](boost::system::error_code e, size_t) { handle(connection, e); });
      accept();
    });
  }

  void close(const std::shared_ptr<Connection>& connection) {
    boost::system::error_code ignored;
    connection->timer.cancel();
    connection->socket.close(ignored);
    connections_.erase(connection);
  }

  void handle(const std::shared_ptr<Connection>& connection, boost::system::error_code ec) {
    if (ec == asio::error::not_found) {  // the header outgrew the buffer
      return send(connection,
                  response(400, "Bad Request", "text/plain", "request header larger than 8 KiB\n"));
    }
    if (ec) return close(connection);
    std::istream in(&connection->request);
    std::string method, target, version;
    in >> method >> target >> version;
    if (version.rfind("HTTP/", 0) != 0) {
      return send(connection, response(400, "Bad Request", "text/plain", "not HTTP\n"));
    }
    if (method != "GET") {
      return send(connection,
                  response(405, "Method Not Allowed", "text/plain", "only GET is served\n"));
    }
    const std::string path = target.substr(0, target.find('?'));
    if (path != "/status" && path != "/") {
      return send(connection,
                  response(404, "Not Found", "text/plain", "no such path; try GET /status\n"));
    }
    std::string body;
    {
      std::lock_guard<std::mutex> lock(documentMutex_);
      body = document_;
    }
    send(connection, response(200, "OK", "application/json", body + "\n"));
  }

  void send(const std::shared_ptr<Connection>& connection, std::string text) {
    connection->reply = std::move(text);
    asio::async_write(connection->socket, asio::buffer(connection->reply),
                      [this, connection](boost::system::error_code, size_t) {
                        boost::system::error_code ignored;
                        connection->socket.shutdown(tcp::socket::shutdown_both, ignored);
                        close(connection);
                      });
  }

  asio::io_context io_;  // first: destroyed last
  tcp::acceptor acceptor_;
  std::set<std::shared_ptr<Connection>> connections_;
  uint16_t port_ = 0;
  std::mutex documentMutex_;
  std::string document_ = "{}";
  std::thread thread_;
  std::mutex stopMutex_;
  bool stopped_ = false;
};

StatusServer::StatusServer(StatusServerOptions options) : impl_(std::make_unique<Impl>(options)) {}
StatusServer::~StatusServer() = default;
uint16_t StatusServer::port() const { return impl_->port(); }
void StatusServer::publish(std::string json) { impl_->publish(std::move(json)); }
void StatusServer::stop() { impl_->stop(); }

std::string fetchStatus(const std::string& address, std::chrono::milliseconds timeout) {
  const auto [host, portNumber] = parseHostPort(address, "status address");
  const std::string port = std::to_string(portNumber);

  asio::io_context io;
  tcp::socket socket(io);
  boost::system::error_code failure;
  bool finished = false;
  asio::streambuf reply;
  tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(host, port, failure);
  if (failure) TW_THROW(CommError, "status ", address, ": cannot resolve: ", failure.message());
  const std::string request = "GET /status HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
  asio::async_connect(socket, endpoints, [&](boost::system::error_code ec, const tcp::endpoint&) {
    if (ec) {
      failure = ec;
      finished = true;
      return;
    }
    asio::async_write(socket, asio::buffer(request), [&](auto e, size_t) {
      if (e) {
        failure = e;
        finished = true;
        return;
      }
      asio::async_read(socket, reply, [&](auto r, size_t) {
        if (r && r != asio::error::eof) failure = r;
        finished = true;
      });
    });
  });
  io.run_for(timeout);
  if (!finished) {
    TW_THROW(TimeoutError, "status ", address, ": no complete answer within ", timeout.count(),
             " ms");
  }
  if (failure) TW_THROW(CommError, "status ", address, ": ", failure.message());
  std::string text((std::istreambuf_iterator<char>(&reply)), std::istreambuf_iterator<char>());
  const size_t lineEnd = text.find("\r\n");
  const size_t headerEnd = text.find("\r\n\r\n");
  if (lineEnd == std::string::npos || headerEnd == std::string::npos) {
    TW_THROW(CommError, "status ", address, ": the answer is not HTTP");
  }
  const std::string statusLine = text.substr(0, lineEnd);
  if (statusLine.find(" 200 ") == std::string::npos) {
    TW_THROW(CommError, "status ", address, ": ", statusLine);
  }
  return text.substr(headerEnd + 4);
}

}  // namespace thinwire::comm

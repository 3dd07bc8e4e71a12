#include "comm/tcp/tcp_store.h"

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "base/error.h"
#include "comm/tcp/listen.h"

namespace thinwire::comm {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kMaxFrame = 64u << 20;

enum Op : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kWait = 4, kCheck = 5 };
enum Status : uint8_t { kOk = 0, kTimedOut = 1, kInvalid = 2, kProtocol = 3 };

// Little-endian encoding of frames; the host order is not assumed.
class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void i64(int64_t v) {
    const auto u = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((u >> (8 * i)) & 0xff));
  }
  void str(const std::string& s) {
    TW_CHECK(s.size() < kMaxFrame, "store key or value of ", s.size(), " bytes exceeds ", kMaxFrame,
             " bytes");
    u32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void strs(const std::vector<std::string>& list) {
    u32(static_cast<uint32_t>(list.size()));
    for (const std::string& s : list) str(s);
  }
  // The frame: length prefix + body.
  std::string frame() const {
    TW_CHECK(out_.size() <= kMaxFrame, "store message of ", out_.size(), " bytes exceeds ",
             kMaxFrame, " bytes");
    Writer header;
    header.u32(static_cast<uint32_t>(out_.size()));
    return header.out_ + out_;
  }

 private:
  std::string out_;
};

struct MalformedFrame {};  // thrown inside the codec only, never escapes this file

class Reader {
 public:
  explicit Reader(const std::string& in) : in_(in) {}
  uint8_t u8() { return static_cast<uint8_t>(take(1)[0]); }
  uint32_t u32() {
    const char* p = take(4);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
    return v;
  }
  int64_t i64() {
    const char* p = take(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
    return static_cast<int64_t>(v);
  }
  std::string str() {
    const uint32_t n = u32();
    return std::string(take(n), n);
  }
  std::vector<std::string> strs() {
    const uint32_t n = u32();
    if (n > in_.size()) throw MalformedFrame{};  // each string needs 4 bytes at least
    std::vector<std::string> list;
    for (uint32_t i = 0; i < n; ++i) list.push_back(str());
    return list;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  const char* take(size_t n) {
    if (n > in_.size() - pos_) throw MalformedFrame{};
    const char* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  const std::string& in_;
  size_t pos_ = 0;
};

uint32_t decodeLength(const char header[4]) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<uint8_t>(header[i])) << (8 * i);
  return v;
}

std::string joinKeys(const std::vector<std::string>& keys) {
  std::string out;
  for (const std::string& key : keys) out += (out.empty() ? "'" : ", '") + key + "'";
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Server

class TcpStoreServer::Impl {
 public:
  struct Session;
  struct Waiter {
    std::shared_ptr<Session> session;
    std::vector<std::string> keys;
    bool wantsValue = false;  // get: answer with the value of keys[0]
    asio::steady_timer timer;
    bool done = false;
    explicit Waiter(asio::io_context& io) : timer(io) {}
  };
  struct Session : std::enable_shared_from_this<Session> {
    explicit Session(tcp::socket s) : socket(std::move(s)) {}
    tcp::socket socket;
    char header[4] = {};
    std::string body;
    std::string reply;
  };

  explicit Impl(const TcpStoreServerOptions& options) : acceptor_(io_) {
    listenOn(acceptor_, options.host, options.port, "store server");
    port_ = acceptor_.local_endpoint().port();
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }

  ~Impl() { stop(); }

  uint16_t port() const { return port_; }
  size_t size() const { return size_.load(); }

  void stop() {
    std::lock_guard<std::mutex> lock(stopMutex_);
    if (stopped_) return;
    stopped_ = true;
    asio::post(io_, [this] {
      boost::system::error_code ignored;
      acceptor_.close(ignored);
      for (const auto& waiter : waiters_) waiter->timer.cancel();
      waiters_.clear();
      for (const auto& session : sessions_) session->socket.close(ignored);
      sessions_.clear();
    });
    if (thread_.joinable()) {
      // The posted close lets every pending operation finish with an error; run() then returns.
      thread_.join();
    }
  }

 private:
  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;  // closed by stop()
      socket.set_option(tcp::no_delay(true), ec);
      auto session = std::make_shared<Session>(std::move(socket));
      sessions_.insert(session);
      readHeader(session);
      accept();
    });
  }

  void drop(const std::shared_ptr<Session>& session) {
    boost::system::error_code ignored;
    session->socket.close(ignored);
    sessions_.erase(session);
  }

  void readHeader(const std::shared_ptr<Session>& session) {
    asio::async_read(session->socket, asio::buffer(session->header, 4),
                     [this, session](boost::system::error_code ec, size_t) {
                       if (ec) return drop(session);
                       const uint32_t length = decodeLength(session->header);
                       if (length == 0 || length > kMaxFrame) return drop(session);
                       session->body.resize(length);
                       readBody(session);
                     });
  }

  void readBody(const std::shared_ptr<Session>& session) {
    asio::async_read(session->socket, asio::buffer(session->body.data(), session->body.size()),
                     [this, session](boost::system::error_code ec, size_t) {
                       if (ec) return drop(session);
                       handle(session);
                     });
  }

  void respond(const std::shared_ptr<Session>& session, const Writer& reply) {
    session->reply = reply.frame();
    asio::async_write(session->socket, asio::buffer(session->reply),
                      [this, session](boost::system::error_code ec, size_t) {
                        if (ec) return drop(session);
                        readHeader(session);
                      });
  }

  void respondStatus(const std::shared_ptr<Session>& session,
                     Status status,
                     const std::string& message) {
    Writer reply;
    reply.u8(status);
    reply.str(message);
    respond(session, reply);
  }

  bool present(const std::vector<std::string>& keys) const {
    for (const std::string& key : keys) {
      if (data_.find(key) == data_.end()) return false;
    }
    return true;
  }

  void answer(Waiter& waiter) {
    Writer reply;
    reply.u8(kOk);
    if (waiter.wantsValue) reply.str(data_.at(waiter.keys[0]));
    respond(waiter.session, reply);
  }

  void wakeWaiters() {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      Waiter& waiter = **it;
      if (present(waiter.keys)) {
        waiter.done = true;
        waiter.timer.cancel();
        answer(waiter);
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void store(const std::string& key, std::string value) {
    data_[key] = std::move(value);
    size_.store(data_.size());
  }

  void handle(const std::shared_ptr<Session>& session) {
    try {
      Reader in(session->body);
      const uint8_t op = in.u8();
      switch (op) {
        case kSet: {
          std::string key = in.str();
          std::string value = in.str();
          if (!in.done()) throw MalformedFrame{};
          store(key, std::move(value));
          Writer reply;
          reply.u8(kOk);
          respond(session, reply);
          wakeWaiters();
          return;
        }
        case kAdd: {
          const std::string key = in.str();
          const int64_t delta = in.i64();
          if (!in.done()) throw MalformedFrame{};
          int64_t current = 0;
          const auto found = data_.find(key);
          if (found != data_.end()) {
            const std::string& text = found->second;
            const auto [end, error] =
                std::from_chars(text.data(), text.data() + text.size(), current);
            if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
              return respondStatus(session, kInvalid,
                                   "store add: key '" + key + "' holds '" + text.substr(0, 40) +
                                       "', not a decimal integer");
            }
          }
          current += delta;
          store(key, std::to_string(current));
          Writer reply;
          reply.u8(kOk);
          reply.i64(current);
          respond(session, reply);
          wakeWaiters();
          return;
        }
        case kCheck: {
          const std::vector<std::string> keys = in.strs();
          if (!in.done()) throw MalformedFrame{};
          Writer reply;
          reply.u8(kOk);
          reply.u8(present(keys) ? 1 : 0);
          respond(session, reply);
          return;
        }
        case kGet:
        case kWait: {
          std::vector<std::string> keys;
          if (op == kGet) {
            keys.push_back(in.str());
          } else {
            keys = in.strs();
          }
          const int64_t timeoutMs = in.i64();
          if (!in.done() || timeoutMs < 0) throw MalformedFrame{};
          auto waiter = std::make_shared<Waiter>(io_);
          waiter->session = session;
          waiter->keys = std::move(keys);
          waiter->wantsValue = op == kGet;
          if (present(waiter->keys)) return answer(*waiter);
          waiter->timer.expires_after(std::chrono::milliseconds(timeoutMs));
          waiter->timer.async_wait([this, waiter](boost::system::error_code ec) {
            if (ec || waiter->done) return;  // answered, or cancelled by stop()
            waiter->done = true;
            waiters_.remove(waiter);
            std::vector<std::string> missing;
            for (const std::string& key : waiter->keys) {
              if (data_.find(key) == data_.end()) missing.push_back(key);
            }
            respondStatus(waiter->session, kTimedOut, joinKeys(missing));
          });
          waiters_.push_back(std::move(waiter));
          return;
        }
        default:
          throw MalformedFrame{};
      }
    } catch (const MalformedFrame&) {
      // A client that speaks something else: drop it, keep serving the others.
      drop(session);
    }
  }

  // Declared first: destroyed last, after the sockets and timers that use it.
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::set<std::shared_ptr<Session>> sessions_;
  std::list<std::shared_ptr<Waiter>> waiters_;
  std::map<std::string, std::string> data_;
  std::atomic<size_t> size_{0};
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex stopMutex_;
  bool stopped_ = false;
};

TcpStoreServer::TcpStoreServer(TcpStoreServerOptions options)
    : impl_(std::make_unique<Impl>(options)) {}
TcpStoreServer::~TcpStoreServer() = default;
uint16_t TcpStoreServer::port() const { return impl_->port(); }
size_t TcpStoreServer::size() const { return impl_->size(); }
void TcpStoreServer::stop() { impl_->stop(); }

// ---------------------------------------------------------------------------------------------
// Client

class TcpStore::Impl {
 public:
  explicit Impl(TcpStoreOptions options) : options_(std::move(options)), socket_(io_) {
    TW_CHECK(!options_.host.empty() && options_.port != 0,
             "TcpStore needs a host and a non-zero port, got '", options_.host,
             "':", options_.port);
    TW_CHECK(options_.connectTimeout.count() > 0 && options_.opTimeout.count() > 0 &&
                 options_.grace.count() >= 0,
             "TcpStore timeouts must be positive");
    std::lock_guard<std::mutex> lock(mutex_);
    connect();
  }

  // Sends `request` and returns the response body; status handling is the caller's.
  std::string roundTrip(const Writer& request, std::chrono::milliseconds bound, const char* what) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!socket_.is_open()) connect();
    const std::string frame = request.frame();
    const auto deadline = Clock::now() + bound;
    boost::system::error_code ec;
    if (!runUntil(
            deadline, [&](auto done) { asio::async_write(socket_, asio::buffer(frame), done); },
            ec)) {
      timedOut(what, bound);
    }
    if (ec) lost(what, ec);
    char header[4];
    if (!runUntil(
            deadline, [&](auto done) { asio::async_read(socket_, asio::buffer(header, 4), done); },
            ec)) {
      timedOut(what, bound);
    }
    if (ec) lost(what, ec);
    const uint32_t length = decodeLength(header);
    if (length == 0 || length > kMaxFrame) {
      close();
      TW_THROW(CommError, "store ", endpointName(), ": malformed reply to ", what, " (", length,
               " bytes)");
    }
    std::string body(length, '\0');
    if (!runUntil(
            deadline,
            [&](auto done) {
              asio::async_read(socket_, asio::buffer(body.data(), body.size()), done);
            },
            ec)) {
      timedOut(what, bound);
    }
    if (ec) lost(what, ec);
    return body;
  }

  std::string endpointName() const { return options_.host + ":" + std::to_string(options_.port); }
  const TcpStoreOptions& options() const { return options_; }

 private:
  // Starts an operation with a completion handler `done(ec, bytes)` and runs the io_context until
  // it completes or `deadline` passes. Returns false on expiry (the socket is then closed).
  template <class Start>
  bool runUntil(Clock::time_point deadline, Start start, boost::system::error_code& ec) {
    bool finished = false;
    start([&](boost::system::error_code e, size_t) {
      ec = e;
      finished = true;
    });
    io_.restart();
    while (!finished && Clock::now() < deadline) {
      io_.run_one_until(deadline);
    }
    if (finished) return true;
    close();  // cancels the operation; drain its handler before the locals it uses go away
    io_.restart();
    io_.run();
    return false;
  }

  void close() {
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

  [[noreturn]] void timedOut(const char* what, std::chrono::milliseconds bound) {
    TW_THROW(TimeoutError, "store ", endpointName(), ": no answer to ", what, " within ",
             bound.count(), " ms (server hung or unreachable)");
  }

  [[noreturn]] void lost(const char* what, const boost::system::error_code& ec) {
    close();
    TW_THROW(CommError, "store ", endpointName(), ": connection lost during ", what, ": ",
             ec.message());
  }

  void connect() {
    const auto deadline = Clock::now() + options_.connectTimeout;
    std::string lastError = "no attempt";
    for (;;) {
      boost::system::error_code ec;
      tcp::resolver resolver(io_);
      const auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port), ec);
      if (!ec) {
        close();
        const bool finished = runUntil(
            std::min(deadline, Clock::now() + std::chrono::seconds(2)),
            [&](auto done) {
              asio::async_connect(socket_, endpoints,
                                  [done](boost::system::error_code e,
                                         const tcp::endpoint&) mutable { done(e, 0); });
            },
            ec);
        if (finished && !ec) {
          socket_.set_option(tcp::no_delay(true), ec);
          return;
        }
        if (!finished) ec = asio::error::timed_out;
      }
      lastError = ec.message();
      close();
      if (Clock::now() + std::chrono::milliseconds(100) >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    TW_THROW(TimeoutError, "store ", endpointName(), ": cannot connect within ",
             options_.connectTimeout.count(), " ms (last error: ", lastError,
             "); is the store server running?");
  }

  TcpStoreOptions options_;
  asio::io_context io_;
  tcp::socket socket_;
  std::mutex mutex_;
};

namespace {

// Parses the status byte; returns a reader positioned at the result, throws for the others.
void checkStatus(Reader& in, const std::string& store, const char* what) {
  const uint8_t status = in.u8();
  if (status == kOk) return;
  const std::string message = in.str();
  switch (status) {
    case kTimedOut:
      TW_THROW(TimeoutError, "store ", store, ": ", what, " timed out waiting for ", message);
    case kInvalid:
      TW_THROW(InvalidArgument, "store ", store, ": ", message);
    default:
      TW_THROW(CommError, "store ", store, ": ", what, " failed: ", message);
  }
}

template <class Parse>
auto parseReply(const std::string& body, const std::string& store, const char* what, Parse parse) {
  try {
    Reader in(body);
    checkStatus(in, store, what);
    return parse(in);
  } catch (const MalformedFrame&) {
    TW_THROW(CommError, "store ", store, ": malformed reply to ", what);
  }
}

}  // namespace

TcpStore::TcpStore(TcpStoreOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
TcpStore::~TcpStore() = default;

void TcpStore::set(const std::string& key, const std::string& value) {
  Writer request;
  request.u8(kSet);
  request.str(key);
  request.str(value);
  const std::string body = impl_->roundTrip(request, impl_->options().opTimeout, "set");
  parseReply(body, impl_->endpointName(), "set", [](Reader&) { return 0; });
}

std::string TcpStore::get(const std::string& key, std::chrono::milliseconds timeout) {
  TW_CHECK(timeout.count() >= 0, "store get: negative timeout");
  Writer request;
  request.u8(kGet);
  request.str(key);
  request.i64(timeout.count());
  const std::string body = impl_->roundTrip(request, timeout + impl_->options().grace, "get");
  return parseReply(body, impl_->endpointName(), "get", [](Reader& in) { return in.str(); });
}

int64_t TcpStore::add(const std::string& key, int64_t delta) {
  Writer request;
  request.u8(kAdd);
  request.str(key);
  request.i64(delta);
  const std::string body = impl_->roundTrip(request, impl_->options().opTimeout, "add");
  return parseReply(body, impl_->endpointName(), "add", [](Reader& in) { return in.i64(); });
}

void TcpStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  TW_CHECK(timeout.count() >= 0, "store wait: negative timeout");
  Writer request;
  request.u8(kWait);
  request.strs(keys);
  request.i64(timeout.count());
  const std::string body = impl_->roundTrip(request, timeout + impl_->options().grace, "wait");
  parseReply(body, impl_->endpointName(), "wait", [](Reader&) { return 0; });
}

bool TcpStore::check(const std::vector<std::string>& keys) {
  Writer request;
  request.u8(kCheck);
  request.strs(keys);
  const std::string body = impl_->roundTrip(request, impl_->options().opTimeout, "check");
  return parseReply(body, impl_->endpointName(), "check", [](Reader& in) { return in.u8() != 0; });
}

}  // namespace thinwire::comm

#include "comm/tcp/tcp_communicator.h"

#include <ATen/ATen.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/host_name.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>

#include "base/error.h"
#include "base/text.h"
#include "comm/collective_checks.h"
#include "comm/rank_order_reduce.h"
#include "comm/tcp/listen.h"

namespace thinwire::comm {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Note [TCP collectives]
// Every collective is one or more exchange steps. In a step each rank posts all its sends and
// receives at once (asynchronous Asio operations on one io_context, driven by the worker thread),
// so full-duplex exchanges never deadlock on full socket buffers. Every message starts with a
// 16-byte header (the step number and the payload size, little-endian) that the receiver checks:
// ranks that issued different collectives fail with CommError instead of misreading bytes.
//   allreduce:     per segment (segmentBytes), a reduce-scatter step (every rank sends block j to
//                  its owner, rank j; the owner adds the n contributions in rank order 0..n-1 in
//                  the accumulate type, casts once, divides for kAverage) and an allgather step
//                  (the owner sends its finished block to every rank). Each element is computed
//                  once, by one rank, in the local backend's order: results are bit-identical on
//                  every rank and equal to comm/local's. Scratch: (n-1) blocks of one segment.
//   reduceScatter: the reduce-scatter step alone, in rounds of at most segmentBytes / n per block.
//   allgather(v):  one step, every rank sends its input to every peer, straight into place.
//   allToAll:      one step, block d of the input to rank d.
//   broadcast:     one step, the root sends to every rank.
//   barrier:       one step of empty messages between every pair.
// In a full mesh each rank sends (n-1)/n of the tensor per phase, like a ring, with one step
// of latency instead of n-1.

struct TcpCommunicator::Transfer {
  int peer = 0;
  bool send = false;
  void* data = nullptr;
  int64_t bytes = 0;
};

namespace {

constexpr uint32_t kHelloMagic = 0x54575443;  // "TWTC"
constexpr size_t kHeaderBytes = 16;

void putU64(unsigned char* out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(value >> (8 * i));
}

uint64_t getU64(const unsigned char* in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value |= static_cast<uint64_t>(in[i]) << (8 * i);
  return value;
}

std::string describeError(const boost::system::error_code& ec) {
  if (ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == asio::error::broken_pipe) {
    return "closed the connection (its process ended or it aborted): " + ec.message();
  }
  return "failed: " + ec.message();
}

std::string joinRanks(const std::vector<int>& ranks) {
  std::ostringstream out;
  for (size_t i = 0; i < ranks.size(); ++i) out << (i ? "," : "") << ranks[i];
  return out.str();
}

// Balanced split of `length` elements into n blocks: block j has length/n (+1 for j < rem).
std::vector<int64_t> balancedCounts(int64_t length, int n) {
  std::vector<int64_t> counts(n);
  for (int j = 0; j < n; ++j) counts[j] = length / n + (j < length % n ? 1 : 0);
  return counts;
}

std::pair<std::string, std::string> splitHostPort(const std::string& address) {
  const auto [host, port] = parseHostPort(address, "TcpCommunicator: a peer's address");
  return {host, std::to_string(port)};
}

}  // namespace

class TcpCommunicator::Mesh {
 public:
  explicit Mesh(int worldSize) : sockets(worldSize), fds_(worldSize, -1) {}

  asio::io_context io;
  std::vector<std::unique_ptr<tcp::socket>> sockets;  // by peer rank; null for this rank

  // After the mesh is built: remembers the descriptors that shutdownAll() may touch.
  void publishDescriptors() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t r = 0; r < sockets.size(); ++r) {
      if (sockets[r] && sockets[r]->is_open()) fds_[r] = sockets[r]->native_handle();
    }
  }

  // Any thread: shuts every connection down (a syscall on the descriptor, never the Asio object
  // the worker may be using), so pending reads and writes here fail and peers see the close.
  void shutdownAll() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int fd : fds_) {
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    }
  }

  // Worker thread (or after it stopped): closes every socket. Under the lock, so that
  // shutdownAll() never acts on a descriptor number the system has already reused.
  void closeAll() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    fds_.assign(fds_.size(), -1);
    for (auto& socket : sockets) {
      if (!socket) continue;
      boost::system::error_code ignored;
      socket->close(ignored);
    }
  }

 private:
  std::mutex mutex_;
  std::vector<int> fds_;
};

TcpCommunicator::TcpCommunicator(Store& store, TcpCommunicatorOptions options)
    : options_(std::move(options)),
      mesh_(std::make_unique<Mesh>(std::max(1, options_.worldSize))),
      queue_(OpQueueOptions{.name = "tcp rank " + std::to_string(options_.rank),
                            .errorRank = options_.rank}) {
  TW_CHECK(options_.worldSize >= 1, "TcpCommunicator: worldSize = ", options_.worldSize,
           ", expected >= 1");
  TW_CHECK(options_.rank >= 0 && options_.rank < options_.worldSize,
           "TcpCommunicator: rank = ", options_.rank, ", expected 0 <= rank < worldSize (",
           options_.worldSize, ")");
  TW_CHECK(options_.timeout.count() > 0, "TcpCommunicator: timeout = ", options_.timeout.count(),
           " ms, expected > 0");
  TW_CHECK(options_.segmentBytes > 0, "TcpCommunicator: segmentBytes = ", options_.segmentBytes,
           ", expected > 0");
  TW_CHECK(!options_.keyPrefix.empty(), "TcpCommunicator: keyPrefix must not be empty");
  try {
    connectMesh(store);
  } catch (...) {
    queue_.stop();
    mesh_->closeAll();
    throw;
  }
}

TcpCommunicator::~TcpCommunicator() {
  queue_.stop();
  mesh_->closeAll();
}

void TcpCommunicator::connectMesh(Store& store) {
  const int n = options_.worldSize;
  const int me = options_.rank;
  if (n == 1) return;
  auto key = [this](int rank) { return options_.keyPrefix + "/address/" + std::to_string(rank); };

  tcp::acceptor acceptor(mesh_->io);
  listenOn(acceptor, options_.listenHost, 0, "TcpCommunicator");
  std::string host = options_.advertiseHost.empty() ? options_.listenHost : options_.advertiseHost;
  if (host == "0.0.0.0" || host == "::") host = asio::ip::host_name();
  store.set(key(me), host + ":" + std::to_string(acceptor.local_endpoint().port()));

  std::vector<std::string> keys;
  for (int r = 0; r < n; ++r) keys.push_back(key(r));
  try {
    store.wait(keys, options_.timeout);
  } catch (const TimeoutError&) {
    std::vector<int> missing;
    for (int r = 0; r < n; ++r) {
      if (!store.check({key(r)})) missing.push_back(r);
    }
    TW_THROW(TimeoutError, "TcpCommunicator rank ", me, ": rank(s) ", joinRanks(missing), " of ", n,
             " did not publish an address under '", options_.keyPrefix, "/address/<rank>' within ",
             options_.timeout.count(),
             " ms (not started, crashed, or started with another store or world size)");
  }

  // Every address is known, so every peer listens: connecting is bounded separately.
  const auto deadline = Clock::now() + options_.timeout;
  // The higher rank of each pair connects and introduces itself; the lower rank accepts.
  struct Hello {
    std::array<unsigned char, 12> bytes{};
  };
  std::vector<Hello> hellos(n);
  std::vector<std::unique_ptr<tcp::socket>> accepted;
  int pending = 0;
  std::string failure;
  auto fail = [&failure](const std::string& message) {
    if (failure.empty()) failure = message;
  };

  for (int peer = 0; peer < me; ++peer) {
    const auto [peerHost, peerPort] = splitHostPort(store.get(key(peer), options_.timeout));
    boost::system::error_code ec;
    tcp::resolver resolver(mesh_->io);
    const auto endpoints = resolver.resolve(peerHost, peerPort, ec);
    if (ec) {
      TW_THROW(CommError, "TcpCommunicator rank ", me, ": cannot resolve rank ", peer,
               "'s address ", peerHost, ":", peerPort, ": ", ec.message());
    }
    auto& socket = mesh_->sockets[peer];
    socket = std::make_unique<tcp::socket>(mesh_->io);
    unsigned char* hello = hellos[peer].bytes.data();
    putU64(hello, (uint64_t{kHelloMagic} << 32) | static_cast<uint32_t>(me));
    for (int i = 0; i < 4; ++i) hello[8 + i] = static_cast<unsigned char>(n >> (8 * i));
    ++pending;
    asio::async_connect(
        *socket, endpoints,
        [&, peer, hello](const boost::system::error_code& error, const tcp::endpoint&) {
          if (error) {
            fail("cannot connect to rank " + std::to_string(peer) + ": " + error.message());
            --pending;
            return;
          }
          asio::async_write(*mesh_->sockets[peer], asio::buffer(hello, 12),
                            [&, peer](const boost::system::error_code& e, size_t) {
                              if (e) {
                                fail("cannot introduce itself to rank " + std::to_string(peer) +
                                     ": " + e.message());
                              }
                              --pending;
                            });
        });
  }

  // Accepts the n-1-me higher ranks in whatever order they arrive; each names itself.
  std::function<void()> acceptNext;
  int toAccept = n - 1 - me;
  acceptNext = [&] {
    if (toAccept == 0) return;
    --toAccept;
    ++pending;
    accepted.push_back(std::make_unique<tcp::socket>(mesh_->io));
    tcp::socket* socket = accepted.back().get();
    acceptor.async_accept(*socket, [&, socket](const boost::system::error_code& error) {
      if (error) {
        fail("accepting a connection failed: " + error.message());
        --pending;
        return;
      }
      auto hello = std::make_shared<std::array<unsigned char, 12>>();
      asio::async_read(*socket, asio::buffer(*hello),
                       [&, socket, hello](const boost::system::error_code& e, size_t) {
                         --pending;
                         if (e) {
                           fail("a connecting peer did not introduce itself: " + e.message());
                           return;
                         }
                         const uint64_t word = getU64(hello->data());
                         const int peer = static_cast<int>(word & 0xffffffffu);
                         int peerWorld = 0;
                         for (int i = 0; i < 4; ++i)
                           peerWorld |= static_cast<int>((*hello)[8 + i]) << (8 * i);
                         if ((word >> 32) != kHelloMagic || peer <= me || peer >= n ||
                             peerWorld != n || mesh_->sockets[peer]) {
                           fail("a connection introduced itself as rank " + std::to_string(peer) +
                                " of a world of " + std::to_string(peerWorld) +
                                " (expected a new rank in (" + std::to_string(me) + ", " +
                                std::to_string(n) + ") of a world of " + std::to_string(n) +
                                ", or not a thinwire peer)");
                           return;
                         }
                         for (auto& candidate : accepted) {
                           if (candidate.get() == socket)
                             mesh_->sockets[peer] = std::move(candidate);
                         }
                       });
      acceptNext();
    });
  };
  acceptNext();

  mesh_->io.restart();
  while (pending > 0 && failure.empty() && Clock::now() < deadline) {
    mesh_->io.run_one_until(deadline);
  }
  const bool done = pending == 0 && failure.empty();
  if (!done) {
    const bool timedOut = failure.empty();  // before the drain adds "operation canceled"
    std::vector<int> missing;
    for (int r = 0; r < n; ++r) {
      if (r != me && (!mesh_->sockets[r] || !mesh_->sockets[r]->is_open())) missing.push_back(r);
    }
    boost::system::error_code ignored;
    acceptor.close(ignored);
    for (auto& socket : accepted) {
      if (socket) socket->close(ignored);
    }
    mesh_->closeAll();
    mesh_->io.restart();
    mesh_->io.run();  // drains the cancelled handlers, which refer to the locals above
    if (timedOut) {
      TW_THROW(TimeoutError, "TcpCommunicator rank ", me, ": no connection with rank(s) ",
               joinRanks(missing), " within ", options_.timeout.count(), " ms");
    }
    TW_THROW(CommError, "TcpCommunicator rank ", me, ": ", failure);
  }
  for (auto& socket : mesh_->sockets) {
    if (socket) socket->set_option(tcp::no_delay(true));
  }
  mesh_->publishDescriptors();
}

void TcpCommunicator::checkUsable(const std::string& what) const {
  if (!broken_.load()) return;
  std::lock_guard<std::mutex> lock(brokenMutex_);
  TW_THROW(CommError, "tcp ", what, " refused: the communicator is broken (", brokenReason_,
           "); abort and recreate it");
}

void TcpCommunicator::markBroken(const std::string& reason) {
  std::lock_guard<std::mutex> lock(brokenMutex_);
  if (brokenReason_.empty()) brokenReason_ = reason;
  broken_.store(true);
}

void TcpCommunicator::exchange(const std::string& what, const std::vector<Transfer>& transfers) {
  checkUsable(what);
  const uint64_t step = static_cast<uint64_t>(step_++);
  if (transfers.empty()) return;
  const auto deadline = Clock::now() + options_.timeout;
  struct Op {
    std::array<unsigned char, kHeaderBytes> header{};
    bool done = false;
  };
  std::vector<Op> ops(transfers.size());
  int pending = 0;
  std::string failure;
  auto fail = [&failure](const std::string& message) {
    if (failure.empty()) failure = message;
  };

  for (size_t i = 0; i < transfers.size(); ++i) {
    const Transfer& t = transfers[i];
    tcp::socket& socket = *mesh_->sockets[t.peer];
    const std::string peer = "rank " + std::to_string(t.peer);
    ++pending;
    if (t.send) {
      putU64(ops[i].header.data(), step);
      putU64(ops[i].header.data() + 8, static_cast<uint64_t>(t.bytes));
      const std::array<asio::const_buffer, 2> buffers = {
          asio::buffer(ops[i].header), asio::buffer(t.data, static_cast<size_t>(t.bytes))};
      asio::async_write(socket, buffers, [&, i, peer](const boost::system::error_code& ec, size_t) {
        --pending;
        if (ec) {
          fail(peer + " " + describeError(ec) + " while this rank sent to it");
          return;
        }
        ops[i].done = true;
      });
      continue;
    }
    asio::async_read(
        socket, asio::buffer(ops[i].header),
        [&, i, peer, step](const boost::system::error_code& ec, size_t) {
          if (ec) {
            --pending;
            fail(peer + " " + describeError(ec) + " while this rank waited for its data");
            return;
          }
          const Transfer& transfer = transfers[i];
          const uint64_t theirStep = getU64(ops[i].header.data());
          const uint64_t theirBytes = getU64(ops[i].header.data() + 8);
          if (theirStep != step || theirBytes != static_cast<uint64_t>(transfer.bytes)) {
            --pending;
            fail(peer + " sent " + std::to_string(theirBytes) + " bytes in exchange step " +
                 std::to_string(theirStep) + " where this rank expects " +
                 std::to_string(transfer.bytes) + " bytes in step " + std::to_string(step) +
                 " (every rank must issue the same collectives in the same order with the same "
                 "sizes)");
            return;
          }
          if (transfer.bytes == 0) {
            --pending;
            ops[i].done = true;
            return;
          }
          asio::async_read(
              *mesh_->sockets[transfer.peer],
              asio::buffer(transfer.data, static_cast<size_t>(transfer.bytes)),
              [&, i, peer](const boost::system::error_code& e, size_t) {
                --pending;
                if (e) {
                  fail(peer + " " + describeError(e) + " while this rank received its data");
                  return;
                }
                ops[i].done = true;
              });
        });
  }

  mesh_->io.restart();
  while (pending > 0 && failure.empty() && Clock::now() < deadline) {
    mesh_->io.run_one_until(deadline);
  }
  if (pending == 0 && failure.empty()) return;

  // Failed or timed out: the byte streams are now out of step for good. Close everything, let
  // the cancelled handlers run (they refer to this frame), and report.
  std::vector<int> stuck;
  for (size_t i = 0; i < transfers.size(); ++i) {
    if (!ops[i].done && std::find(stuck.begin(), stuck.end(), transfers[i].peer) == stuck.end()) {
      stuck.push_back(transfers[i].peer);
    }
  }
  std::sort(stuck.begin(), stuck.end());
  const bool aborted = broken_.load();
  const bool timedOut = failure.empty();  // before the drain adds "operation canceled" failures
  mesh_->closeAll();
  mesh_->io.restart();
  mesh_->io.run();
  const std::string where = "tcp " + what + " on rank " + std::to_string(options_.rank);
  if (aborted) {
    std::string reason;
    {
      std::lock_guard<std::mutex> lock(brokenMutex_);
      reason = brokenReason_;
    }
    TW_THROW(CommError, where, " failed: the communicator was aborted (", reason, ")");
  }
  if (timedOut) {
    markBroken(where + " timed out waiting for rank(s) " + joinRanks(stuck));
    TW_THROW(TimeoutError, where, ": rank(s) ", joinRanks(stuck), " did not complete within ",
             options_.timeout.count(),
             " ms (a peer rank failed, stalled or issued fewer collectives)");
  }
  markBroken(where + ": " + failure);
  TW_THROW(CommError, where, ": ", failure);
}

void TcpCommunicator::runAllreduce(const std::string& what, at::Tensor& inout, ReduceOp op) {
  const int n = options_.worldSize;
  const int me = options_.rank;
  at::Tensor flat = inout.view({-1});
  const int64_t total = flat.numel();
  const int64_t elementBytes = static_cast<int64_t>(flat.element_size());
  auto* base = static_cast<unsigned char*>(flat.data_ptr());
  const int64_t segment = std::max<int64_t>(n, options_.segmentBytes / elementBytes);
  for (int64_t start = 0; start < total; start += segment) {
    const int64_t length = std::min(segment, total - start);
    const std::vector<int64_t> counts = balancedCounts(length, n);
    std::vector<int64_t> offsets = offsetsOf(counts);
    for (int64_t& offset : offsets) offset += start;
    const int64_t mine = counts[me];
    if (scratch_.numel() < (n - 1) * mine || scratch_.scalar_type() != flat.scalar_type()) {
      scratch_ = at::empty({std::max<int64_t>((n - 1) * counts[0], 1)}, flat.options());
    }
    auto row = [&](int peer) { return peer < me ? peer : peer - 1; };
    std::vector<Transfer> transfers;
    for (int peer = 0; peer < n; ++peer) {
      if (peer == me) continue;
      transfers.push_back(
          {peer, true, base + offsets[peer] * elementBytes, counts[peer] * elementBytes});
      transfers.push_back(
          {peer, false,
           static_cast<unsigned char*>(scratch_.data_ptr()) + row(peer) * mine * elementBytes,
           mine * elementBytes});
    }
    exchange(what + " (reduce-scatter)", transfers);
    std::vector<at::Tensor> parts;
    at::Tensor myBlock = flat.narrow(0, offsets[me], mine);
    for (int r = 0; r < n; ++r) {
      parts.push_back(r == me ? myBlock : scratch_.narrow(0, row(r) * mine, mine));
    }
    writeReduced(myBlock, reduceInRankOrder(parts, op), op, n);
    transfers.clear();
    for (int peer = 0; peer < n; ++peer) {
      if (peer == me) continue;
      transfers.push_back({peer, true, base + offsets[me] * elementBytes, mine * elementBytes});
      transfers.push_back(
          {peer, false, base + offsets[peer] * elementBytes, counts[peer] * elementBytes});
    }
    exchange(what + " (allgather)", transfers);
  }
}

void TcpCommunicator::runReduceScatter(const std::string& what,
                                       const at::Tensor& input,
                                       at::Tensor& output,
                                       const std::vector<int64_t>& counts,
                                       ReduceOp op) {
  const int n = options_.worldSize;
  const int me = options_.rank;
  const std::vector<int64_t> offsets = offsetsOf(counts);
  at::Tensor out = output.view({-1});
  at::Tensor source = input.view({-1});
  const int64_t elementBytes = static_cast<int64_t>(source.element_size());
  // Writing the output piece by piece is safe when it is exactly this rank's own block of the
  // input (each piece is read before it is written); any other overlap would overwrite blocks
  // still to be sent, so the input is copied first.
  const bool ownBlock = out.numel() == 0 || static_cast<unsigned char*>(out.data_ptr()) ==
                                                static_cast<unsigned char*>(source.data_ptr()) +
                                                    offsets[me] * elementBytes;
  if (overlaps(source, out) && !ownBlock) source = source.clone();
  auto* base = static_cast<unsigned char*>(source.data_ptr());
  const int64_t largest = *std::max_element(counts.begin(), counts.end());
  const int64_t piece = std::max<int64_t>(1, options_.segmentBytes / (elementBytes * n));
  const int64_t mineMax = std::min(piece, counts[me]);
  if (scratch_.numel() < (n - 1) * mineMax || scratch_.scalar_type() != source.scalar_type()) {
    scratch_ = at::empty({std::max<int64_t>((n - 1) * mineMax, 1)}, source.options());
  }
  auto row = [&](int peer) { return peer < me ? peer : peer - 1; };
  auto pieceOf = [&](int r, int64_t begin) {
    return std::max<int64_t>(0, std::min(piece, counts[r] - begin));
  };
  for (int64_t begin = 0; begin < largest; begin += piece) {
    const int64_t mine = pieceOf(me, begin);
    std::vector<Transfer> transfers;
    for (int peer = 0; peer < n; ++peer) {
      if (peer == me) continue;
      transfers.push_back({peer, true, base + (offsets[peer] + begin) * elementBytes,
                           pieceOf(peer, begin) * elementBytes});
      transfers.push_back(
          {peer, false,
           static_cast<unsigned char*>(scratch_.data_ptr()) + row(peer) * mine * elementBytes,
           mine * elementBytes});
    }
    exchange(what, transfers);
    if (mine == 0) continue;
    std::vector<at::Tensor> parts;
    for (int r = 0; r < n; ++r) {
      parts.push_back(r == me ? source.narrow(0, offsets[me] + begin, mine)
                              : scratch_.narrow(0, row(r) * mine, mine));
    }
    writeReduced(out.narrow(0, begin, mine), reduceInRankOrder(parts, op), op, n);
  }
}

void TcpCommunicator::runGather(const std::string& what,
                                const at::Tensor& input,
                                at::Tensor& output,
                                const std::vector<int64_t>& counts) {
  const int n = options_.worldSize;
  const int me = options_.rank;
  const std::vector<int64_t> offsets = offsetsOf(counts);
  at::Tensor out = output.view({-1});
  const int64_t elementBytes = static_cast<int64_t>(out.element_size());
  auto* base = static_cast<unsigned char*>(out.data_ptr());
  std::vector<Transfer> transfers;
  for (int peer = 0; peer < n; ++peer) {
    if (peer == me) continue;
    transfers.push_back({peer, true, input.data_ptr(), counts[me] * elementBytes});
    transfers.push_back(
        {peer, false, base + offsets[peer] * elementBytes, counts[peer] * elementBytes});
  }
  exchange(what, transfers);
  out.narrow(0, offsets[me], counts[me]).copy_(input.view({-1}));
}

std::unique_ptr<Work> TcpCommunicator::allreduce(at::Tensor& inout,
                                                 const AllreduceOptions& options) {
  checkAllreduceArgs(inout, options.op);
  std::string what =
      describeCollective("allreduce(" + toString(options.op) + ")", sequence_++, inout);
  return queue_.submit(
      what, [this, inout, options, what]() mutable { runAllreduce(what, inout, options.op); });
}

std::unique_ptr<Work> TcpCommunicator::allgather(const at::Tensor& input, at::Tensor& output) {
  checkAllgatherArgs(input, output, worldSize());
  std::string what = describeCollective("allgather", sequence_++, input);
  return queue_.submit(what, [this, input, output, what]() mutable {
    runGather(what, input, output, std::vector<int64_t>(worldSize(), input.numel()));
  });
}

std::unique_ptr<Work> TcpCommunicator::allgatherv(const at::Tensor& input,
                                                  at::Tensor& output,
                                                  const std::vector<int64_t>& counts) {
  checkAllgathervArgs(input, output, counts, rank(), worldSize());
  std::string what = describeCollective("allgatherv", sequence_++, input);
  return queue_.submit(what, [this, input, output, counts, what]() mutable {
    runGather(what, input, output, counts);
  });
}

std::unique_ptr<Work> TcpCommunicator::allToAll(const at::Tensor& input,
                                                at::Tensor& output,
                                                const std::vector<int64_t>& sendCounts,
                                                const std::vector<int64_t>& recvCounts) {
  checkAllToAllArgs(input, output, sendCounts, recvCounts, worldSize());
  std::string what = describeCollective("allToAll", sequence_++, input);
  return queue_.submit(what, [this, input, output, sendCounts, recvCounts, what]() mutable {
    const int me = rank();
    at::Tensor source = overlaps(input, output) ? input.view({-1}).clone() : input.view({-1});
    at::Tensor out = output.view({-1});
    const std::vector<int64_t> sendOffsets = offsetsOf(sendCounts);
    const std::vector<int64_t> recvOffsets = offsetsOf(recvCounts);
    const int64_t elementBytes = static_cast<int64_t>(out.element_size());
    auto* sendBase = static_cast<unsigned char*>(source.data_ptr());
    auto* recvBase = static_cast<unsigned char*>(out.data_ptr());
    std::vector<Transfer> transfers;
    for (int peer = 0; peer < worldSize(); ++peer) {
      if (peer == me) continue;
      transfers.push_back({peer, true, sendBase + sendOffsets[peer] * elementBytes,
                           sendCounts[peer] * elementBytes});
      transfers.push_back({peer, false, recvBase + recvOffsets[peer] * elementBytes,
                           recvCounts[peer] * elementBytes});
    }
    exchange(what, transfers);
    if (sendCounts[me] != recvCounts[me]) {
      TW_THROW(CommError, "tcp ", what, ": rank ", me, " sends itself ", sendCounts[me],
               " elements but expects ", recvCounts[me]);
    }
    out.narrow(0, recvOffsets[me], recvCounts[me])
        .copy_(source.narrow(0, sendOffsets[me], sendCounts[me]));
  });
}

std::unique_ptr<Work> TcpCommunicator::reduceScatter(const at::Tensor& input,
                                                     at::Tensor& output,
                                                     const std::vector<int64_t>& counts,
                                                     const ReduceScatterOptions& options) {
  checkReduceScatterArgs(input, output, counts, options.op, rank(), worldSize());
  std::string what =
      describeCollective("reduceScatter(" + toString(options.op) + ")", sequence_++, input);
  return queue_.submit(what, [this, input, output, counts, options, what]() mutable {
    runReduceScatter(what, input, output, counts, options.op);
  });
}

std::unique_ptr<Work> TcpCommunicator::broadcast(at::Tensor& inout,
                                                 const BroadcastOptions& options) {
  checkBroadcastArgs(inout, options.root, worldSize());
  std::string what = describeCollective("broadcast", sequence_++, inout);
  return queue_.submit(what, [this, inout, options, what]() mutable {
    const int64_t bytes = inout.numel() * static_cast<int64_t>(inout.element_size());
    std::vector<Transfer> transfers;
    if (rank() == options.root) {
      for (int peer = 0; peer < worldSize(); ++peer) {
        if (peer != rank()) transfers.push_back({peer, true, inout.data_ptr(), bytes});
      }
    } else {
      transfers.push_back({options.root, false, inout.data_ptr(), bytes});
    }
    exchange(what, transfers);
  });
}

std::unique_ptr<Work> TcpCommunicator::barrier() {
  std::string what = "barrier #" + std::to_string(sequence_++);
  return queue_.submit(what, [this, what] {
    std::vector<Transfer> transfers;
    for (int peer = 0; peer < worldSize(); ++peer) {
      if (peer == rank()) continue;
      transfers.push_back({peer, true, nullptr, 0});
      transfers.push_back({peer, false, nullptr, 0});
    }
    exchange(what, transfers);
  });
}

void TcpCommunicator::abort(const std::string& reason) noexcept {
  try {
    std::cerr << "thinwire: rank " << options_.rank << "/" << options_.worldSize
              << " aborts the tcp job: " << reason << std::endl;
    markBroken("rank " + std::to_string(options_.rank) + " aborted: " + reason);
  } catch (...) {
    broken_.store(true);
  }
  mesh_->shutdownAll();
  if (options_.exitOnAbort) {
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(1);
  }
}

}  // namespace thinwire::comm

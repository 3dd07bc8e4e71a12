#include "comm/local/local_communicator.h"

#include <ATen/ATen.h>

#include <condition_variable>
#include <functional>
#include <iostream>
#include <mutex>
#include <sstream>

#include "base/error.h"
#include "comm/collective_checks.h"
#include "comm/rank_order_reduce.h"

namespace thinwire::comm {

// What one rank brings to one collective. Read by every rank between the two rendezvous of
// Note [Local two-phase exchange].
struct Contribution {
  std::string op;  // "allreduce(sum)": must match on every rank
  int64_t sequence = 0;
  at::ScalarType dtype = at::kFloat;
  at::Tensor input;                 // flattened view of the rank's input (undefined for barrier)
  std::vector<int64_t> counts;      // allgatherv / reduceScatter counts, allToAll sendCounts
  std::vector<int64_t> recvCounts;  // allToAll only
  int root = 0;                     // broadcast only
};

Contribution makeContribution(std::string op, int64_t sequence, const at::Tensor& tensor) {
  Contribution contribution;
  contribution.op = std::move(op);
  contribution.sequence = sequence;
  if (tensor.defined()) {
    contribution.dtype = tensor.scalar_type();
    contribution.input = tensor.view({-1});
  }
  return contribution;
}

// Note [Local two-phase exchange]
// Each collective is two rendezvous. Phase 1: every rank publishes its Contribution and waits for
// all of them; then each rank computes its own result into private memory, reading (never
// writing) the other ranks' inputs. Phase 2: every rank waits until all have finished reading;
// only then does it write its output. Outputs may therefore alias inputs (in-place allreduce,
// reduceScatter into a slice of its input) without a rank seeing another's half-written result,
// and a rank may publish its next contribution as soon as it leaves phase 2.
class LocalWorld {
 public:
  LocalWorld(int worldSize, LocalWorldOptions options)
      : worldSize_(worldSize),
        options_(options),
        contributions_(worldSize),
        present_(worldSize, false),
        departed_(worldSize, false) {}

  int worldSize() const { return worldSize_; }

  // Blocking: runs one collective for `rank` as described in Note [Local two-phase exchange].
  // `compute` reads every rank's contribution and fills the rank's private result; `commit`
  // writes the result to the rank's output. Throws CommError / TimeoutError.
  void exchange(int rank,
                Contribution mine,
                const std::string& what,
                const std::function<void(const std::vector<Contribution>&)>& compute,
                const std::function<void()>& commit) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      contributions_[rank] = std::move(mine);
    }
    rendezvous(rank, what + " (arrival)");
    try {
      checkSameCollective(rank, what);
      compute(contributions_);
    } catch (const std::exception& e) {
      breakWorld(e.what());
      throw;
    }
    rendezvous(rank, what + " (completion)");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      contributions_[rank] = Contribution{};
    }
    commit();
  }

  void abort(int rank, const std::string& reason) {
    breakWorld("rank " + std::to_string(rank) + " aborted the local world: " + reason);
  }

  void depart(int rank) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      departed_[rank] = true;
    }
    changed_.notify_all();
  }

 private:
  // Blocking: returns once every rank has reached the same rendezvous.
  void rendezvous(int rank, const std::string& what) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (broken_) TW_THROW(CommError, what, " refused: ", brokenReason_);
    present_[rank] = true;
    if (++arrived_ == worldSize_) {
      arrived_ = 0;
      present_.assign(worldSize_, false);
      ++generation_;
      lock.unlock();
      changed_.notify_all();
      return;
    }
    const uint64_t generation = generation_;
    auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    changed_.wait_until(lock, deadline, [&] {
      return generation_ != generation || broken_ || departed_[rank] || missingRankDeparted();
    });
    if (generation_ != generation) return;
    if (broken_) TW_THROW(CommError, what, " failed: ", brokenReason_);
    std::string missing = missingRanks();
    if (departed_[rank]) {
      breakLocked("rank " + std::to_string(rank) + " was destroyed while in " + what);
      TW_THROW(CommError, what, " failed: the communicator was destroyed while it waited");
    }
    if (missingRankDeparted()) {
      breakLocked("rank(s) " + missing + " were destroyed while rank " + std::to_string(rank) +
                  " waited for them in " + what);
      TW_THROW(CommError, what, " failed: ", brokenReason_);
    }
    breakLocked("rank " + std::to_string(rank) + " timed out after " +
                std::to_string(options_.timeout.count()) + " ms in " + what +
                " waiting for rank(s) " + missing);
    TW_THROW(TimeoutError, what, ": rank(s) ", missing, " did not join within ",
             options_.timeout.count(), " ms (a peer rank failed, stalled or issued fewer ops)");
  }

  // Every rank sees the same contributions, so every rank detects a mismatch and fails alike.
  void checkSameCollective(int rank, const std::string& what) const {
    const Contribution& mine = contributions_[rank];
    for (int peer = 0; peer < worldSize_; ++peer) {
      const Contribution& other = contributions_[peer];
      if (other.op != mine.op || other.sequence != mine.sequence || other.dtype != mine.dtype) {
        TW_THROW(CommError, what, ": rank ", peer, " issued ", other.op, " #", other.sequence,
                 " on ", other.dtype, " while rank ", rank, " issued ", mine.op, " #",
                 mine.sequence, " on ", mine.dtype,
                 " (every rank must issue the same collectives in the same order)");
      }
    }
  }

  bool missingRankDeparted() const {
    for (int r = 0; r < worldSize_; ++r) {
      if (!present_[r] && departed_[r]) return true;
    }
    return false;
  }

  std::string missingRanks() const {
    std::ostringstream out;
    bool first = true;
    for (int r = 0; r < worldSize_; ++r) {
      if (present_[r]) continue;
      out << (first ? "" : ",") << r;
      first = false;
    }
    return out.str();
  }

  void breakWorld(const std::string& reason) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      breakLocked(reason);
    }
    changed_.notify_all();
  }

  // Keeps the first reason: later failures are consequences of it.
  void breakLocked(const std::string& reason) {
    if (!broken_) {
      broken_ = true;
      brokenReason_ = reason;
    }
    changed_.notify_all();
  }

  const int worldSize_;
  const LocalWorldOptions options_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Contribution> contributions_;
  std::vector<bool> present_;  // arrived at the current rendezvous
  std::vector<bool> departed_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool broken_ = false;
  std::string brokenReason_;
};

namespace {

// A disagreement between ranks is a broken collective, not a caller error of this rank alone.
template <typename... Args>
void checkAgreement(bool agreed, const Args&... args) {
  if (!agreed) TW_THROW(CommError, args...);
}

}  // namespace

LocalCommunicator::LocalCommunicator(std::shared_ptr<LocalWorld> world, int rank)
    : world_(std::move(world)),
      rank_(rank),
      queue_(OpQueueOptions{.name = "local rank " + std::to_string(rank), .errorRank = rank}) {}

LocalCommunicator::~LocalCommunicator() {
  world_->depart(rank_);
  queue_.stop();
}

int LocalCommunicator::worldSize() const { return world_->worldSize(); }

std::unique_ptr<Work> LocalCommunicator::allreduce(at::Tensor& inout,
                                                   const AllreduceOptions& options) {
  checkAllreduceArgs(inout, options.op);
  std::string op = "allreduce(" + toString(options.op) + ")";
  int64_t sequence = sequence_++;
  std::string what = describeCollective(op, sequence, inout);
  return queue_.submit(what, [this, inout, options, op, sequence, what]() mutable {
    at::Tensor reduced;
    world_->exchange(
        rank_, makeContribution(op, sequence, inout), what,
        [&](const std::vector<Contribution>& all) {
          std::vector<at::Tensor> parts;
          for (const Contribution& c : all) {
            checkAgreement(c.input.numel() == inout.numel(), what, ": a rank passed ",
                           c.input.numel(), " elements, expected ", inout.numel(), " as on rank ",
                           rank_);
            parts.push_back(c.input);
          }
          reduced = reduceInRankOrder(parts, options.op);
        },
        [&] { writeReduced(inout, reduced, options.op, worldSize()); });
  });
}

std::unique_ptr<Work> LocalCommunicator::allgather(const at::Tensor& input, at::Tensor& output) {
  checkAllgatherArgs(input, output, worldSize());
  int64_t sequence = sequence_++;
  std::string what = describeCollective("allgather", sequence, input);
  return queue_.submit(what, [this, input, output, sequence, what]() mutable {
    at::Tensor gathered;
    world_->exchange(
        rank_, makeContribution("allgather", sequence, input), what,
        [&](const std::vector<Contribution>& all) {
          std::vector<at::Tensor> parts;
          for (const Contribution& c : all) {
            checkAgreement(c.input.numel() == input.numel(), what, ": a rank passed ",
                           c.input.numel(), " elements, expected ", input.numel(), " as on rank ",
                           rank_);
            parts.push_back(c.input);
          }
          gathered = at::cat(parts);
        },
        [&] { output.view({-1}).copy_(gathered); });
  });
}

std::unique_ptr<Work> LocalCommunicator::allgatherv(const at::Tensor& input,
                                                    at::Tensor& output,
                                                    const std::vector<int64_t>& counts) {
  checkAllgathervArgs(input, output, counts, rank_, worldSize());
  int64_t sequence = sequence_++;
  std::string what = describeCollective("allgatherv", sequence, input);
  return queue_.submit(what, [this, input, output, counts, sequence, what]() mutable {
    at::Tensor gathered;
    Contribution mine = makeContribution("allgatherv", sequence, input);
    mine.counts = counts;
    world_->exchange(
        rank_, std::move(mine), what,
        [&](const std::vector<Contribution>& all) {
          std::vector<at::Tensor> parts;
          for (size_t r = 0; r < all.size(); ++r) {
            checkAgreement(all[r].counts == counts, what, ": rank ", r,
                           " passed different counts than rank ", rank_);
            parts.push_back(all[r].input);
          }
          gathered = at::cat(parts);
        },
        [&] { output.view({-1}).copy_(gathered); });
  });
}

std::unique_ptr<Work> LocalCommunicator::allToAll(const at::Tensor& input,
                                                  at::Tensor& output,
                                                  const std::vector<int64_t>& sendCounts,
                                                  const std::vector<int64_t>& recvCounts) {
  checkAllToAllArgs(input, output, sendCounts, recvCounts, worldSize());
  int64_t sequence = sequence_++;
  std::string what = describeCollective("allToAll", sequence, input);
  return queue_.submit(
      what, [this, input, output, sendCounts, recvCounts, sequence, what]() mutable {
        at::Tensor received;
        Contribution mine = makeContribution("allToAll", sequence, input);
        mine.counts = sendCounts;
        mine.recvCounts = recvCounts;
        world_->exchange(
            rank_, std::move(mine), what,
            [&](const std::vector<Contribution>& all) {
              std::vector<at::Tensor> parts;
              for (size_t source = 0; source < all.size(); ++source) {
                const Contribution& c = all[source];
                checkAgreement(c.counts[rank_] == recvCounts[source], what, ": rank ", source,
                               " sends ", c.counts[rank_], " elements to rank ", rank_,
                               ", which expects ", recvCounts[source]);
                int64_t offset = offsetsOf(c.counts)[rank_];
                parts.push_back(c.input.narrow(0, offset, c.counts[rank_]));
              }
              received = at::cat(parts);
            },
            [&] { output.view({-1}).copy_(received); });
      });
}

std::unique_ptr<Work> LocalCommunicator::reduceScatter(const at::Tensor& input,
                                                       at::Tensor& output,
                                                       const std::vector<int64_t>& counts,
                                                       const ReduceScatterOptions& options) {
  checkReduceScatterArgs(input, output, counts, options.op, rank_, worldSize());
  std::string op = "reduceScatter(" + toString(options.op) + ")";
  int64_t sequence = sequence_++;
  std::string what = describeCollective(op, sequence, input);
  return queue_.submit(what, [this, input, output, counts, options, op, sequence, what]() mutable {
    at::Tensor reduced;
    Contribution mine = makeContribution(op, sequence, input);
    mine.counts = counts;
    world_->exchange(
        rank_, std::move(mine), what,
        [&](const std::vector<Contribution>& all) {
          int64_t offset = offsetsOf(counts)[rank_];
          std::vector<at::Tensor> parts;
          for (size_t r = 0; r < all.size(); ++r) {
            checkAgreement(all[r].counts == counts, what, ": rank ", r,
                           " passed different counts than rank ", rank_);
            parts.push_back(all[r].input.narrow(0, offset, counts[rank_]));
          }
          reduced = reduceInRankOrder(parts, options.op);
        },
        [&] { writeReduced(output, reduced, options.op, worldSize()); });
  });
}

std::unique_ptr<Work> LocalCommunicator::broadcast(at::Tensor& inout,
                                                   const BroadcastOptions& options) {
  checkBroadcastArgs(inout, options.root, worldSize());
  int64_t sequence = sequence_++;
  std::string what = describeCollective("broadcast", sequence, inout);
  return queue_.submit(what, [this, inout, options, sequence, what]() mutable {
    at::Tensor rootValue;
    Contribution mine = makeContribution("broadcast", sequence, inout);
    mine.root = options.root;
    world_->exchange(
        rank_, std::move(mine), what,
        [&](const std::vector<Contribution>& all) {
          for (size_t r = 0; r < all.size(); ++r) {
            checkAgreement(all[r].root == options.root && all[r].input.numel() == inout.numel(),
                           what, ": rank ", r, " passed root ", all[r].root, " and ",
                           all[r].input.numel(), " elements, rank ", rank_, " root ", options.root,
                           " and ", inout.numel());
          }
          if (rank_ != options.root) rootValue = all[options.root].input.clone();
        },
        [&] {
          if (rank_ != options.root) inout.view({-1}).copy_(rootValue);
        });
  });
}

std::unique_ptr<Work> LocalCommunicator::barrier() {
  int64_t sequence = sequence_++;
  std::string what = "barrier #" + std::to_string(sequence);
  return queue_.submit(what, [this, sequence, what] {
    world_->exchange(
        rank_, makeContribution("barrier", sequence, at::Tensor()), what,
        [](const std::vector<Contribution>&) {}, [] {});
  });
}

void LocalCommunicator::abort(const std::string& reason) noexcept {
  try {
    world_->abort(rank_, reason);
  } catch (const std::exception& e) {
    std::cerr << "thinwire: local abort on rank " << rank_ << " failed: " << e.what() << "\n";
  }
}

std::vector<std::unique_ptr<Communicator>> makeLocalWorld(int worldSize,
                                                          LocalWorldOptions options) {
  TW_CHECK(worldSize >= 1, "makeLocalWorld: worldSize = ", worldSize, ", expected >= 1");
  TW_CHECK(options.timeout.count() > 0, "makeLocalWorld: timeout = ", options.timeout.count(),
           " ms, expected > 0");
  auto world = std::make_shared<LocalWorld>(worldSize, options);
  std::vector<std::unique_ptr<Communicator>> communicators;
  communicators.reserve(worldSize);
  for (int rank = 0; rank < worldSize; ++rank) {
    communicators.push_back(std::make_unique<LocalCommunicator>(world, rank));
  }
  return communicators;
}

}  // namespace thinwire::comm

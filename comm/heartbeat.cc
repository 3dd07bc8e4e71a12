#include "comm/heartbeat.h"

#include <sstream>
#include <utility>

#include "base/error.h"

namespace thinwire::comm {
namespace {

using Clock = std::chrono::steady_clock;

double secondsBetween(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

std::string describe(const PeerFailure& failure) {
  std::ostringstream out;
  out.precision(1);
  out << std::fixed;
  if (failure.rank < 0) {
    out << "the rendezvous store has not answered for " << failure.silentSeconds
        << " s (its host, rank 0 or the launcher, is likely dead): " << failure.detail;
    return out.str();
  }
  out << "rank " << failure.rank << " silent for " << failure.silentSeconds << " s; ";
  if (failure.activity.empty()) {
    out << "it never reported";
  } else {
    out << "last activity: " << failure.activity;
  }
  return out.str();
}

Heartbeat::Heartbeat(Store& store,
                     HeartbeatOptions options,
                     std::function<void(const PeerFailure&)> onFailure,
                     std::function<void(const std::string&)> onStall)
    : store_(store),
      options_(std::move(options)),
      onFailure_(std::move(onFailure)),
      onStall_(std::move(onStall)) {
  TW_CHECK(options_.worldSize >= 1 && options_.rank >= 0 && options_.rank < options_.worldSize,
           "Heartbeat needs 0 <= rank < worldSize, got rank ", options_.rank, " of ",
           options_.worldSize);
  TW_CHECK(options_.interval.count() > 0 && options_.timeout >= 2 * options_.interval,
           "Heartbeat needs interval > 0 and timeout >= 2 x interval, got ",
           options_.interval.count(), " ms and ", options_.timeout.count(), " ms");
  TW_CHECK(onFailure_ != nullptr, "Heartbeat needs a failure callback");
  const auto now = Clock::now();
  peers_.resize(static_cast<size_t>(options_.worldSize));
  for (Peer& peer : peers_) peer.changed = now;
  lastStoreContact_ = now;
  thread_ = std::thread([this] { run(); });
}

Heartbeat::~Heartbeat() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Heartbeat::setActivity(std::string activity) {
  std::lock_guard<std::mutex> lock(mutex_);
  activity_ = std::move(activity);
}

void Heartbeat::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    beatOnce();
    lock.lock();
    wake_.wait_for(lock, options_.interval, [this] { return stopping_; });
  }
}

void Heartbeat::beatOnce() {
  std::string activity;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    activity = activity_;
  }
  const std::string prefix = options_.keyPrefix + "heartbeat/";
  const auto now = Clock::now();
  std::vector<std::string> activities(peers_.size());
  try {
    ++counter_;
    store_.set(prefix + std::to_string(options_.rank), std::to_string(counter_) + "\n" + activity);
    for (int r = 0; r < options_.worldSize; ++r) {
      if (r == options_.rank) {
        activities[static_cast<size_t>(r)] = activity;
        continue;
      }
      const std::string key = prefix + std::to_string(r);
      if (!store_.check({key})) continue;
      const std::string value = store_.get(key, options_.interval);
      const size_t newline = value.find('\n');
      Peer& peer = peers_[static_cast<size_t>(r)];
      const std::string counter = value.substr(0, newline);
      peer.activity = newline == std::string::npos ? "" : value.substr(newline + 1);
      activities[static_cast<size_t>(r)] = peer.activity;
      if (counter != peer.counter) {
        peer.counter = counter;
        peer.changed = now;
      }
    }
    lastStoreContact_ = now;
  } catch (const Error& e) {
    const double silent = secondsBetween(lastStoreContact_, now);
    if (!storeReported_ && silent * 1000 >= static_cast<double>(options_.timeout.count())) {
      storeReported_ = true;
      onFailure_(PeerFailure{.rank = -1, .silentSeconds = silent, .detail = e.what()});
    }
    return;
  }

  for (int r = 0; r < options_.worldSize; ++r) {
    if (r == options_.rank) continue;
    Peer& peer = peers_[static_cast<size_t>(r)];
    const double silent = secondsBetween(peer.changed, now);
    if (!peer.reported && silent * 1000 >= static_cast<double>(options_.timeout.count())) {
      peer.reported = true;
      onFailure_(PeerFailure{.rank = r, .silentSeconds = silent, .activity = peer.activity});
    }
  }

  // Stall inspector: everyone inside a collective, not all the same one.
  if (!onStall_) return;
  bool allInCollective = true, allSame = true;
  for (const std::string& a : activities) {
    allInCollective = allInCollective && a.rfind(kCollectiveActivity, 0) == 0;
    allSame = allSame && a == activities[0];
  }
  if (!allInCollective || allSame) {
    stallSignature_.clear();
    stallReported_ = false;
    return;
  }
  std::string signature;
  for (size_t r = 0; r < activities.size(); ++r) {
    signature += (r == 0 ? "" : "; ") + std::string("rank ") + std::to_string(r) + ": " +
                 activities[r].substr(std::char_traits<char>::length(kCollectiveActivity));
  }
  if (signature != stallSignature_) {
    stallSignature_ = signature;
    stallSince_ = now;
    stallReported_ = false;
  } else if (!stallReported_ && now - stallSince_ >= options_.stallAfter) {
    stallReported_ = true;
    onStall_("ranks disagree about the collective they are in for " +
             std::to_string(static_cast<int>(secondsBetween(stallSince_, now))) +
             " s: " + signature);
  }
}

}  // namespace thinwire::comm

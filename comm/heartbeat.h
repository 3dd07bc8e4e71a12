// File: comm/heartbeat.h
//
// `Heartbeat`: liveness and stall detection for one rank of a job, over a comm::Store. A
// background thread publishes this rank's beat every `interval` (a counter, and what the rank
// is doing: "forward", "collective: allreduce bucket 3 step 120") and reads every peer's. A peer
// whose counter has not moved for `timeout` (killed, SIGSTOP-ed, its process wedged) is reported
// through `onFailure` with its rank, how long it has been silent and its last published activity,
// so the report names the collective it was in. A store that cannot be reached for `timeout` is a
// failure too (the store's host died). When every rank is inside a collective but they name
// different ones for longer than `stallAfter`, `onStall` gets one warning line (a stall
// inspector: mismatched collectives deadlock until the communicator's timeout).
//
// Keys: "<prefix>heartbeat/<rank>" = "<counter>\n<activity>". Give each job its own prefix
// (or a PrefixStore).
//
// Ownership: borrows the store (must outlive the Heartbeat); owns its thread, which the
// destructor stops and joins (at most one interval later). Callbacks run on that thread; the
// failure callback runs at most once per failed peer, the stall callback at most once per
// distinct disagreement.
// Threading: setActivity() may be called from any thread.
//
// Example:
//   Heartbeat heartbeat(store, {.rank = rank, .worldSize = n, .timeout = seconds(60)},
//                       [](const PeerFailure& f) { std::cerr << describe(f); std::_Exit(3); });
//   heartbeat.setActivity("collective: allreduce bucket 2 step 17");
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/store.h"

namespace thinwire::comm {

struct HeartbeatOptions {
  int rank = 0;
  int worldSize = 1;
  std::chrono::milliseconds interval{std::chrono::seconds(1)};
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};     // silence that means failure
  std::chrono::milliseconds stallAfter{std::chrono::seconds(10)};  // disagreement before a warning
  std::string keyPrefix;                                           // e.g. "job-17/"
};

struct PeerFailure {
  int rank = -1;             // the silent rank; -1 when the store itself is unreachable
  double silentSeconds = 0;  // time since its counter last moved (or the store last answered)
  std::string activity;      // its last published activity ("" if it never beat)
  std::string detail;        // the store error, for rank -1
};

// One line for logs: "rank 2 silent for 31.0 s; last activity: collective: allreduce ...".
std::string describe(const PeerFailure& failure);

// The activity prefix the stall inspector compares.
inline constexpr const char* kCollectiveActivity = "collective: ";

class Heartbeat {
 public:
  // Starts the thread. InvalidArgument for a rank outside [0, worldSize) or non-positive
  // interval/timeout, or timeout < 2 × interval.
  Heartbeat(Store& store,
            HeartbeatOptions options,
            std::function<void(const PeerFailure&)> onFailure,
            std::function<void(const std::string&)> onStall = nullptr);
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  // What this rank does now; published with the next beat. Activities that start with
  // kCollectiveActivity are what the stall inspector compares across ranks.
  void setActivity(std::string activity);

 private:
  void run();
  void beatOnce();

  Store& store_;
  HeartbeatOptions options_;
  std::function<void(const PeerFailure&)> onFailure_;
  std::function<void(const std::string&)> onStall_;

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::string activity_;

  // Used by the thread only.
  struct Peer {
    std::string counter;
    std::string activity;
    std::chrono::steady_clock::time_point changed;
    bool reported = false;
  };
  std::vector<Peer> peers_;
  int64_t counter_ = 0;
  std::chrono::steady_clock::time_point lastStoreContact_;
  bool storeReported_ = false;
  std::string stallSignature_;
  std::chrono::steady_clock::time_point stallSince_;
  bool stallReported_ = false;

  std::thread thread_;
};

}  // namespace thinwire::comm

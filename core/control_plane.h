// File: core/control_plane.h
//
// `ControlPlane`: the diagnostics a training run carries next to its collectives, built by the
// Trainer from the comm.* keys:
//   - watchdog (comm.heartbeat_s > 0, several ranks, and an onPeerFailure action): rank 0 hosts a
//     TcpStoreServer whose address it broadcasts over the communicator; every rank heartbeats
//     through it (comm/heartbeat.h) with what it is doing ("forward step 12", "collective:
//     allreduce bucket 2 of 5 step 12"); a rank silent for the heartbeat timeout is reported,
//     with its last activity and this rank's own, to onPeerFailure (launch/ ends the process);
//   - timeline (comm.timeline): a per-rank Chrome trace, merged by rank 0 in finish();
//   - status endpoint (comm.status): rank 0 serves the latest published JSON document over HTTP.
// Every piece is off unless configured; then the methods are cheap no-ops.
//
// Ownership: borrows the communicator and the logger (they must outlive it); owns the store
// server, client, heartbeat thread, status server and timeline. Destruction stops the threads.
// Threading: the constructor and finish() are collectives on the trainer thread; setActivity(),
// timeline() recording and publishStatus() may be called from any thread. onPeerFailure and
// the stall warning run on the heartbeat thread.
//
// Example:
//   ControlPlane plane(comm, {.heartbeatInterval = 1s, .heartbeatTimeout = 30s,
//                             .onPeerFailure = [](const std::string& r) { ... }}, log);
//   plane.setActivity("forward step 3");
//   { Timeline::Span span(plane.timeline(), "forward", "compute"); model.forward(x); }
//   plane.finish(timeout);   // writes and merges the timeline
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "base/logging.h"
#include "base/timeline.h"
#include "comm/communicator.h"
#include "core/config.h"
#include "core/metrics.h"

namespace thinwire::comm {
class Heartbeat;
class PrefixStore;
class StatusServer;
class TcpStore;
class TcpStoreServer;
}  // namespace thinwire::comm

namespace thinwire::core {

struct ControlPlaneOptions {
  // Watchdog: on when heartbeatInterval > 0, worldSize > 1 and onPeerFailure is set.
  std::chrono::milliseconds heartbeatInterval{std::chrono::seconds(1)};
  std::chrono::milliseconds heartbeatTimeout{std::chrono::seconds(150)};  // >= 2 x interval
  // Called once, on the heartbeat thread, with "rank 2 silent for 31.0 s; last activity: ...;
  // this rank (0) is in collective: ..." when a peer or the store falls silent. Typically logs
  // and ends the process.
  std::function<void(const std::string& report)> onPeerFailure;
  // Where rank 0's store listens and the others connect: "auto" is 127.0.0.1 when every rank is
  // on this host (ranksOnThisHost == worldSize), else this host's name (listening on 0.0.0.0).
  std::string storeHost = "auto";
  // With storeHost "auto" on several hosts: the interface whose IPv4 address rank 0 announces
  // (launch.tcp_interface, the one MPI uses); empty: rank 0's host name.
  std::string storeInterface;
  // With storeHost "auto" on several hosts and no storeInterface: the host of the job's
  // rendezvous store (THINWIRE_STORE, comm.backend tcp), which rank 0 serves and every rank has
  // already reached; empty: rank 0's host name.
  std::string rendezvousHost;
  int ranksOnThisHost = 1;
  std::chrono::milliseconds connectTimeout{std::chrono::seconds(60)};
  // Timeline: "" off; else each rank writes "<path without .json>.rank<r>.json" and rank 0
  // merges them into `timelinePath` (a shared file system for several hosts).
  std::string timelinePath;
  // Status endpoint on rank 0: "" off; else "HOST:PORT" (port 0: any free port, see
  // statusPort()).
  std::string statusAddress;
};

class ControlPlane {
 public:
  // Collective when the watchdog is on (rank 0's store address is broadcast; waited for with
  // connectTimeout). Throws CommError when a server cannot bind, TimeoutError when the store
  // cannot be reached, InvalidArgument for a malformed statusAddress or bad heartbeat times.
  ControlPlane(comm::Communicator& comm, ControlPlaneOptions options, Logger& log);
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  // What this rank does now (published with its next heartbeat); also what a failure report
  // says this rank was in. Thread-safe.
  void setActivity(const std::string& activity);
  std::string activity() const;

  // The rank's timeline, null when comm.timeline is unset. Borrowed; lives as long as this.
  Timeline* timeline() { return timeline_.get(); }

  // Rank 0 with a status endpoint: serves `json` from now on. No-op otherwise. Thread-safe.
  void publishStatus(const std::string& json);
  // The endpoint's port on rank 0 (0 when there is none).
  uint16_t statusPort() const;
  bool watchdogOn() const { return heartbeat_ != nullptr; }

  // Collective when a timeline is recorded: writes this rank's trace, waits for every rank
  // (barrier, `timeout`) and rank 0 merges the files into the timeline path. Throws Error when a
  // file cannot be written, DataError when a rank's file is missing (no shared file system).
  void finish(std::chrono::milliseconds timeout);

 private:
  void startWatchdog(Logger& log);
  std::string rankTimelinePath(int rank) const;

  comm::Communicator& comm_;
  ControlPlaneOptions options_;
  mutable std::mutex mutex_;
  std::string activity_;
  std::unique_ptr<Timeline> timeline_;
  std::unique_ptr<comm::StatusServer> status_;
  std::unique_ptr<comm::TcpStoreServer> storeServer_;
  std::unique_ptr<comm::TcpStore> store_;
  std::unique_ptr<comm::PrefixStore> jobStore_;
  std::unique_ptr<comm::Heartbeat> heartbeat_;  // last: stopped first
  bool finished_ = false;
};

// The status document rank 0 serves: {"run": name, "state": "training"|"finished", "ranks": n,
// "total_steps": train.steps, "metrics": <the latest metrics record>}.
JsonRecord statusRecord(const Config& config,
                        int worldSize,
                        const std::string& state,
                        const JsonRecord& latest);

// The options the comm.* keys give: heartbeat every comm.heartbeat_s, silence timeout half of
// comm.timeout_s (so the watchdog names a dead rank before a collective times out without
// naming it), comm.store_host, comm.timeline (relative paths under `runDirectory`), comm.status.
ControlPlaneOptions controlPlaneOptions(const Config& config,
                                        const std::string& runDirectory,
                                        int ranksOnThisHost,
                                        std::function<void(const std::string&)> onPeerFailure);

}  // namespace thinwire::core

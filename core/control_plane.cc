#include "core/control_plane.h"

#include <ATen/ATen.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "base/crash_report.h"
#include "base/error.h"
#include "base/text.h"
#include "comm/heartbeat.h"
#include "comm/store.h"
#include "comm/tcp/status_server.h"
#include "comm/tcp/tcp_store.h"
#include "comm/world_info.h"

namespace thinwire::core {
namespace {

constexpr int64_t kMaxHostBytes = 255;

std::string thisHostName() {
  char name[kMaxHostBytes + 1] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "127.0.0.1";
  return name;
}

// The IPv4 address of interface `name` ("" when it has none): the address the other hosts reach
// this one at when MPI runs over that interface (the host name may resolve elsewhere, e.g. to
// the root namespace of an emulated host).
std::string interfaceAddress(const std::string& name) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::string address;
  for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr || it->ifa_addr->sa_family != AF_INET || name != it->ifa_name) {
      continue;
    }
    char text[INET_ADDRSTRLEN] = {};
    const auto* in = reinterpret_cast<const sockaddr_in*>(it->ifa_addr);
    if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) != nullptr) address = text;
    break;
  }
  freeifaddrs(list);
  return address;
}

}  // namespace

JsonRecord statusRecord(const Config& config,
                        int worldSize,
                        const std::string& state,
                        const JsonRecord& latest) {
  return JsonRecord()
      .add("run", config.run.name)
      .add("state", state)
      .add("ranks", worldSize)
      .add("total_steps", config.train.steps)
      .add("metrics", latest);
}

ControlPlaneOptions controlPlaneOptions(const Config& config,
                                        const std::string& runDirectory,
                                        int ranksOnThisHost,
                                        std::function<void(const std::string&)> onPeerFailure) {
  using std::chrono::milliseconds;
  ControlPlaneOptions options;
  options.heartbeatInterval = milliseconds(static_cast<int64_t>(config.comm.heartbeatS * 1000));
  options.heartbeatTimeout = milliseconds(static_cast<int64_t>(config.comm.timeoutS * 500));
  options.onPeerFailure = std::move(onPeerFailure);
  options.storeHost = config.comm.storeHost;
  options.storeInterface = config.launch.tcpInterface;
  if (config.comm.backend == "tcp") {
    // Rank 0 serves the rendezvous store on its own host (docs/launch.md): the address every rank
    // connected to is one they can reach rank 0 at, where a host name may resolve differently.
    const std::string address = comm::WorldInfo::fromEnvironment().storeAddress;
    if (!address.empty())
      options.rendezvousHost = parseHostPort(address, "the store address").first;
  }
  options.ranksOnThisHost = ranksOnThisHost;
  options.connectTimeout = milliseconds(static_cast<int64_t>(config.comm.timeoutS * 1000));
  if (!config.comm.timeline.empty()) {
    const std::filesystem::path path(config.comm.timeline);
    options.timelinePath =
        path.is_absolute() ? path.string() : (std::filesystem::path(runDirectory) / path).string();
  }
  options.statusAddress = config.comm.status;
  return options;
}

ControlPlane::ControlPlane(comm::Communicator& comm, ControlPlaneOptions options, Logger& log)
    : comm_(comm), options_(std::move(options)) {
  if (!options_.timelinePath.empty()) {
    timeline_ = std::make_unique<Timeline>(TimelineOptions{.rank = comm_.rank()});
  }
  if (!options_.statusAddress.empty()) {
    const auto [host, port] = parseHostPort(options_.statusAddress, "comm.status");
    if (comm_.rank() == 0) {
      status_ = std::make_unique<comm::StatusServer>(
          comm::StatusServerOptions{.host = host, .port = port});
      log.info("status endpoint: http://", host, ":", status_->port(), "/status (thinwire status ",
               host, ":", status_->port(), ")");
    }
  }
  const bool watchdog = options_.heartbeatInterval.count() > 0 && comm_.worldSize() > 1 &&
                        options_.onPeerFailure != nullptr;
  if (watchdog) startWatchdog(log);
}

ControlPlane::~ControlPlane() {
  // Stops the heartbeat thread before the store it uses (member order does the rest).
  heartbeat_.reset();
  if (timeline_ && !finished_) {
    // A failed run still leaves its own trace behind for the post-mortem.
    try {
      timeline_->write(rankTimelinePath(comm_.rank()));
    } catch (const std::exception&) {
    }
  }
}

void ControlPlane::startWatchdog(Logger& log) {
  TW_CHECK(options_.heartbeatTimeout >= 2 * options_.heartbeatInterval,
           "the heartbeat timeout (half of comm.timeout_s) must be at least twice "
           "comm.heartbeat_s, got ",
           options_.heartbeatTimeout.count(), " ms and ", options_.heartbeatInterval.count(),
           " ms");
  // Rank 0 hosts the store and broadcasts where it is: the port and the host name, so no
  // launcher variable or file is needed to find it.
  at::Tensor address = at::zeros({kMaxHostBytes + 3}, at::kByte);
  if (comm_.rank() == 0) {
    const bool oneHost =
        options_.storeHost == "auto" && options_.ranksOnThisHost >= comm_.worldSize();
    std::string listenHost = "127.0.0.1", connectHost = "127.0.0.1";
    if (options_.storeHost != "auto") {
      listenHost = connectHost = options_.storeHost;
    } else if (!oneHost) {
      listenHost = "0.0.0.0";
      const std::string onInterface =
          options_.storeInterface.empty() ? "" : interfaceAddress(options_.storeInterface);
      connectHost = !onInterface.empty()               ? onInterface
                    : !options_.rendezvousHost.empty() ? options_.rendezvousHost
                                                       : thisHostName();
    }
    storeServer_ = std::make_unique<comm::TcpStoreServer>(
        comm::TcpStoreServerOptions{.host = listenHost, .port = 0});
    const uint16_t port = storeServer_->port();
    uint8_t* bytes = address.data_ptr<uint8_t>();
    bytes[0] = static_cast<uint8_t>(port >> 8);
    bytes[1] = static_cast<uint8_t>(port & 0xff);
    const size_t length = std::min<size_t>(connectHost.size(), kMaxHostBytes);
    std::memcpy(bytes + 2, connectHost.data(), length);
    log.info("watchdog: store on ", connectHost, ":", port, ", heartbeat every ",
             options_.heartbeatInterval.count(), " ms, a rank silent for ",
             options_.heartbeatTimeout.count(), " ms fails the run");
  }
  comm_.broadcast(address, {.root = 0})->wait(options_.connectTimeout);
  const uint8_t* bytes = address.data_ptr<uint8_t>();
  const uint16_t port = static_cast<uint16_t>((bytes[0] << 8) | bytes[1]);
  const std::string host(reinterpret_cast<const char*>(bytes + 2));
  // A store call must come back well within the heartbeat timeout, or a stopped store host
  // would stall the heartbeat thread instead of being reported.
  const auto opTimeout = std::max(options_.heartbeatTimeout / 2, options_.heartbeatInterval);
  store_ = std::make_unique<comm::TcpStore>(
      comm::TcpStoreOptions{.host = host,
                            .port = port,
                            .connectTimeout = options_.connectTimeout,
                            .opTimeout = opTimeout,
                            .grace = opTimeout});
  jobStore_ = std::make_unique<comm::PrefixStore>("job", *store_);
  heartbeat_ = std::make_unique<comm::Heartbeat>(
      *jobStore_,
      comm::HeartbeatOptions{.rank = comm_.rank(),
                             .worldSize = comm_.worldSize(),
                             .interval = options_.heartbeatInterval,
                             .timeout = options_.heartbeatTimeout},
      [this](const comm::PeerFailure& failure) {
        const std::string own = activity();
        options_.onPeerFailure(comm::describe(failure) + "; this rank (" +
                               std::to_string(comm_.rank()) + ") is in " +
                               (own.empty() ? std::string("start-up") : own));
      },
      [&log](const std::string& warning) { log.warn("stall inspector: ", warning); });
}

void ControlPlane::setActivity(const std::string& activity) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    activity_ = activity;
  }
  // A rank killed by a fatal signal names what it was doing (base/crash_report.h).
  setCrashContext("rank " + std::to_string(comm_.rank()) + " in " + activity);
  if (heartbeat_) heartbeat_->setActivity(activity);
}

std::string ControlPlane::activity() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return activity_;
}

void ControlPlane::publishStatus(const std::string& json) {
  if (status_) status_->publish(json);
}

uint16_t ControlPlane::statusPort() const { return status_ ? status_->port() : 0; }

std::string ControlPlane::rankTimelinePath(int rank) const {
  std::filesystem::path path(options_.timelinePath);
  const std::string stem =
      path.extension() == ".json" ? path.stem().string() : path.filename().string();
  return (path.parent_path() / (stem + ".rank" + std::to_string(rank) + ".json")).string();
}

void ControlPlane::finish(std::chrono::milliseconds timeout) {
  if (finished_) return;
  finished_ = true;
  // Every rank stops its heartbeat only once all have arrived here: a rank that finished early
  // must not look dead to one still busy (rank 0 writing the summary).
  if (heartbeat_) {
    setActivity("finishing");
    comm_.barrier()->wait(timeout);
    heartbeat_.reset();
  }
  if (!timeline_) return;
  const std::string own = rankTimelinePath(comm_.rank());
  const std::filesystem::path parent = std::filesystem::path(own).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  timeline_->write(own);
  comm_.barrier()->wait(timeout);
  if (comm_.rank() != 0) return;
  std::vector<std::string> files;
  for (int r = 0; r < comm_.worldSize(); ++r) files.push_back(rankTimelinePath(r));
  mergeTraces(files, options_.timelinePath);
}

}  // namespace thinwire::core

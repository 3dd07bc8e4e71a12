#include "comm/make_communicator.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/host_name.hpp>
#include <boost/asio/ip/udp.hpp>
#include <tuple>

#include "base/error.h"
#include "base/text.h"
#include "comm/local/local_communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "comm/tcp/tcp_communicator.h"
#include "comm/tcp/tcp_store.h"
#include "comm/world_info.h"

#if defined(THINWIRE_WITH_NCCL)
#include <cuda_runtime_api.h>

#include "comm/nccl/nccl_communicator.h"
#endif

namespace thinwire::comm {
namespace {

namespace asio = boost::asio;

bool isLoopback(const std::string& host) {
  if (host == "localhost") return true;
  boost::system::error_code ec;
  const asio::ip::address address = asio::ip::make_address(host, ec);
  return !ec && address.is_loopback();
}

bool isIpAddress(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// The local address the system would send from to reach `host` (a UDP connect sends nothing);
// "" when `host` does not resolve or has no route.
std::string addressTowards(const std::string& host, uint16_t port) {
  asio::io_context io;
  boost::system::error_code ec;
  asio::ip::udp::resolver resolver(io);
  const auto endpoints = resolver.resolve(asio::ip::udp::v4(), host, std::to_string(port), ec);
  if (ec || endpoints.empty()) return "";
  asio::ip::udp::socket socket(io);
  socket.open(asio::ip::udp::v4(), ec);
  if (!ec) socket.connect(*endpoints.begin(), ec);
  if (ec) return "";
  const asio::ip::address local = socket.local_endpoint(ec).address();
  return ec ? "" : local.to_string();
}

// The job's rendezvous store at `address` (HOST:PORT): rank 0 serves it, on HOST when that is an
// IP address, else on every interface; the server lives as long as the returned value.
struct Rendezvous {
  std::unique_ptr<TcpStoreServer> server;  // rank 0 only
  std::string host;
  uint16_t port = 0;
};

Rendezvous openRendezvous(int rank, const std::string& address) {
  Rendezvous rendezvous;
  std::tie(rendezvous.host, rendezvous.port) = parseHostPort(address, "the rendezvous store");
  if (rank == 0) {
    rendezvous.server = std::make_unique<TcpStoreServer>(
        TcpStoreServerOptions{.host = isIpAddress(rendezvous.host) ? rendezvous.host : "0.0.0.0",
                              .port = rendezvous.port});
  }
  return rendezvous;
}

// See makeCommunicator's contract in the header.
std::unique_ptr<Communicator> makeTcpCommunicator(const CommunicatorOptions& options) {
  const WorldInfo world = WorldInfo::fromEnvironment();
  Rendezvous rendezvous;
  if (world.storeAddress.empty()) {
    if (world.worldSize > 1) {
      TW_THROW(ConfigError, "comm.backend tcp: rank ", world.rank, " of ", world.worldSize,
               " has no rendezvous store; set THINWIRE_STORE=HOST:PORT (or MASTER_ADDR and "
               "MASTER_PORT) in every rank's environment, HOST being rank 0's node (rank 0 "
               "serves the store on PORT), next to the rank and world size (SLURM_PROCID and "
               "SLURM_NTASKS, which srun sets, or OMPI_COMM_WORLD_RANK and _SIZE)");
    }
    // One rank talks to nobody: a private loopback store satisfies the rendezvous.
    rendezvous.server = std::make_unique<TcpStoreServer>(TcpStoreServerOptions{});
    rendezvous.host = "127.0.0.1";
    rendezvous.port = rendezvous.server->port();
  } else {
    rendezvous = openRendezvous(world.rank, world.storeAddress);
  }
  const std::string& host = rendezvous.host;
  const uint16_t port = rendezvous.port;
  TcpCommunicatorOptions tcp{.rank = world.rank,
                             .worldSize = world.worldSize,
                             .timeout = options.timeout,
                             .keyPrefix = "thinwire/tcp"};
  if (!isLoopback(host) && world.localSize < world.worldSize) {
    // Several hosts: listen where the store host's route leaves this one. A loopback answer
    // (a host name mapped to 127.0.1.1) would not reach other hosts; then listen everywhere and
    // let peers resolve this host's name.
    const std::string local = addressTowards(host, port);
    if (!local.empty() && !isLoopback(local)) {
      tcp.listenHost = local;
    } else {
      tcp.listenHost = "0.0.0.0";
      tcp.advertiseHost = asio::ip::host_name();
    }
  }
  TcpStore store(TcpStoreOptions{.host = host, .port = port, .connectTimeout = options.timeout});
  auto communicator = std::make_unique<TcpCommunicator>(store, tcp);
  // Rank 0's store server goes away with this frame: every rank must be done with it.
  communicator->barrier()->wait(options.timeout);
  return communicator;
}

}  // namespace

CommunicatorOptions::Backend parseBackend(const std::string& name) {
  if (name == "mpi") return CommunicatorOptions::Backend::kMpi;
  if (name == "local") return CommunicatorOptions::Backend::kLocal;
  if (name == "nccl") return CommunicatorOptions::Backend::kNccl;
  if (name == "tcp") return CommunicatorOptions::Backend::kTcp;
  TW_THROW(InvalidArgument, "unknown communicator backend '", name,
           "', expected mpi, local, nccl or tcp");
}

std::string toString(CommunicatorOptions::Backend backend) {
  switch (backend) {
    case CommunicatorOptions::Backend::kMpi:
      return "mpi";
    case CommunicatorOptions::Backend::kLocal:
      return "local";
    case CommunicatorOptions::Backend::kNccl:
      return "nccl";
    case CommunicatorOptions::Backend::kTcp:
      return "tcp";
  }
  TW_THROW(InvalidArgument, "unknown backend value ", static_cast<int>(backend));
}

std::unique_ptr<Communicator> makeCommunicator(const CommunicatorOptions& options) {
  switch (options.backend) {
    case CommunicatorOptions::Backend::kMpi:
      return std::make_unique<MpiCommunicator>(std::make_shared<MpiEnvironment>());
    case CommunicatorOptions::Backend::kLocal: {
      std::vector<std::unique_ptr<Communicator>> world =
          makeLocalWorld(1, LocalWorldOptions{.timeout = options.timeout});
      return std::move(world.front());
    }
    case CommunicatorOptions::Backend::kNccl: {
#if defined(THINWIRE_WITH_NCCL)
      const WorldInfo world = WorldInfo::fromEnvironment();
      int devices = 0;
      if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        TW_THROW(CommError, "comm.backend nccl needs a CUDA device, none is visible");
      }
      NcclCommunicatorOptions nccl{.device = world.localRank % devices, .timeout = options.timeout};
      // A single process needs no rendezvous (and no MPI library at run time).
      if (world.worldSize == 1) return std::make_unique<NcclCommunicator>(nccl);
      if (!world.storeAddress.empty()) {
        // No MPI needed: the NCCL id goes through the job's rendezvous store (THINWIRE_STORE,
        // or MASTER_ADDR and MASTER_PORT), which rank 0 serves. ncclCommInitRank returns on no
        // rank before every rank has joined, so every rank has read the id before rank 0's
        // server goes away with this frame.
        Rendezvous rendezvous = openRendezvous(world.rank, world.storeAddress);
        TcpStore store(TcpStoreOptions{
            .host = rendezvous.host, .port = rendezvous.port, .connectTimeout = options.timeout});
        return std::make_unique<NcclCommunicator>(store, world.rank, world.worldSize, nccl);
      }
      return std::make_unique<NcclCommunicator>(
          std::make_unique<MpiCommunicator>(std::make_shared<MpiEnvironment>()), nccl);
#else
      TW_THROW(InvalidArgument,
               "comm.backend nccl: thinwire was built without CUDA (THINWIRE_WITH_CUDA=OFF)");
#endif
    }
    case CommunicatorOptions::Backend::kTcp:
      return makeTcpCommunicator(options);
  }
  TW_THROW(InvalidArgument, "unknown backend value ", static_cast<int>(options.backend));
}

}  // namespace thinwire::comm

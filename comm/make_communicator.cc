#include "comm/make_communicator.h"

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "comm/world_info.h"

#if defined(THINWIRE_WITH_NCCL)
#include <cuda_runtime_api.h>

#include "comm/nccl/nccl_communicator.h"
#endif

namespace thinwire::comm {

CommunicatorOptions::Backend parseBackend(const std::string& name) {
  if (name == "mpi") return CommunicatorOptions::Backend::kMpi;
  if (name == "local") return CommunicatorOptions::Backend::kLocal;
  if (name == "nccl") return CommunicatorOptions::Backend::kNccl;
  TW_THROW(InvalidArgument, "unknown communicator backend '", name,
           "', expected mpi, local or nccl");
}

std::string toString(CommunicatorOptions::Backend backend) {
  switch (backend) {
    case CommunicatorOptions::Backend::kMpi:
      return "mpi";
    case CommunicatorOptions::Backend::kLocal:
      return "local";
    case CommunicatorOptions::Backend::kNccl:
      return "nccl";
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
      return std::make_unique<NcclCommunicator>(
          std::make_unique<MpiCommunicator>(std::make_shared<MpiEnvironment>()), nccl);
#else
      TW_THROW(InvalidArgument,
               "comm.backend nccl: thinwire was built without CUDA (THINWIRE_WITH_CUDA=OFF)");
#endif
    }
  }
  TW_THROW(InvalidArgument, "unknown backend value ", static_cast<int>(options.backend));
}

}  // namespace thinwire::comm

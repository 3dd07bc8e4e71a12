#include "comm/make_communicator.h"

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"

namespace thinwire::comm {

CommunicatorOptions::Backend parseBackend(const std::string& name) {
  if (name == "mpi") return CommunicatorOptions::Backend::kMpi;
  if (name == "local") return CommunicatorOptions::Backend::kLocal;
  TW_THROW(InvalidArgument, "unknown communicator backend '", name, "', expected mpi or local");
}

std::string toString(CommunicatorOptions::Backend backend) {
  switch (backend) {
    case CommunicatorOptions::Backend::kMpi:
      return "mpi";
    case CommunicatorOptions::Backend::kLocal:
      return "local";
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
  }
  TW_THROW(InvalidArgument, "unknown backend value ", static_cast<int>(options.backend));
}

}  // namespace thinwire::comm

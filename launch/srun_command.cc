#include "launch/srun_command.h"

#include "base/error.h"
#include "base/text.h"

namespace thinwire::launch {
namespace {

// launch.bind_to uses mpirun's words; srun spells them in the plural.
std::string cpuBind(const std::string& bindTo) {
  if (bindTo == "core") return "cores";
  if (bindTo == "socket") return "sockets";
  TW_CHECK(bindTo == "none", "launch.bind_to must be none|core|socket, got '", bindTo, "'");
  return "none";
}

}  // namespace

std::vector<std::string> srunCommand(const core::Config& config, const SrunRequest& request) {
  TW_CHECK(request.ranks >= 0, "srun ranks must be >= 0 (0 = the allocation's), got ",
           request.ranks);
  TW_CHECK(!request.thinwireBinary.empty(), "srun needs the thinwire binary to run, got ''");
  const std::string configPath =
      request.configPath.empty() ? config.sourcePath : request.configPath;
  TW_CHECK(!configPath.empty(), "srun needs the config path the ranks read, got ''");
  const core::LaunchConfig& launch = config.launch;

  // The tcp backend meets through its store, not through MPI (srun_command.h).
  const bool tcp = config.comm.backend == "tcp";
  if (tcp) {
    parseHostPort(request.storeAddress,
                  "comm.backend tcp under srun: the store address (HOST = the allocation's first "
                  "node)");
  }

  std::vector<std::string> argv = {"srun"};
  if (request.ranks > 0) argv.insert(argv.end(), {"--ntasks", std::to_string(request.ranks)});
  argv.push_back("--mpi=" + (tcp ? std::string("none") : launch.srunMpi));
  argv.push_back("--cpu-bind=" + cpuBind(launch.bindTo));
  argv.insert(argv.end(), launch.srunArgs.begin(), launch.srunArgs.end());

  const std::string threads = std::to_string(config.train.threads);
  argv.insert(argv.end(), {"env", "OMP_NUM_THREADS=" + threads, "OPENBLAS_NUM_THREADS=" + threads});
  if (tcp) {
    argv.push_back("THINWIRE_STORE=" + request.storeAddress);
  } else if (launch.transport == "tcp") {
    argv.insert(argv.end(), {"OMPI_MCA_pml=ob1", "OMPI_MCA_btl=tcp,self"});
    if (!launch.tcpInterface.empty()) {
      argv.push_back("OMPI_MCA_btl_tcp_if_include=" + launch.tcpInterface);
    }
  } else if (launch.transport == "shm") {
    argv.push_back("OMPI_MCA_btl=self,vader");
  }
  argv.insert(argv.end(), {request.thinwireBinary, "train", configPath});
  for (const std::string& override : request.overrides) {
    argv.insert(argv.end(), {"--set", override});
  }
  return argv;
}

}  // namespace thinwire::launch

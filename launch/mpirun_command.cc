#include "launch/mpirun_command.h"

#include "base/error.h"

namespace thinwire::launch {
namespace {

bool isShellSafe(const std::string& arg) {
  if (arg.empty()) return false;
  for (const char ch : arg) {
    const bool safe = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '@' || ch == '%' || ch == '+' ||
                      ch == '=' || ch == ':' || ch == ',' || ch == '.' || ch == '/' || ch == '_' ||
                      ch == '-';
    if (!safe) return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> mpirunCommand(const core::Config& config, const MpirunRequest& request) {
  TW_CHECK(request.ranks >= 0, "mpirun ranks must be >= 0 (0 = launch.ranks), got ", request.ranks);
  TW_CHECK(!request.thinwireBinary.empty(), "mpirun needs the thinwire binary to run, got ''");
  const std::string configPath =
      request.configPath.empty() ? config.sourcePath : request.configPath;
  TW_CHECK(!configPath.empty(), "mpirun needs the config path the ranks read, got ''");
  const core::LaunchConfig& launch = config.launch;
  const int64_t ranks = request.ranks > 0 ? request.ranks : launch.ranks;
  const std::string hostfile = request.hostfile.empty() ? launch.hostfile : request.hostfile;

  std::vector<std::string> argv = {launch.mpirun, "-n", std::to_string(ranks)};
  if (!hostfile.empty()) argv.insert(argv.end(), {"--hostfile", hostfile});
  if (launch.oversubscribe) argv.push_back("--oversubscribe");
  argv.insert(argv.end(), {"--bind-to", launch.bindTo});
  if (request.runAsRoot) argv.push_back("--allow-run-as-root");
  if (launch.transport == "tcp") {
    // ob1 is the only PML that uses the BTLs; without it Open MPI may pick UCX and ignore tcp.
    argv.insert(argv.end(), {"--mca", "pml", "ob1", "--mca", "btl", "tcp,self"});
    if (!launch.tcpInterface.empty()) {
      argv.insert(argv.end(), {"--mca", "btl_tcp_if_include", launch.tcpInterface});
    }
  } else if (launch.transport == "shm") {
    argv.insert(argv.end(), {"--mca", "btl", "self,vader"});
  }
  // BLAS and OpenMP size their pools from the core count, not from the ranks sharing the cores.
  const std::string threads = std::to_string(config.train.threads);
  argv.insert(argv.end(),
              {"-x", "OMP_NUM_THREADS=" + threads, "-x", "OPENBLAS_NUM_THREADS=" + threads});
  argv.insert(argv.end(), launch.extraArgs.begin(), launch.extraArgs.end());
  argv.insert(argv.end(), {request.thinwireBinary, "train", configPath});
  for (const std::string& override : request.overrides) {
    argv.insert(argv.end(), {"--set", override});
  }
  return argv;
}

std::string shellQuote(const std::vector<std::string>& argv) {
  std::string line;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (i > 0) line += ' ';
    const std::string& arg = argv[i];
    if (isShellSafe(arg)) {
      line += arg;
      continue;
    }
    line += '\'';
    for (const char ch : arg) {
      if (ch == '\'') {
        line += "'\\''";
      } else {
        line += ch;
      }
    }
    line += '\'';
  }
  return line;
}

}  // namespace thinwire::launch

// File: launch/mpirun_command.h
//
// Builds the mpirun command line that starts a training job: a pure function of the validated
// core::Config and a small request (what the CLI adds: config path, binary, overrides). Nothing
// is executed and nothing is read from the environment, so the exact argv can be unit-tested and
// printed by `thinwire launch --dry-run` before anything runs.
//
// The argv, in order:
//   <launch.mpirun> -n N [--hostfile F] [--oversubscribe] --bind-to <launch.bind_to>
//   [--allow-run-as-root] [transport args] -x OMP_NUM_THREADS=T -x OPENBLAS_NUM_THREADS=T
//   [launch.extra_args...] <thinwire> train <config> [--set a=b ...]
// transport tcp: --mca pml ob1 --mca btl tcp,self [--mca btl_tcp_if_include <interface>];
// transport shm: --mca btl self,vader; transport auto: nothing (Open MPI chooses).
//
// Ownership: returns values; keeps no references. Threading: pure functions, thread-safe.
//
// Example:
//   core::Config config = core::Config::fromFile("examples/fmnist_mlp.yaml");
//   std::vector<std::string> argv = mpirunCommand(
//       config, MpirunRequest{.configPath = "examples/fmnist_mlp.yaml",
//                             .thinwireBinary = "/proc/self/exe"});
//   std::cout << shellQuote(argv) << "\n";   // mpirun -n 4 --oversubscribe --bind-to none ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"

namespace thinwire::launch {

struct MpirunRequest {
  std::string configPath;              // passed to every rank; "" = config.sourcePath
  int64_t ranks = 0;                   // 0 = launch.ranks
  std::string hostfile;                // "" = launch.hostfile ("" there too: no --hostfile)
  std::string thinwireBinary;          // the program each rank runs; required
  std::vector<std::string> overrides;  // "a.b=value", forwarded as `--set a.b=value` in order
  bool runAsRoot = false;              // add --allow-run-as-root (Open MPI refuses root otherwise)
};

// The argv (argv[0] = launch.mpirun) that starts `ranks` copies of `thinwire train` on the
// config. Throws InvalidArgument when request.ranks < 0, when thinwireBinary is empty, or when
// neither request.configPath nor config.sourcePath names the config.
[[nodiscard]] std::vector<std::string> mpirunCommand(const core::Config& config,
                                                     const MpirunRequest& request);

// One line that a POSIX shell splits back into `argv`: arguments made only of safe characters
// (letters, digits and @%+=:,./_-) are left bare, the rest are single-quoted (an embedded '
// becomes '\''), the empty string becomes ''. For printing (--dry-run) and sbatch scripts.
[[nodiscard]] std::string shellQuote(const std::vector<std::string>& argv);

}  // namespace thinwire::launch

// File: launch/srun_command.h
//
// Builds the srun command line that starts a training job inside a SLURM allocation (from an
// sbatch script or salloc): a pure function of the validated core::Config and a small request,
// like mpirunCommand(). SLURM places the ranks and Open MPI wires them up through PMIx, so there
// is no hostfile; per-rank environment (thread counts, Open MPI transport) is set with `env` in
// front of the program because `srun --export` cannot carry values that contain commas.
//
// The argv, in order:
//   srun [--ntasks N] --mpi=<launch.srun_mpi> --cpu-bind=<none|cores|sockets> [launch.srun_args...]
//   env OMP_NUM_THREADS=T OPENBLAS_NUM_THREADS=T [transport variables]
//   <thinwire> train <config> [--set a=b ...]
// transport tcp: OMPI_MCA_pml=ob1 OMPI_MCA_btl=tcp,self [OMPI_MCA_btl_tcp_if_include=<interface>];
// transport shm: OMPI_MCA_btl=self,vader; transport auto: nothing.
// comm.backend tcp needs no MPI at all (docs/launch.md): `--mpi=none`, no Open MPI variables, and
// THINWIRE_STORE=<request.storeAddress> in the env list instead, so every task finds the
// rendezvous store that rank 0 serves:
//   srun [--ntasks N] --mpi=none --cpu-bind=... [launch.srun_args...]
//   env OMP_NUM_THREADS=T OPENBLAS_NUM_THREADS=T THINWIRE_STORE=<host:port> <thinwire> train ...
//
// Ownership: returns values; keeps no references. Threading: pure function, thread-safe.
//
// Example:
//   core::Config config = core::Config::fromFile(argv[1]);
//   std::vector<std::string> command = srunCommand(
//       config, SrunRequest{.configPath = argv[1], .thinwireBinary =
//       "build/release/bin/thinwire"});
//   std::cout << shellQuote(command) << "\n";   // srun --mpi=pmix --cpu-bind=none env ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"

namespace thinwire::launch {

struct SrunRequest {
  std::string configPath;              // passed to every rank; "" = config.sourcePath
  int64_t ranks = 0;                   // 0 = the allocation's task count (no --ntasks)
  std::string thinwireBinary;          // the program each rank runs; required
  std::vector<std::string> overrides;  // "a.b=value", forwarded as `--set a.b=value` in order
  // comm.backend tcp only: "HOST:PORT" of the rendezvous store, HOST being the allocation's first
  // node (`scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1`), where rank 0 runs.
  std::string storeAddress{};  // {} keeps 4-field aggregate initialisation warning-free
};

// The argv (argv[0] = "srun") that starts `thinwire train` on the config in every task of the
// current allocation. Throws InvalidArgument when request.ranks < 0, when thinwireBinary is
// empty, when neither request.configPath nor config.sourcePath names the config, or when
// comm.backend is tcp and request.storeAddress is not HOST:PORT.
[[nodiscard]] std::vector<std::string> srunCommand(const core::Config& config,
                                                   const SrunRequest& request);

}  // namespace thinwire::launch

// File: comm/world_info.h
//
// Where this process sits in the job, as the launcher told it. fromEnvironment() is the only
// place in thinwire that reads launcher variables (see ARCHITECTURE §1).
//
// The rendezvous store of the tcp backend (comm/tcp/tcp_communicator.h) is named here too:
// THINWIRE_STORE=HOST:PORT, or PyTorch's MASTER_ADDR and MASTER_PORT.
//
// Example:
//   WorldInfo world = WorldInfo::fromEnvironment();
//   if (world.rank == 0) log.info("world size ", world.worldSize);
#pragma once

#include <string>

namespace thinwire::comm {

struct WorldInfo {
  int rank = 0;
  int worldSize = 1;
  int localRank = 0;
  int localSize = 1;
  std::string launcher = "none";  // "mpirun", "slurm" or "none"
  // "HOST:PORT" of the tcp backend's rendezvous store (rank 0 serves it on PORT); "" = unset.
  std::string storeAddress;

  // Reads OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}, then PMIX_RANK, then
  // SLURM_{PROCID,NTASKS,LOCALID}; defaults to a single rank. storeAddress from THINWIRE_STORE,
  // else MASTER_ADDR + ":" + MASTER_PORT when both are set. Throws InvalidArgument on a malformed
  // value (also a store address without a host or with a port outside 1..65535).
  static WorldInfo fromEnvironment();
};

}  // namespace thinwire::comm

// File: comm/world_info.h
//
// Where this process sits in the job, as the launcher told it. fromEnvironment() is the only
// place in thinwire that reads launcher variables (see ARCHITECTURE §1).
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

  // Reads OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}, then PMIX_RANK, then
  // SLURM_{PROCID,NTASKS,LOCALID}; defaults to a single rank. Throws InvalidArgument on a
  // malformed value.
  static WorldInfo fromEnvironment();
};

}  // namespace thinwire::comm

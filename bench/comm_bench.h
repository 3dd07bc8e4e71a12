// File: bench/comm_bench.h
//
// `thinwire bench comm`: collectives (float32) of thinwire's MpiCommunicator against the direct
// MPI call on the same buffers, in the same run (nccl-tests style): allreduce (sum) against
// MPI_Allreduce, allgather against MPI_Allgather, reduce_scatter (sum, equal blocks) against
// MPI_Reduce_scatter and broadcast (root 0) against MPI_Bcast. For each collective and size
// the two are interleaved, alternating which goes first on each repetition so that drift
// (thermal, other jobs on the machine) hits both alike; each repetition's time is the slowest
// rank's, and the reported time is the median over repetitions. Rank 0 prints one table per
// collective with time, algbw = S/t and busbw = algbw * busBandwidthFactor() for both, and the
// ratio thinwire/MPI of busbw (1.0 = no overhead).
//
// Sizes follow nccl-tests: S is the allreduce/broadcast buffer, the allgather output (each rank
// sends S/n) and the reduce_scatter input (each rank receives S/n); for the last two S is rounded
// down to a multiple of 4n bytes and the rounded size is what is reported.
//
// The parsing helpers (parseByteSize, parseSizeList, parseCount; bench/bench_common.h) are shared
// with `thinwire bench kernels` (bench/kernel_bench.h).
//
// Ownership: runCommBench() initialises MPI if needed (MpiEnvironment) and owns the buffers.
// Threading: call on the main thread of every rank, under mpirun; it is collective.
//
// Example:
//   mpirun -n 4 thinwire bench comm --sizes 4K,64M --collectives allreduce,allgather
//   CommBenchOptions options = parseCommBenchArgs({"--sizes", "64M"});
//   return runCommBench(options);
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "bench/bench_common.h"

namespace thinwire::bench {

inline constexpr const char kCommBenchUsage[] =
    "usage: mpirun -n N thinwire bench comm [--sizes LIST] [--collectives LIST]\n"
    "                                       [--iterations N] [--warmup N] [--json PATH]\n"
    "                                       [--allreduce ring|mpi]\n"
    "  Times float32 collectives of thinwire's MPI communicator against the direct MPI\n"
    "  call on the same buffers, interleaved in one run.\n"
    "  --sizes LIST        comma-separated message sizes in bytes, with optional K/M/G suffix\n"
    "                      (powers of 1024); default 4K,16K,...,256M (x4 steps). S is the\n"
    "                      allgather output and the reduce_scatter input (nccl-tests)\n"
    "  --collectives LIST  comma-separated, from allreduce,allgather,reduce_scatter,broadcast\n"
    "                      (default allreduce); busbw = algbw * 2(n-1)/n, (n-1)/n, (n-1)/n, 1\n"
    "  --iterations N      timed repetitions per size and implementation (default 20); the\n"
    "                      median is reported\n"
    "  --warmup N          untimed repetitions first (default 3)\n"
    "  --json PATH         rank 0 writes one JSON object per (collective, size, implementation)\n"
    "  --allreduce ALG     thinwire's algorithm for float32 sums >= 64 KiB (comm.allreduce):\n"
    "                      ring (default) or mpi (then the table is the communicator's overhead)\n";

enum class Collective {
  kAllreduce,      // sum; MPI_Allreduce
  kAllgather,      // equal blocks; MPI_Allgather
  kReduceScatter,  // sum, equal blocks; MPI_Reduce_scatter
  kBroadcast,      // root 0; MPI_Bcast
};

// "allreduce", "allgather", "reduce_scatter", "broadcast": the names --collectives accepts.
std::string toString(Collective collective);

// Inverse of toString(). Throws InvalidArgument naming `name` and the accepted names.
Collective parseCollective(const std::string& name);

// busbw / algbw for `collective` on `worldSize` ranks (nccl-tests conventions): allreduce
// 2(n-1)/n, allgather and reduce_scatter (n-1)/n, broadcast 1. Throws InvalidArgument when
// worldSize < 1.
double busBandwidthFactor(Collective collective, int worldSize);

struct CommBenchOptions {
  // Message sizes in bytes (multiples of 4: float32 elements). Default: 4 KB ... 256 MB, x4.
  std::vector<int64_t> sizesBytes = {int64_t{4} << 10,   int64_t{16} << 10, int64_t{64} << 10,
                                     int64_t{256} << 10, int64_t{1} << 20,  int64_t{4} << 20,
                                     int64_t{16} << 20,  int64_t{64} << 20, int64_t{256} << 20};
  // Run in this order, each with every size; no duplicates.
  std::vector<Collective> collectives = {Collective::kAllreduce};
  int iterations = 20;          // timed repetitions per size and implementation (>= 1)
  int warmup = 3;               // untimed repetitions per size and implementation (>= 0)
  std::string jsonPath;         // empty: no JSON output
  bool ring = true;             // --allreduce ring|mpi: thinwire's large-sum algorithm
  std::ostream* out = nullptr;  // rank 0's table; nullptr means std::cout. Not owned.
};

// Parses the arguments after `thinwire bench comm` (see kCommBenchUsage). Throws InvalidArgument
// naming the bad argument.
CommBenchOptions parseCommBenchArgs(const std::vector<std::string>& args);

// Blocking and collective over MPI_COMM_WORLD. Returns 0 when every thinwire collective produced
// the right result, 1 otherwise. Throws InvalidArgument for bad options (also a size too small to
// give every rank one element), CommError on MPI failure.
int runCommBench(const CommBenchOptions& options);

}  // namespace thinwire::bench

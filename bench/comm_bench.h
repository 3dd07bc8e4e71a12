// File: bench/comm_bench.h
//
// `thinwire bench comm`: allreduce (sum, float32) of thinwire's MpiCommunicator against a direct
// MPI_Allreduce on the same buffer, in the same run (nccl-tests style). For each size the two are
// interleaved, alternating which goes first on each repetition so that drift (thermal, other
// jobs on the machine) hits both alike; each repetition's time is the slowest rank's, and the
// reported time is the median over repetitions. Rank 0 prints a table of time, algbw = S/t and
// busbw = algbw * 2(n-1)/n for both, and the ratio thinwire/MPI of busbw (1.0 = no overhead).
//
// Ownership: runCommBench() initialises MPI if needed (MpiEnvironment) and owns the buffers.
// Threading: call on the main thread of every rank, under mpirun; it is collective.
//
// Example:
//   mpirun -n 4 thinwire bench comm --sizes 4K,64M --iterations 20 --json comm.jsonl
//   CommBenchOptions options = parseCommBenchArgs({"--sizes", "64M"});
//   return runCommBench(options);
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace thinwire::bench {

inline constexpr const char kCommBenchUsage[] =
    "usage: mpirun -n N thinwire bench comm [--sizes LIST] [--iterations N] [--warmup N]\n"
    "                                       [--json PATH]\n"
    "  Times allreduce (sum, float32) of thinwire's MPI communicator against a direct\n"
    "  MPI_Allreduce on the same buffer, interleaved in one run.\n"
    "  --sizes LIST     comma-separated message sizes in bytes, with optional K/M/G suffix\n"
    "                   (powers of 1024); default 4K,16K,...,256M (x4 steps)\n"
    "  --iterations N   timed repetitions per size and implementation (default 20); the\n"
    "                   median is reported\n"
    "  --warmup N       untimed repetitions first (default 3)\n"
    "  --json PATH      rank 0 writes one JSON object per (size, implementation) line\n";

struct CommBenchOptions {
  // Message sizes in bytes (multiples of 4: float32 elements). Default: 4 KB ... 256 MB, x4.
  std::vector<int64_t> sizesBytes = {int64_t{4} << 10,   int64_t{16} << 10, int64_t{64} << 10,
                                     int64_t{256} << 10, int64_t{1} << 20,  int64_t{4} << 20,
                                     int64_t{16} << 20,  int64_t{64} << 20, int64_t{256} << 20};
  int iterations = 20;          // timed repetitions per size and implementation (>= 1)
  int warmup = 3;               // untimed repetitions per size and implementation (>= 0)
  std::string jsonPath;         // empty: no JSON output
  std::ostream* out = nullptr;  // rank 0's table; nullptr means std::cout. Not owned.
};

// Parses the arguments after `thinwire bench comm` (see kCommBenchUsage). Throws InvalidArgument
// naming the bad argument.
CommBenchOptions parseCommBenchArgs(const std::vector<std::string>& args);

// Blocking and collective over MPI_COMM_WORLD. Returns 0 when every thinwire allreduce produced
// the right sum, 1 otherwise. Throws InvalidArgument for bad options, CommError on MPI failure.
int runCommBench(const CommBenchOptions& options);

}  // namespace thinwire::bench

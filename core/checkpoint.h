// File: core/checkpoint.h
//
// Atomic, checksummed checkpoints. A checkpoint is a directory
//   <root>/step-00000050/shared.twc      state every rank holds identically (rank 0 writes it)
//   <root>/step-00000050/rank-0003.twc   state private to one rank (RNG, error feedback, ...)
// Each .twc file is one StateDict with a header (magic, format version, payload size, CRC-32),
// written to a temporary name, fsync'ed and renamed. The directory itself is written as
// step-XXXXXXXX.tmp and renamed by rank 0 once every rank has written its file, so a crash at
// any point leaves either the old checkpoint set or the new one, never a partial one.
//
// Threading: functions are independent; the trainer sequences them across ranks with barriers.
//
// Example:
//   writeStateFile(tmpDir + "/rank-0000.twc", state);          // every rank
//   // barrier
//   commitCheckpoint(root, step);                                // rank 0: tmp -> final, prune
//   std::optional<std::string> dir = latestCheckpoint(root);     // on resume
//   StateDict shared = readStateFile(*dir + "/shared.twc");     // DataError if corrupt
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/state_dict.h"

namespace thinwire::core {

// Writes `state` atomically to `path` (tmp file + fsync + rename). Tensors are stored
// contiguous, on CPU, with dtype and shape; throws DataError on any I/O failure.
void writeStateFile(const std::string& path, const StateDict& state);

// Reads a file written by writeStateFile. Throws DataError naming the path and the problem:
// missing, not a thinwire checkpoint (bad magic), unsupported version, truncated, checksum
// mismatch.
StateDict readStateFile(const std::string& path);

// "<root>/step-%08d.tmp": where every rank writes its files for `step`. Creates it (and
// parents) if needed; safe to call from every rank concurrently.
std::string pendingCheckpointDir(const std::string& root, int64_t step);

// Renames the pending directory of `step` to "<root>/step-%08d" (replacing an older one of the
// same step), fsyncs <root>, then deletes all but the newest `keep` committed checkpoints and
// any stale *.tmp directories older than `step`. Rank 0 only.
std::string commitCheckpoint(const std::string& root, int64_t step, int64_t keep);

// The committed checkpoint directory with the highest step under `root`, if any.
std::optional<std::string> latestCheckpoint(const std::string& root);

// File names inside a checkpoint directory.
std::string sharedStateFile(const std::string& dir);
std::string rankStateFile(const std::string& dir, int rank);

}  // namespace thinwire::core

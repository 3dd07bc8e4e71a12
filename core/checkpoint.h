// File: core/checkpoint.h
//
// Atomic, checksummed checkpoints. A checkpoint is a directory
//   <root>/step-00000050/shared.twc      state every rank holds identically (rank 0 writes it)
//   <root>/step-00000050/rank-0003.twc   state private to one rank (RNG, error feedback, ...)
// Each .twc file is one StateDict with a header (magic, format version, payload size, CRC-32),
// written to a temporary name, fsync'ed and renamed. The directory itself is written as
// step-NNNNNNNN.tmp and renamed by rank 0 once every rank has written its file, so a crash at
// any point leaves either the old checkpoint set or the new one, never a partial one.
//
// File format (.twc, version 1). All integers little-endian.
//   header, 24 bytes:
//     char[8]  magic "TWCKPT01"
//     u32      format version (1)
//     u32      CRC-32 (base/checksum.h) of the payload
//     u64      payload size in bytes
//   payload:
//     u64      entry count, then per entry, in key order:
//     u32 key length, key bytes (UTF-8, no terminator)
//     u8  dtype code: 1 float32, 2 float64, 3 float16, 4 bfloat16, 5 int64, 6 int32, 7 uint8,
//         8 bool
//     u32 ndim, then ndim x i64 dims
//     u64 byte count (= numel x element size), then the raw row-major element bytes
// The file is exactly 24 + payload size bytes; anything else is refused.
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

// Writes `state` atomically to `path`: "<path>.tmp.<pid>", fsync, rename over `path`, fsync the
// directory. Blocking. Tensors are stored contiguous, on CPU, with dtype and shape (the inputs
// are not modified; non-contiguous or non-CPU tensors are copied). Throws InvalidArgument for an
// undefined tensor or a dtype outside the list above, DataError on any I/O failure (the
// temporary file is removed).
void writeStateFile(const std::string& path, const StateDict& state);

// Reads a file written by writeStateFile; tensors are fresh, contiguous, on CPU. Blocking.
// Throws DataError, one line naming the path and the problem: missing ("cannot open"), "not a
// thinwire checkpoint" (bad magic), "unsupported version", "truncated: expected N bytes, found
// M", trailing bytes, "checksum mismatch: file is corrupt", or a malformed entry.
StateDict readStateFile(const std::string& path);

// "<root>/step-%08d.tmp": where every rank writes its files for `step`. Creates it (and
// parents) if needed; safe to call from every rank concurrently. Throws InvalidArgument for
// step < 0, DataError when the directory cannot be created.
std::string pendingCheckpointDir(const std::string& root, int64_t step);

// Renames the pending directory of `step` to "<root>/step-%08d" (replacing an older one of the
// same step), fsyncs <root>, then deletes all but the newest `keep` committed checkpoints and
// any stale *.tmp directories older than `step`. Rank 0 only; blocking. Returns the committed
// directory. Throws InvalidArgument for keep < 1, DataError when the pending directory is missing
// or a filesystem operation fails.
std::string commitCheckpoint(const std::string& root, int64_t step, int64_t keep);

// The committed checkpoint directory ("<root>/step-NNNNNNNN") with the highest step under
// `root`, if any; pending *.tmp directories and other names are ignored, as is a missing root.
std::optional<std::string> latestCheckpoint(const std::string& root);

// File names inside a checkpoint directory.
std::string sharedStateFile(const std::string& dir);
std::string rankStateFile(const std::string& dir, int rank);

}  // namespace thinwire::core

// File: fuzz/fuzz_support.h
//
// Shared by the libFuzzer targets in this folder: a private scratch directory per process (the
// loaders under test read files), writing one input there, and the rule every target follows:
// a thinwire::Error (DataError, ConfigError, InvalidArgument) is the expected answer to bad
// input; anything else that escapes (std::bad_alloc, a libtorch c10::Error, a yaml-cpp
// exception), a crash, a sanitizer report, a hang or a huge allocation is a finding.
//
// Seeds: every target writes its seed inputs with the real writers (or the format's documented
// bytes) when THINWIRE_FUZZ_WRITE_SEEDS names a directory, then exits; scripts/fuzz.sh does that
// before each run, so the seeds follow the formats as they change.
//
// Example:
//   extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
//     thinwire::fuzz::expectOnlyThinwireErrors([&] { parse(thinwire::fuzz::asText(data, size)); });
//     return 0;
//   }
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/error.h"

namespace thinwire::fuzz {

inline std::string asText(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// /tmp/thinwire-fuzz-<pid>/<name>: created once per process; libFuzzer runs one input at a
// time per process, so the targets may reuse it.
inline std::filesystem::path scratch(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("thinwire-fuzz-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / name);
  return dir / name;
}

inline void writeFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();  // the fuzzing machine itself is broken: stop loudly
}

template <typename Body>
void expectOnlyThinwireErrors(Body body) {
  try {
    body();
  } catch (const thinwire::Error&) {
    // The documented answer to malformed input.
  }
  // Anything else propagates out of LLVMFuzzerTestOneInput: std::terminate, reported as a crash.
}

// When THINWIRE_FUZZ_WRITE_SEEDS is set: writes `seeds` there as seed-<i> and exits 0.
inline void maybeWriteSeeds(const std::vector<std::string>& seeds) {
  const char* dir = std::getenv("THINWIRE_FUZZ_WRITE_SEEDS");
  if (dir == nullptr || *dir == '\0') return;
  std::filesystem::create_directories(dir);
  for (size_t i = 0; i < seeds.size(); ++i) {
    writeFile(std::filesystem::path(dir) / ("seed-" + std::to_string(i)), seeds[i]);
  }
  std::exit(0);
}

// Big-endian 32-bit integer, as IDX headers and the fuzz inputs' length prefixes store them.
inline std::string bigEndian32(uint32_t value) {
  return {static_cast<char>(value >> 24), static_cast<char>(value >> 16),
          static_cast<char>(value >> 8), static_cast<char>(value)};
}

}  // namespace thinwire::fuzz

// File: base/logging.h
//
// A small leveled logger. One `Logger` per process or per thread-rank; it is passed explicitly
// (no global instance). Lines are written atomically (one write per line) to the given stream,
// prefixed with the elapsed time, level and rank: "[  12.3s I r0] message".
//
// Threading: log() may be called from any thread; lines never interleave.
//
// Example:
//   Logger log(LoggerOptions{.rank = 0, .level = LogLevel::kInfo});
//   log.info("loaded ", n, " samples from ", path);
//   log.warn("BLAS is ", blasName, ": expect slow matmuls");
#pragma once

#include <chrono>
#include <iostream>
#include <mutex>
#include <string>

#include "base/error.h"

namespace thinwire {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

// Parses "debug" | "info" | "warn" | "error" | "off"; throws InvalidArgument otherwise.
LogLevel parseLogLevel(const std::string& name);

struct LoggerOptions {
  int rank = -1;                     // shown in the prefix; -1 hides it
  LogLevel level = LogLevel::kInfo;  // lines below this level are dropped
  std::ostream* out = &std::cerr;    // not owned; must outlive the logger
};

class Logger {
 public:
  explicit Logger(LoggerOptions options = {});

  template <typename... Args>
  void debug(const Args&... args) {
    log(LogLevel::kDebug, detail::concat(args...));
  }
  template <typename... Args>
  void info(const Args&... args) {
    log(LogLevel::kInfo, detail::concat(args...));
  }
  template <typename... Args>
  void warn(const Args&... args) {
    log(LogLevel::kWarn, detail::concat(args...));
  }
  template <typename... Args>
  void error(const Args&... args) {
    log(LogLevel::kError, detail::concat(args...));
  }

  // Writes one line at `level` if it passes the threshold. Thread-safe.
  void log(LogLevel level, const std::string& message);
  bool enabled(LogLevel level) const { return level >= options_.level; }
  int rank() const { return options_.rank; }

 private:
  LoggerOptions options_;
  std::chrono::steady_clock::time_point start_;
  std::mutex mutex_;
};

}  // namespace thinwire

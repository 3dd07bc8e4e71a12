#include "base/logging.h"

#include <cstdio>
#include <sstream>

namespace thinwire {

LogLevel parseLogLevel(const std::string& name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  if (name == "off") return LogLevel::kOff;
  TW_THROW(InvalidArgument, "log level must be one of debug|info|warn|error|off, got '", name, "'");
}

Logger::Logger(LoggerOptions options)
    : options_(options), start_(std::chrono::steady_clock::now()) {}

void Logger::log(LogLevel level, const std::string& message) {
  if (!enabled(level) || options_.out == nullptr) return;
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E'};
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  char prefix[64];
  if (options_.rank >= 0) {
    std::snprintf(prefix, sizeof(prefix), "[%7.1fs %c r%d] ", seconds,
                  kLetters[static_cast<int>(level)], options_.rank);
  } else {
    std::snprintf(prefix, sizeof(prefix), "[%7.1fs %c] ", seconds,
                  kLetters[static_cast<int>(level)]);
  }
  std::string line = prefix + message + "\n";
  std::lock_guard<std::mutex> lock(mutex_);
  options_.out->write(line.data(), static_cast<std::streamsize>(line.size()));
  options_.out->flush();
}

}  // namespace thinwire

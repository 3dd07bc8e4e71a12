#include "core/metrics.h"

#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "base/error.h"

namespace thinwire::core {

void JsonRecord::key(const std::string& key) {
  if (!body_.empty()) body_ += ",";
  body_ += jsonQuote(key) + ":";
}

JsonRecord& JsonRecord::add(const std::string& name, double value) {
  key(name);
  if (!std::isfinite(value)) {
    body_ += "null";  // JSON has no NaN/Inf
  } else {
    char text[32];
    std::snprintf(text, sizeof(text), "%.9g", value);
    body_ += text;
  }
  return *this;
}

JsonRecord& JsonRecord::add(const std::string& name, int64_t value) {
  key(name);
  body_ += std::to_string(value);
  return *this;
}

JsonRecord& JsonRecord::add(const std::string& name, const std::string& value) {
  key(name);
  body_ += jsonQuote(value);
  return *this;
}

JsonRecord& JsonRecord::add(const std::string& name, const JsonRecord& object) {
  key(name);
  body_ += object.str();
  return *this;
}

JsonRecord& JsonRecord::add(const std::string& name, bool value) {
  key(name);
  body_ += value ? "true" : "false";
  return *this;
}

MetricsWriter::MetricsWriter(MetricsWriterOptions options) {
  if (options.path.empty()) return;
  std::error_code error;
  std::filesystem::create_directories(std::filesystem::path(options.path).parent_path(), error);
  out_.open(options.path, options.append ? std::ios::app : std::ios::trunc);
  if (!out_) TW_THROW(DataError, "cannot open metrics file '", options.path, "' for writing");
  enabled_ = true;
}

void MetricsWriter::write(const JsonRecord& record) {
  if (!enabled_) return;
  out_ << record.str() << '\n';
  out_.flush();
}

std::string formatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", static_cast<long long>(total / 3600),
                  static_cast<long long>((total % 3600) / 60));
  } else if (total >= 60) {
    std::snprintf(text, sizeof(text), "%lldm%02llds", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  } else {
    std::snprintf(text, sizeof(text), "%llds", static_cast<long long>(total));
  }
  return text;
}

ProgressLine::ProgressLine(ProgressLineOptions options) : options_(options) {}

void ProgressLine::update(int64_t step, const std::string& text) {
  if (options_.out == nullptr) return;
  const double now =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  if (startSeconds_ < 0) {
    startSeconds_ = now;
    startStep_ = step;
  }
  std::string eta = "?";
  if (step > startStep_) {
    const double perStep = (now - startSeconds_) / static_cast<double>(step - startStep_);
    eta = formatDuration(perStep * static_cast<double>(options_.total - step));
  }
  const std::string line = "step " + std::to_string(step) + "/" + std::to_string(options_.total) +
                           " | " + text + " | ETA " + eta;
  if (options_.interactive) {
    *options_.out << "\r" << line << "\033[K" << std::flush;
    open_ = true;
  } else {
    *options_.out << line << std::endl;
  }
}

void ProgressLine::close() {
  if (open_ && options_.out != nullptr) *options_.out << std::endl;
  open_ = false;
}

double bitsPerByte(double nats) { return nats / std::log(2.0); }

double perplexity(double nats) { return std::exp(nats); }

namespace {

// Compressed size of `path` under `xz -9e`, or -1 with `note` set when xz cannot run.
int64_t xzSize(const std::string& path, std::string& note) {
  // Single-threaded: -T0 would split the input into blocks and lose cross-block matches.
  const std::string command = "xz -9e -T1 -c -- '" + path + "' 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    note = "cannot start xz";
    return -1;
  }
  int64_t size = 0;
  char buffer[1 << 16];
  size_t got = 0;
  while ((got = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) size += static_cast<int64_t>(got);
  const int status = ::pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const bool missing = status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 127;
    note = missing ? "xz not found on PATH (install the Debian package xz-utils)"
                   : "xz failed on " + path;
    return -1;
  }
  return size;
}

}  // namespace

XzBaseline xzConditionalBitsPerByte(const std::string& context,
                                    const std::string& text,
                                    const std::string& tempDirectory) {
  TW_CHECK(!text.empty(), "xzConditionalBitsPerByte needs a non-empty text");
  XzBaseline result;
  std::string pattern = (std::filesystem::path(tempDirectory) / "thinwire-xz-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    result.note = "cannot create a temporary directory under " + tempDirectory;
    return result;
  }
  const std::filesystem::path directory(pattern);
  const std::string contextPath = (directory / "context").string();
  const std::string bothPath = (directory / "both").string();
  {
    std::ofstream out(contextPath, std::ios::binary);
    out << context;
    std::ofstream both(bothPath, std::ios::binary);
    both << context << text;
  }
  result.contextBytes = xzSize(contextPath, result.note);
  if (result.contextBytes >= 0) result.bothBytes = xzSize(bothPath, result.note);
  std::error_code ignored;
  std::filesystem::remove_all(directory, ignored);
  if (result.contextBytes < 0 || result.bothBytes < 0) return result;
  result.available = true;
  result.bitsPerByte = static_cast<double>(result.bothBytes - result.contextBytes) * 8.0 /
                       static_cast<double>(text.size());
  return result;
}

}  // namespace thinwire::core

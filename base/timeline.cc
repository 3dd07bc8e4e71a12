#include "base/timeline.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "base/text.h"

namespace thinwire {
namespace {

constexpr const char* kHeader = "{\"traceEvents\":[";
constexpr const char* kFooterStart = "],\"displayTimeUnit\":\"ms\"";

void writeAtomically(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) TW_THROW(Error, "cannot write ", temporary);
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    TW_THROW(Error, "cannot rename ", temporary, " to ", path);
  }
}

}  // namespace

Timeline::Timeline(TimelineOptions options) : options_(options), origin_(Clock::now()) {
  TW_CHECK(options_.rank >= 0, "Timeline rank must be >= 0, got ", options_.rank);
  originUs_ = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
}

int Timeline::trackOf(std::thread::id id) {
  const auto found = std::find(tracks_.begin(), tracks_.end(), id);
  if (found != tracks_.end()) return static_cast<int>(found - tracks_.begin());
  tracks_.push_back(id);
  return static_cast<int>(tracks_.size()) - 1;
}

void Timeline::record(const std::string& name,
                      const std::string& category,
                      Clock::time_point start,
                      Clock::time_point end) {
  const auto us = [this](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(t - origin_).count();
  };
  std::lock_guard<std::mutex> lock(mutex_);
  if (events_.size() >= options_.maxEvents) {
    ++dropped_;
    return;
  }
  events_.push_back(Event{name, category, originUs_ + us(start),
                          std::max<int64_t>(0, us(end) - us(start)),
                          trackOf(std::this_thread::get_id())});
}

size_t Timeline::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return events_.size();
}

size_t Timeline::dropped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dropped_;
}

void Timeline::write(const std::string& path) const {
  std::ostringstream out;
  out << kHeader << "\n";
  std::lock_guard<std::mutex> lock(mutex_);
  // Metadata first: the rank's row and its tracks get names in the viewer.
  out << "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":" << options_.rank
      << ",\"tid\":0,\"args\":{\"name\":\"rank " << options_.rank << "\"}}";
  for (size_t t = 0; t < tracks_.size(); ++t) {
    out << ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":" << options_.rank << ",\"tid\":" << t
        << ",\"args\":{\"name\":\"" << (t == 0 ? "main" : "thread ")
        << (t == 0 ? "" : std::to_string(t)) << "\"}}";
  }
  for (const Event& e : events_) {
    out << ",\n{\"ph\":\"X\",\"name\":" << jsonQuote(e.name) << ",\"cat\":" << jsonQuote(e.category)
        << ",\"pid\":" << options_.rank << ",\"tid\":" << e.track << ",\"ts\":" << e.startUs
        << ",\"dur\":" << e.durationUs << "}";
  }
  out << "\n"
      << kFooterStart << ",\"otherData\":{\"rank\":" << options_.rank
      << ",\"dropped_events\":" << dropped_ << "}}\n";
  writeAtomically(path, out.str());
}

void mergeTraces(const std::vector<std::string>& inputs, const std::string& output) {
  TW_CHECK(!inputs.empty(), "mergeTraces needs at least one input");
  std::ostringstream out;
  out << kHeader << "\n";
  bool first = true;
  size_t dropped = 0;
  for (const std::string& path : inputs) {
    std::ifstream in(path, std::ios::binary);
    if (!in) TW_THROW(DataError, "timeline ", path, ": cannot open");
    std::string line;
    if (!std::getline(in, line) || line != kHeader) {
      TW_THROW(DataError, "timeline ", path, ": not a trace written by thinwire (bad header)");
    }
    bool closed = false;
    while (std::getline(in, line)) {
      if (line.rfind(kFooterStart, 0) == 0) {
        const std::string key = "\"dropped_events\":";
        const size_t at = line.find(key);
        if (at != std::string::npos) dropped += std::stoull(line.substr(at + key.size()));
        closed = true;
        break;
      }
      if (!line.empty() && line.back() == ',') line.pop_back();
      if (line.empty() || line.front() != '{' || line.back() != '}') {
        TW_THROW(DataError, "timeline ", path, ": malformed event line '", line.substr(0, 60), "'");
      }
      out << (first ? "" : ",\n") << line;
      first = false;
    }
    if (!closed) TW_THROW(DataError, "timeline ", path, ": truncated (no closing line)");
  }
  out << "\n"
      << kFooterStart << ",\"otherData\":{\"ranks\":" << inputs.size()
      << ",\"dropped_events\":" << dropped << "}}\n";
  writeAtomically(output, out.str());
}

}  // namespace thinwire

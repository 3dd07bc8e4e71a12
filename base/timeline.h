// File: base/timeline.h
//
// `Timeline`: spans of work (forward, backward, compress, communicate, decompress, optimizer, ...)
// recorded per rank and written as a Chrome trace (the JSON "traceEvents" format that
// chrome://tracing and https://ui.perfetto.dev open). One file per rank; mergeTraces() joins
// them into one job-wide file where each rank is a process row ("pid" = rank) and each recording
// thread a track.
//
// Recording is cheap (a timestamp pair pushed under a mutex) and bounded: past `maxEvents` spans
// the oldest are kept and later ones dropped, and the file says how many were dropped.
//
// Ownership: a Timeline owns its events. Span (RAII) borrows the Timeline; it must not outlive it.
// Threading: record()/Span are safe from any thread; write() may run concurrently with them.
//
// Example:
//   Timeline timeline({.rank = rank});
//   { Timeline::Span span(timeline, "forward", "compute"); model.forward(x); }
//   timeline.write("runs/x/timeline-rank0.json");
//   mergeTraces({"runs/x/timeline-rank0.json", "runs/x/timeline-rank1.json"},
//   "runs/x/timeline.json");
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace thinwire {

struct TimelineOptions {
  int rank = 0;
  size_t maxEvents = 1'000'000;
};

class Timeline {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Timeline(TimelineOptions options);

  // Records a finished span [start, end) on the calling thread's track. `category` groups spans
  // (compute, comm, codec, optim). Ignored (counted as dropped) past maxEvents.
  void record(const std::string& name,
              const std::string& category,
              Clock::time_point start,
              Clock::time_point end);

  // Records [construction, destruction) of the object.
  class Span {
   public:
    Span(Timeline& timeline, std::string name, std::string category)
        : timeline_(&timeline),
          name_(std::move(name)),
          category_(std::move(category)),
          start_(Clock::now()) {}
    // A span on an optional timeline: nothing is recorded when `timeline` is null.
    Span(Timeline* timeline, std::string name, std::string category)
        : timeline_(timeline),
          name_(std::move(name)),
          category_(std::move(category)),
          start_(Clock::now()) {}
    ~Span() {
      if (timeline_ != nullptr) timeline_->record(name_, category_, start_, Clock::now());
    }
    Span(const Span&) = delete;
    Span& operator=(const Span&) = delete;

   private:
    Timeline* timeline_;
    std::string name_, category_;
    Clock::time_point start_;
  };

  size_t size() const;
  size_t dropped() const;

  // Writes the Chrome trace JSON atomically (temporary file + rename), one event per line.
  // Timestamps are microseconds of the wall clock (taken once at construction, advanced by the
  // steady clock), so files of ranks on different hosts line up as well as their clocks do.
  // Throws Error when the file cannot be written.
  void write(const std::string& path) const;

 private:
  struct Event {
    std::string name, category;
    int64_t startUs, durationUs;
    int track;
  };
  int trackOf(std::thread::id id);  // caller holds mutex_

  TimelineOptions options_;
  Clock::time_point origin_;
  int64_t originUs_ = 0;  // wall clock at origin_, microseconds since the epoch
  mutable std::mutex mutex_;
  std::vector<Event> events_;
  std::vector<std::thread::id> tracks_;
  size_t dropped_ = 0;
};

// Joins per-rank trace files written by Timeline::write into one Chrome trace at `output`
// (atomically). Throws DataError naming the file when an input is missing or not such a trace.
void mergeTraces(const std::vector<std::string>& inputs, const std::string& output);

}  // namespace thinwire

// File: base/timer.h
//
// Monotonic stopwatch and deadline helpers. Units are seconds (double) unless a std::chrono type
// says otherwise.
//
// Threading: a Stopwatch is not shared between threads; Deadline is a value type.
//
// Example:
//   Stopwatch watch;
//   runStep();
//   double seconds = watch.seconds();
//   Deadline deadline(std::chrono::seconds(30));
//   while (!ready()) { if (deadline.expired()) throw ...; }
#pragma once

#include <chrono>

namespace thinwire {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void reset() { start_ = std::chrono::steady_clock::now(); }
  // Seconds since construction or the last reset().
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

class Deadline {
 public:
  explicit Deadline(std::chrono::milliseconds timeout)
      : end_(std::chrono::steady_clock::now() + timeout) {}
  bool expired() const { return std::chrono::steady_clock::now() >= end_; }
  std::chrono::steady_clock::time_point end() const { return end_; }

 private:
  std::chrono::steady_clock::time_point end_;
};

}  // namespace thinwire

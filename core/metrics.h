// File: core/metrics.h
//
// What a run reports while it runs: a JSON-lines file (one object per logged step and per
// evaluation) and a live progress line, both on rank 0 only.
//
//   {"kind":"train","step":120,"loss":0.4521,"accuracy":0.843,"lr":0.05,"samples_per_s":2301,
//    "elapsed_s":12.5,"bytes_sent":93184000, ...}
//   {"kind":"eval","step":500,"loss":0.39,"accuracy":0.861,"elapsed_s":51.2}
// Text runs add "perplexity" and "bits_per_byte" to eval records; bitsPerByte() and
// xzConditionalBitsPerByte() compute them and the xz baseline they are compared with.
//
// Ownership: MetricsWriter owns its file; ProgressLine writes to a stream it does not own.
// Threading: single thread (the rank-0 trainer thread).
//
// Example:
//   MetricsWriter metrics({.path = "runs/x/metrics.jsonl", .append = resumed});
//   metrics.write(JsonRecord().add("kind", "train").add("step", 120).add("loss", 0.45));
//   ProgressLine progress({.total = 2000});
//   progress.update(120, "loss 0.4521 | acc 0.843");
#pragma once

#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>

#include "base/text.h"

namespace thinwire::core {

// A JSON object built field by field (numbers, strings, booleans, nested objects).
class JsonRecord {
 public:
  JsonRecord& add(const std::string& key, double value);
  JsonRecord& add(const std::string& key, int64_t value);
  JsonRecord& add(const std::string& key, int value) { return add(key, int64_t{value}); }
  JsonRecord& add(const std::string& key, const std::string& value);
  JsonRecord& add(const std::string& key, const char* value) {
    return add(key, std::string(value));
  }
  JsonRecord& add(const std::string& key, bool value);
  JsonRecord& add(const std::string& key, const JsonRecord& object);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void key(const std::string& key);
  std::string body_;
};

struct MetricsWriterOptions {
  std::string path;     // "" disables writing
  bool append = false;  // true when resuming, so earlier records are kept
};

class MetricsWriter {
 public:
  // Creates parent directories; throws DataError when the file cannot be opened.
  explicit MetricsWriter(MetricsWriterOptions options);
  // Appends one line and flushes, so a crash loses at most the record being written.
  void write(const JsonRecord& record);

 private:
  std::ofstream out_;
  bool enabled_ = false;
};

struct ProgressLineOptions {
  int64_t total = 0;               // steps in the run, for the ETA
  std::ostream* out = &std::cerr;  // not owned
  bool interactive = false;        // true: rewrite one line with '\r'; false: one line per update
};

class ProgressLine {
 public:
  explicit ProgressLine(ProgressLineOptions options);
  // Shows "step s/total | <text> | ETA 3m12s" (ETA from the rate since the first update).
  void update(int64_t step, const std::string& text);
  // Ends the interactive line so later output starts on a fresh line.
  void close();

 private:
  ProgressLineOptions options_;
  double startSeconds_ = -1;
  int64_t startStep_ = 0;
  bool open_ = false;
};

// "3m12s", "1h02m", "45s".
std::string formatDuration(double seconds);

// Language-model metrics from a mean cross-entropy `nats` per byte token.
// Bits per byte: nats / ln 2. Perplexity: exp(nats).
double bitsPerByte(double nats);
double perplexity(double nats);

// What `xz -9e` spends on `text` given `context`: (|xz(context + text)| - |xz(context)|) * 8 /
// |text| bits per byte of text, the compressor's conditional code length.
struct XzBaseline {
  bool available = false;  // false: xz missing or failed; see `note`
  double bitsPerByte = 0;
  int64_t contextBytes = 0, bothBytes = 0;  // compressed sizes
  std::string note;                         // why it is unavailable
};

// Runs the `xz` binary (found on PATH) on temporary files under `tempDirectory` (removed
// afterwards). Blocking: seconds per MB. Never throws for a missing or failing xz: returns
// available = false with the reason (install the Debian package xz-utils). InvalidArgument for
// an empty `text`.
XzBaseline xzConditionalBitsPerByte(const std::string& context,
                                    const std::string& text,
                                    const std::string& tempDirectory = "/tmp");

}  // namespace thinwire::core

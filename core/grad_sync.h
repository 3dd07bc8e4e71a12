// File: core/grad_sync.h
//
// Gradient averaging across ranks with buckets filled by backward hooks, so communication of the
// first buckets overlaps with the rest of backward (see Note [Bucket order]).
//
// Parameters are assigned to buckets in reverse registration order (gradients of the last layers
// are ready first); a bucket closes once it holds at least `bucketBytes`. During a synchronising
// backward, each parameter's hook copies its full gradient (accumulated micro-steps + this one)
// into the bucket's flat fp32 buffer; when a bucket is complete and every earlier bucket has been
// launched, its allreduce(kAverage) is started. finish() launches what is left, waits for every
// bucket with the configured timeout, and writes the averaged gradients into `.grad()`.
//
// Ownership: GradSync keeps references to the parameters and to `comm` (which must outlive it);
// it owns the bucket buffers and removes its hooks in the destructor.
//
// Threading: hooks run on the thread that calls backward(); prepare()/finish() on the same one.
//
// Example:
//   GradSync sync(parameters, comm, {.bucketBytes = 4 << 20});
//   sync.prepare(/*synchronize=*/true);
//   loss.backward();        // buckets start as they fill
//   sync.finish();          // .grad() now holds the average over ranks
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/timeline.h"
#include "comm/communicator.h"
#include "comm/op_queue.h"
#include "compressors/compression_engine.h"
#include "optim/optimizer.h"

namespace thinwire::core {

struct GradSyncOptions {
  int64_t bucketBytes = 4 << 20;  // a bucket closes once it holds at least this many bytes
  bool overlap = true;            // false: launch every bucket only in finish()
  bool enabled = true;            // false: no communication (compute-only benchmark mode)
  std::chrono::milliseconds timeout = comm::kDefaultTimeout;
  // Compressed synchronisation (borrowed; built over the same parameter list, layer i =
  // parameter i): each bucket runs engine->sync() on GradSync's sync thread instead of one
  // allreduce. Runs at every world size, 1 included, so a single rank trains with the same
  // compression arithmetic. See Note [Compressed buckets].
  compressors::CompressionEngine* engine = nullptr;
  // Test every gradient for NaN/Inf before it reaches a collective or the engine, and agree
  // across ranks in finish() (see Note [Non-finite gradients] in core/nonfinite.h).
  bool checkFinite = false;
  // Told what finish() waits for ("collective: allreduce bucket 2 of 5 step 17"), on the
  // caller's thread, before each wait: the watchdog's activity. Optional.
  std::function<void(const std::string&)> onActivity;
  // Borrowed, optional: finish()'s waits for plain buckets become "communicate" spans.
  Timeline* timeline = nullptr;
};

struct GradSyncStats {
  int64_t bytesSent = 0;             // payload bytes handed to the communicator since construction
  int64_t wireBytes = 0;             // bytes this rank sent on the wire (ring formulas)
  int64_t bucketsLaunchedEarly = 0;  // buckets started during backward (overlapped)
  int64_t bucketsLaunchedLate = 0;   // buckets started in finish()
  double waitSeconds = 0;            // time finish() spent waiting for communication
};

class GradSync {
 public:
  GradSync(std::vector<optim::NamedParameter> parameters,
           comm::Communicator& comm,
           GradSyncOptions options);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // Arms (synchronize = true) or disarms the hooks for the next backward. A disarmed backward
  // just accumulates into .grad() (gradient-accumulation micro-steps).
  void prepare(bool synchronize, const compressors::StepInfo& step = {});
  // Called by finish() for each bucket, in bucket order, once its averaged gradients are in
  // .grad(): the indices (into the parameter list GradSync was built with) it covers.
  using BucketDone = std::function<void(const std::vector<size_t>& parameterIndices)>;

  // Blocking: completes the synchronising backward started by prepare(true), waiting for the
  // buckets in order; after each, writes its averaged gradients into .grad() and calls
  // `onBucketDone` (if set) while later buckets may still be in flight. Returns true when the
  // buckets were synchronised (and `onBucketDone` saw every parameter), false when there was
  // nothing to do (a disarmed backward, gradient_sync off, or a single rank). Throws the
  // communicator's CommError/TimeoutError.
  // With options.checkFinite, every rank first agrees whether any rank's gradients hold NaN/Inf;
  // if one does, nothing is written to .grad(), `onBucketDone` is not called, no compressed
  // bucket is encoded, and nonFiniteRanks() lists the ranks (finish() still returns true).
  bool finish(const BucketDone& onBucketDone = nullptr);

  // The ranks whose gradients held NaN/Inf in the last finish() that returned true (sorted,
  // identical on every rank); empty when all were finite or the check is off.
  const std::vector<int>& nonFiniteRanks() const { return nonFiniteRanks_; }

  int64_t numBuckets() const { return static_cast<int64_t>(buckets_.size()); }
  bool overlapping() const { return options_.overlap; }
  const GradSyncStats& stats() const { return stats_; }

 private:
  struct Slot {
    int64_t bucket = 0;
    int64_t offset = 0;  // elements into the bucket buffer
    bool ready = false;
  };
  struct Bucket {
    at::Tensor flat;                 // fp32, all the bucket's gradients back to back
    std::vector<size_t> parameters;  // indices into parameters_
    int64_t pending = 0;             // parameters not yet ready in this backward
    std::unique_ptr<comm::Work> work;
  };

  void onGradient(size_t index, const at::Tensor& grad);
  // Fills the slots of parameters that got no gradient in this backward (Note [Bucket order]).
  void fillUnready(Bucket& bucket);
  void launchReadyBuckets(bool force);
  void noteFinite(const at::Tensor& values);
  void activity(const std::string& text) const;
  void launch(Bucket& bucket);

  std::vector<optim::NamedParameter> parameters_;
  comm::Communicator& comm_;
  GradSyncOptions options_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hookHandles_;
  size_t nextLaunch_ = 0;
  compressors::StepInfo step_;
  std::unique_ptr<comm::OpQueue> encodeQueue_;  // runs the engine's bucket encodes in order
  std::unique_ptr<comm::OpQueue> syncQueue_;    // runs the engine's bucket exchanges in order
  bool armed_ = false;
  bool inFlight_ = false;
  bool localNonFinite_ = false;  // this rank saw NaN/Inf in the current backward
  std::vector<int> nonFiniteRanks_;
  GradSyncStats stats_;
};

// Note [Compressed buckets]
// With an engine, a complete bucket is handed to two threads (OpQueues): the encode thread
// compresses its layers (CompressionEngine::encode), then the sync thread runs the aggregators'
// collectives and decodes (CompressionEngine::exchange), each in bucket order, so one bucket is
// compressed while the one before it is on the wire (Note [Encode and exchange]); the trainer
// thread keeps running backward meanwhile. Only the sync thread issues collectives between
// prepare() and finish(), and finish() waits for it before the trainer issues any, so the
// communicator still sees one issuing thread at a time in lock-step order.

// Note [Bucket order]
// Every rank must issue the same allreduces in the same order. Buckets are launched strictly in
// index order (a complete bucket waits for its predecessors), so the order is a function of the
// bucket layout alone, which is identical on every rank, not of hook timing. Parameters that got
// no gradient in a backward (unused branches) are zero-filled in finish(), which launches any
// bucket still pending.

}  // namespace thinwire::core

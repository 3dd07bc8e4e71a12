// File: compressors/compression_engine.h
//
// `CompressionEngine`: the per-job pipeline that replaces plain gradient averaging when a
// compression method is configured (ARCHITECTURE §2 step 3). For each layer (one parameter
// tensor) it holds the resolved method — compressor, feedback policy, aggregator, or PowerSGD, or
// plain float32 averaging for small and 1-D tensors — and its state; sync() runs one bucket:
//
//   uncompressed layers   one float32 allreduce(average) of all of them together
//   compressed layers     Feedback::encode -> Aggregator::run (one collective sequence per
//                         aggregator kind for the whole bucket) -> Feedback::decode
//   PowerSGD layers       PowerSgd::run (two allreduces for the whole bucket)
//
// in that fixed order, so every rank issues the same collectives (Note [Collective contract]).
// Before `startStep` every layer is averaged uncompressed.
//
// Layer-wise settings: with `layerwise.kind = kLGreco` the top-k density, the quantizer's bits or
// the PowerSGD rank of each compressed layer is re-chosen every `adjustEvery` steps by L-GreCo
// (layerwise_policy.h, Note [L-GreCo protocol]): rank 0 solves, the choice is broadcast in the
// first encode() of the step it takes effect at, identically on every rank.
//
// Shared randomness (random-k positions, PowerSGD's Q) is seeded from (seed, step, layer), private
// randomness (stochastic rounding, sample positions) from (seed, step, layer, rank): a resumed run
// draws exactly what the uninterrupted one drew.
//
// Ownership: the engine owns compressors, feedback and aggregator state; it borrows the
// communicator, which must outlive it.
// Threading: sync() is encode() then exchange(). encode() (feedback and compression, no
// collectives) and exchange() (collectives, decode) may run on two threads, so one bucket's
// encoding overlaps the previous bucket's transfer, as long as each bucket's encode() finishes
// before its exchange() starts, encode() calls come in bucket order from one thread, and
// exchange() calls in bucket order from one thread (Note [Encode and exchange]). Stats and state
// are read between steps.
//
// Example:
//   CompressionEngine engine(layers, comm, options);           // one LayerMethod per layer
//   engine.sync({0, 1}, {grad0, grad1}, flat, {.step = 7, .lr = 0.1, .worldSize = 4});
//   // grad0, grad1 now hold the averaged gradient estimates, identical on every rank
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/state_dict.h"
#include "base/timeline.h"
#include "comm/communicator.h"
#include "compressors/aggregator.h"
#include "compressors/compressor.h"
#include "compressors/feedback.h"
#include "compressors/layerwise_policy.h"

namespace thinwire::compressors {

class PowerSgd;

struct LayerSpec {
  std::string name;            // parameter name, for logs and metrics
  std::vector<int64_t> shape;  // parameter shape
};

// The resolved method of one layer (core builds it from the config and its overrides).
struct LayerMethod {
  enum class Route { kDense, kCompressed, kLowRank };
  Route route = Route::kDense;
  CompressorOptions compressor;              // kCompressed
  LayerParams params;                        // kCompressed: ratio, bits (seeds set per step)
  FeedbackOptions feedback;                  // kCompressed
  std::optional<AggregatorKind> aggregator;  // kCompressed; nullopt = cost model
  int lowRank = 1;                           // kLowRank: PowerSGD rank
  int64_t dgcWarmupEpochs = 0;               // kCompressed top-k: DGC sparsity warm-up
};

struct CompressionEngineOptions {
  std::vector<LayerMethod> layers;  // one per LayerSpec
  bool powerSgdWarmStart = true;
  bool powerSgdKeepQOnRankChange = false;  // PowerSgdOptions::keepQOnRankChange
  double powerSgdMinCompressionRate = 2.0;
  CostModelOptions costModel;
  int64_t startStep = 0;   // steps averaged uncompressed first
  int64_t errorEvery = 0;  // relative-error sampling period in steps; 0 = never
  uint64_t seed = 0;       // base of shared and private randomness
  std::chrono::milliseconds timeout = comm::kDefaultTimeout;
  // Uniform (the methods above as they are) or L-GreCo over the top-k, quantize and PowerSGD
  // layers; warmupSteps must be >= startStep + window.
  LayerwisePolicyOptions layerwise;
  // Borrowed, optional: encode() records "compress" spans, exchange() "communicate" (the
  // aggregators' collectives with their fused decode, and PowerSGD's rounds) and "decompress"
  // (the feedback's decode) spans.
  Timeline* timeline = nullptr;
};

struct LayerStats {
  std::string route;          // "dense", "<compressor>+<feedback>/<aggregator>", "powersgd rank r"
  int64_t bytesSent = 0;      // wire bytes this rank sent for the layer, cumulative
  double relativeError = -1;  // last sampled ||C(g) - g||^2 / ||g||^2; -1 before the first sample
  int64_t errorSampleStep = -1;
  int64_t payloadBytes = 0;  // compressed bytes this rank produced for the layer, cumulative
  std::string setting;       // L-GreCo layers: the parameter in force, e.g. "ratio=0.0025"
};

// What the layer-wise policy decided, identical on every rank (see LayerwiseReport).
struct LayerwiseStatus {
  LayerwiseReport report;
  std::vector<std::string> layers;    // names of the layers the policy sets
  std::vector<std::string> settings;  // their parameters in force
  // Payload bytes per step of those layers measured since the last solve (since the first
  // compressed step before it); -1 before any compressed step.
  double measuredBytesPerStep = -1;
  // Payload bytes per step of those layers at the uniform defaults (exact for fixed-size
  // payloads; sampled top-k: its upper bound).
  int64_t uniformBytesPerStep = 0;
};

// DGC's exponential sparsity warm-up (specs §1.2): the kept fraction in (fractional) epoch
// `epoch` is max(coeff^(e+1), ratio) with coeff = ratio^(1/(warmupEpochs+1)) and e = floor(epoch),
// for e < warmupEpochs; `ratio` afterwards and when warmupEpochs is 0.
double dgcWarmupRatio(double ratio, int64_t warmupEpochs, double epoch);

class CompressionEngine {
 public:
  // Resolves every layer's method: compressed layers get their compressor, feedback policy and
  // aggregator (the cost model's choice when unset); PowerSGD layers whose factors would not be
  // `powerSgdMinCompressionRate` times smaller fall back to dense. Throws InvalidArgument for
  // inconsistent options (sizes differ, DGC without top-k, allreduce of a non-summable method).
  CompressionEngine(std::vector<LayerSpec> layers,
                    comm::Communicator& comm,
                    CompressionEngineOptions options);
  ~CompressionEngine();
  CompressionEngine(const CompressionEngine&) = delete;
  CompressionEngine& operator=(const CompressionEngine&) = delete;

  // Blocking, collective: synchronises the layers `layers` (indices into the LayerSpec list, the
  // same list in the same order on every rank) whose local gradients are `grads` (contiguous
  // float32, numel of the layer; overwritten in place with the averaged estimate the optimizer
  // should apply). `flat`, when defined, is one contiguous tensor that `grads` tile back to back
  // (a gradient bucket): all-dense buckets are then averaged with a single allreduce and no copy.
  // Rethrows the communicator's CommError/TimeoutError.
  void sync(const std::vector<size_t>& layers,
            const std::vector<at::Tensor>& grads,
            const at::Tensor& flat,
            const StepInfo& step);
  // The two halves of sync(), same arguments. encode() runs the feedback policy and the
  // compressor of the bucket's compressed layers into their payloads and touches no
  // communicator; exchange() then averages the dense layers, runs the aggregators and PowerSGD
  // and decodes. exchange() throws InvalidArgument for a compressed layer encode() did not
  // prepare for this step.
  void encode(const std::vector<size_t>& layers,
              const std::vector<at::Tensor>& grads,
              const StepInfo& step);
  void exchange(const std::vector<size_t>& layers,
                const std::vector<at::Tensor>& grads,
                const at::Tensor& flat,
                const StepInfo& step);

  const std::vector<LayerSpec>& layers() const { return layers_; }
  const std::vector<LayerStats>& layerStats() const { return stats_; }
  // Wire bytes this rank sent since construction, over all layers.
  int64_t bytesSent() const;
  // Payload bytes this rank handed to the communicator since construction (compressed sizes).
  int64_t payloadBytes() const { return encodedBytes_ + exchangedBytes_; }
  // Bytes an uncompressed float32 ring allreduce of the same layers would have sent.
  int64_t denseEquivalentBytes() const { return denseEquivalentBytes_; }
  // Seconds spent encoding (feedback + compression) and decoding on this rank since
  // construction, collectives excluded.
  double codecSeconds() const { return encodeSeconds_ + decodeSeconds_; }

  // One line per route with the layers using it, for the trainer's start-up log.
  std::string describe() const;

  // True when an L-GreCo policy sets some layers' parameters.
  bool adaptive() const { return policy_ != nullptr; }
  // The policy's current decision; read between steps. Throws InvalidArgument unless adaptive().
  LayerwiseStatus layerwiseStatus() const;

  // Per-rank state (feedback memories, server errors, PowerSGD factors, the L-GreCo choice and
  // window): bit-exact resume.
  StateDict state() const;
  // Throws DataError when an entry is missing or has another size.
  void loadState(const StateDict& state);

 private:
  struct Layer;
  void checkBucket(const std::vector<size_t>& layers, const std::vector<at::Tensor>& grads) const;
  void syncDense(const std::vector<size_t>& layers,
                 const std::vector<at::Tensor>& grads,
                 const at::Tensor& flat);
  LayerParams paramsAt(size_t layer, const StepInfo& step) const;
  void sampleError(size_t layer, const at::Tensor& grad, const LayerParams& params);
  // L-GreCo: the per-step work at the first encode() of `step` (Note [L-GreCo protocol]).
  void beginStep(const StepInfo& step);
  void resolve(const StepInfo& step);
  void measure(size_t participant,
               const StepInfo& step,
               std::vector<int64_t>& sizes,
               std::vector<double>& errors);
  void applyChoice();
  int64_t participantBytes() const;

  std::vector<LayerSpec> layers_;
  comm::Communicator& comm_;
  CompressionEngineOptions options_;
  std::vector<std::unique_ptr<Layer>> state_;
  std::vector<std::unique_ptr<Aggregator>> aggregators_;  // indexed by AggregatorKind
  std::unique_ptr<PowerSgd> powerSgd_;
  std::vector<LayerStats> stats_;
  // Each counter has one writer: encode() or exchange() (see Threading above).
  int64_t encodedBytes_ = 0;          // compressed payloads (encode)
  int64_t exchangedBytes_ = 0;        // dense and PowerSGD layers (exchange)
  int64_t denseEquivalentBytes_ = 0;  // encode
  double encodeSeconds_ = 0;
  double decodeSeconds_ = 0;
  std::unique_ptr<Compressor> riderIdentity_;  // dense layers riding a compressed collective
  std::unique_ptr<Compressor> riderChunked_;   // the same, cut per destination (two-phase)
  at::Tensor denseScratch_;
  at::Tensor errorScratch_;
  // L-GreCo (null when uniform). Written by the first encode() of a step, while no exchange()
  // runs; the low-rank windows are fed by exchange().
  std::unique_ptr<LayerwisePolicy> policy_;
  std::vector<size_t> participants_;  // engine layer of each policy layer
  int64_t policyStep_ = -1;           // last step beginStep() ran for
  int64_t accumulateStep_ = -1;       // step whose compensated gradients feed the window
  int64_t compressedSteps_ = 0;       // steps at or after startStep seen by beginStep()
  int64_t bytesAtSolve_ = 0;          // participantBytes() at the last solve
  int64_t stepsAtSolve_ = 0;          // compressedSteps_ at the last solve
};

}  // namespace thinwire::compressors

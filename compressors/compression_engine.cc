#include "compressors/compression_engine.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <sstream>

#include "base/error.h"
#include "base/timer.h"
#include "compressors/chunked_compressor.h"
#include "compressors/identity_compressor.h"
#include "compressors/power_sgd.h"

namespace thinwire::compressors {

namespace {

// splitmix64: decorrelates nearby (seed, step, layer) tuples.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t mix(uint64_t a, uint64_t b) { return mix(a ^ mix(b)); }

int64_t numelOf(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t ringAllreduceBytes(int64_t bytes, int worldSize) {
  return worldSize <= 1 ? 0 : 2 * (worldSize - 1) * bytes / worldSize;
}

// Payload bytes of PowerSGD's factors P and Q at `rank` (float32, r' = min(rank, rows, cols)).
int64_t lowRankPayloadBytes(int64_t rows, int64_t cols, int64_t rank) {
  return 4 * std::min({rank, rows, cols}) * (rows + cols);
}

// Note [Window sum]
// With error feedback a layer hands its compressor p_t = e_t + g_t: the residual e_t (what it
// has not sent yet) plus this step's gradient. The reference code sums p_t over the window
// (LayerwiseWindowSum::kCompensated), which counts the backlog e once per window step. A layer
// the last solve starved has a large e, so its window sum, and with it every candidate's error,
// is dominated by window x e; the next solve raises its setting, the backlog drains, the solve
// after that starves it again. kDemand sums what the layer has to send over the window instead:
// the backlog once, at the window's first step, plus every step's gradient,
// e_first + sum_t g_t. It needs the two parts apart, which error feedback (and PowerSGD's own)
// hands in; feedback that folds them together (DGC, EControl, EF21, none) is rejected.

// Note [Relative error]
// The squared measure adds ||C(G_l) - G_l||^2 over the layers, so the layers with the largest
// gradients (on a language model: the embedding, the head, the first block) own nearly all of
// the budget, and the solver pays for their larger settings by starving every other layer, whose
// error hardly moves the total. LayerwiseErrorMeasure::kRelative divides each layer's errors by
// ||G_l||^2 of its window: the budget then weighs every layer's loss of signal alike, whatever
// its gradient's scale. A layer whose window is all zeros keeps its (zero) errors.

// Hands the compressor what it would have been given and adds to the L-GreCo window: the fused
// p = residual + addendScale * addend is split into an explicit sum and a compression of p with
// no addend, which the Compressor contract makes the same operation. kCompensated records p;
// kDemand records addendScale * addend, plus the residual before it when `withBacklog`.
class AccumulatingCompressor : public Compressor {
 public:
  AccumulatingCompressor(Compressor& inner,
                         at::Tensor& window,
                         LayerwiseWindowSum sum,
                         bool withBacklog)
      : inner_(inner), window_(window), sum_(sum), withBacklog_(withBacklog) {}

  std::string name() const override { return inner_.name(); }
  void compress(at::Tensor& residual,
                const at::Tensor& addend,
                float addendScale,
                Payload& out,
                const LayerParams& params) override {
    if (sum_ == LayerwiseWindowSum::kDemand) {
      TW_CHECK(addend.defined(),
               "L-GreCo window_sum demand needs error feedback that hands the "
               "residual and the gradient apart");
      if (withBacklog_) window_.add_(residual.view({-1}));
      window_.add_(addend.view({-1}), addendScale);
      residual.add_(addend.view(residual.sizes()), addendScale);
    } else {
      if (addend.defined()) residual.add_(addend.view(residual.sizes()), addendScale);
      window_.add_(residual.view({-1}));
    }
    inner_.compress(residual, at::Tensor(), 1.0f, out, params);
  }
  void decompressAdd(const Payload& payload,
                     at::Tensor& out,
                     float alpha,
                     const LayerParams& params) const override {
    inner_.decompressAdd(payload, out, alpha, params);
  }
  bool isSummable() const override { return inner_.isSummable(); }
  bool isSparse() const override { return inner_.isSparse(); }
  int64_t payloadBytes(int64_t numel, const LayerParams& params) const override {
    return inner_.payloadBytes(numel, params);
  }
  int64_t maxPayloadBytes(int64_t numel, const LayerParams& params) const override {
    return inner_.maxPayloadBytes(numel, params);
  }
  int64_t alignment(const LayerParams& params) const override { return inner_.alignment(params); }
  double deltaHint(int64_t numel, const LayerParams& params) const override {
    return inner_.deltaHint(numel, params);
  }

 private:
  Compressor& inner_;
  at::Tensor& window_;
  LayerwiseWindowSum sum_;
  bool withBacklog_;
};

// Doubles travel in the int64 broadcast of the choice bit for bit.
int64_t doubleBits(double value) {
  int64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

double bitsDouble(int64_t bits) {
  double value = 0;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

}  // namespace

double dgcWarmupRatio(double ratio, int64_t warmupEpochs, double epoch) {
  if (warmupEpochs <= 0 || epoch >= static_cast<double>(warmupEpochs)) return ratio;
  const double coeff = std::pow(ratio, 1.0 / static_cast<double>(warmupEpochs + 1));
  const double e = std::floor(std::max(epoch, 0.0));
  return std::max(std::pow(coeff, e + 1), ratio);
}

struct CompressionEngine::Layer {
  LayerMethod method;
  std::unique_ptr<Compressor> compressor;  // the method's compressor
  std::unique_ptr<Compressor> chunked;     // two-phase: one chunk per destination rank
  std::unique_ptr<Feedback> feedback;
  AggregatorKind aggregator = AggregatorKind::kAllgather;
  Payload payload;           // reused across steps
  int64_t encodedStep = -1;  // step whose payload encode() left for exchange(); -1 none
  int64_t numel = 0;
  int64_t rows = 0, cols = 0;  // low rank: matrix view
  int64_t policyIndex = -1;    // L-GreCo: index among the policy's layers; -1 not set by it

  Compressor& sender() { return chunked ? *chunked : *compressor; }
};

CompressionEngine::CompressionEngine(std::vector<LayerSpec> layers,
                                     comm::Communicator& comm,
                                     CompressionEngineOptions options)
    : layers_(std::move(layers)), comm_(comm), options_(std::move(options)) {
  TW_CHECK(options_.layers.size() == layers_.size(), "CompressionEngine: ", layers_.size(),
           " layers but ", options_.layers.size(), " methods");
  const int worldSize = comm_.worldSize();
  stats_.resize(layers_.size());
  bool anyLowRank = false;
  for (size_t l = 0; l < layers_.size(); ++l) {
    auto layer = std::make_unique<Layer>();
    layer->method = options_.layers[l];
    layer->numel = numelOf(layers_[l].shape);
    LayerMethod& method = layer->method;
    if (method.route == LayerMethod::Route::kLowRank) {
      const auto& shape = layers_[l].shape;
      layer->rows = shape.empty() ? 1 : shape[0];
      layer->cols = layer->rows == 0 ? 0 : layer->numel / std::max<int64_t>(layer->rows, 1);
      if (shape.size() < 2 || !PowerSgd::worthCompressing(layer->rows, layer->cols, method.lowRank,
                                                          options_.powerSgdMinCompressionRate)) {
        method.route = LayerMethod::Route::kDense;
      } else {
        anyLowRank = true;
      }
    }
    if (method.route == LayerMethod::Route::kCompressed) {
      layer->compressor = makeCompressor(method.compressor);
      if (method.feedback.kind == FeedbackKind::kDgc) {
        TW_CHECK(method.compressor.kind == CompressorKind::kTopK, "layer '", layers_[l].name,
                 "': DGC feedback needs the top-k compressor, got ", layer->compressor->name());
      }
      layer->feedback = makeFeedback(method.feedback);
      layer->aggregator = method.aggregator.value_or(chooseAggregator(
          *layer->compressor, layer->numel, method.params, worldSize, options_.costModel));
      if (layer->aggregator == AggregatorKind::kAllreduce) {
        TW_CHECK(layer->compressor->isSummable(), "layer '", layers_[l].name,
                 "': the allreduce aggregator needs a summable compressor, got ",
                 layer->compressor->name());
      }
      if (layer->aggregator == AggregatorKind::kTwoPhase) {
        layer->chunked = std::make_unique<ChunkedCompressor>(*layer->compressor, worldSize);
      }
      std::ostringstream route;
      route << layer->compressor->name() << "+" << layer->feedback->name() << "/"
            << toString(layer->aggregator);
      stats_[l].route = route.str();
    } else if (method.route == LayerMethod::Route::kLowRank) {
      stats_[l].route = "powersgd rank " + std::to_string(method.lowRank);
    } else {
      stats_[l].route = "dense";
    }
    state_.push_back(std::move(layer));
  }
  riderIdentity_ = std::make_unique<IdentityCompressor>();
  riderChunked_ = std::make_unique<ChunkedCompressor>(*riderIdentity_, worldSize);
  for (AggregatorKind kind :
       {AggregatorKind::kAllreduce, AggregatorKind::kAllgather, AggregatorKind::kTwoPhase}) {
    aggregators_.push_back(makeAggregator(kind));
  }
  if (options_.layerwise.kind == LayerwiseKind::kLGreco) {
    std::vector<LayerwiseCandidates> candidates;
    for (size_t l = 0; l < state_.size(); ++l) {
      Layer& layer = *state_[l];
      const LayerMethod& method = layer.method;
      if (method.route == LayerMethod::Route::kCompressed &&
          method.compressor.kind == CompressorKind::kTopK) {
        candidates.push_back(
            layerwiseCandidates(LayerwiseFamily::kTopK, method.params.ratio, options_.layerwise));
      } else if (method.route == LayerMethod::Route::kCompressed &&
                 method.compressor.kind == CompressorKind::kQuantize) {
        candidates.push_back(layerwiseCandidates(LayerwiseFamily::kQuantize, method.params.bits,
                                                 options_.layerwise));
      } else if (method.route == LayerMethod::Route::kLowRank) {
        LayerwiseCandidates c =
            layerwiseCandidates(LayerwiseFamily::kLowRank, method.lowRank, options_.layerwise);
        // Ranks whose factors are not worth sending would go dense: not candidates.
        const double chosen = c.values[c.defaultIndex];
        std::vector<double> kept;
        for (double r : c.values) {
          if (r == chosen || PowerSgd::worthCompressing(layer.rows, layer.cols, static_cast<int>(r),
                                                        options_.powerSgdMinCompressionRate)) {
            kept.push_back(r);
          }
        }
        c.values = kept;
        c.defaultIndex =
            static_cast<size_t>(std::find(kept.begin(), kept.end(), chosen) - kept.begin());
        candidates.push_back(std::move(c));
      } else {
        continue;
      }
      TW_CHECK(options_.layerwise.windowSum != LayerwiseWindowSum::kDemand ||
                   method.route == LayerMethod::Route::kLowRank ||
                   method.feedback.kind == FeedbackKind::kEf,
               "L-GreCo window_sum demand needs feedback ef (or PowerSGD); layer ", layers_[l].name,
               " uses other feedback");
      layer.policyIndex = static_cast<int64_t>(participants_.size());
      participants_.push_back(l);
    }
    TW_CHECK(!participants_.empty(),
             "L-GreCo sets top-k, quantize or PowerSGD layers; this model has none");
    TW_CHECK(options_.layerwise.warmupSteps >= options_.startStep + options_.layerwise.window,
             "L-GreCo: warmup_steps (", options_.layerwise.warmupSteps,
             ") must be >= start_step + window (", options_.startStep, " + ",
             options_.layerwise.window, ")");
    policy_ = std::make_unique<LayerwisePolicy>(options_.layerwise, std::move(candidates));
    applyChoice();
  }
  if (anyLowRank) {
    PowerSgdOptions powerOptions;
    powerOptions.warmStart = options_.powerSgdWarmStart;
    powerOptions.keepQOnRankChange = options_.powerSgdKeepQOnRankChange;
    powerOptions.seed = options_.seed;
    powerOptions.minCompressionRate = options_.powerSgdMinCompressionRate;
    powerSgd_ = std::make_unique<PowerSgd>(powerOptions);
  }
}

CompressionEngine::~CompressionEngine() = default;

int64_t CompressionEngine::bytesSent() const {
  int64_t total = 0;
  for (const LayerStats& s : stats_) total += s.bytesSent;
  return total;
}

LayerParams CompressionEngine::paramsAt(size_t layer, const StepInfo& step) const {
  const LayerMethod& method = state_[layer]->method;
  LayerParams params = method.params;
  params.seed = mix(mix(options_.seed, static_cast<uint64_t>(step.step)), layer);
  params.rankSeed = mix(params.seed, static_cast<uint64_t>(comm_.rank()) + 1);
  params.ratio = dgcWarmupRatio(params.ratio, method.dgcWarmupEpochs, step.epoch);
  return params;
}

void CompressionEngine::syncDense(const std::vector<size_t>& layers,
                                  const std::vector<at::Tensor>& grads,
                                  const at::Tensor& flat) {
  if (layers.empty()) return;
  int64_t total = 0;
  for (const at::Tensor& g : grads) total += g.numel();
  const int worldSize = comm_.worldSize();
  for (size_t i = 0; i < layers.size(); ++i) {
    stats_[layers[i]].bytesSent += ringAllreduceBytes(grads[i].numel() * 4, worldSize);
  }
  exchangedBytes_ += total * 4;
  if (worldSize == 1) return;
  if (flat.defined() && flat.numel() == total) {
    at::Tensor target = flat;
    comm_.allreduce(target, {.op = comm::ReduceOp::kAverage})->wait(options_.timeout);
    return;
  }
  if (grads.size() == 1) {
    at::Tensor target = grads[0];
    comm_.allreduce(target, {.op = comm::ReduceOp::kAverage})->wait(options_.timeout);
    return;
  }
  if (denseScratch_.numel() < total) denseScratch_ = at::empty({total}, at::kFloat);
  at::Tensor packed = denseScratch_.narrow(0, 0, total);
  int64_t offset = 0;
  for (const at::Tensor& g : grads) {
    packed.narrow(0, offset, g.numel()).copy_(g.reshape({-1}));
    offset += g.numel();
  }
  comm_.allreduce(packed, {.op = comm::ReduceOp::kAverage})->wait(options_.timeout);
  offset = 0;
  for (const at::Tensor& g : grads) {
    at::Tensor view = g.view({-1});
    view.copy_(packed.narrow(0, offset, g.numel()));
    offset += g.numel();
  }
}

void CompressionEngine::sampleError(size_t layer,
                                    const at::Tensor& grad,
                                    const LayerParams& params) {
  Layer& state = *state_[layer];
  const int64_t n = grad.numel();
  if (errorScratch_.numel() < n) errorScratch_ = at::empty({n}, at::kFloat);
  at::Tensor scratch = errorScratch_.narrow(0, 0, n);
  scratch.copy_(grad.reshape({-1}));
  const double norm = scratch.pow(2).sum().item<double>();
  Payload sample;
  state.compressor->compress(scratch, at::Tensor(), 1.0f, sample, params);
  const double error = scratch.pow(2).sum().item<double>();
  stats_[layer].relativeError = norm > 0 ? error / norm : 0.0;
}

void CompressionEngine::checkBucket(const std::vector<size_t>& layers,
                                    const std::vector<at::Tensor>& grads) const {
  TW_CHECK(layers.size() == grads.size(), "CompressionEngine: ", layers.size(), " layers but ",
           grads.size(), " gradients");
  for (size_t i = 0; i < layers.size(); ++i) {
    TW_CHECK(layers[i] < state_.size(), "CompressionEngine: layer ", layers[i], " out of range (",
             state_.size(), " layers)");
    TW_CHECK(grads[i].numel() == state_[layers[i]]->numel && grads[i].is_contiguous() &&
                 grads[i].scalar_type() == at::kFloat,
             "CompressionEngine: gradient of layer '", layers_[layers[i]].name,
             "' must be a contiguous float32 tensor of ", state_[layers[i]]->numel, " elements");
  }
}

// Note [Dense riders]
// A small collective on a slow, busy link costs a queueing delay, not its bytes: behind a shaped
// 1 Gbit/s queue a 90 kB allreduce of the biases and output layer took 6-65 ms (fmnist-mlp, 4
// ranks), longer than the compressed transfer next to it. When a bucket has one compressed
// group, its dense layers therefore travel in that group's collective as float32 identity
// payloads: for two-phase always (a chunked identity payload moves exactly a ring allreduce's
// bytes), for allgather while they are no larger than the group's compressed payloads (an
// allgather moves (n-1)·B instead of the ring's 2(n-1)/n·B). Every rank sums the n copies in
// rank order (allgather) or takes the owner's average (two-phase), so ranks agree bit for bit;
// the value is the average, though not bitwise the ring's summation order.

// Note [Encode and exchange]
// On a slow link a bucket's compressed transfer takes about as long as compressing the next
// bucket, and on the trainer's default MLP the last bucket is only complete when backward ends.
// Run in one thread, the last bucket's compression therefore waited for the previous bucket's
// transfer (fmnist-mlp, 4 ranks, 1 Gbit/s shared fabric: 18 ms encode, then 31 ms on the wire,
// then 21 ms encode of the last bucket, then 24 ms on the wire). GradSync runs encode() on one
// thread and exchange() on another, so bucket b+1 is compressed while bucket b is on the wire.
// The split is safe because the halves share no mutable state across buckets: a bucket's layers
// (their feedback memory, compressor and payload) are touched only by that bucket's encode and
// then by its exchange; aggregators and the communicator only by exchange; every counter has one
// writer. The result is bit for bit that of sync().
void CompressionEngine::sync(const std::vector<size_t>& layers,
                             const std::vector<at::Tensor>& grads,
                             const at::Tensor& flat,
                             const StepInfo& step) {
  encode(layers, grads, step);
  exchange(layers, grads, flat, step);
}

void CompressionEngine::encode(const std::vector<size_t>& layers,
                               const std::vector<at::Tensor>& grads,
                               const StepInfo& step) {
  checkBucket(layers, grads);
  if (policy_ && step.step != policyStep_) beginStep(step);
  const int worldSize = comm_.worldSize();
  for (const at::Tensor& grad : grads) {
    denseEquivalentBytes_ += ringAllreduceBytes(grad.numel() * 4, worldSize);
  }
  if (step.step < options_.startStep) return;
  const bool accumulating = accumulateStep_ == step.step;
  Timeline::Span span(options_.timeline, "compress", "codec");
  Stopwatch encodeClock;
  const bool sampling = options_.errorEvery > 0 && step.step % options_.errorEvery == 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const size_t id = layers[i];
    Layer& layer = *state_[id];
    if (layer.method.route != LayerMethod::Route::kCompressed) continue;
    const LayerParams params = paramsAt(id, step);
    at::Tensor grad = grads[i].view({-1});
    if (sampling) {
      sampleError(id, grad, params);
      stats_[id].errorSampleStep = step.step;
    }
    if (accumulating && layer.policyIndex >= 0) {
      AccumulatingCompressor recorder(
          layer.sender(), policy_->window(static_cast<size_t>(layer.policyIndex), layer.numel),
          options_.layerwise.windowSum, policy_->windowSteps() == 1);
      layer.feedback->encode(static_cast<LayerId>(id), grad, recorder, params, step, layer.payload);
    } else {
      layer.feedback->encode(static_cast<LayerId>(id), grad, layer.sender(), params, step,
                             layer.payload);
    }
    encodedBytes_ += layer.payload.wireBytes();
    stats_[id].payloadBytes += layer.payload.wireBytes();
    layer.encodedStep = step.step;
  }
  encodeSeconds_ += encodeClock.seconds();
}

void CompressionEngine::exchange(const std::vector<size_t>& layers,
                                 const std::vector<at::Tensor>& grads,
                                 const at::Tensor& flat,
                                 const StepInfo& step) {
  checkBucket(layers, grads);
  const int worldSize = comm_.worldSize();
  if (step.step < options_.startStep) {
    syncDense(layers, grads, flat);
    return;
  }
  std::vector<size_t> dense;
  std::vector<at::Tensor> denseGrads;
  std::map<AggregatorKind, std::vector<size_t>> compressed;  // positions into `layers`
  std::vector<size_t> lowRank;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& layer = *state_[layers[i]];
    switch (layer.method.route) {
      case LayerMethod::Route::kDense:
        dense.push_back(layers[i]);
        denseGrads.push_back(grads[i]);
        break;
      case LayerMethod::Route::kCompressed:
        TW_CHECK(layer.encodedStep == step.step, "CompressionEngine::exchange: layer '",
                 layers_[layers[i]].name, "' was not encoded for step ", step.step,
                 " (encode() must run first)");
        compressed[layer.aggregator].push_back(i);
        break;
      case LayerMethod::Route::kLowRank:
        lowRank.push_back(i);
        break;
    }
  }
  // Dense layers ride in the compressed group's collective when that saves a round
  // (Note [Dense riders]).
  std::vector<size_t> riders;  // positions into `layers`
  if (compressed.size() == 1 && !dense.empty() && worldSize > 1) {
    const AggregatorKind kind = compressed.begin()->first;
    int64_t denseBytes = 0, groupBytes = 0;
    for (const at::Tensor& g : denseGrads) denseBytes += g.numel() * 4;
    for (size_t i : compressed.begin()->second) {
      groupBytes += state_[layers[i]]->payload.wireBytes();
    }
    if (kind == AggregatorKind::kTwoPhase ||
        (kind == AggregatorKind::kAllgather && denseBytes <= groupBytes)) {
      for (size_t i = 0; i < layers.size(); ++i) {
        if (state_[layers[i]]->method.route == LayerMethod::Route::kDense) riders.push_back(i);
      }
      dense.clear();
      denseGrads.clear();
    }
  }
  {
    Timeline::Span span(dense.empty() ? nullptr : options_.timeline, "communicate", "comm");
    syncDense(dense, denseGrads, dense.size() == layers.size() ? flat : at::Tensor());
  }

  for (auto& [kind, positions] : compressed) {
    std::vector<AggregationTask> tasks;
    tasks.reserve(positions.size());
    for (size_t i : positions) {
      const size_t id = layers[i];
      Layer& layer = *state_[id];
      AggregationTask task;
      task.layer = static_cast<LayerId>(id);
      task.compressor = &layer.sender();
      task.params = paramsAt(id, step);
      task.payload = std::move(layer.payload);
      task.output = grads[i].view({-1});
      tasks.push_back(std::move(task));
    }
    const size_t ownTasks = tasks.size();
    for (size_t i : riders) {
      const size_t id = layers[i];
      Layer& layer = *state_[id];
      Compressor& rider = kind == AggregatorKind::kTwoPhase
                              ? static_cast<Compressor&>(*riderChunked_)
                              : static_cast<Compressor&>(*riderIdentity_);
      AggregationTask task;
      task.layer = static_cast<LayerId>(id);
      task.compressor = &rider;
      task.output = grads[i].view({-1});
      // The payload copies the gradient (and zeroes it, which the aggregator overwrites anyway).
      rider.compress(task.output, at::Tensor(), 1.0f, layer.payload, task.params);
      exchangedBytes_ += layer.payload.wireBytes();
      task.payload = std::move(layer.payload);
      tasks.push_back(std::move(task));
    }
    {
      Timeline::Span span(options_.timeline, "communicate", "comm");
      aggregators_[static_cast<size_t>(kind)]->run(tasks, comm_, options_.timeout);
    }
    Timeline::Span decodeSpan(options_.timeline, "decompress", "codec");
    Stopwatch decodeClock;
    for (size_t t = 0; t < tasks.size(); ++t) {
      const size_t id = t < ownTasks ? layers[positions[t]] : layers[riders[t - ownTasks]];
      Layer& layer = *state_[id];
      if (t < ownTasks) layer.feedback->decode(static_cast<LayerId>(id), tasks[t].output, step);
      stats_[id].bytesSent += tasks[t].bytesSent;
      layer.payload = std::move(tasks[t].payload);
      layer.encodedStep = -1;
    }
    decodeSeconds_ += decodeClock.seconds();
  }

  if (!lowRank.empty()) {
    if (accumulateStep_ == step.step) {
      // L-GreCo window: PowerSGD compensates inside run(), so M = grad + e is formed here from
      // its residuals (a copy of its state, on the accumulating rank during the window only).
      const StateDict residuals = powerSgd_->state();
      for (size_t i : lowRank) {
        const Layer& layer = *state_[layers[i]];
        if (layer.policyIndex < 0) continue;
        at::Tensor& sum = policy_->window(static_cast<size_t>(layer.policyIndex), layer.numel);
        sum.add_(grads[i].view({-1}));
        auto found = residuals.find(std::to_string(layers[i]) + ".e");
        // Note [Window sum]: kDemand counts the backlog at the window's first step only.
        const bool backlog = options_.layerwise.windowSum == LayerwiseWindowSum::kCompensated ||
                             policy_->windowSteps() == 1;
        if (found != residuals.end() && backlog) sum.add_(found->second.view({-1}));
      }
    }
    std::vector<LowRankTask> tasks;
    for (size_t i : lowRank) {
      const size_t id = layers[i];
      const Layer& layer = *state_[id];
      LowRankTask task;
      task.layer = static_cast<LayerId>(id);
      task.grad = grads[i].view({layer.rows, layer.cols});
      task.rank = layer.method.lowRank;
      tasks.push_back(std::move(task));
    }
    {
      Timeline::Span span(options_.timeline, "communicate", "comm");
      powerSgd_->run(tasks, step, comm_, options_.timeout);
    }
    for (size_t t = 0; t < tasks.size(); ++t) {
      const size_t id = layers[lowRank[t]];
      stats_[id].bytesSent += tasks[t].bytesSent;
      exchangedBytes_ += tasks[t].bytesSent * worldSize / std::max(1, 2 * (worldSize - 1));
      const Layer& layer = *state_[id];
      stats_[id].payloadBytes += lowRankPayloadBytes(layer.rows, layer.cols, tasks[t].rank);
    }
  }
}

std::string CompressionEngine::describe() const {
  std::map<std::string, std::vector<std::string>> byRoute;
  for (size_t l = 0; l < layers_.size(); ++l) byRoute[stats_[l].route].push_back(layers_[l].name);
  std::ostringstream out;
  bool first = true;
  for (const auto& [route, names] : byRoute) {
    if (!first) out << "; ";
    first = false;
    out << route << ": ";
    for (size_t i = 0; i < names.size(); ++i) out << (i ? ", " : "") << names[i];
  }
  return out.str();
}

StateDict CompressionEngine::state() const {
  StateDict state;
  for (size_t l = 0; l < state_.size(); ++l) {
    if (state_[l]->feedback) mergeWithPrefix(state, state_[l]->feedback->state(), "feedback");
  }
  for (size_t k = 0; k < aggregators_.size(); ++k) {
    mergeWithPrefix(state, aggregators_[k]->state(),
                    "aggregator." + toString(static_cast<AggregatorKind>(k)));
  }
  if (powerSgd_) mergeWithPrefix(state, powerSgd_->state(), "powersgd");
  if (policy_) mergeWithPrefix(state, policy_->state(), "layerwise");
  return state;
}

void CompressionEngine::loadState(const StateDict& state) {
  const StateDict feedback = extractPrefix(state, "feedback");
  for (size_t l = 0; l < state_.size(); ++l) {
    if (!state_[l]->feedback) continue;
    // Each layer's policy gets the entries of its own layer ("<layer>.<buffer>"); a layer that
    // had not been compressed yet when the checkpoint was written has none.
    const StateDict own = extractPrefix(feedback, std::to_string(l));
    StateDict prefixed;
    mergeWithPrefix(prefixed, own, std::to_string(l));
    state_[l]->feedback->loadState(prefixed);
  }
  for (size_t k = 0; k < aggregators_.size(); ++k) {
    aggregators_[k]->loadState(
        extractPrefix(state, "aggregator." + toString(static_cast<AggregatorKind>(k))));
  }
  if (powerSgd_) powerSgd_->loadState(extractPrefix(state, "powersgd"));
  if (policy_) {
    policy_->loadState(extractPrefix(state, "layerwise"));
    applyChoice();
  }
}

// Note [L-GreCo protocol]
// Everything happens in the first encode() of a step, on the encoding thread: the previous step's
// exchanges have all completed (the trainer waits for them before the optimizer step) and this
// step's first exchange waits for this encode, so the broadcast below is the only collective in
// flight and parameters change between steps, never inside one.
//   - At a solve step, rank 0 measures every policy layer's candidates on its window (the sums
//     of the compensated gradients of the `window` steps before) and solves; the choice, with
//     the report, is broadcast (int64, doubles bit-cast) and every rank applies it to its layer
//     methods before encoding this step. All ranks then clear their window.
//   - In the `window` steps before a solve, rank 0 adds what each policy layer's compressor is
//     given (AccumulatingCompressor; PowerSGD: grad + e in exchange()) to the window.
// Only rank 0 measures, so only it keeps a window; the other ranks' state has none.
void CompressionEngine::beginStep(const StepInfo& step) {
  policyStep_ = step.step;
  if (step.step >= options_.startStep) ++compressedSteps_;
  if (policy_->solvesAt(step.step)) resolve(step);
  if (comm_.rank() == 0 && step.step >= options_.startStep && policy_->accumulatesAt(step.step)) {
    accumulateStep_ = step.step;
    policy_->countWindowStep();
  }
}

void CompressionEngine::resolve(const StepInfo& step) {
  const size_t count = policy_->size();
  // [choice..., valid, feasible, size, default size, error bits, default error bits]
  at::Tensor message = at::zeros({static_cast<int64_t>(count) + 6}, at::kLong);
  int64_t* m = message.data_ptr<int64_t>();
  if (comm_.rank() == 0 && policy_->windowSteps() > 0) {
    std::vector<std::vector<int64_t>> sizes(count);
    std::vector<std::vector<double>> errors(count);
    for (size_t p = 0; p < count; ++p) measure(p, step, sizes[p], errors[p]);
    const LayerwiseSolution solution = policy_->solve(sizes, errors);
    for (size_t p = 0; p < count; ++p) m[p] = static_cast<int64_t>(solution.choice[p]);
    m[count] = 1;
    m[count + 1] = solution.feasible ? 1 : 0;
    m[count + 2] = solution.size;
    m[count + 3] = solution.defaultSize;
    m[count + 4] = doubleBits(solution.error);
    m[count + 5] = doubleBits(solution.defaultError);
  }
  if (comm_.worldSize() > 1) {
    comm_.broadcast(message, {.root = 0})->wait(options_.timeout);
  }
  policy_->clearWindow();
  if (m[count] == 0) return;  // nothing accumulated (a window before start_step): keep
  std::vector<size_t> choice(count);
  for (size_t p = 0; p < count; ++p) choice[p] = static_cast<size_t>(m[p]);
  LayerwiseReport report;
  report.solves = policy_->report().solves + 1;
  report.lastSolveStep = step.step;
  report.feasible = m[count + 1] != 0;
  report.predictedBytes = m[count + 2];
  report.defaultBytes = m[count + 3];
  report.predictedError = bitsDouble(m[count + 4]);
  report.defaultError = bitsDouble(m[count + 5]);
  policy_->apply(choice, report);
  applyChoice();
  bytesAtSolve_ = participantBytes();
  stepsAtSolve_ = compressedSteps_ - (step.step >= options_.startStep ? 1 : 0);
}

void CompressionEngine::measure(size_t participant,
                                const StepInfo& step,
                                std::vector<int64_t>& sizes,
                                std::vector<double>& errors) {
  const size_t id = participants_[participant];
  Layer& layer = *state_[id];
  const LayerwiseCandidates& candidates = policy_->candidates(participant);
  const at::Tensor& window = policy_->windowOf(participant);
  const at::Tensor sum = window.defined() ? window : at::zeros({layer.numel}, at::kFloat);
  const uint64_t seed = mix(mix(options_.seed ^ 0x6c677265636fULL, step.step), id);
  // Note [Relative error]: kRelative divides by the window's squared norm.
  double scale = 1.0;
  if (options_.layerwise.measure == LayerwiseErrorMeasure::kRelative) {
    const double norm2 = sum.to(at::kDouble).pow(2).sum().item<double>();
    if (norm2 > 0) scale = 1.0 / norm2;
  }
  if (candidates.family == LayerwiseFamily::kLowRank) {
    const int64_t maxRank = static_cast<int64_t>(candidates.values.back());
    const std::vector<double> lowRank = lowRankErrors(sum.view({layer.rows, layer.cols}), maxRank,
                                                      options_.layerwise.errorIterations, seed);
    const int64_t cap = std::min(layer.rows, layer.cols);
    for (double value : candidates.values) {
      const int64_t r = static_cast<int64_t>(value);
      // A rank above min(rows, cols) sends no more than the cap; one extra byte makes the
      // solver prefer the true rank.
      sizes.push_back(lowRankPayloadBytes(layer.rows, layer.cols, r) + (r > cap ? 1 : 0));
      errors.push_back(lowRank[static_cast<size_t>(r)] * scale);
    }
    return;
  }
  if (errorScratch_.numel() < layer.numel) errorScratch_ = at::empty({layer.numel}, at::kFloat);
  at::Tensor scratch = errorScratch_.narrow(0, 0, layer.numel);
  Payload payload;
  for (double value : candidates.values) {
    LayerParams params = layer.method.params;
    if (candidates.family == LayerwiseFamily::kTopK) params.ratio = value;
    if (candidates.family == LayerwiseFamily::kQuantize) params.bits = static_cast<int>(value);
    params.seed = seed;
    params.rankSeed = mix(seed, 1);
    scratch.copy_(sum);
    layer.compressor->compress(scratch, at::Tensor(), 1.0f, payload, params);
    sizes.push_back(payload.wireBytes());
    errors.push_back(scratch.to(at::kDouble).pow(2).sum().item<double>() * scale);
  }
}

void CompressionEngine::applyChoice() {
  for (size_t p = 0; p < participants_.size(); ++p) {
    Layer& layer = *state_[participants_[p]];
    const LayerwiseFamily family = policy_->candidates(p).family;
    const double value = policy_->value(p);
    switch (family) {
      case LayerwiseFamily::kTopK:
        layer.method.params.ratio = value;
        break;
      case LayerwiseFamily::kQuantize:
        layer.method.params.bits = static_cast<int>(value);
        break;
      case LayerwiseFamily::kLowRank:
        layer.method.lowRank = static_cast<int>(value);
        break;
    }
    stats_[participants_[p]].setting = describeSetting(family, value);
  }
}

int64_t CompressionEngine::participantBytes() const {
  int64_t total = 0;
  for (size_t id : participants_) total += stats_[id].payloadBytes;
  return total;
}

LayerwiseStatus CompressionEngine::layerwiseStatus() const {
  TW_CHECK(policy_ != nullptr, "CompressionEngine::layerwiseStatus: no L-GreCo policy");
  LayerwiseStatus status;
  status.report = policy_->report();
  for (size_t p = 0; p < participants_.size(); ++p) {
    const size_t id = participants_[p];
    const Layer& layer = *state_[id];
    status.layers.push_back(layers_[id].name);
    status.settings.push_back(stats_[id].setting);
    const LayerwiseCandidates& c = policy_->candidates(p);
    const double value = c.values[c.defaultIndex];
    switch (c.family) {
      case LayerwiseFamily::kTopK:
      case LayerwiseFamily::kQuantize: {
        LayerParams params = layer.method.params;
        if (c.family == LayerwiseFamily::kTopK) params.ratio = value;
        if (c.family == LayerwiseFamily::kQuantize) params.bits = static_cast<int>(value);
        status.uniformBytesPerStep += layer.compressor->maxPayloadBytes(layer.numel, params);
        break;
      }
      case LayerwiseFamily::kLowRank:
        status.uniformBytesPerStep +=
            lowRankPayloadBytes(layer.rows, layer.cols, static_cast<int64_t>(value));
        break;
    }
  }
  const int64_t steps = compressedSteps_ - stepsAtSolve_;
  if (steps > 0) {
    status.measuredBytesPerStep =
        static_cast<double>(participantBytes() - bytesAtSolve_) / static_cast<double>(steps);
  }
  return status;
}

}  // namespace thinwire::compressors

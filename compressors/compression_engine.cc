#include "compressors/compression_engine.h"

#include <ATen/ATen.h>

#include <cmath>
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
  if (anyLowRank) {
    PowerSgdOptions powerOptions;
    powerOptions.warmStart = options_.powerSgdWarmStart;
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
  const int worldSize = comm_.worldSize();
  for (const at::Tensor& grad : grads) {
    denseEquivalentBytes_ += ringAllreduceBytes(grad.numel() * 4, worldSize);
  }
  if (step.step < options_.startStep) return;
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
    layer.feedback->encode(static_cast<LayerId>(id), grad, layer.sender(), params, step,
                           layer.payload);
    encodedBytes_ += layer.payload.wireBytes();
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
  syncDense(dense, denseGrads, dense.size() == layers.size() ? flat : at::Tensor());

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
    aggregators_[static_cast<size_t>(kind)]->run(tasks, comm_, options_.timeout);
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
    powerSgd_->run(tasks, step, comm_, options_.timeout);
    for (size_t t = 0; t < tasks.size(); ++t) {
      const size_t id = layers[lowRank[t]];
      stats_[id].bytesSent += tasks[t].bytesSent;
      exchangedBytes_ += tasks[t].bytesSent * worldSize / std::max(1, 2 * (worldSize - 1));
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
}

}  // namespace thinwire::compressors

#include "core/grad_sync.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "base/error.h"
#include "base/timer.h"
#include "comm/heartbeat.h"
#include "core/nonfinite.h"

namespace thinwire::core {

GradSync::GradSync(std::vector<optim::NamedParameter> parameters,
                   comm::Communicator& comm,
                   GradSyncOptions options)
    : parameters_(std::move(parameters)),
      comm_(comm),
      options_(options),
      slots_(parameters_.size()) {
  TW_CHECK(options_.bucketBytes > 0, "bucket size must be > 0 bytes, got ", options_.bucketBytes);
  // Reverse registration order: the last layers' gradients arrive first in backward.
  std::vector<int64_t> sizes;
  for (size_t k = parameters_.size(); k-- > 0;) {
    const at::Tensor& p = parameters_[k].tensor;
    TW_CHECK(p.scalar_type() == at::kFloat, "parameter '", parameters_[k].name, "' has dtype ",
             p.scalar_type(), "; gradient buckets hold float32");
    const int64_t bytes = p.numel() * 4;
    // A bucket closes once it holds at least bucketBytes (a large parameter joins the small
    // ones before it rather than leaving them a bucket of their own): every bucket costs a
    // collective's start-up latency, which a slow link makes expensive.
    if (buckets_.empty() || sizes.back() >= options_.bucketBytes) {
      buckets_.emplace_back();
      sizes.push_back(0);
    }
    Bucket& bucket = buckets_.back();
    slots_[k] = Slot{static_cast<int64_t>(buckets_.size() - 1), sizes.back() / 4, false};
    bucket.parameters.push_back(k);
    sizes.back() += bytes;
  }
  for (size_t b = 0; b < buckets_.size(); ++b) {
    buckets_[b].flat = at::zeros({sizes[b] / 4}, at::kFloat);
  }
  if (options_.engine != nullptr && options_.enabled) {
    encodeQueue_ = std::make_unique<comm::OpQueue>(
        comm::OpQueueOptions{.name = "gradient encode", .errorRank = comm_.rank()});
    syncQueue_ = std::make_unique<comm::OpQueue>(
        comm::OpQueueOptions{.name = "gradient sync", .errorRank = comm_.rank()});
  }
  if (!options_.enabled || (comm_.worldSize() == 1 && options_.engine == nullptr)) return;
  for (size_t k = 0; k < parameters_.size(); ++k) {
    hookHandles_.push_back(parameters_[k].tensor.register_hook(
        [this, k](const at::Tensor& grad) { onGradient(k, grad); }));
  }
}

GradSync::~GradSync() {
  for (size_t k = 0; k < hookHandles_.size(); ++k) {
    parameters_[k].tensor.remove_hook(hookHandles_[k]);
  }
}

void GradSync::prepare(bool synchronize, const compressors::StepInfo& step) {
  TW_ASSERT(!inFlight_, "prepare() called while a synchronising backward is unfinished");
  armed_ = synchronize && options_.enabled && (comm_.worldSize() > 1 || options_.engine != nullptr);
  step_ = step;
  if (!armed_) return;
  for (auto& slot : slots_) slot.ready = false;
  for (auto& bucket : buckets_) {
    bucket.pending = static_cast<int64_t>(bucket.parameters.size());
    bucket.work.reset();
  }
  nextLaunch_ = 0;
  localNonFinite_ = false;
  inFlight_ = true;
}

void GradSync::noteFinite(const at::Tensor& values) {
  if (options_.checkFinite && !localNonFinite_ && !allFinite({values})) localNonFinite_ = true;
}

void GradSync::activity(const std::string& text) const {
  if (options_.onActivity) options_.onActivity(text);
}

void GradSync::onGradient(size_t index, const at::Tensor& grad) {
  if (!armed_) return;
  Slot& slot = slots_[index];
  TW_ASSERT(!slot.ready, "gradient of '", parameters_[index].name,
            "' arrived twice in one backward");
  Bucket& bucket = buckets_[slot.bucket];
  const at::Tensor& param = parameters_[index].tensor;
  at::Tensor target = bucket.flat.narrow(0, slot.offset, param.numel()).view(param.sizes());
  {
    at::NoGradGuard noGrad;
    // The hook sees this backward's contribution; earlier micro-steps sit in .grad() already.
    const at::Tensor& accumulated = param.grad();
    if (accumulated.defined()) {
      at::add_out(target, accumulated, grad);
    } else {
      target.copy_(grad);
    }
  }
  noteFinite(target);
  slot.ready = true;
  --bucket.pending;
  // An engine's encode() updates feedback state, so with the check on it must wait for the
  // agreement in finish(). See Note [Non-finite gradients].
  const bool deferEncode = options_.checkFinite && options_.engine != nullptr;
  if (options_.overlap && !deferEncode) launchReadyBuckets(/*force=*/false);
}

void GradSync::fillUnready(Bucket& bucket) {
  if (bucket.pending == 0) return;
  at::NoGradGuard noGrad;
  for (size_t k : bucket.parameters) {
    Slot& slot = slots_[k];
    if (slot.ready) continue;
    at::Tensor target = bucket.flat.narrow(0, slot.offset, parameters_[k].tensor.numel());
    const at::Tensor& accumulated = parameters_[k].tensor.grad();
    if (accumulated.defined()) {
      target.copy_(accumulated.reshape({-1}));
      noteFinite(target);
    } else {
      target.zero_();
    }
    slot.ready = true;
  }
  bucket.pending = 0;
}

void GradSync::launchReadyBuckets(bool force) {
  while (nextLaunch_ < buckets_.size()) {
    Bucket& bucket = buckets_[nextLaunch_];
    if (bucket.pending > 0) {
      if (!force) return;
      // See Note [Bucket order]: unused parameters contribute zeros.
      fillUnready(bucket);
    }
    if (force) {
      ++stats_.bucketsLaunchedLate;
    } else {
      ++stats_.bucketsLaunchedEarly;
    }
    launch(bucket);
    ++nextLaunch_;
  }
}

void GradSync::launch(Bucket& bucket) {
  if (options_.engine == nullptr) {
    bucket.work = comm_.allreduce(bucket.flat, {.op = comm::ReduceOp::kAverage});
    stats_.bytesSent += bucket.flat.numel() * 4;
    const int64_t n = comm_.worldSize();
    stats_.wireBytes += 2 * (n - 1) * bucket.flat.numel() * 4 / n;
    return;
  }
  // See Note [Compressed buckets]. The engine reads and writes only this bucket's buffer.
  std::vector<at::Tensor> grads;
  for (size_t k : bucket.parameters) {
    grads.push_back(bucket.flat.narrow(0, slots_[k].offset, parameters_[k].tensor.numel()));
  }
  compressors::CompressionEngine* engine = options_.engine;
  std::vector<size_t> layers = bucket.parameters;
  at::Tensor flat = bucket.flat;
  const compressors::StepInfo step = step_;
  const std::string tensors = std::to_string(layers.size()) + " tensors";
  std::shared_ptr<comm::Work> encoded =
      encodeQueue_->submit("gradient encode of " + tensors,
                           [engine, layers, grads, step] { engine->encode(layers, grads, step); });
  // The exchange waits for its encode; that wait is bounded like a collective, and an encode
  // that failed rethrows here, so the bucket's Work carries the error to finish().
  const std::chrono::milliseconds timeout = options_.timeout;
  bucket.work = syncQueue_->submit(
      "compressed gradient sync of " + tensors,
      [engine, layers = std::move(layers), grads = std::move(grads), flat, step, encoded, timeout] {
        encoded->wait(timeout);
        engine->exchange(layers, grads, flat, step);
      });
}

bool GradSync::finish(const BucketDone& onBucketDone) {
  if (!armed_) return false;
  nonFiniteRanks_.clear();
  // A compressed bucket runs several collectives, each bounded by the timeout on the sync
  // thread; this outer bound only has to exceed their sum.
  const std::chrono::milliseconds bucketTimeout =
      options_.engine != nullptr ? options_.timeout * 16 : options_.timeout;
  const std::string stepText = " step " + std::to_string(step_.step + 1);
  if (options_.checkFinite) {
    // See Note [Non-finite gradients]. Plain buckets are all on the wire before the agreement,
    // so every rank issues the same collectives in the same order whatever launched early.
    if (options_.engine == nullptr) {
      launchReadyBuckets(/*force=*/true);
    } else {
      for (auto& bucket : buckets_) fillUnready(bucket);
    }
    activity(std::string(comm::kCollectiveActivity) + "non-finite gradient check" + stepText);
    nonFiniteRanks_ = agreeOnNonFinite(comm_, localNonFinite_, options_.timeout);
    if (!nonFiniteRanks_.empty()) {
      for (size_t b = 0; b < nextLaunch_; ++b) buckets_[b].work->wait(bucketTimeout);
      armed_ = false;
      inFlight_ = false;
      return true;
    }
  }
  launchReadyBuckets(/*force=*/true);
  at::NoGradGuard noGrad;
  const std::string kind =
      options_.engine != nullptr ? "compressed gradient sync bucket " : "allreduce bucket ";
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    activity(std::string(comm::kCollectiveActivity) + kind + std::to_string(b) + " of " +
             std::to_string(buckets_.size()) + stepText);
    Stopwatch watch;
    {
      Timeline::Span span(options_.engine == nullptr ? options_.timeline : nullptr, "communicate",
                          "comm");
      bucket.work->wait(bucketTimeout);
    }
    stats_.waitSeconds += watch.seconds();
    for (size_t k : bucket.parameters) {
      at::Tensor& param = parameters_[k].tensor;
      at::Tensor averaged =
          bucket.flat.narrow(0, slots_[k].offset, param.numel()).view(param.sizes());
      if (param.grad().defined()) {
        param.mutable_grad().copy_(averaged);
      } else {
        param.mutable_grad() = averaged.clone();
      }
    }
    if (onBucketDone) onBucketDone(bucket.parameters);
  }
  armed_ = false;
  inFlight_ = false;
  if (options_.engine != nullptr) {
    stats_.bytesSent = options_.engine->payloadBytes();
    stats_.wireBytes = options_.engine->bytesSent();
  }
  return true;
}

}  // namespace thinwire::core

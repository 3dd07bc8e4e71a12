#include "core/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <thread>

#include "base/error.h"
#include "base/timer.h"
#include "comm/heartbeat.h"
#include "core/checkpoint.h"
#include "core/compression_plan.h"
#include "core/control_plane.h"
#include "core/data/dataset.h"
#include "core/data/distributed_sampler.h"
#include "core/data/text_dataset.h"
#include "core/device_placement.h"
#include "core/metrics.h"
#include "core/models/model.h"
#include "core/nonfinite.h"
#include "optim/grad_clip.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"

namespace thinwire::core {

std::string runDirectory(const Config& config) {
  return (std::filesystem::path(config.run.outputDir) / config.run.name).string();
}

namespace {

// `comm` is where an optimizer that owns communication (1-bit Adam) runs its collectives.
optim::OptimizerOptions optimizerOptions(const OptimConfig& config,
                                         comm::Communicator& comm,
                                         std::chrono::milliseconds timeout) {
  return {.kind = optim::parseOptimizerKind(config.name),
          .momentum = config.momentum,
          .nesterov = config.nesterov,
          .weightDecay = config.weightDecay,
          .beta1 = config.beta1,
          .beta2 = config.beta2,
          .eps = config.eps,
          .freezeStep = config.freezeStep,
          .biasCorrection = config.biasCorrection,
          .momentumMask = config.momentumMask,
          .preconditioned = config.onebitPreconditioned,
          .communicator = &comm,
          .commTimeout = timeout};
}

// "topk+ef", "sign+ef", "powersgd": the summary's method name for a compressed run.
std::string compressionMethodName(const Config& config) {
  const CompressionConfig& c = config.compression;
  if (c.method == "powersgd" || c.method == "none") return c.method;
  return c.method + "+" + c.feedback;
}

optim::LrScheduleOptions scheduleOptions(const Config& config) {
  const ScheduleConfig& s = config.optim.schedule;
  return {.kind = optim::parseScheduleKind(s.name),
          .baseLr = config.optim.lr,
          .warmupSteps = s.warmupSteps,
          .totalSteps = config.train.steps,
          .minLrRatio = s.minLrRatio,
          .stepSize = s.stepSize,
          .gamma = s.gamma};
}

// Cross-entropy of logits [n, C] against labels [n], or of logits [n, T, C] against labels
// [n, T] token by token (a language model's next-token loss).
at::Tensor crossEntropy(const at::Tensor& logits,
                        const at::Tensor& labels,
                        at::Reduction::Reduction reduction) {
  if (logits.dim() == 3) {
    return at::cross_entropy_loss(logits.reshape({-1, logits.size(2)}), labels.reshape({-1}), {},
                                  reduction);
  }
  return at::cross_entropy_loss(logits, labels, {}, reduction);
}

// Predictions that match their label (the argmax over the last dimension).
double correctCount(const at::Tensor& logits, const at::Tensor& labels) {
  return logits.argmax(-1).eq(labels).sum().item<double>();
}

}  // namespace

bool overlapEnabled(const std::string& mode,
                    int ranksOnThisHost,
                    int64_t threadsPerRank,
                    int cores) {
  if (mode == "on") return true;
  if (mode == "off") return false;
  TW_CHECK(mode == "auto", "comm.overlap must be one of auto|on|off, got '", mode, "'");
  const int available = cores > 0 ? cores : static_cast<int>(std::thread::hardware_concurrency());
  return static_cast<int64_t>(ranksOnThisHost) * (threadsPerRank + 1) <= available;
}

namespace {

std::chrono::milliseconds timeoutOf(const CommConfig& config) {
  return std::chrono::milliseconds(static_cast<int64_t>(config.timeoutS * 1000.0));
}

}  // namespace

struct Trainer::State {
  State(const Config& c, comm::Communicator& comm, Logger& log, TrainerOptions options)
      : config(c),
        comm(comm),
        log(log),
        train(makeDataset(c.data, Split::kTrain, c.run.seed, c.model.seqLen)),
        test(makeDataset(c.data, Split::kTest, c.run.seed, c.model.seqLen)),
        model(placeModel(
            makeModel(c.model, train->sampleShape(), train->numClasses(), c.run.seed, c.qat),
            trainingDevice(c.train))),
        sampler({.datasetSize = train->size(),
                 .batchPerRank = c.train.batchPerRank,
                 .rank = comm.rank(),
                 .worldSize = comm.worldSize(),
                 .seed = c.run.seed}),
        schedule(scheduleOptions(c)),
        timeout(timeoutOf(c.comm)),
        stopRequested(options.stopRequested) {
    for (const auto& item : model->named_parameters(/*recurse=*/true)) {
      parameters.push_back({item.key(), item.value()});
    }
    optimizer = optim::makeOptimizer(parameters, optimizerOptions(c.optim, comm, timeout));
    plane = std::make_unique<ControlPlane>(
        comm,
        controlPlaneOptions(c, runDirectory(c), options.ranksOnThisHost, options.onPeerFailure),
        log);
    if (options.gradientFault) {
      // Registered before GradSync's hooks, so sync sees the altered gradient.
      for (auto& p : parameters) {
        p.tensor.register_hook([this, fault = options.gradientFault, name = p.name](
                                   const at::Tensor& grad) { return fault(step, name, grad); });
      }
    }
    if (compressionEnabled(c)) {
      compressors::CompressionEngineOptions plan = compressionPlan(c, parameters, timeout);
      plan.timeline = plane->timeline();
      engine = std::make_unique<compressors::CompressionEngine>(layerSpecs(parameters), comm,
                                                                std::move(plan));
    }
    sync = std::make_unique<GradSync>(
        parameters, comm,
        GradSyncOptions{.bucketBytes = static_cast<int64_t>(c.comm.bucketMb * 1024 * 1024),
                        .overlap = overlapEnabled(c.comm.overlap, options.ranksOnThisHost,
                                                  c.train.threads, options.cores),
                        .enabled = c.comm.gradientSync,
                        .timeout = timeout,
                        .engine = engine.get(),
                        .checkFinite = nonfinite != NonFinitePolicy::kOff,
                        .onActivity = [this](const std::string& a) { plane->setActivity(a); },
                        .timeline = plane->timeline()});
  }

  // The ranks whose gradients of this step hold NaN/Inf, identical on every rank (collective
  // unless the check is off). `synchronised`: GradSync checked and agreed already.
  std::vector<int> nonFiniteRanks(bool synchronised) {
    if (nonfinite == NonFinitePolicy::kOff) return {};
    if (synchronised) return sync->nonFiniteRanks();
    std::vector<at::Tensor> grads;
    for (const auto& p : parameters) grads.push_back(p.tensor.grad());
    const bool local = !allFinite(grads);
    plane->setActivity(std::string(comm::kCollectiveActivity) + "non-finite gradient check step " +
                       std::to_string(step + 1));
    return agreeOnNonFinite(comm, local, timeout);
  }

  void broadcastModel() {
    // Detached views share storage but carry no autograd state: the communicator writes them
    // from its own thread, where this thread's no-grad mode does not apply.
    std::vector<at::Tensor> targets;
    for (auto& p : parameters) targets.push_back(p.tensor.detach());
    for (auto& b : model->buffers(true)) targets.push_back(b.detach());
    std::vector<std::unique_ptr<comm::Work>> works;
    for (auto& t : targets) works.push_back(comm.broadcast(t, {.root = 0}));
    for (auto& w : works) w->wait(timeout);
  }

  // Sums `values` over ranks (float32 on the wire) and returns them as doubles.
  std::vector<double> sumOverRanks(const std::vector<double>& values) {
    at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::kFloat);
    for (size_t i = 0; i < values.size(); ++i) t[static_cast<int64_t>(i)] = values[i];
    comm.allreduce(t, {.op = comm::ReduceOp::kSum})->wait(timeout);
    std::vector<double> out(values.size());
    for (size_t i = 0; i < values.size(); ++i) out[i] = t[static_cast<int64_t>(i)].item<float>();
    return out;
  }

  StateDict sharedState(int64_t step) const {
    StateDict state;
    StateDict modelState;
    for (const auto& item : model->named_parameters(true)) modelState[item.key()] = item.value();
    for (const auto& item : model->named_buffers(true)) modelState[item.key()] = item.value();
    mergeWithPrefix(state, modelState, "model");
    mergeWithPrefix(state, optimizer->state(), "optim");
    state["trainer.step"] = scalarTensor(step);
    state["trainer.world_size"] = scalarTensor(static_cast<int64_t>(comm.worldSize()));
    return state;
  }

  StateDict rankState() const {
    StateDict state;
    auto generator = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      state["rng.cpu"] = generator.get_state();
    }
    if (engine) mergeWithPrefix(state, engine->state(), "compression");
    mergeWithPrefix(state, optimizer->rankState(), "optim");
    return state;
  }

  void saveCheckpoint(int64_t step) {
    const std::string root = runDirectory(config) + "/checkpoints";
    const std::string dir = pendingCheckpointDir(root, step);
    if (comm.rank() == 0) writeStateFile(sharedStateFile(dir), sharedState(step));
    writeStateFile(rankStateFile(dir, comm.rank()), rankState());
    comm.barrier()->wait(timeout);
    if (comm.rank() == 0) {
      const std::string committed = commitCheckpoint(root, step, config.train.checkpointKeep);
      log.info("checkpoint written: ", committed);
    }
    comm.barrier()->wait(timeout);
  }

  // Per-layer compression statistics: route, wire bytes so far, last sampled relative error.
  JsonRecord compressionRecord(int64_t step) const {
    JsonRecord layers;
    const auto& stats = engine->layerStats();
    for (size_t l = 0; l < stats.size(); ++l) {
      JsonRecord layer = JsonRecord()
                             .add("route", stats[l].route)
                             .add("bytes_sent", stats[l].bytesSent)
                             .add("relative_error", stats[l].relativeError);
      if (!stats[l].setting.empty()) layer.add("setting", stats[l].setting);
      layers.add(engine->layers()[l].name, layer);
    }
    JsonRecord record = JsonRecord()
                            .add("kind", "compression")
                            .add("step", step)
                            .add("wire_bytes", engine->bytesSent())
                            .add("dense_equivalent_bytes", engine->denseEquivalentBytes())
                            .add("layers", layers);
    if (engine->adaptive()) record.add("layerwise", layerwiseRecord());
    return record;
  }

  // L-GreCo's decision: per-layer settings, predicted and measured payload bytes per step of the
  // layers it sets, and the total squared error of the choice against the uniform setting's (on
  // the last solve's window).
  JsonRecord layerwiseRecord() const {
    const compressors::LayerwiseStatus status = engine->layerwiseStatus();
    JsonRecord settings;
    for (size_t l = 0; l < status.layers.size(); ++l) {
      settings.add(status.layers[l], status.settings[l]);
    }
    const compressors::LayerwiseReport& r = status.report;
    return JsonRecord()
        .add("solves", r.solves)
        .add("last_solve_step", r.lastSolveStep)
        .add("feasible", r.feasible)
        .add("settings", settings)
        .add("predicted_bytes_per_step",
             r.solves > 0 ? r.predictedBytes : status.uniformBytesPerStep)
        .add("uniform_bytes_per_step", status.uniformBytesPerStep)
        .add("measured_bytes_per_step", status.measuredBytesPerStep)
        .add("error", r.predictedError)
        .add("uniform_error", r.defaultError)
        .add("error_vs_uniform", r.defaultError > 0 ? r.predictedError / r.defaultError : 1.0);
  }

  // Returns the step to continue from (0 for a fresh start).
  int64_t maybeResume(std::string& resumedFrom) {
    if (config.train.resume == "never") return 0;
    std::string dir;
    if (config.train.resume == "auto") {
      auto latest = latestCheckpoint(runDirectory(config) + "/checkpoints");
      if (!latest) return 0;
      dir = *latest;
    } else {
      dir = config.train.resume;
      if (!std::filesystem::is_directory(dir)) {
        TW_THROW(DataError, "train.resume: checkpoint directory '", dir, "' does not exist");
      }
    }
    StateDict shared = readStateFile(sharedStateFile(dir));
    StateDict modelState = extractPrefix(shared, "model");
    {
      at::NoGradGuard noGrad;
      auto load = [&](const std::string& name, at::Tensor& target) {
        const at::Tensor& saved = requireEntry(modelState, name);
        if (!saved.sizes().equals(target.sizes())) {
          TW_THROW(DataError, "checkpoint '", dir, "': '", name, "' has shape ", saved.sizes(),
                   " but the model has ", target.sizes(), " (was it written by another model?)");
        }
        target.copy_(saved);
      };
      for (auto& item : model->named_parameters(true)) load(item.key(), item.value());
      for (auto& item : model->named_buffers(true)) load(item.key(), item.value());
    }
    optimizer->loadState(extractPrefix(shared, "optim"));
    const std::string rankFile = rankStateFile(dir, comm.rank());
    if (std::filesystem::exists(rankFile)) {
      StateDict own = readStateFile(rankFile);
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(requireEntry(own, "rng.cpu"));
      if (engine) engine->loadState(extractPrefix(own, "compression"));
      optimizer->loadRankState(extractPrefix(own, "optim"));
    } else if (engine) {
      TW_THROW(DataError, "checkpoint '", dir, "' has no state file for rank ", comm.rank(), " ('",
               rankFile,
               "'), so the compression state (error feedback) of this rank "
               "cannot be restored");
    }
    resumedFrom = dir;
    return requireEntry(shared, "trainer.step").item<int64_t>();
  }

  const Config& config;
  comm::Communicator& comm;
  Logger& log;
  std::unique_ptr<Dataset> train;
  std::unique_ptr<Dataset> test;
  std::shared_ptr<Model> model;
  DistributedSampler sampler;
  optim::LrSchedule schedule;
  std::chrono::milliseconds timeout;
  std::vector<optim::NamedParameter> parameters;
  std::unique_ptr<optim::Optimizer> optimizer;
  NonFinitePolicy nonfinite = parseNonFinitePolicy(config.train.nonfinite);
  int64_t step = 0;                     // the step being trained (0-based), for hooks
  std::function<bool()> stopRequested;  // TrainerOptions::stopRequested; may be empty
  std::unique_ptr<ControlPlane> plane;  // before engine and sync, which borrow its timeline
  std::unique_ptr<compressors::CompressionEngine> engine;  // null: plain averaging
  std::unique_ptr<GradSync> sync;

  // Gradient synchronisation plus the optimizer's own collectives (1-bit Adam's momentum).
  GradSyncStats commStats() const {
    GradSyncStats stats = sync->stats();
    const optim::OptimizerCommStats own = optimizer->commStats();
    stats.bytesSent += own.bytesSent;
    stats.wireBytes += own.wireBytes;
    return stats;
  }
};

Trainer::Trainer(const Config& config,
                 comm::Communicator& comm,
                 Logger& log,
                 TrainerOptions options)
    : state_(std::make_unique<State>(config, comm, log, options)) {}

Trainer::~Trainer() = default;

namespace {

struct EvalSums {
  double loss = 0, correct = 0, count = 0;
};

// Summed loss, correct predictions and predictions over samples rank, rank + worldSize, ...
EvalSums evaluationSums(
    Model& model, const Dataset& data, int64_t batchSize, int rank, int worldSize) {
  at::NoGradGuard noGrad;
  model.eval();
  EvalSums sums;
  std::vector<int64_t> indices;
  auto flush = [&] {
    if (indices.empty()) return;
    Batch batch = onModelDevice(model, data.batch(indices));
    at::Tensor logits = model.forward(batch.inputs);
    sums.loss += crossEntropy(logits, batch.labels, at::Reduction::Sum).item<double>();
    sums.correct += correctCount(logits, batch.labels);
    sums.count += static_cast<double>(batch.labels.numel());
    indices.clear();
  };
  for (int64_t i = rank; i < data.size(); i += worldSize) {
    indices.push_back(i);
    if (static_cast<int64_t>(indices.size()) == batchSize) flush();
  }
  flush();
  model.train();
  return sums;
}

EvalRecord evalRecord(int64_t step, const EvalSums& sums, const Dataset& data) {
  EvalRecord record;
  record.step = step;
  record.loss = sums.loss / sums.count;
  record.accuracy = sums.correct / sums.count;
  if (dynamic_cast<const TextDataset*>(&data) != nullptr) {
    record.text = true;
    record.perplexity = perplexity(record.loss);
    record.bitsPerByte = bitsPerByte(record.loss);
  }
  return record;
}

}  // namespace

EvalRecord evaluateModel(Model& model, const Dataset& data, int64_t batchSize) {
  TW_CHECK(batchSize >= 1, "evaluateModel needs batchSize >= 1, got ", batchSize);
  return evalRecord(0, evaluationSums(model, data, batchSize, 0, 1), data);
}

EvalRecord Trainer::evaluate(int64_t step) {
  State& s = *state_;
  const EvalSums sums = evaluationSums(*s.model, *s.test, s.config.train.evalBatch, s.comm.rank(),
                                       s.comm.worldSize());
  std::vector<double> totals = s.sumOverRanks({sums.loss, sums.correct, sums.count});
  return evalRecord(step, {.loss = totals[0], .correct = totals[1], .count = totals[2]}, *s.test);
}

void Trainer::reportXzBaseline(TrainResult& result) const {
  const State& s = *state_;
  const auto* train = dynamic_cast<const TextDataset*>(s.train.get());
  const auto* validation = dynamic_cast<const TextDataset*>(s.test.get());
  if (train == nullptr || validation == nullptr) return;
  Stopwatch clock;
  const XzBaseline xz = xzConditionalBitsPerByte(train->text(), validation->text());
  const double modelBpb = result.evals.back().bitsPerByte;
  if (!xz.available) {
    s.log.warn("xz baseline skipped: ", xz.note, "; model ", modelBpb, " bits per validation byte");
    return;
  }
  result.xzBitsPerByte = xz.bitsPerByte;
  char text[200];
  std::snprintf(text, sizeof(text),
                "validation bits per byte: model %.4f, xz -9e given the training text %.4f "
                "(ratio %.3f; xz took %.1f s)",
                modelBpb, xz.bitsPerByte, modelBpb / xz.bitsPerByte, clock.seconds());
  s.log.info(text);
}

double StepTimes::secondsPerStep() const {
  return steadySteps > 0 ? steadyTotal / static_cast<double>(steadySteps) : 0.0;
}

// The last metrics record of a run: what `bench/run.sh` and `bench/report.py` read (the same
// keys as the PyTorch peer's summary, bench/peers/ddp_train.py). Times are rank 0's.
namespace {

// The language-model part of the summary: final validation numbers and the xz baseline.
JsonRecord textSummary(const TrainResult& result) {
  JsonRecord record;
  const EvalRecord& last = result.evals.back();
  record.add("val_loss", last.loss)
      .add("val_perplexity", last.perplexity)
      .add("val_bits_per_byte", last.bitsPerByte);
  if (result.xzBitsPerByte > 0) {
    record.add("xz_bits_per_byte", result.xzBitsPerByte)
        .add("bpb_over_xz", last.bitsPerByte / result.xzBitsPerByte);
  }
  return record;
}

}  // namespace

JsonRecord Trainer::summaryRecord(const TrainResult& result, double wallSeconds) const {
  const State& s = *state_;
  const StepTimes& t = result.times;
  const int64_t steps = result.lastStep - result.startStep;
  const double perStep = 1.0 / static_cast<double>(std::max<int64_t>(1, steps));
  const double secondsPerStep = t.steadySteps > 0 ? t.secondsPerStep() : t.total * perStep;
  JsonRecord record;
  record.add("kind", "summary")
      .add("framework", "thinwire")
      .add("method", !s.config.comm.gradientSync            ? "floor"
                     : s.config.optim.name == "onebit_adam" ? "onebit_adam"
                     : s.engine                             ? compressionMethodName(s.config)
                                                            : "fp32")
      .add("ranks", s.comm.worldSize())
      .add("steps", steps)
      .add("batch_per_rank", s.config.train.batchPerRank)
      .add("seconds_per_step", secondsPerStep)
      .add("warmup_steps_excluded", t.steadySteps > 0 ? StepTimes::kWarmupStepsExcluded : 0)
      .add("times_per_step_s",
           JsonRecord()
               .add("data", t.data * perStep)
               .add("forward", t.forward * perStep)
               .add("backward", t.backward * perStep)
               .add("compress", s.engine ? s.engine->codecSeconds() * perStep : 0.0)
               .add("sync_wait", t.syncWait * perStep)
               .add("optimizer", t.optimizer * perStep))
      .add("final_test_accuracy", result.finalTestAccuracy)
      .add("final_test_loss", result.finalTestLoss)
      .add("bytes_sent_per_rank", result.sync.bytesSent)
      .add("wire_bytes_per_rank", result.sync.wireBytes)
      .add("wall_s", wallSeconds)
      .add("skipped_steps", result.skippedSteps);
  if (!result.evals.empty() && result.evals.back().text) record.add("text", textSummary(result));
  if (s.engine && s.engine->adaptive()) record.add("layerwise", s.layerwiseRecord());
  return record;
}

TrainResult Trainer::run() {
  State& s = *state_;
  const Config& config = s.config;
  const bool leader = s.comm.rank() == 0;
  TrainResult result;

  s.broadcastModel();
  result.startStep = s.maybeResume(result.resumedFrom);
  if (!result.resumedFrom.empty()) {
    if (leader) s.log.info("resumed from ", result.resumedFrom, " at step ", result.startStep);
  }

  MetricsWriter metrics({.path = leader ? runDirectory(config) + "/metrics.jsonl" : "",
                         .append = result.startStep > 0});
  ProgressLine progress({.total = config.train.steps,
                         .out = (leader && config.run.progress) ? &std::cerr : nullptr,
                         .interactive = isatty(STDERR_FILENO) != 0});
  if (leader) {
    int64_t parameterCount = 0;
    for (const auto& p : s.parameters) parameterCount += p.tensor.numel();
    s.log.info("train: ", s.train->describe(), "; model ", config.model.type, " with ",
               parameterCount, " parameters in ", s.sync->numBuckets(), " gradient buckets; ",
               s.comm.worldSize(), " ranks (", s.comm.backendName(), "), global batch ",
               config.train.batchPerRank * config.train.gradAccumulation * s.comm.worldSize(),
               "; overlap ", s.sync->overlapping() ? "on" : "off",
               " (comm.overlap: ", config.comm.overlap, ")");
    if (s.engine) s.log.info("compression: ", s.engine->describe());
    s.plane->publishStatus(statusRecord(config, s.comm.worldSize(), "training",
                                        JsonRecord().add("step", result.startStep))
                               .str());
  }

  const int64_t accumulation = config.train.gradAccumulation;
  const int64_t samplesPerStep = config.train.batchPerRank * accumulation * s.comm.worldSize();
  Stopwatch runClock;
  Stopwatch windowClock;
  int64_t windowSteps = 0;
  double lossSum = 0, correctSum = 0, seenSum = 0;
  int64_t step = result.startStep;
  int64_t lastStep = config.train.stopAfter > 0
                         ? std::min(config.train.stopAfter, config.train.steps)
                         : config.train.steps;
  for (; step < lastStep; ++step) {
    Stopwatch stepClock;
    s.step = step;
    const std::string stepText = " step " + std::to_string(step + 1);
    const double lr = s.schedule.lrAt(step);
    for (int64_t micro = 0; micro < accumulation; ++micro) {
      Stopwatch phase;
      Batch batch =
          onModelDevice(*s.model, s.train->batch(s.sampler.indices(step * accumulation + micro)));
      result.times.data += phase.seconds();
      phase.reset();
      s.plane->setActivity("forward" + stepText);
      std::optional<Timeline::Span> span(std::in_place, s.plane->timeline(), "forward", "compute");
      at::Tensor logits = s.model->forward(batch.inputs);
      at::Tensor loss = crossEntropy(logits, batch.labels, at::Reduction::Mean);
      span.reset();
      result.times.forward += phase.seconds();
      {
        at::NoGradGuard noGrad;
        lossSum += loss.item<double>() * static_cast<double>(batch.labels.numel());
        correctSum += correctCount(logits, batch.labels);
        seenSum += static_cast<double>(batch.labels.numel());
      }
      phase.reset();
      // An optimizer that owns communication (1-bit Adam after its warm-up) gets local
      // gradients: the trainer sends nothing for this step.
      const bool trainerSyncs = s.optimizer->syncMode() == optim::SyncMode::kTrainerAverages;
      s.sync->prepare(/*synchronize=*/micro + 1 == accumulation && trainerSyncs,
                      {.step = step,
                       .lr = lr,
                       .epoch = static_cast<double>(step * samplesPerStep) /
                                static_cast<double>(s.train->size()),
                       .worldSize = s.comm.worldSize()});
      s.plane->setActivity("backward" + stepText);
      span.emplace(s.plane->timeline(), "backward", "compute");
      (accumulation > 1 ? loss / static_cast<double>(accumulation) : loss).backward();
      span.reset();
      result.times.backward += phase.seconds();
    }
    // Note [Optimizer overlap]: each bucket's parameters are updated as soon as the bucket is
    // averaged, while later buckets are still on the wire. Clipping needs the global gradient
    // norm first, so it keeps the whole-model step.
    const bool stepPerBucket = config.train.clipGradNorm <= 0;
    size_t parametersStepped = 0;
    bool partsRefused = false;
    double bucketStepSeconds = 0;
    auto stepBucket = [&](const std::vector<size_t>& indices) {
      if (partsRefused) return;
      Timeline::Span span(s.plane->timeline(), "optimizer", "optim");
      Stopwatch watch;
      if (s.optimizer->stepParameters(lr, indices)) {
        parametersStepped += indices.size();
      } else {
        TW_ASSERT(parametersStepped == 0, "optimizer refused a part step after accepting one");
        partsRefused = true;
      }
      bucketStepSeconds += watch.seconds();
    };
    Stopwatch phase;
    const bool synchronised =
        s.sync->finish(stepPerBucket ? GradSync::BucketDone(stepBucket) : nullptr);
    result.times.syncWait += phase.seconds() - bucketStepSeconds;
    phase.reset();
    const std::vector<int> nonFinite = s.nonFiniteRanks(synchronised);
    s.plane->setActivity("optimizer" + stepText);
    if (!nonFinite.empty()) {
      const std::string message = nonFiniteMessage(step + 1, nonFinite, s.nonfinite);
      if (s.nonfinite == NonFinitePolicy::kStop) TW_THROW(core::NonFiniteGradientError, message);
      ++result.skippedSteps;
      if (leader) s.log.warn("step skipped: ", message);
    } else if (!synchronised || parametersStepped == 0) {
      Timeline::Span span(s.plane->timeline(), "optimizer", "optim");
      // Under kOptimizerOwned the gradients are local, so clipping bounds each rank's own
      // gradient norm (as DeepSpeed's engine does for 1-bit Adam).
      if (config.train.clipGradNorm > 0)
        optim::clipGradientNorm(s.parameters, config.train.clipGradNorm);
      s.optimizer->step(lr);
    } else {
      TW_ASSERT(parametersStepped == s.parameters.size(), "per-bucket steps covered ",
                parametersStepped, " of ", s.parameters.size(), " parameters");
    }
    for (auto& p : s.parameters) p.tensor.mutable_grad() = at::Tensor();
    result.times.optimizer += phase.seconds() + bucketStepSeconds;
    const double stepSeconds = stepClock.seconds();
    result.times.total += stepSeconds;
    if (step - result.startStep >= StepTimes::kWarmupStepsExcluded) {
      result.times.steadyTotal += stepSeconds;
      ++result.times.steadySteps;
    }
    ++windowSteps;

    const int64_t done = step + 1;
    bool last = done == lastStep;
    bool logNow = done % config.run.logEvery == 0 || last;
    std::vector<double> totals;  // the metrics sums over ranks, once summed
    const int64_t checkEvery = config.train.stopCheckEvery;
    if (!last && checkEvery > 0 && done % checkEvery == 0) {
      // Note [Stop requests]: every rank takes part, asked or not. On a metrics step the flag
      // rides in the metrics allreduce (elementwise, so the sums are the same).
      const double askedHere = s.stopRequested && s.stopRequested() ? 1.0 : 0.0;
      s.plane->setActivity(std::string(comm::kCollectiveActivity) +
                           (logNow ? "metrics allreduce" : "stop request agreement") + stepText);
      totals = s.sumOverRanks(logNow ? std::vector<double>{lossSum, correctSum, seenSum, askedHere}
                                     : std::vector<double>{askedHere});
      const double asked = totals.back();
      totals.pop_back();
      if (asked > 0) {
        // The loop ends here, as at train.stop_after: metrics record and checkpoint below.
        lastStep = done;
        last = true;
        logNow = true;
        result.stoppedOnRequest = true;
        if (leader) {
          progress.close();
          s.log.warn("stop requested on ", static_cast<int64_t>(asked), " of ", s.comm.worldSize(),
                     " ranks: every rank stops after step ", done, " with a checkpoint");
        }
      }
    }
    if (leader && s.engine && s.engine->adaptive() &&
        s.engine->layerwiseStatus().report.lastSolveStep == step) {
      metrics.write(s.layerwiseRecord().add("kind", "layerwise").add("step", done));
      const compressors::LayerwiseStatus status = s.engine->layerwiseStatus();
      std::string settings;
      for (size_t l = 0; l < status.layers.size(); ++l) {
        settings += (l ? ", " : "") + status.layers[l] + " " + status.settings[l];
      }
      s.log.info("L-GreCo at step ", step, ": ", settings, "; ", status.report.predictedBytes,
                 " payload bytes per step (uniform ", status.uniformBytesPerStep, "), error ",
                 status.report.predictedError / std::max(status.report.defaultError, 1e-300),
                 " x uniform");
    }
    if (logNow) {
      if (totals.empty()) {
        s.plane->setActivity(std::string(comm::kCollectiveActivity) + "metrics allreduce" +
                             stepText);
        totals = s.sumOverRanks({lossSum, correctSum, seenSum});
      }
      StepRecord record{
          .step = done, .loss = totals[0] / totals[2], .accuracy = totals[1] / totals[2], .lr = lr};
      result.steps.push_back(record);
      const double window = windowClock.seconds();
      const double samplesPerSecond =
          static_cast<double>(windowSteps * samplesPerStep) / std::max(window, 1e-9);
      if (leader) {
        const JsonRecord train = JsonRecord()
                                     .add("kind", "train")
                                     .add("step", done)
                                     .add("loss", record.loss)
                                     .add("accuracy", record.accuracy)
                                     .add("lr", lr)
                                     .add("samples_per_s", samplesPerSecond)
                                     .add("elapsed_s", runClock.seconds())
                                     .add("bytes_sent", s.commStats().bytesSent)
                                     .add("wire_bytes", s.commStats().wireBytes)
                                     .add("skipped_steps", result.skippedSteps);
        metrics.write(train);
        s.plane->publishStatus(statusRecord(config, s.comm.worldSize(), "training", train).str());
        char text[160];
        std::snprintf(text, sizeof(text), "loss %.4f | acc %.3f | lr %.3g | %.0f samples/s",
                      record.loss, record.accuracy, lr, samplesPerSecond);
        progress.update(done, text);
      }
      lossSum = correctSum = seenSum = 0;
      windowSteps = 0;
      windowClock.reset();
    }
    if (leader && s.engine && config.compression.errorEvery > 0 &&
        step % config.compression.errorEvery == 0 && step >= config.compression.startStep) {
      metrics.write(s.compressionRecord(done));
    }
    const bool evalNow = (config.train.evalEvery > 0 && done % config.train.evalEvery == 0) ||
                         done == config.train.steps;
    if (evalNow) {
      s.plane->setActivity("evaluation" + stepText);
      EvalRecord eval = evaluate(done);
      result.evals.push_back(eval);
      result.finalTestAccuracy = eval.accuracy;
      result.finalTestLoss = eval.loss;
      if (leader) {
        progress.close();
        JsonRecord record = JsonRecord()
                                .add("kind", "eval")
                                .add("step", done)
                                .add("loss", eval.loss)
                                .add("accuracy", eval.accuracy);
        if (eval.text) {
          record.add("perplexity", eval.perplexity).add("bits_per_byte", eval.bitsPerByte);
          s.log.info("eval at step ", done, ": validation loss ", eval.loss,
                     " nats/byte, perplexity ", eval.perplexity, ", ", eval.bitsPerByte,
                     " bits/byte");
        } else {
          s.log.info("eval at step ", done, ": test loss ", eval.loss, ", test accuracy ",
                     eval.accuracy);
        }
        metrics.write(record.add("elapsed_s", runClock.seconds()));
      }
      windowClock.reset();
      windowSteps = 0;
    }
    const bool checkpointNow =
        (config.train.checkpointEvery > 0 && done % config.train.checkpointEvery == 0) || last;
    if (checkpointNow) {
      s.plane->setActivity("checkpoint" + stepText);
      s.saveCheckpoint(done);
      windowClock.reset();
      windowSteps = 0;
    }
  }
  if (leader) progress.close();
  if (step == config.train.steps && result.evals.empty()) {
    // Resumed from the final checkpoint: nothing left to train, but the caller still gets the
    // model's test accuracy.
    EvalRecord eval = evaluate(step);
    result.evals.push_back(eval);
    result.finalTestAccuracy = eval.accuracy;
    result.finalTestLoss = eval.loss;
  }
  result.lastStep = step;
  result.stoppedEarly = step < config.train.steps;
  result.sync = s.commStats();
  s.plane->finish(s.timeout);
  if (leader && !result.evals.empty() && result.evals.back().text) reportXzBaseline(result);
  if (leader) {
    const JsonRecord summary = summaryRecord(result, runClock.seconds());
    metrics.write(summary);
    s.plane->publishStatus(statusRecord(config, s.comm.worldSize(), "finished", summary).str());
  }
  return result;
}

}  // namespace thinwire::core

#include "launch/pv_quantize.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "comm/world_info.h"
#include "core/data/dataset.h"
#include "core/data/distributed_sampler.h"
#include "core/grad_sync.h"
#include "core/metrics.h"
#include "core/models/model.h"
#include "core/trainer.h"
#include "optim/optimizer.h"
#include "qat/pv_safetensors.h"
#include "qat/pv_tuner.h"

namespace thinwire::launch {
namespace {

// Token-mean KL(teacher || student) from logits [n, T, V]; differentiable in the student.
at::Tensor klToTeacher(const at::Tensor& student, const at::Tensor& teacher) {
  at::Tensor teacherLog = at::log_softmax(teacher, -1);
  at::Tensor studentLog = at::log_softmax(student, -1);
  return (teacherLog.exp() * (teacherLog - studentLog)).sum(-1).mean();
}

at::Tensor nextTokenLoss(const at::Tensor& logits, const at::Tensor& labels) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), labels.reshape({-1}));
}

struct EvalSums {
  double kl = 0, loss = 0, tokens = 0;
};

// KL and cross-entropy sums over validation windows rank, rank + worldSize, ... < windows.
PvEval evaluate(core::Model& student,
                core::Model& teacher,
                const core::Dataset& data,
                int64_t windows,
                int64_t batchSize,
                int64_t step,
                comm::Communicator& comm,
                std::chrono::milliseconds timeout) {
  at::NoGradGuard noGrad;
  student.eval();
  at::Tensor sums = at::zeros({3}, at::kDouble);
  std::vector<int64_t> indices;
  auto flush = [&] {
    if (indices.empty()) return;
    core::Batch batch = data.batch(indices);
    at::Tensor s = student.forward(batch.inputs);
    at::Tensor t = teacher.forward(batch.inputs);
    const double tokens = static_cast<double>(batch.labels.numel());
    sums[0] += klToTeacher(s, t).item<double>() * tokens;
    sums[1] += nextTokenLoss(s, batch.labels).item<double>() * tokens;
    sums[2] += tokens;
    indices.clear();
  };
  for (int64_t i = comm.rank(); i < windows; i += comm.worldSize()) {
    indices.push_back(i);
    if (static_cast<int64_t>(indices.size()) == batchSize) flush();
  }
  flush();
  student.train();
  if (comm.worldSize() > 1) {
    // Doubles are not a wire dtype: each rank sends its fp32 means and token count, and the
    // weighted sum is formed in double on every rank in rank order (identical everywhere).
    at::Tensor partial = at::zeros({3}, at::kFloat);
    const double tokens = sums[2].item<double>();
    partial[0] = tokens > 0 ? sums[0].item<double>() / tokens : 0.0;
    partial[1] = tokens > 0 ? sums[1].item<double>() / tokens : 0.0;
    partial[2] = tokens;
    at::Tensor gathered = at::zeros({comm.worldSize(), 3}, at::kFloat);
    comm.allgather(partial, gathered)->wait(timeout);
    sums.zero_();
    for (int r = 0; r < comm.worldSize(); ++r) {
      const double n = gathered[r][2].item<double>();
      sums[0] += gathered[r][0].item<double>() * n;
      sums[1] += gathered[r][1].item<double>() * n;
      sums[2] += n;
    }
  }
  PvEval out;
  out.step = step;
  out.kl = sums[0].item<double>() / sums[2].item<double>();
  out.loss = sums[1].item<double>() / sums[2].item<double>();
  out.perplexity = std::exp(out.loss);
  return out;
}

core::JsonRecord evalRecord(const PvEval& e, const std::string& method) {
  return core::JsonRecord()
      .add("kind", "pv_eval")
      .add("method", method)
      .add("step", e.step)
      .add("kl", e.kl)
      .add("loss", e.loss)
      .add("perplexity", e.perplexity);
}

}  // namespace

bool isPvQuantizedParameter(const std::string& name, int64_t dims) {
  return dims == 2 &&
         (name.find(".attention.") != std::string::npos || name.find(".mlp.") != std::string::npos);
}

PvQuantizeResult runPvQuantize(const core::Config& config,
                               const PvQuantizeRequest& request,
                               comm::Communicator& comm,
                               Logger& log) {
  if (config.model.type != "llama" || config.qat.method != "none") {
    TW_THROW(ConfigError, "quantize --method needs model.type: llama with qat.method: none, got ",
             config.model.type, " / ", config.qat.method);
  }
  const std::string methodName = request.method.empty() ? config.pv.method : request.method;
  const qat::PvMethod method = qat::pvMethodFromName(methodName);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(config.comm.timeoutS * 1e3));
  const uint64_t seed = config.run.seed;

  auto train = core::makeDataset(config.data, core::Split::kTrain, seed, config.model.seqLen);
  auto test = core::makeDataset(config.data, core::Split::kTest, seed, config.model.seqLen);
  auto build = [&] {
    auto model =
        core::makeModel(config.model, train->sampleShape(), train->numClasses(), seed, config.qat);
    core::loadModelState(*model, request.checkpoint);
    return model;
  };
  std::shared_ptr<core::Model> teacher = build();
  std::shared_ptr<core::Model> student = build();
  teacher->eval();
  for (auto& p : teacher->parameters()) p.requires_grad_(false);

  std::vector<optim::NamedParameter> all, quantized, others;
  for (const auto& item : student->named_parameters(/*recurse=*/true)) {
    all.push_back({item.key(), item.value()});
    (isPvQuantizedParameter(item.key(), item.value().dim()) ? quantized : others)
        .push_back({item.key(), item.value()});
  }
  qat::PvTunerOptions options;
  options.method = method;
  options.grid = {.bits = config.pv.bits, .groupSize = config.pv.groupSize};
  options.lr = config.pv.lr;
  options.beta1 = config.pv.beta1;
  options.beta2 = config.pv.beta2;
  options.codeLr = config.pv.codeLr;
  options.codeBeta2 = config.pv.codeBeta2;
  options.maxCodeChange = method == qat::PvMethod::kSte ? 1.0 : config.pv.maxCodeChange;
  options.trustRatio = config.pv.trustRatio;
  options.communicator = &comm;
  options.timeout = timeout;
  qat::PvTuner tuner(quantized, others, options);

  core::GradSync sync(all, comm,
                      {.bucketBytes = static_cast<int64_t>(config.comm.bucketMb * 1024 * 1024),
                       .overlap = false,
                       .timeout = timeout});
  core::DistributedSampler sampler({.datasetSize = train->size(),
                                    .batchPerRank = config.train.batchPerRank,
                                    .rank = comm.rank(),
                                    .worldSize = comm.worldSize(),
                                    .seed = seed});

  const bool root = comm.rank() == 0;
  const std::string runDir = core::runDirectory(config);
  core::MetricsWriter metrics({.path = root ? runDir + "/pv_metrics.jsonl" : ""});
  const int64_t windows = config.pv.evalWindows > 0
                              ? std::min<int64_t>(config.pv.evalWindows, test->size())
                              : test->size();
  const int64_t steps = method == qat::PvMethod::kRtn ? 0 : config.pv.steps;
  PvQuantizeResult result;
  auto runEval = [&](int64_t step) {
    PvEval e =
        evaluate(*student, *teacher, *test, windows, config.train.evalBatch, step, comm, timeout);
    result.evals.push_back(e);
    metrics.write(evalRecord(e, methodName));
    if (root) {
      log.info("pv ", methodName, " step ", step, ": validation KL ", e.kl, " loss ", e.loss,
               " perplexity ", e.perplexity);
    }
  };
  if (root) {
    log.info("pv ", methodName, ": ", quantized.size(), " quantized linears, ", config.pv.bits,
             " bits, group ", config.pv.groupSize, ", ", steps, " steps, ", comm.worldSize(),
             " ranks, validation windows ", windows, " of ", test->size());
  }
  runEval(0);
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 1; step <= steps; ++step) {
    core::Batch batch = train->batch(sampler.indices(step - 1));
    at::Tensor target;
    if (config.pv.loss == "kl") {
      at::NoGradGuard noGrad;
      target = teacher->forward(batch.inputs);
    }
    sync.prepare(/*synchronize=*/true);
    at::Tensor logits = student->forward(batch.inputs);
    at::Tensor loss =
        config.pv.loss == "kl" ? klToTeacher(logits, target) : nextTokenLoss(logits, batch.labels);
    loss.backward();
    sync.finish();
    const qat::PvStepStats stats = tuner.step();
    at::Tensor lossValue = at::full({1}, loss.item<double>(), at::kFloat);
    if (comm.worldSize() > 1) {
      comm.allreduce(lossValue, {.op = comm::ReduceOp::kAverage})->wait(timeout);
    }
    result.maxChangedFraction = std::max(result.maxChangedFraction, stats.maxLayerChangedFraction);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics.write(core::JsonRecord()
                      .add("kind", "pv_step")
                      .add("method", methodName)
                      .add("step", step)
                      .add("loss", lossValue.item<double>())
                      .add("changed_codes", stats.changed)
                      .add("changed_fraction", stats.changedFraction)
                      .add("max_layer_changed_fraction", stats.maxLayerChangedFraction)
                      .add("tau", options.maxCodeChange)
                      .add("elapsed_s", elapsed));
    if (root && (step % std::max<int64_t>(1, config.run.logEvery) == 0 || step == steps)) {
      log.info("pv ", methodName, " step ", step, "/", steps, " loss ", lossValue.item<double>(),
               " changed ", stats.changedFraction, " (max layer ", stats.maxLayerChangedFraction,
               ") ", elapsed, " s");
    }
    if (config.pv.evalEvery > 0 && step % config.pv.evalEvery == 0 && step != steps) {
      runEval(step);
    }
  }
  if (steps > 0) runEval(steps);
  result.final = result.evals.back();

  if (root) {
    result.exportPath =
        request.out.empty() ? runDir + "/pv_" + methodName + ".safetensors" : request.out;
    std::filesystem::path parent = std::filesystem::path(result.exportPath).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    const std::map<std::string, std::string> metadata = {
        {"format", qat::kPvFormatName},
        {"version", std::to_string(qat::kPvFormatVersion)},
        {"bits", std::to_string(config.pv.bits)},
        {"group_size", std::to_string(config.pv.groupSize)},
        {"method", methodName},
        {"steps", std::to_string(steps)}};
    qat::writePvSafetensors(result.exportPath, tuner.exportState(), metadata);
    metrics.write(core::JsonRecord()
                      .add("kind", "pv_summary")
                      .add("method", methodName)
                      .add("steps", steps)
                      .add("kl", result.final.kl)
                      .add("loss", result.final.loss)
                      .add("perplexity", result.final.perplexity)
                      .add("ranks", comm.worldSize())
                      .add("max_layer_changed_fraction", result.maxChangedFraction)
                      .add("export", result.exportPath));
  }
  return result;
}

bool isPvExport(const std::string& path) {
  const std::string suffix = ".safetensors";
  return path.size() > suffix.size() &&
         path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::shared_ptr<core::Model> loadPvExport(const core::Config& config,
                                          const core::Dataset& data,
                                          const std::string& path) {
  auto model = core::makeModel(config.model, data.sampleShape(), data.numClasses(), config.run.seed,
                               config.qat);
  qat::loadPvQuantized(*model, qat::readPvSafetensors(path));
  return model;
}

int runPvQuantizeCommand(const std::vector<std::string>& args) {
  PvQuantizeRequest request;
  std::string configPath;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      TW_CHECK(i + 1 < args.size(), a, " needs a value");
      return args[++i];
    };
    if (a == "--checkpoint") {
      request.checkpoint = value();
    } else if (a == "--method") {
      request.method = value();
      qat::pvMethodFromName(request.method);
    } else if (a == "--out") {
      request.out = value();
    } else if (a == "--set") {
      overrides.push_back(value());
    } else if (!a.empty() && a[0] == '-') {
      TW_THROW(InvalidArgument, "unknown option '", a, "'");
    } else {
      TW_CHECK(configPath.empty(), "unexpected argument '", a, "' (one config file)");
      configPath = a;
    }
  }
  TW_CHECK(!configPath.empty(), "quantize needs CONFIG");
  TW_CHECK(!request.checkpoint.empty(), "quantize needs --checkpoint DIR (the full-precision run)");
  const core::Config config = core::Config::fromFile(configPath, overrides);
  at::set_num_threads(static_cast<int>(config.train.threads));
  const LogLevel level = parseLogLevel(config.run.logLevel);

  auto report = [&](const PvQuantizeResult& result, int rank) {
    if (rank != 0) return;
    std::printf(
        "pv method=%s steps=%lld validation kl=%.5f loss=%.5f perplexity=%.4f "
        "max_layer_changed_fraction=%.5f export=%s\n",
        request.method.empty() ? config.pv.method.c_str() : request.method.c_str(),
        static_cast<long long>(result.final.step), result.final.kl, result.final.loss,
        result.final.perplexity, result.maxChangedFraction, result.exportPath.c_str());
    std::fflush(stdout);
  };
  const comm::WorldInfo world = comm::WorldInfo::fromEnvironment();
  if (world.worldSize <= 1) {
    auto single = comm::makeLocalWorld(1);
    Logger log({.rank = 0, .level = level});
    report(runPvQuantize(config, request, *single[0], log), 0);
    return 0;
  }
  auto environment = std::make_shared<comm::MpiEnvironment>();
  comm::MpiCommunicator comm(environment, {});
  Logger log({.rank = comm.rank(), .level = level});
  try {
    report(runPvQuantize(config, request, comm, log), comm.rank());
  } catch (const std::exception& e) {
    log.error("rank ", comm.rank(), " failed: ", e.what());
    comm.abort(e.what());
    return 1;
  }
  return 0;
}

}  // namespace thinwire::launch

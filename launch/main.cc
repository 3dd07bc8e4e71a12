// The `thinwire` executable.
//
//   thinwire train CONFIG [--set path=value]...      what every rank runs (under mpirun or srun)
//   thinwire launch CONFIG [-n N] [--hostfile FILE] [--dry-run] [--set path=value]...
//   thinwire bench comm [options]                    collective benchmark (run under mpirun)
//   thinwire bench kernels [options]                 memory bandwidth and per-element kernels
//   thinwire eval CONFIG --checkpoint DIR            validation loss (perplexity, bits per byte)
//   thinwire eval CONFIG --quantized FILE            the same for a QAT export (docs/qat.md)
//   thinwire quantize CONFIG --checkpoint DIR --out FILE   export a QAT model's integer weights
//   thinwire quantize CONFIG --checkpoint DIR --method pv|p_only|ste|rtn [--out FILE]
//                    PV-Tuning of a full-precision llama checkpoint (docs/pv_tuning.md)
//   thinwire generate CONFIG --checkpoint DIR --prompt TEXT [--bytes N] [--temperature T]
//                    [--seed S]                      a language model's continuation of TEXT
//   thinwire config-docs                             prints docs/config.md
//   thinwire print-config CONFIG [--set ...]         the effective config, every key
//   thinwire status HOST:PORT                        a running job's live metrics (comm.status)
//
// Exit codes: 0 success, 1 runtime failure (data, communication, timeout), 2 bad usage or config,
// 75 `train` stopped on a signal with a checkpoint (resume with train.resume: auto).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/crash_report.h"
#include "base/error.h"
#include "base/logging.h"
#include "base/stop_signal.h"
#include "bench/comm_bench.h"
#include "bench/kernel_bench.h"
#include "comm/local/local_communicator.h"
#include "comm/make_communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/mpi/mpi_environment.h"
#include "comm/tcp/status_server.h"
#include "comm/world_info.h"
#include "core/checkpoint.h"
#include "core/config.h"
#include "core/data/dataset.h"
#include "core/models/llama.h"
#include "core/models/model.h"
#include "core/nonfinite.h"
#include "core/trainer.h"
#include "launch/mpirun_command.h"
#include "launch/pv_quantize.h"
#include "qat/quantized_export.h"

namespace thinwire {
namespace {

constexpr const char* kUsage = R"(usage: thinwire <command> [options]

commands:
  train CONFIG [--set path=value]...
      Train as one rank of a job (start it with `thinwire launch`, mpirun or srun).
      With comm.backend: local, runs launch.ranks ranks as threads in this process; with
      comm.backend: tcp, needs no MPI: start the ranks any way, with THINWIRE_STORE=HOST:PORT.
      SIGTERM, SIGUSR1 or SIGINT: every rank stops with a checkpoint within
      train.stop_check_every steps and exits with status 75.
  launch CONFIG [-n N] [--hostfile FILE] [--dry-run] [--set path=value]...
      Build the mpirun command from the config's launch section, print it and run it.
  bench comm [--sizes 4K,64M,...] [--collectives allreduce,allgather,...] [--iterations N]
             [--warmup N] [--json PATH]
      Collective sweep, thinwire next to the direct MPI call (run under mpirun).
  bench kernels [--sizes 1M,64M] [--kernels LIST] [--iterations N] [--threads N] [--json PATH]
      Memory bandwidth (STREAM triad) and per-element kernel throughput (single process).
  eval CONFIG (--checkpoint DIR | --quantized FILE) [--set path=value]...
      Evaluate a checkpoint on the test (validation) split in this process: loss, accuracy and,
      for text, perplexity and bits per byte. --quantized evaluates a `thinwire quantize` export
      (integer weight codes; activations quantized online as in training).
  quantize CONFIG --checkpoint DIR --out FILE [--set path=value]...
      Export a model trained with qat.method other than none: integer weight codes and row
      steps plus the full-precision rest, one .twc file (format in docs/qat.md).
  quantize CONFIG --checkpoint DIR --method pv|p_only|ste|rtn [--out FILE] [--set ...]
      PV-Tuning: 2..3-bit group-wise codes + scales of a full-precision llama checkpoint,
      fine-tuned against it (pv.* keys); writes a .safetensors export that `eval --quantized`
      reads (docs/pv_tuning.md). Runs data-parallel under mpirun, else in this process.
  generate CONFIG --checkpoint DIR --prompt TEXT [--bytes N] [--temperature T] [--seed S]
      Print a language model's (model.type: llama) continuation of TEXT (default 200 bytes,
      temperature 0.8, seed 0; temperature 0 is greedy).
  config-docs
      Print the reference of every config key (docs/config.md).
  print-config CONFIG [--set path=value]...
      Print the effective configuration with every key.
  status HOST:PORT [--timeout SECONDS]
      Print the live metrics (JSON) of a running job whose config sets comm.status: HOST:PORT.
  --help, --version

Config keys are documented in docs/config.md; --set uses the same dotted paths.
)";

// Exit code of a rank whose watchdog found a silent peer (a runtime failure, as in the header).
constexpr int kExitPeerFailure = 1;
// Exit code of `train` stopped on a signal, checkpointed (EX_TEMPFAIL: try again later).
constexpr int kExitStoppedOnSignal = 75;

struct UsageError : Error {
  using Error::Error;
};

// Splits "CONFIG --set a=b --set c=d" style arguments of train/launch/print-config.
struct CommonArgs {
  std::string configPath;
  std::vector<std::string> overrides;
  int64_t ranks = 0;
  std::string hostfile;
  bool dryRun = false;
};

CommonArgs parseCommon(const std::vector<std::string>& args, bool launchFlags) {
  CommonArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= args.size()) throw UsageError(std::string(flag) + " needs a value");
      return args[++i];
    };
    if (a == "--set") {
      out.overrides.push_back(value("--set"));
    } else if (a.rfind("--set=", 0) == 0) {
      out.overrides.push_back(a.substr(6));
    } else if (launchFlags && (a == "-n" || a == "--ranks")) {
      const std::string n = value("-n");
      try {
        out.ranks = std::stoll(n);
      } catch (const std::exception&) {
        throw UsageError("-n needs a whole number, got '" + n + "'");
      }
      if (out.ranks < 1) throw UsageError("-n must be >= 1, got " + n);
    } else if (launchFlags && a == "--hostfile") {
      out.hostfile = value("--hostfile");
    } else if (launchFlags && a == "--dry-run") {
      out.dryRun = true;
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option '" + a + "'");
    } else if (out.configPath.empty()) {
      out.configPath = a;
    } else {
      throw UsageError("unexpected argument '" + a + "' (one config file per job)");
    }
  }
  if (out.configPath.empty()) throw UsageError("missing CONFIG (a YAML file, see examples/)");
  return out;
}

// Which BLAS libtorch calls: the file mapped into this process (see docs/benchmarks.md on why
// the OpenMP OpenBLAS matters).
std::string blasInUse() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  std::set<std::string> found;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if (path.find("blas") != std::string::npos || path.find("lapack") != std::string::npos) {
      char resolved[4096];
      found.insert(realpath(path.c_str(), resolved) != nullptr ? resolved : path);
    }
  }
  std::string out;
  for (const auto& f : found) out += (out.empty() ? "" : ", ") + f;
  return out.empty() ? "none mapped" : out;
}

// libtorch seeds its default CPU generator from /dev/urandom, so anything drawing from it (and
// the rank state that checkpoints save) would differ from run to run. Seeded from run.seed and
// the rank, a job and its checkpoints are reproducible bit for bit.
void seedDefaultGenerator(int64_t seed, int rank) {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_current_seed(static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ULL +
                             static_cast<uint64_t>(rank) + 1);
}

// A rank of a real multi-process job (MPI or NCCL): the watchdog reports a silent peer and ends
// this process with kExitPeerFailure.
core::TrainerOptions watchdogOptions(const core::Config& config, Logger& log, int localSize) {
  core::TrainerOptions options{.ranksOnThisHost = std::max(1, localSize)};
  options.onPeerFailure = [&log, interval = config.comm.heartbeatS](const std::string& report) {
    log.error("watchdog: ", report, "; exiting");
    // The other live ranks notice the same silence within about one heartbeat; waiting that long
    // lets each print its own report before mpirun tears the job down on this exit.
    std::this_thread::sleep_for(std::chrono::duration<double>(2 * interval));
    std::fflush(stderr);
    std::_Exit(kExitPeerFailure);
  };
  return options;
}

int runRank(const core::Config& config,
            comm::Communicator& comm,
            Logger& log,
            core::TrainerOptions options) {
  setErrorRank(comm.rank());
  if (config.train.stopCheckEvery > 0) {
    // After the communicator (MPI_Init) is up; Note [Stop requests] in core/trainer.h.
    installStopSignals("thinwire");
    options.stopRequested = [] { return stopSignal() != 0; };
  }
  try {
    core::Trainer trainer(config, comm, log, options);
    core::TrainResult result = trainer.run();
    if (comm.rank() == 0) {
      const auto& t = result.times;
      const double steps = std::max<int64_t>(1, result.lastStep - result.startStep);
      log.info("per step (rank 0): data ", t.data / steps, " s, forward ", t.forward / steps,
               " s, backward ", t.backward / steps, " s, sync wait ", t.syncWait / steps,
               " s, optimizer ", t.optimizer / steps, " s, total ", t.total / steps, " s");
      if (result.stoppedOnRequest) {
        std::printf(
            "stopped at step %lld on a signal, checkpointed; resume with train.resume: "
            "auto\n",
            static_cast<long long>(result.lastStep));
      } else if (result.stoppedEarly) {
        std::printf("stopped at step %lld (train.stop_after); resume with train.resume: auto\n",
                    static_cast<long long>(result.lastStep));
      } else if (result.finalTestAccuracy >= 0) {
        std::printf("final test_acc=%.4f\n", result.finalTestAccuracy);
      }
      std::fflush(stdout);
    }
    return result.stoppedOnRequest ? kExitStoppedOnSignal : 0;
  } catch (const core::NonFiniteGradientError& e) {
    // Every rank agreed on this error and throws it at the same step: no abort needed, and
    // none wanted (an abort would cut the other ranks' reports short).
    log.error("rank ", comm.rank(), " stopped: ", e.what());
    return 1;
  } catch (const std::exception& e) {
    log.error("rank ", comm.rank(), " failed: ", e.what());
    if (comm.worldSize() > 1) comm.abort(e.what());
    return 1;
  }
}

int commandTrain(const std::vector<std::string>& args) {
  CommonArgs common = parseCommon(args, /*launchFlags=*/false);
  const core::Config config = core::Config::fromFile(common.configPath, common.overrides);
  at::set_num_threads(static_cast<int>(config.train.threads));
  const LogLevel level = parseLogLevel(config.run.logLevel);

  if (config.comm.backend == "local") {
    // Threads share libtorch's one default generator: seeded once, per job.
    seedDefaultGenerator(config.run.seed, 0);
    const int ranks = static_cast<int>(config.launch.ranks);
    auto world = comm::makeLocalWorld(ranks);
    std::vector<std::unique_ptr<Logger>> logs;
    for (int r = 0; r < ranks; ++r) {
      logs.push_back(std::make_unique<Logger>(LoggerOptions{.rank = r, .level = level}));
    }
    logs[0]->info("BLAS: ", blasInUse());
    std::vector<int> codes(ranks, 0);
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back(
          [&, r] { codes[r] = runRank(config, *world[r], *logs[r], {.ranksOnThisHost = ranks}); });
    }
    for (auto& t : threads) t.join();
    for (int code : codes) {
      if (code != 0) return code;
    }
    return 0;
  }

  if (config.comm.backend == "nccl" || config.comm.backend == "tcp") {
    // nccl: one GPU per rank (docs/gpu.md); MPI only carries the NCCL id when there are several
    // ranks. tcp: no MPI at all; the ranks meet through the rendezvous store named by
    // THINWIRE_STORE (docs/launch.md), whoever started them. Both get the MPI path's watchdog:
    // a rank hung inside an NCCL kernel, or waiting on a peer that fell silent, never returns to
    // the host, so only the heartbeat thread can end it.
    const std::unique_ptr<comm::Communicator> comm = comm::makeCommunicator(
        {.backend = comm::parseBackend(config.comm.backend),
         .timeout = std::chrono::milliseconds(static_cast<int64_t>(config.comm.timeoutS * 1000))});
    seedDefaultGenerator(config.run.seed, comm->rank());
    Logger log({.rank = comm->rank(), .level = level});
    if (comm->rank() == 0) log.info("BLAS: ", blasInUse());
    return runRank(config, *comm, log,
                   watchdogOptions(config, log, comm::WorldInfo::fromEnvironment().localSize));
  }

  auto environment = std::make_shared<comm::MpiEnvironment>();
  const comm::WorldInfo world = comm::WorldInfo::fromEnvironment();
  comm::MpiCommunicatorOptions commOptions;
  // comm.allreduce: auto takes the ring where bytes cross a network (see docs/config.md).
  const bool ring = config.comm.allreduce == "ring" ||
                    (config.comm.allreduce == "auto" &&
                     (config.launch.transport == "tcp" || world.localSize < world.worldSize));
  if (!ring) commOptions.ringMinBytes = 0;
  comm::MpiCommunicator comm(environment, commOptions);
  seedDefaultGenerator(config.run.seed, comm.rank());
  Logger log({.rank = comm.rank(), .level = level});
  if (comm.rank() == 0) log.info("BLAS: ", blasInUse());
  if (comm.rank() == 0) {
    log.info("large-bucket allreduce: ", ring ? "ring" : "MPI_Allreduce",
             " (comm.allreduce: ", config.comm.allreduce, ")");
  }
  return runRank(config, comm, log, watchdogOptions(config, log, world.localSize));
}

// `thinwire status HOST:PORT`: prints the document rank 0's status endpoint serves.
int commandStatus(const std::vector<std::string>& args) {
  std::string address;
  double timeoutSeconds = 5;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--timeout") {
      if (i + 1 >= args.size()) throw UsageError("--timeout needs a value");
      try {
        timeoutSeconds = std::stod(args[++i]);
      } catch (const std::exception&) {
        throw UsageError("--timeout needs a number of seconds, got '" + args[i] + "'");
      }
      if (timeoutSeconds <= 0) throw UsageError("--timeout must be > 0");
    } else if (!args[i].empty() && args[i][0] == '-') {
      throw UsageError("unknown option '" + args[i] + "'");
    } else if (address.empty()) {
      address = args[i];
    } else {
      throw UsageError("unexpected argument '" + args[i] + "'");
    }
  }
  if (address.empty()) throw UsageError("missing HOST:PORT (the job's comm.status)");
  if (address.find(':') == std::string::npos) {
    throw UsageError("expected HOST:PORT, got '" + address + "'");
  }
  const std::string body = comm::fetchStatus(
      address, std::chrono::milliseconds(static_cast<int64_t>(timeoutSeconds * 1000)));
  std::cout << body << (body.empty() || body.back() != '\n' ? "\n" : "") << std::flush;
  return 0;
}

int commandLaunch(const std::vector<std::string>& args) {
  CommonArgs common = parseCommon(args, /*launchFlags=*/true);
  const core::Config config = core::Config::fromFile(common.configPath, common.overrides);
  char self[4096];
  const ssize_t length = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (length <= 0) TW_THROW(Error, "cannot resolve the thinwire executable (/proc/self/exe)");
  self[length] = '\0';
  launch::MpirunRequest request;
  request.configPath = common.configPath;
  request.ranks = common.ranks;
  request.hostfile = common.hostfile;
  request.thinwireBinary = self;
  request.overrides = common.overrides;
  request.runAsRoot = geteuid() == 0;
  const std::vector<std::string> argv = launch::mpirunCommand(config, request);
  std::cout << launch::shellQuote(argv) << std::endl;
  if (common.dryRun) return 0;
  std::vector<char*> raw;
  for (const auto& a : argv) raw.push_back(const_cast<char*>(a.c_str()));
  raw.push_back(nullptr);
  execvp(raw[0], raw.data());
  TW_THROW(Error, "cannot run '", argv[0], "': ", std::strerror(errno),
           " (is Open MPI installed? run scripts/install-deps.sh, or set launch.mpirun)");
}

// Arguments of eval and generate: CONFIG, --checkpoint, --set, and the generation flags.
struct ModelArgs {
  std::vector<std::string> common;  // for parseCommon
  std::string checkpoint;
  std::string quantized;  // eval: a `thinwire quantize` export instead of a checkpoint
  std::string out;        // quantize: the export file to write
  std::string prompt;
  bool hasPrompt = false;
  core::GenerateOptions generate;
};

ModelArgs parseModelArgs(const std::vector<std::string>& args,
                         bool generateFlags,
                         bool exportFlags = false) {
  ModelArgs out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    auto number = [&](const std::string& text) -> double {
      try {
        size_t used = 0;
        const double parsed = std::stod(text, &used);
        if (used == text.size()) return parsed;
      } catch (const std::exception&) {
      }
      throw UsageError(a + " needs a number, got '" + text + "'");
    };
    if (a == "--checkpoint") {
      out.checkpoint = value();
    } else if (exportFlags && a == "--quantized") {
      out.quantized = value();
    } else if (exportFlags && a == "--out") {
      out.out = value();
    } else if (generateFlags && a == "--prompt") {
      out.prompt = value();
      out.hasPrompt = true;
    } else if (generateFlags && a == "--bytes") {
      const double bytes = number(value());
      if (bytes < 0 || bytes != static_cast<double>(static_cast<int64_t>(bytes))) {
        throw UsageError("--bytes needs a whole number >= 0");
      }
      out.generate.bytes = static_cast<int64_t>(bytes);
    } else if (generateFlags && a == "--temperature") {
      out.generate.temperature = number(value());
      if (out.generate.temperature < 0) throw UsageError("--temperature must be >= 0");
    } else if (generateFlags && a == "--seed") {
      const double seed = number(value());
      if (seed < 0) throw UsageError("--seed must be >= 0");
      out.generate.seed = static_cast<uint64_t>(seed);
    } else {
      out.common.push_back(a);
    }
  }
  if (out.checkpoint.empty() && !out.quantized.empty()) return out;
  if (out.checkpoint.empty()) {
    throw UsageError("missing --checkpoint DIR (e.g. runs/<name>/checkpoints/step-00001000)");
  }
  return out;
}

// The config's model with the checkpoint's weights, for the data the config names.
std::shared_ptr<core::Model> loadModel(const core::Config& config,
                                       const core::Dataset& data,
                                       const std::string& checkpoint) {
  auto model = core::makeModel(config.model, data.sampleShape(), data.numClasses(), config.run.seed,
                               config.qat);
  core::loadModelState(*model, checkpoint);
  return model;
}

int commandEval(const std::vector<std::string>& args) {
  const ModelArgs parsed = parseModelArgs(args, /*generateFlags=*/false, /*exportFlags=*/true);
  if (!parsed.checkpoint.empty() && !parsed.quantized.empty()) {
    throw UsageError("eval takes --checkpoint or --quantized, not both");
  }
  CommonArgs common = parseCommon(parsed.common, /*launchFlags=*/false);
  const core::Config config = core::Config::fromFile(common.configPath, common.overrides);
  auto data =
      core::makeDataset(config.data, core::Split::kTest, config.run.seed, config.model.seqLen);
  std::shared_ptr<core::Model> model;
  if (launch::isPvExport(parsed.quantized)) {
    model = launch::loadPvExport(config, *data, parsed.quantized);
  } else if (parsed.quantized.empty()) {
    model = loadModel(config, *data, parsed.checkpoint);
  } else {
    if (config.qat.method == "none") {
      throw UsageError("--quantized needs the config's qat section (qat.method is none)");
    }
    model = core::makeModel(config.model, data->sampleShape(), data->numClasses(), config.run.seed,
                            config.qat);
    qat::loadQuantized(*model, core::readStateFile(parsed.quantized));
  }
  const core::EvalRecord eval = core::evaluateModel(*model, *data, config.train.evalBatch);
  std::printf("%s %s on %s\n", parsed.quantized.empty() ? "checkpoint" : "quantized export",
              parsed.quantized.empty() ? parsed.checkpoint.c_str() : parsed.quantized.c_str(),
              data->describe().c_str());
  if (eval.text) {
    std::printf("validation loss=%.4f nats/byte perplexity=%.4f bits_per_byte=%.4f\n", eval.loss,
                eval.perplexity, eval.bitsPerByte);
  } else {
    std::printf("test loss=%.4f test_acc=%.4f\n", eval.loss, eval.accuracy);
  }
  return 0;
}

int commandQuantize(const std::vector<std::string>& args) {
  // PV-Tuning of a full-precision checkpoint (docs/pv_tuning.md).
  if (std::find(args.begin(), args.end(), "--method") != args.end()) {
    return launch::runPvQuantizeCommand(args);
  }
  const ModelArgs parsed = parseModelArgs(args, /*generateFlags=*/false, /*exportFlags=*/true);
  if (parsed.checkpoint.empty()) throw UsageError("quantize needs --checkpoint DIR");
  if (parsed.out.empty()) throw UsageError("quantize needs --out FILE");
  CommonArgs common = parseCommon(parsed.common, /*launchFlags=*/false);
  const core::Config config = core::Config::fromFile(common.configPath, common.overrides);
  if (config.qat.method == "none") {
    throw UsageError("quantize needs a config with qat.method quest, ste or lsq");
  }
  auto data =
      core::makeDataset(config.data, core::Split::kTest, config.run.seed, config.model.seqLen);
  auto model = loadModel(config, *data, parsed.checkpoint);
  const StateDict exported = qat::exportQuantized(*model);
  core::writeStateFile(parsed.out, exported);
  int64_t codes = 0;
  for (const auto& [key, value] : exported) {
    if (value.scalar_type() == at::kByte) codes += value.numel();
  }
  std::printf("wrote %s: %lld weight codes of %lld bits (qat.method %s)\n", parsed.out.c_str(),
              static_cast<long long>(codes), static_cast<long long>(config.qat.wBits),
              config.qat.method.c_str());
  return 0;
}

int commandGenerate(const std::vector<std::string>& args) {
  const ModelArgs parsed = parseModelArgs(args, /*generateFlags=*/true);
  if (!parsed.hasPrompt || parsed.prompt.empty()) throw UsageError("missing --prompt TEXT");
  CommonArgs common = parseCommon(parsed.common, /*launchFlags=*/false);
  const core::Config config = core::Config::fromFile(common.configPath, common.overrides);
  if (config.model.type != "llama") {
    TW_THROW(ConfigError, "generate needs model.type: llama, got '", config.model.type, "'");
  }
  // The validation split is small; only its shape and vocabulary are needed here.
  auto data =
      core::makeDataset(config.data, core::Split::kTest, config.run.seed, config.model.seqLen);
  auto model = loadModel(config, *data, parsed.checkpoint);
  auto* llama = dynamic_cast<core::Llama*>(model.get());
  TW_ASSERT(llama != nullptr, "model.type llama did not build a Llama");
  const std::string continuation = core::generate(*llama, parsed.prompt, parsed.generate);
  std::cout << parsed.prompt << continuation << std::endl;
  return 0;
}

int commandBench(const std::vector<std::string>& args) {
  if (args.empty() || (args[0] != "comm" && args[0] != "kernels")) {
    throw UsageError("bench needs a benchmark name: comm or kernels");
  }
  const bool help = args.size() > 1 && (args[1] == "--help" || args[1] == "-h");
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "kernels") {
    if (help) {
      std::cout << bench::kKernelBenchUsage;
      return 0;
    }
    const bench::KernelRegistry registry = bench::makeBuiltinKernelRegistry();
    return bench::runKernelBench(bench::parseKernelBenchArgs(rest, registry), registry);
  }
  if (help) {
    std::cout << bench::kCommBenchUsage;
    return 0;
  }
  return bench::runCommBench(bench::parseCommBenchArgs(rest));
}

int dispatch(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string& command = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "--version") {
    std::cout << "thinwire 0.1.0\n";
    return 0;
  }
  if (command == "train") return commandTrain(rest);
  if (command == "launch") return commandLaunch(rest);
  if (command == "bench") return commandBench(rest);
  if (command == "eval") return commandEval(rest);
  if (command == "quantize") return commandQuantize(rest);
  if (command == "generate") return commandGenerate(rest);
  if (command == "status") return commandStatus(rest);
  if (command == "config-docs") {
    std::cout << core::configReferenceMarkdown();
    return 0;
  }
  if (command == "print-config") {
    CommonArgs common = parseCommon(rest, /*launchFlags=*/false);
    std::cout << core::Config::fromFile(common.configPath, common.overrides).toYaml();
    return 0;
  }
  throw UsageError("unknown command '" + command + "'");
}

}  // namespace
}  // namespace thinwire

int main(int argc, char** argv) {
  thinwire::installCrashReport("thinwire");
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return thinwire::dispatch(args);
  } catch (const thinwire::UsageError& e) {
    std::cerr << "thinwire: " << e.what() << "\n(see thinwire --help)\n";
    return 2;
  } catch (const thinwire::ConfigError& e) {
    std::cerr << "thinwire: config error: " << e.what() << "\n";
    return 2;
  } catch (const thinwire::Error& e) {
    std::cerr << "thinwire: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "thinwire: unexpected error: " << e.what() << "\n";
    return 1;
  }
}

// File: core/trainer.h
//
// The data-parallel training engine for one rank. Every rank of the communicator constructs a
// Trainer from the same Config and calls run(); together they train one model:
//   1. rank 0's initial weights (or the resumed checkpoint) are broadcast to every rank;
//   2. each step, every rank draws its disjoint shard of the global batch (DistributedSampler),
//      runs forward/backward, and GradSync averages gradients bucket by bucket while backward
//      still runs;
//   3. optional gradient-norm clipping (on the averaged gradient, identical everywhere), then the
//      optimizer step with the scheduled learning rate;
//   4. rank 0 logs metrics (JSON lines + progress line); evaluation and atomic checkpoints happen
//      at their configured periods.
// The loss is cross-entropy over classes, or over every position's next token when the model
// returns [n, T, vocabulary] logits (a language model, data.dataset: text); text runs also
// report perplexity, bits per byte and, at the end, the xz baseline.
//
// Ownership: the Trainer owns model, optimizer, data and GradSync; it borrows the communicator
// and the logger, which must outlive it.
//
// Threading: one thread per rank (threads-as-ranks tests run one Trainer per thread).
//
// Example:
//   Config config = Config::fromFile("examples/fmnist_mlp.yaml");
//   Trainer trainer(config, *comm, log);
//   TrainResult result = trainer.run();
//   std::cout << "final test_acc=" << result.finalTestAccuracy << "\n";
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/logging.h"
#include "comm/communicator.h"
#include "core/config.h"
#include "core/grad_sync.h"

namespace thinwire::core {

struct StepRecord {
  int64_t step = 0;     // 1-based optimizer step that just finished
  double loss = 0;      // mean training loss over the global batch of this step
  double accuracy = 0;  // fraction of the global batch classified correctly
  double lr = 0;
};

struct EvalRecord {
  int64_t step = 0;
  double loss = 0;         // mean cross-entropy in nats, per sample (per token for text)
  double accuracy = 0;     // fraction classified correctly (next byte predicted, for text)
  bool text = false;       // a language-model run: the two fields below are set
  double perplexity = 0;   // exp(loss)
  double bitsPerByte = 0;  // loss / ln 2 (byte tokens)
};

struct StepTimes {  // seconds summed over the run, this rank
  double data = 0, forward = 0, backward = 0, syncWait = 0, optimizer = 0, total = 0;
  // Step time summed over the steps after the first kWarmupStepsExcluded of this run (first
  // steps pay allocation and connection set-up), and how many steps that covers.
  double steadyTotal = 0;
  int64_t steadySteps = 0;
  static constexpr int64_t kWarmupStepsExcluded = 5;
  // Seconds per step for benchmarks: the steady-state mean, or the overall mean for short runs.
  double secondsPerStep() const;
};

struct TrainResult {
  std::vector<StepRecord> steps;  // every logged step
  std::vector<EvalRecord> evals;
  double finalTestAccuracy = -1;  // last evaluation; -1 if none ran
  double finalTestLoss = -1;
  // Text runs, rank 0: bits per validation byte of `xz -9e` given the training text
  // (xzConditionalBitsPerByte in core/metrics.h); -1 elsewhere or when xz is unavailable.
  double xzBitsPerByte = -1;
  int64_t startStep = 0;      // steps already done when run() began (resume)
  int64_t lastStep = 0;       // steps done when run() returned
  bool stoppedEarly = false;  // the run ended before train.steps (stop_after or a stop request)
  // A stop request (TrainerOptions::stopRequested) on any rank ended the run, checkpointed;
  // identical on every rank.
  bool stoppedOnRequest = false;
  std::string resumedFrom;  // checkpoint directory, "" for a fresh start
  StepTimes times;
  GradSyncStats sync;
  // Steps dropped by train.nonfinite: skip (identical on every rank).
  int64_t skippedSteps = 0;
};

// What the trainer cannot know from the config: where this rank runs.
struct TrainerOptions {
  int ranksOnThisHost = 1;  // ranks sharing this machine's cores (WorldInfo::localSize)
  int cores = 0;            // cores of this machine; 0 = std::thread::hardware_concurrency()
  // The watchdog's action (core/control_plane.h): called once, on a background thread, with a
  // report naming the silent rank and what this rank is in. Unset: no watchdog (threads as
  // ranks, where a dead rank takes the whole process with it).
  std::function<void(const std::string& report)> onPeerFailure;
  // Whether this process has been asked to stop (a signal caught in launch/main.cc). Polled
  // after every train.stop_check_every-th step, when the ranks agree (Note [Stop requests]).
  // Unset: never asked.
  std::function<bool()> stopRequested;
  // Fault injection for tests: every parameter's gradient passes through it as backward
  // produces it, before gradient sync and the non-finite check see it; `step` is 0-based.
  std::function<at::Tensor(int64_t step, const std::string& parameter, const at::Tensor& grad)>
      gradientFault;
};

// Resolves comm.overlap: "on" and "off" as given; "auto" is on when every rank on the host has
// `threadsPerRank` cores for compute plus one for its communication thread. See Note [Overlap].
bool overlapEnabled(const std::string& mode,
                    int ranksOnThisHost,
                    int64_t threadsPerRank,
                    int cores);

class JsonRecord;

class Trainer {
 public:
  // Builds data, model, optimizer; throws DataError for missing/corrupt data, ConfigError for a
  // config the model cannot take.
  Trainer(const Config& config, comm::Communicator& comm, Logger& log, TrainerOptions options = {});
  ~Trainer();

  // Trains to config.train.steps (or train.stop_after, or a stop request), resuming first if
  // configured. Collective:
  // every rank must call it. Throws CommError/TimeoutError when a peer fails, DataError for a
  // corrupt checkpoint.
  TrainResult run();

  // Runs the evaluation on the test split (collective) and returns loss and accuracy (and, for
  // text, perplexity and bits per byte over every validation token).
  EvalRecord evaluate(int64_t step);

 private:
  struct State;
  JsonRecord summaryRecord(const TrainResult& result, double wallSeconds) const;
  // Text runs, rank 0: computes and logs the xz baseline into result.xzBitsPerByte.
  void reportXzBaseline(TrainResult& result) const;
  std::unique_ptr<State> state_;
};

class Model;
class Dataset;

// Evaluates `model` on every sample of `data` in one process (thinwire eval): mean loss and
// accuracy, plus perplexity and bits per byte for a text dataset; step is 0. Blocking; the model
// is left in training mode. InvalidArgument for batchSize < 1.
EvalRecord evaluateModel(Model& model, const Dataset& data, int64_t batchSize);

// The run directory: <run.output_dir>/<run.name>.
std::string runDirectory(const Config& config);

// Note [Overlap]
// Overlap hides communication behind backward only if the communication thread has a core of its
// own. With more ranks than cores (4 ranks on 2 cores), an MPI collective's progress loop takes
// cycles from the other ranks' backward; measured on fmnist-mlp, 4 ranks on 2 cores, over shared
// memory: 0.19 s per step with overlap, 0.17 s without (docs/benchmarks.md).

// Note [Stop requests]
// A signal reaches the ranks of a job at different moments (mpirun forwards SIGUSR1 rank by rank;
// SLURM signals every task), so no rank may stop on its own: the others would wait in the next
// collective until their timeout. A rank only records the request. After every
// train.stop_check_every-th step all ranks sum their "asked" flags in one small allreduce (the
// metrics allreduce, on a run.log_every step), at the same steps whatever the timing; if any rank
// was asked, every rank logs the step, writes the checkpoint of that step (the same atomic
// checkpoint as train.stop_after) and returns, and `thinwire train` exits with status 75
// (EX_TEMPFAIL: try again later). train.resume: auto then continues bit for bit. The delay is at
// most stop_check_every steps plus the checkpoint.

// Note [Optimizer overlap]
// Buckets finish in order, and SGD and Adam update every parameter independently, so a bucket's
// parameters can take their optimizer step as soon as that bucket is averaged, while the later
// buckets (the first layers, whose gradients come last in backward) are still being reduced.
// The update is the same arithmetic on the same values as a whole-model step, so results are
// bit-identical (tests/core/multirank/trainer_test.cc checks); on a comm-bound step it hides
// most of the optimizer's time behind communication. Gradient clipping needs the norm over all
// gradients first and keeps the whole-model step.

}  // namespace thinwire::core

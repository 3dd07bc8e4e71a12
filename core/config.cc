#include "core/config.h"

#include <fnmatch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>
#include <variant>

#include "base/error.h"
#include "base/text.h"

namespace thinwire::core {
namespace {

// Note [Config schema]
// Every key lives in exactly one KeySpec of the table built by buildSchema(): its path, a typed
// pointer into Config (the type of the pointer is the type of the key), its range or allowed
// values and a one-line description. Parsing, --set overrides, validation, toYaml() and
// configReferenceMarkdown() all walk this table, so a key cannot be parsed but undocumented, or
// documented with a default that differs from the struct's. Defaults are read from a
// default-constructed Config, never repeated here.

using FieldRef = std::variant<int64_t*,
                              uint64_t*,
                              double*,
                              bool*,
                              std::string*,
                              std::vector<int64_t>*,
                              std::vector<std::string>*>;
using FieldAccessor = FieldRef (*)(Config&);

// A closed or open bound on a number (or on every entry of an integer list).
struct Range {
  std::optional<double> low;
  bool lowOpen = false;
  std::optional<double> high;
  bool highOpen = false;
};

struct KeySpec {
  KeySpec(const char* path, FieldAccessor field, const char* description)
      : path(path), field(field), description(description) {}

  KeySpec& atLeast(double value) {
    range.low = value;
    range.lowOpen = false;
    return *this;
  }
  KeySpec& above(double value) {
    range.low = value;
    range.lowOpen = true;
    return *this;
  }
  KeySpec& atMost(double value) {
    range.high = value;
    range.highOpen = false;
    return *this;
  }
  KeySpec& below(double value) {
    range.high = value;
    range.highOpen = true;
    return *this;
  }
  KeySpec& oneOf(std::vector<std::string> values) {
    allowed = std::move(values);
    return *this;
  }
  // Besides the allowed words, any other non-empty string is accepted; `label` names it in
  // messages and docs (e.g. "<path>").
  KeySpec& orOther(const char* label) {
    otherLabel = label;
    nonEmpty = true;
    return *this;
  }
  KeySpec& required() {
    nonEmpty = true;
    return *this;
  }

  std::string path;
  FieldAccessor field;
  std::string description;
  Range range;
  std::vector<std::string> allowed;
  std::string otherLabel;
  bool nonEmpty = false;
};

struct SectionSpec {
  const char* path;
  const char* description;
};

const std::vector<SectionSpec>& sections() {
  static const std::vector<SectionSpec> kSections = {
      {"run", "Naming, seeding and logging of one run."},
      {"data", "The dataset every rank reads; each rank draws a disjoint shard per step."},
      {"data.synthetic", "Shape of the generated data when `data.dataset` is `synthetic`."},
      {"model", "The network trained."},
      {"train", "The training loop: length, batch, evaluation, checkpoints."},
      {"optim", "Optimizer and its hyper-parameters."},
      {"optim.schedule", "Learning-rate schedule applied on top of `optim.lr`."},
      {"qat",
       "Quantization-aware training of the llama decoder's attention and MLP linears (QuEST "
       "and its STE / LSQ baselines). See docs/qat.md."},
      {"comm", "Gradient communication between ranks."},
      {"compression",
       "Gradient compression: what each rank sends (method), the state that keeps it "
       "convergent (feedback) and how messages are combined (aggregator). See "
       "docs/compression.md."},
      {"compression.dgc", "Deep Gradient Compression (`feedback: dgc`, with `method: topk`)."},
      {"compression.lgreco",
       "L-GreCo layer-wise adaptive compression (`policy: lgreco`): per-layer top-k density, "
       "quantizer bits or PowerSGD rank chosen under an error budget (docs/benchmarks.md)."},
      {"launch", "How `thinwire launch` starts the ranks (mpirun or srun)."},
      {"pv",
       "PV-Tuning of a trained llama checkpoint by `thinwire quantize --method pv|p_only|ste|rtn`: "
       "scalar group-wise codes and scales (docs/pv_tuning.md)."},
  };
  return kSections;
}

std::vector<KeySpec> buildSchema() {
  std::vector<KeySpec> s;
  // run
  s.push_back(KeySpec(
                  "run.name", [](Config& c) -> FieldRef { return &c.run.name; },
                  "Run name; metrics and checkpoints go to `<output_dir>/<name>/`.")
                  .required());
  s.push_back(KeySpec(
      "run.seed", [](Config& c) -> FieldRef { return &c.run.seed; },
      "Seed of model initialisation and data order (same on every rank)."));
  s.push_back(KeySpec(
                  "run.output_dir", [](Config& c) -> FieldRef { return &c.run.outputDir; },
                  "Directory that holds one sub-directory per run.")
                  .required());
  s.push_back(KeySpec(
                  "run.log_every", [](Config& c) -> FieldRef { return &c.run.logEvery; },
                  "Optimizer steps between metrics records.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "run.log_level", [](Config& c) -> FieldRef { return &c.run.logLevel; },
                  "Lowest level of log lines printed.")
                  .oneOf({"debug", "info", "warn", "error", "off"}));
  s.push_back(KeySpec(
      "run.progress", [](Config& c) -> FieldRef { return &c.run.progress; },
      "Live progress line on rank 0."));
  // data
  s.push_back(KeySpec(
                  "data.dataset", [](Config& c) -> FieldRef { return &c.data.dataset; },
                  "Which dataset to train on.")
                  .oneOf({"fashion_mnist", "synthetic", "text"}));
  s.push_back(KeySpec(
      "data.path", [](Config& c) -> FieldRef { return &c.data.path; },
      "Directory with the Fashion-MNIST IDX files (`train-*`, `t10k-*`, plain or `.gz`); for "
      "`text`, a directory whose regular files (recursively, `*.dat`/`*.u8` skipped) are the "
      "corpus, e.g. `/usr/share/games/fortunes` (Debian package fortunes; "
      "docs/language_model.md)."));
  s.push_back(KeySpec(
                  "data.validation_fraction",
                  [](Config& c) -> FieldRef { return &c.data.validationFraction; },
                  "`text`: fraction of the documents held out for validation, chosen by a hash "
                  "of each document's bytes (the same split on every machine and run).")
                  .above(0)
                  .below(1));
  s.push_back(KeySpec(
                  "data.synthetic.train_samples",
                  [](Config& c) -> FieldRef { return &c.data.synthetic.trainSamples; },
                  "Number of generated training samples.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "data.synthetic.test_samples",
                  [](Config& c) -> FieldRef { return &c.data.synthetic.testSamples; },
                  "Number of generated test samples.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "data.synthetic.features",
                  [](Config& c) -> FieldRef { return &c.data.synthetic.features; },
                  "Input features per sample.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "data.synthetic.classes",
                  [](Config& c) -> FieldRef { return &c.data.synthetic.classes; },
                  "Number of classes.")
                  .atLeast(2));
  // model
  s.push_back(KeySpec(
                  "model.type", [](Config& c) -> FieldRef { return &c.model.type; },
                  "Network architecture.")
                  .oneOf({"mlp", "cnn", "llama"}));
  s.push_back(KeySpec(
                  "model.hidden", [](Config& c) -> FieldRef { return &c.model.hidden; },
                  "MLP hidden layer widths, input to output; `[]` is a linear model.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "model.channels", [](Config& c) -> FieldRef { return &c.model.channels; },
                  "CNN output channels of its two convolution blocks (exactly 2 entries).")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "model.cnn_hidden", [](Config& c) -> FieldRef { return &c.model.cnnHidden; },
                  "CNN fully-connected layer width.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "model.d_model", [](Config& c) -> FieldRef { return &c.model.dModel; },
                  "llama: residual width (embedding size); a multiple of `model.heads` with an "
                  "even head dimension.")
                  .atLeast(2));
  s.push_back(KeySpec(
                  "model.layers", [](Config& c) -> FieldRef { return &c.model.layers; },
                  "llama: number of decoder blocks.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "model.heads", [](Config& c) -> FieldRef { return &c.model.heads; },
                  "llama: attention heads per block.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "model.seq_len", [](Config& c) -> FieldRef { return &c.model.seqLen; },
                  "llama: context length in bytes; a text sample is a window of seq_len + 1 "
                  "bytes (inputs, and targets shifted by one).")
                  .atLeast(1));
  s.push_back(
      KeySpec(
          "model.mlp_multiple", [](Config& c) -> FieldRef { return &c.model.mlpMultiple; },
          "llama: the SwiGLU hidden size 8/3 x d_model is rounded up to a multiple of this.")
          .atLeast(1));
  // train
  s.push_back(KeySpec(
                  "train.steps", [](Config& c) -> FieldRef { return &c.train.steps; },
                  "Optimizer steps to run.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "train.batch_per_rank",
                  [](Config& c) -> FieldRef { return &c.train.batchPerRank; },
                  "Samples per rank per micro-step; the global batch is this x ranks x "
                  "grad_accumulation.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "train.grad_accumulation",
                  [](Config& c) -> FieldRef { return &c.train.gradAccumulation; },
                  "Micro-steps whose gradients are summed before one optimizer step.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "train.clip_grad_norm",
                  [](Config& c) -> FieldRef { return &c.train.clipGradNorm; },
                  "Clip the global gradient L2 norm to this value; 0 disables clipping.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "train.eval_every", [](Config& c) -> FieldRef { return &c.train.evalEvery; },
                  "Optimizer steps between test-set evaluations; 0 = only at the end.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "train.eval_batch", [](Config& c) -> FieldRef { return &c.train.evalBatch; },
                  "Samples per forward pass during evaluation.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "train.checkpoint_every",
                  [](Config& c) -> FieldRef { return &c.train.checkpointEvery; },
                  "Optimizer steps between checkpoints; 0 = only at the end.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "train.checkpoint_keep",
                  [](Config& c) -> FieldRef { return &c.train.checkpointKeep; },
                  "Number of newest checkpoints kept; older ones are deleted.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "train.resume", [](Config& c) -> FieldRef { return &c.train.resume; },
                  "`auto`: resume from the newest checkpoint of this run if any; `never`: "
                  "start fresh; otherwise a checkpoint directory to resume from.")
                  .oneOf({"auto", "never"})
                  .orOther("<checkpoint directory>"));
  s.push_back(KeySpec(
                  "train.threads", [](Config& c) -> FieldRef { return &c.train.threads; },
                  "Intra-op (BLAS/OpenMP) threads per rank.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "train.device", [](Config& c) -> FieldRef { return &c.train.device; },
                  "Where the model, the batches and the optimizer state live: `cpu`, or `cuda` "
                  "(the CUDA device localRank % devices; needs a CUDA build of libtorch, see "
                  "docs/gpu.md). Gradient buckets and their compression stay in host memory.")
                  .oneOf({"cpu", "cuda"}));
  s.push_back(KeySpec(
                  "train.stop_after", [](Config& c) -> FieldRef { return &c.train.stopAfter; },
                  "Stop with a checkpoint after this step (to test resume); 0 = off; at most "
                  "`train.steps`.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "train.stop_check_every",
                  [](Config& c) -> FieldRef { return &c.train.stopCheckEvery; },
                  "Steps between the ranks' agreements on a stop request: a rank that gets "
                  "SIGTERM, SIGUSR1 or SIGINT finishes its step, and at the next multiple of this "
                  "every rank writes a checkpoint and exits with status 75 (docs/reliability.md, "
                  "\"Stopping on a signal\"); a second signal ends the process at once. An "
                  "agreement on a `run.log_every` step rides in the metrics allreduce; any other "
                  "is one 4-byte allreduce. 0 = no agreement: a signal ends the process at once, "
                  "as without thinwire's handler.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "train.nonfinite", [](Config& c) -> FieldRef { return &c.train.nonfinite; },
                  "NaN or Inf in any rank's gradient, found after backward and before any "
                  "error-feedback, compressor or optimizer state is updated, agreed by all ranks: "
                  "`stop` fails the run on every rank naming the step and the ranks, `skip` drops "
                  "the step everywhere (counted as `skipped_steps` in the metrics), `off` does not "
                  "check (compressed runs then encode buckets during backward again).")
                  .oneOf({"stop", "skip", "off"}));
  // optim
  s.push_back(KeySpec(
                  "optim.name", [](Config& c) -> FieldRef { return &c.optim.name; }, "Optimizer.")
                  .oneOf({"sgd", "adam", "adamw", "onebit_adam"}));
  s.push_back(KeySpec(
                  "optim.lr", [](Config& c) -> FieldRef { return &c.optim.lr; },
                  "Peak learning rate (reached after warm-up).")
                  .above(0));
  s.push_back(KeySpec(
                  "optim.momentum", [](Config& c) -> FieldRef { return &c.optim.momentum; },
                  "SGD momentum.")
                  .atLeast(0)
                  .below(1));
  s.push_back(KeySpec(
      "optim.nesterov", [](Config& c) -> FieldRef { return &c.optim.nesterov; },
      "SGD Nesterov momentum; needs `optim.momentum` > 0."));
  s.push_back(KeySpec(
                  "optim.weight_decay", [](Config& c) -> FieldRef { return &c.optim.weightDecay; },
                  "L2 penalty (sgd, adam) or decoupled weight decay (adamw).")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "optim.beta1", [](Config& c) -> FieldRef { return &c.optim.beta1; },
                  "Adam first-moment decay.")
                  .atLeast(0)
                  .below(1));
  s.push_back(KeySpec(
                  "optim.beta2", [](Config& c) -> FieldRef { return &c.optim.beta2; },
                  "Adam second-moment decay.")
                  .atLeast(0)
                  .below(1));
  s.push_back(
      KeySpec(
          "optim.eps", [](Config& c) -> FieldRef { return &c.optim.eps; }, "Adam denominator term.")
          .above(0));
  s.push_back(KeySpec(
                  "optim.freeze_step", [](Config& c) -> FieldRef { return &c.optim.freezeStep; },
                  "onebit_adam: AdamW warm-up steps on trainer-averaged gradients; afterwards the "
                  "variance is frozen and each rank's momentum is averaged by the 1-bit "
                  "compressed allreduce (specs §5; 15-25 % of `train.steps` is typical).")
                  .atLeast(1));
  s.push_back(KeySpec(
      "optim.bias_correction", [](Config& c) -> FieldRef { return &c.optim.biasCorrection; },
      "onebit_adam: torch-style Adam bias correction; after the freeze the variance keeps the "
      "correction of the freeze step (optim/one_bit_adam.h). false: none anywhere (DeepSpeed)."));
  s.push_back(KeySpec(
      "optim.momentum_mask", [](Config& c) -> FieldRef { return &c.optim.momentumMask; },
      "onebit_adam: elements whose gradient was zero through the whole warm-up (variance 0 at "
      "the freeze) stay out of the 1-bit allreduce, so their momentum and error stay 0."));
  s.push_back(KeySpec(
      "optim.onebit_preconditioned",
      [](Config& c) -> FieldRef { return &c.optim.onebitPreconditioned; },
      "onebit_adam: compress the preconditioned momentum m / (sqrt(v) + eps) (v is frozen and "
      "identical on every rank, so the average is exact); false compresses m itself, as the "
      "paper and DeepSpeed do, which diverged on text_llama (optim/one_bit_adam.h)."));
  s.push_back(KeySpec(
                  "optim.schedule.name",
                  [](Config& c) -> FieldRef { return &c.optim.schedule.name; },
                  "Shape after warm-up: `constant`, `cosine` decay to `min_lr_ratio` x lr at "
                  "the last step, or `step` decay by `gamma` every `step_size` steps.")
                  .oneOf({"constant", "cosine", "step"}));
  s.push_back(KeySpec(
                  "optim.schedule.warmup_steps",
                  [](Config& c) -> FieldRef { return &c.optim.schedule.warmupSteps; },
                  "Steps of linear warm-up from 0 to lr; at most `train.steps`.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "optim.schedule.min_lr_ratio",
                  [](Config& c) -> FieldRef { return &c.optim.schedule.minLrRatio; },
                  "Cosine floor as a fraction of lr.")
                  .atLeast(0)
                  .atMost(1));
  s.push_back(KeySpec(
                  "optim.schedule.step_size",
                  [](Config& c) -> FieldRef { return &c.optim.schedule.stepSize; },
                  "Steps between two decays of the `step` schedule.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "optim.schedule.gamma",
                  [](Config& c) -> FieldRef { return &c.optim.schedule.gamma; },
                  "Factor applied to lr at every decay of the `step` schedule.")
                  .above(0)
                  .atMost(1));
  // qat
  s.push_back(KeySpec(
                  "qat.method", [](Config& c) -> FieldRef { return &c.qat.method; },
                  "Fake quantization of every attention and MLP linear of `model.type: llama` "
                  "(embedding, head and norms stay full precision): `quest` (Hadamard rotation, "
                  "Gaussian-optimal RMS scale, trust-masked gradient), `ste` (same grid, no "
                  "rotation, straight-through gradient), `lsq` (learnable step per tensor), "
                  "`none` (full precision).")
                  .oneOf({"none", "quest", "ste", "lsq"}));
  s.push_back(KeySpec(
                  "qat.w_bits", [](Config& c) -> FieldRef { return &c.qat.wBits; },
                  "Bits per weight (2^b levels per output row); 0 keeps the weights in full "
                  "precision. `lsq` needs 2..8.")
                  .atLeast(0)
                  .atMost(8));
  s.push_back(KeySpec(
                  "qat.a_bits", [](Config& c) -> FieldRef { return &c.qat.aBits; },
                  "Bits per input activation (2^b levels per token); 0 keeps the inputs in full "
                  "precision. `lsq` needs 2..8.")
                  .atLeast(0)
                  .atMost(8));
  s.push_back(KeySpec(
                  "qat.trust", [](Config& c) -> FieldRef { return &c.qat.trust; },
                  "quest: the gradient of a rotated coordinate u is kept iff |u| <= trust x c "
                  "(c the clip). 0 = the default, 2^b/(2^b-1) (QuEST's trust of half a step) "
                  "for b >= 2 and 1.3 (the clip mask of QuEST's W1A1 runs) for b = 1.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "qat.variant", [](Config& c) -> FieldRef { return &c.qat.variant; },
                  "quest: `half` multiplies the Hadamard-rotated quantized operands directly "
                  "(H H^T = I), `full` rotates each back first; same values, `half` is cheaper.")
                  .oneOf({"full", "half"}));
  // comm
  s.push_back(KeySpec(
                  "comm.backend", [](Config& c) -> FieldRef { return &c.comm.backend; },
                  "`mpi` between processes; `local` runs ranks as threads of one process; "
                  "`nccl` between GPUs (one CUDA device per rank, THINWIRE_WITH_CUDA builds; "
                  "docs/gpu.md); `tcp` between processes without MPI, bootstrapped through a "
                  "rendezvous store that rank 0 serves at THINWIRE_STORE=HOST:PORT (plain "
                  "`srun`, or processes started by hand; docs/launch.md).")
                  .oneOf({"mpi", "local", "nccl", "tcp"}));
  s.push_back(
      KeySpec(
          "comm.bucket_mb", [](Config& c) -> FieldRef { return &c.comm.bucketMb; },
          "Gradient bucket size in MiB: a bucket closes once it holds at least this much; buckets "
          "are reduced while backward runs.")
          .above(0));
  s.push_back(KeySpec(
                  "comm.timeout_s", [](Config& c) -> FieldRef { return &c.comm.timeoutS; },
                  "Seconds any collective may wait before the run fails with a TimeoutError.")
                  .above(0));
  s.push_back(KeySpec(
      "comm.gradient_sync", [](Config& c) -> FieldRef { return &c.comm.gradientSync; },
      "`false` skips gradient averaging (compute-only benchmark; ranks diverge)."));
  s.push_back(KeySpec(
                  "comm.overlap", [](Config& c) -> FieldRef { return &c.comm.overlap; },
                  "Start reducing a bucket as soon as its gradients are ready during backward. "
                  "`auto` turns it on when every rank on the host has a core for its compute "
                  "threads and one for communication, and off when ranks share cores (then the "
                  "communication thread only takes time from backward).")
                  .oneOf({"auto", "on", "off"}));
  s.push_back(KeySpec(
                  "comm.allreduce", [](Config& c) -> FieldRef { return &c.comm.allreduce; },
                  "Algorithm for large float32 gradient buckets (>= 64 KiB) with the MPI "
                  "backend. `ring`: thinwire's ring, in eager-sized segments, waiting without "
                  "spinning (bandwidth-optimal; measured 2x Open MPI's choice over 1 Gbit/s "
                  "links). `mpi`: MPI_Allreduce (Open MPI's shared-memory path is faster on one "
                  "host). `auto`: ring when the job spans hosts or launch.transport is tcp.")
                  .oneOf({"auto", "ring", "mpi"}));
  s.push_back(KeySpec(
                  "comm.heartbeat_s", [](Config& c) -> FieldRef { return &c.comm.heartbeatS; },
                  "Watchdog of an MPI run: every rank heartbeats through a store on rank 0 this "
                  "often; a rank silent for half of `comm.timeout_s` (killed, stopped, wedged) "
                  "makes every other rank exit non-zero naming it and the collective it was in. "
                  "At most a quarter of `comm.timeout_s`; 0 turns the watchdog off.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "comm.store_host", [](Config& c) -> FieldRef { return &c.comm.storeHost; },
                  "IP address rank 0's rendezvous store listens on and the other ranks connect "
                  "to; `auto`: 127.0.0.1 when all ranks share one host, else (listening on "
                  "every interface) the address of `launch.tcp_interface` when set, else with "
                  "`comm.backend: tcp` the host of THINWIRE_STORE (rank 0 serves the job's "
                  "rendezvous there), else rank 0's host name.")
                  .oneOf({"auto"})
                  .orOther("<IP address>"));
  s.push_back(KeySpec(
      "comm.timeline", [](Config& c) -> FieldRef { return &c.comm.timeline; },
      "Chrome trace of the run (chrome://tracing, ui.perfetto.dev): forward, "
      "backward, compress, communicate, decompress and optimizer spans per rank. "
      "Relative paths are under the run directory; each rank writes "
      "`<name>.rank<r>.json` and rank 0 merges them into this file at the end "
      "(several hosts need a shared file system). Empty: off."));
  s.push_back(KeySpec(
      "comm.status", [](Config& c) -> FieldRef { return &c.comm.status; },
      "`HOST:PORT` where rank 0 serves the live metrics as JSON over HTTP "
      "(`thinwire status HOST:PORT` prints them); use 127.0.0.1 unless the endpoint "
      "must be reachable from elsewhere; port 0 picks a free one (logged). Empty: "
      "off."));
  // compression
  s.push_back(KeySpec(
                  "compression.method", [](Config& c) -> FieldRef { return &c.compression.method; },
                  "What each rank sends. `none`: plain float32 averaging (no compression "
                  "machinery). `identity`: float32 through the compression path. `fp16`, `bf16`: "
                  "casts. `topk`: the `ratio` largest magnitudes with int32 indices. `randomk`: "
                  "`ratio` of the positions drawn from a seed shared by all ranks, values only. "
                  "`sign`: 1 bit per element plus one scale per `sign_chunk`. `quantize`: `bits` "
                  "per element, max-min per `quantize_bucket`. `powersgd`: rank-`rank` "
                  "factors P, Q.")
                  .oneOf({"none", "identity", "fp16", "bf16", "topk", "randomk", "sign", "quantize",
                          "powersgd"}));
  s.push_back(KeySpec(
                  "compression.feedback",
                  [](Config& c) -> FieldRef { return &c.compression.feedback; },
                  "State that keeps a biased compressor convergent. `none`; `ef`: error "
                  "feedback (residual memory); `ef21`: each rank tracks its gradient, sends "
                  "C(g - h); `econtrol`: EF21 plus damped error feedback (`eta`); `dgc`: momentum "
                  "correction and masking (needs `method: topk` and `optim.momentum: 0`). "
                  "PowerSGD always keeps its own error feedback.")
                  .oneOf({"none", "ef", "ef21", "econtrol", "dgc"}));
  s.push_back(KeySpec(
                  "compression.aggregator",
                  [](Config& c) -> FieldRef { return &c.compression.aggregator; },
                  "How messages of all ranks become their mean. `allreduce` (summable payloads "
                  "only: identity, casts, randomk), `allgather` (every rank decodes every "
                  "message), `two_phase` (all-to-all of chunks, the chunk's owner averages, "
                  "re-compresses with its own error memory, allgather). `auto`: the cheapest by "
                  "the cost model (bytes / `link_gbps` + rounds x `latency_us`).")
                  .oneOf({"auto", "allreduce", "allgather", "two_phase"}));
  s.push_back(KeySpec(
                  "compression.ratio", [](Config& c) -> FieldRef { return &c.compression.ratio; },
                  "Fraction of elements kept by `topk` and `randomk`: k = max(1, floor(ratio x "
                  "numel)) per tensor.")
                  .above(0)
                  .atMost(1));
  s.push_back(
      KeySpec(
          "compression.selection", [](Config& c) -> FieldRef { return &c.compression.selection; },
          "How `topk` selects. `exact`: the k largest magnitudes, ties to the lowest "
          "index. `sampled`: DGC's threshold from a sample, then one pass (at most k kept).")
          .oneOf({"exact", "sampled"}));
  s.push_back(KeySpec(
                  "compression.sample_ratio",
                  [](Config& c) -> FieldRef { return &c.compression.sampleRatio; },
                  "Fraction of elements sampled for the threshold of `selection: sampled`.")
                  .above(0)
                  .atMost(1));
  s.push_back(KeySpec(
      "compression.fp16_values", [](Config& c) -> FieldRef { return &c.compression.fp16Values; },
      "Send `topk` / `randomk` values as float16 (6 instead of 8 bytes per kept element)."));
  s.push_back(KeySpec(
      "compression.scale_randomk",
      [](Config& c) -> FieldRef { return &c.compression.scaleRandomK; },
      "Scale `randomk` values by numel / k (unbiased); the default unscaled form is for error "
      "feedback."));
  s.push_back(KeySpec(
                  "compression.bits", [](Config& c) -> FieldRef { return &c.compression.bits; },
                  "Bits per element of `quantize`.")
                  .atLeast(2)
                  .atMost(8));
  s.push_back(KeySpec(
                  "compression.quantize_bucket",
                  [](Config& c) -> FieldRef { return &c.compression.quantizeBucket; },
                  "Elements per max-min bucket of `quantize` (8 bytes of scale each).")
                  .atLeast(1));
  s.push_back(KeySpec(
      "compression.stochastic_rounding",
      [](Config& c) -> FieldRef { return &c.compression.stochasticRounding; },
      "`quantize` rounds stochastically (unbiased) instead of to nearest."));
  s.push_back(KeySpec(
                  "compression.sign_chunk",
                  [](Config& c) -> FieldRef { return &c.compression.signChunk; },
                  "Elements per scale of `sign` (a multiple of 8; 0 = one scale per tensor). "
                  "Smaller chunks lose less; each costs 4 bytes.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "compression.rank", [](Config& c) -> FieldRef { return &c.compression.rank; },
                  "Rank of the `powersgd` factors.")
                  .atLeast(1));
  s.push_back(KeySpec(
      "compression.warm_start", [](Config& c) -> FieldRef { return &c.compression.warmStart; },
      "`powersgd` reuses the previous step's Q (one power iteration per step accumulates)."));
  s.push_back(KeySpec(
                  "compression.min_compression_rate",
                  [](Config& c) -> FieldRef { return &c.compression.minCompressionRate; },
                  "`powersgd` compresses a matrix only when its factors are this many times "
                  "smaller than it; others go uncompressed.")
                  .atLeast(1));
  s.push_back(KeySpec(
      "compression.eta", [](Config& c) -> FieldRef { return &c.compression.eta; },
      "EControl's feedback strength; negative = derived from the compressor's contraction "
      "(docs/compression.md)."));
  s.push_back(KeySpec(
                  "compression.tracking_momentum",
                  [](Config& c) -> FieldRef { return &c.compression.trackingMomentum; },
                  "EControl tracks the local momentum v <- b v + (1 - b) g instead of the "
                  "gradient when b > 0 (less noise in the tracker; run the optimizer without "
                  "momentum and with lr / (1 - b)); 0 tracks g.")
                  .atLeast(0)
                  .below(1));
  s.push_back(KeySpec(
      "compression.step_units", [](Config& c) -> FieldRef { return &c.compression.stepUnits; },
      "`ef` keeps its residual in step units (lr x g) instead of gradient units; differs only "
      "under a changing learning rate."));
  s.push_back(KeySpec(
                  "compression.dgc.momentum",
                  [](Config& c) -> FieldRef { return &c.compression.dgc.momentum; },
                  "Momentum of DGC's correction (the optimizer then runs without momentum).")
                  .atLeast(0)
                  .below(1));
  s.push_back(KeySpec(
      "compression.dgc.nesterov", [](Config& c) -> FieldRef { return &c.compression.dgc.nesterov; },
      "Nesterov form of the momentum correction."));
  s.push_back(KeySpec(
      "compression.dgc.masking", [](Config& c) -> FieldRef { return &c.compression.dgc.masking; },
      "Momentum factor masking: zero the momentum where a coordinate was sent."));
  s.push_back(KeySpec(
                  "compression.dgc.clip_norm",
                  [](Config& c) -> FieldRef { return &c.compression.dgc.clipNorm; },
                  "Local gradient clipping: each layer's local gradient is clipped to "
                  "clip_norm / sqrt(ranks) in L2 norm before accumulation; 0 disables.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "compression.dgc.warmup_epochs",
                  [](Config& c) -> FieldRef { return &c.compression.dgc.warmupEpochs; },
                  "Exponential sparsity warm-up: density max(ratio^((e+1)/(W+1)), ratio) in "
                  "epoch e < W; 0 disables.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "compression.min_numel",
                  [](Config& c) -> FieldRef { return &c.compression.minNumel; },
                  "Tensors with fewer elements are averaged uncompressed, in float32. The "
                  "default 65536 keeps output layers like fmnist-mlp's 2048x10 whole: at 1 % "
                  "top-k such a tensor would keep only ~200 values per step "
                  "(docs/compression.md).")
                  .atLeast(1));
  s.push_back(KeySpec(
      "compression.compress_vectors",
      [](Config& c) -> FieldRef { return &c.compression.compressVectors; },
      "Compress 1-D tensors (biases, norms) too; by default they go uncompressed."));
  s.push_back(KeySpec(
                  "compression.start_step",
                  [](Config& c) -> FieldRef { return &c.compression.startStep; },
                  "Steps of plain float32 averaging before compression starts.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "compression.error_every",
                  [](Config& c) -> FieldRef { return &c.compression.errorEvery; },
                  "Every this many steps, record each layer's relative compression error "
                  "||C(g) - g||^2 / ||g||^2 on its local gradient; 0 disables.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "compression.link_gbps",
                  [](Config& c) -> FieldRef { return &c.compression.linkGbps; },
                  "Link bandwidth the `auto` aggregator's cost model assumes, Gbit/s.")
                  .above(0));
  s.push_back(KeySpec(
                  "compression.latency_us",
                  [](Config& c) -> FieldRef { return &c.compression.latencyUs; },
                  "Per-message latency the `auto` aggregator's cost model assumes, microseconds.")
                  .atLeast(0));
  s.push_back(KeySpec(
      "compression.overrides", [](Config& c) -> FieldRef { return &c.compression.overrides; },
      "Per-layer settings: each entry is `GLOB key=value ...`; a parameter whose name matches "
      "GLOB (fnmatch, e.g. `layers.0.*`, `*.bias`) uses these compression keys instead, later "
      "entries win. Example: `\"layers.2.* method=none\"`."));
  s.push_back(KeySpec(
                  "compression.policy", [](Config& c) -> FieldRef { return &c.compression.policy; },
                  "Per-layer settings: `uniform` uses the keys above for every layer; `lgreco` "
                  "re-chooses each compressed layer's `ratio` (topk), `bits` (quantize) or "
                  "`rank` (powersgd) every `lgreco.adjust_every` steps to minimise the bytes "
                  "sent while the total squared compression error stays within `lgreco.alpha` "
                  "times that of the uniform setting.")
                  .oneOf({"uniform", "lgreco"}));
  s.push_back(KeySpec(
                  "compression.lgreco.alpha",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.alpha; },
                  "Error budget: total error (as `error` measures it) <= alpha x the uniform "
                  "setting's, measured on the accumulated gradients of the window. 1 never does "
                  "worse than uniform.")
                  .above(0));
  s.push_back(KeySpec(
                  "compression.lgreco.error",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.error; },
                  "What the budget sums per layer: `squared` errors (the model-wide squared "
                  "norm), `sum_of_norms`, the unsquared per-layer norms the reference code "
                  "sums (specs §4.1), for comparisons with it, or `relative`: each layer's "
                  "squared error divided by its window's squared norm, so that layers with "
                  "small gradients are not starved to pay for those with large ones.")
                  .oneOf({"squared", "sum_of_norms", "relative"}));
  s.push_back(KeySpec(
                  "compression.lgreco.window",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.window; },
                  "Steps whose error-feedback-compensated gradients are summed (on rank 0) "
                  "before each solve.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "compression.lgreco.window_sum",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.windowSum; },
                  "What the window sums per layer: `compensated`, each step's gradient plus the "
                  "error-feedback residual (specs §4.2, the reference code; the residual of a "
                  "starved layer counts once per step), or `demand`, the residual once at the "
                  "window's first step plus each step's gradient (compressors/"
                  "compression_engine.cc, Note [Window sum]); `demand` needs `feedback: ef` "
                  "or `method: powersgd`.")
                  .oneOf({"compensated", "demand"}));
  s.push_back(KeySpec(
                  "compression.lgreco.warmup_steps",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.warmupSteps; },
                  "Step of the first solve (the uniform setting runs until then); at least "
                  "`start_step` + `window`.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "compression.lgreco.adjust_every",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.adjustEvery; },
                  "Steps between two solves; at least `window`.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "compression.lgreco.buckets",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.buckets; },
                  "Resolution of the solver's error axis; the chosen error may exceed the budget "
                  "by at most layers / buckets of it.")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "compression.lgreco.density_factor",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.densityFactor; },
                  "topk candidates: ratio x density_factor^j for j = -density_steps.."
                  "density_steps (capped at 1).")
                  .above(1));
  s.push_back(KeySpec(
                  "compression.lgreco.density_steps",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.densitySteps; },
                  "topk candidates on each side of `ratio`.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "compression.lgreco.bits",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.bits; },
                  "quantize candidates (bits per element; `bits` is always one).")
                  .atLeast(2)
                  .atMost(8));
  s.push_back(KeySpec(
                  "compression.lgreco.rank_low",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.rankLow; },
                  "powersgd candidates: every rank from max(1, floor(rank_low x rank)) ...")
                  .above(0)
                  .atMost(1));
  s.push_back(KeySpec(
                  "compression.lgreco.rank_high",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.rankHigh; },
                  "... to ceil(rank_high x rank) (ranks whose factors are not "
                  "`min_compression_rate` times smaller are left out).")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "compression.lgreco.rank_change",
                  [](Config& c) -> FieldRef { return &c.compression.lgreco.rankChange; },
                  "powersgd: what a layer whose rank the solver changes starts from: a `fresh` "
                  "random Q, as the reference code does, or `keep`: the old Q's leading "
                  "min(old, new) columns and fresh ones for the rest (warm start kept; "
                  "compressors/power_sgd.h, Note [Rank change]).")
                  .oneOf({"keep", "fresh"}));
  // launch
  s.push_back(KeySpec(
                  "launch.ranks", [](Config& c) -> FieldRef { return &c.launch.ranks; },
                  "Number of ranks (processes) `thinwire launch` starts.")
                  .atLeast(1));
  s.push_back(KeySpec(
      "launch.hostfile", [](Config& c) -> FieldRef { return &c.launch.hostfile; },
      "Open MPI hostfile; empty = all ranks on this machine."));
  s.push_back(KeySpec(
                  "launch.mpirun", [](Config& c) -> FieldRef { return &c.launch.mpirun; },
                  "The mpirun executable (name on PATH or a path).")
                  .required());
  s.push_back(KeySpec(
      "launch.oversubscribe", [](Config& c) -> FieldRef { return &c.launch.oversubscribe; },
      "Pass `--oversubscribe`: allow more ranks than cores."));
  s.push_back(KeySpec(
                  "launch.bind_to", [](Config& c) -> FieldRef { return &c.launch.bindTo; },
                  "Process binding (`mpirun --bind-to`, `srun --cpu-bind`).")
                  .oneOf({"none", "core", "socket"}));
  s.push_back(KeySpec(
                  "launch.transport", [](Config& c) -> FieldRef { return &c.launch.transport; },
                  "Open MPI byte transport: `auto` lets Open MPI choose, `tcp` forces "
                  "ob1/tcp (emulated networks), `shm` forces shared memory (one node).")
                  .oneOf({"auto", "tcp", "shm"}));
  s.push_back(KeySpec(
      "launch.tcp_interface", [](Config& c) -> FieldRef { return &c.launch.tcpInterface; },
      "Network interface for `tcp` (e.g. `lo`, `eth0`); empty = any. Needs "
      "`launch.transport: tcp`."));
  s.push_back(KeySpec(
      "launch.extra_args", [](Config& c) -> FieldRef { return &c.launch.extraArgs; },
      "Arguments appended to mpirun verbatim, before the program."));
  s.push_back(KeySpec(
                  "launch.srun_mpi", [](Config& c) -> FieldRef { return &c.launch.srunMpi; },
                  "PMI flavour for `srun --mpi=` inside a SLURM allocation.")
                  .required());
  s.push_back(KeySpec(
      "launch.srun_args", [](Config& c) -> FieldRef { return &c.launch.srunArgs; },
      "Arguments appended to srun verbatim, before the program."));
  // pv
  s.push_back(KeySpec(
                  "pv.method", [](Config& c) -> FieldRef { return &c.pv.method; },
                  "`thinwire quantize`: `pv` (PV-Tuning: P-step on scales and the rest, "
                  "V-step re-projecting at most ceil(tau N) codes per step), `p_only` (codes "
                  "frozen), `ste` (every code re-projected each step), `rtn` (round-to-nearest, "
                  "no tuning). See docs/pv_tuning.md.")
                  .oneOf({"pv", "p_only", "ste", "rtn"}));
  s.push_back(KeySpec(
                  "pv.bits", [](Config& c) -> FieldRef { return &c.pv.bits; },
                  "Bits per weight code of every attention and MLP linear (asymmetric grid).")
                  .atLeast(1)
                  .atMost(8));
  s.push_back(KeySpec(
                  "pv.group_size", [](Config& c) -> FieldRef { return &c.pv.groupSize; },
                  "Weights sharing one scale and zero point, along the input dimension (must "
                  "divide every quantized linear's input size).")
                  .atLeast(1));
  s.push_back(KeySpec(
                  "pv.steps", [](Config& c) -> FieldRef { return &c.pv.steps; },
                  "Fine-tuning steps of global batch `train.batch_per_rank` x ranks (rtn: 0).")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "pv.loss", [](Config& c) -> FieldRef { return &c.pv.loss; },
                  "`kl`: token-mean KL(teacher || student) to the full-precision checkpoint; "
                  "`ce`: next-token cross-entropy on the data.")
                  .oneOf({"kl", "ce"}));
  s.push_back(KeySpec(
                  "pv.lr", [](Config& c) -> FieldRef { return &c.pv.lr; },
                  "P-step Adam learning rate (scales, zero points, embedding, norms, head).")
                  .above(0));
  s.push_back(
      KeySpec(
          "pv.beta1", [](Config& c) -> FieldRef { return &c.pv.beta1; }, "P-step Adam beta1.")
          .atLeast(0)
          .below(1));
  s.push_back(
      KeySpec(
          "pv.beta2", [](Config& c) -> FieldRef { return &c.pv.beta2; }, "P-step Adam beta2.")
          .atLeast(0)
          .below(1));
  s.push_back(KeySpec(
                  "pv.code_lr", [](Config& c) -> FieldRef { return &c.pv.codeLr; },
                  "V-proposal step on the fp32 straight-through buffer (RMS-normalised "
                  "gradient, beta1 0).")
                  .above(0));
  s.push_back(KeySpec(
                  "pv.code_beta2", [](Config& c) -> FieldRef { return &c.pv.codeBeta2; },
                  "V-proposal second-moment decay.")
                  .atLeast(0)
                  .below(1));
  s.push_back(KeySpec(
                  "pv.max_code_change", [](Config& c) -> FieldRef { return &c.pv.maxCodeChange; },
                  "tau: fraction of each layer's codes eligible for re-projection per step (pv).")
                  .above(0)
                  .atMost(1));
  s.push_back(KeySpec(
                  "pv.trust_ratio", [](Config& c) -> FieldRef { return &c.pv.trustRatio; },
                  "rho: keep selected changes while their cumulative norm stays below rho x "
                  "||W|| (at least one); 0 = off.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "pv.eval_every", [](Config& c) -> FieldRef { return &c.pv.evalEvery; },
                  "Steps between validation passes (KL to the teacher, perplexity); 0 = only "
                  "before and after.")
                  .atLeast(0));
  s.push_back(KeySpec(
                  "pv.eval_windows", [](Config& c) -> FieldRef { return &c.pv.evalWindows; },
                  "Validation windows per pass (the first ones); 0 = the whole split.")
                  .atLeast(0));
  return s;
}

// The schema is immutable data, built once (thread-safe static initialisation).
const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> kSchema = buildSchema();
  return kSchema;
}

const KeySpec* findKey(const std::string& path) {
  for (const KeySpec& key : schema()) {
    if (key.path == path) return &key;
  }
  return nullptr;
}

bool isSection(const std::string& path) {
  for (const SectionSpec& section : sections()) {
    if (path == section.path) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Formatting helpers.

std::string formatDouble(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

// Strings that YAML reads back unchanged without quotes; everything else is double-quoted.
bool isPlainSafe(const std::string& text) {
  if (text.empty()) return false;
  const unsigned char first = static_cast<unsigned char>(text[0]);
  if (!std::isalnum(first) && first != '_' && first != '/' && first != '.') return false;
  for (const char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (!std::isalnum(c) && c != '_' && c != '.' && c != '/' && c != '-' && c != '+') {
      return false;
    }
  }
  static const std::set<std::string> kSpecial = {
      "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE",
      "yes",  "Yes",  "YES",  "no",   "No",   "NO",   "on",    "On",    "ON",
      "off",  "Off",  "OFF",  "y",    "Y",    "n",    "N"};
  return kSpecial.count(text) == 0;
}

std::string yamlString(const std::string& text) {
  return isPlainSafe(text) ? text : jsonQuote(text);
}

// The value of a field as a YAML flow value, e.g. `0.1`, `[2048, 2048]`, `""`.
std::string yamlValue(const FieldRef& field) {
  struct Visitor {
    std::string operator()(int64_t* v) const { return std::to_string(*v); }
    std::string operator()(uint64_t* v) const { return std::to_string(*v); }
    std::string operator()(double* v) const { return formatDouble(*v); }
    std::string operator()(bool* v) const { return *v ? "true" : "false"; }
    std::string operator()(std::string* v) const { return yamlString(*v); }
    std::string operator()(std::vector<int64_t>* v) const {
      std::string out = "[";
      for (size_t i = 0; i < v->size(); ++i) out += (i ? ", " : "") + std::to_string((*v)[i]);
      return out + "]";
    }
    std::string operator()(std::vector<std::string>* v) const {
      std::string out = "[";
      for (size_t i = 0; i < v->size(); ++i) out += (i ? ", " : "") + yamlString((*v)[i]);
      return out + "]";
    }
  };
  return std::visit(Visitor{}, field);
}

std::string typeName(const FieldRef& field) {
  struct Visitor {
    const char* operator()(int64_t*) const { return "integer"; }
    const char* operator()(uint64_t*) const { return "non-negative integer"; }
    const char* operator()(double*) const { return "number"; }
    const char* operator()(bool*) const { return "boolean"; }
    const char* operator()(std::string*) const { return "string"; }
    const char* operator()(std::vector<int64_t>*) const { return "list of integers"; }
    const char* operator()(std::vector<std::string>*) const { return "list of strings"; }
  };
  return std::visit(Visitor{}, field);
}

// "> 0", ">= 1", "in [0, 1)" or "" when unbounded.
std::string describeRange(const Range& range) {
  if (range.low && range.high) {
    return "in " + std::string(range.lowOpen ? "(" : "[") + formatDouble(*range.low) + ", " +
           formatDouble(*range.high) + (range.highOpen ? ")" : "]");
  }
  if (range.low) return std::string(range.lowOpen ? "> " : ">= ") + formatDouble(*range.low);
  if (range.high) return std::string(range.highOpen ? "< " : "<= ") + formatDouble(*range.high);
  return "";
}

bool inRange(const Range& range, double value) {
  if (range.low && (range.lowOpen ? !(value > *range.low) : !(value >= *range.low))) return false;
  if (range.high && (range.highOpen ? !(value < *range.high) : !(value <= *range.high))) {
    return false;
  }
  return true;
}

std::string joinChoices(const KeySpec& key, const char* separator) {
  std::string out;
  for (size_t i = 0; i < key.allowed.size(); ++i) out += (i ? separator : "") + key.allowed[i];
  if (!key.otherLabel.empty()) out += separator + key.otherLabel;
  return out;
}

// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
// transpositions ("sdg" is one edit from "sgd"), which covers the typical typo.
size_t editDistance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

constexpr size_t kMaxSuggestionDistance = 2;

std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t bestDistance = kMaxSuggestionDistance + 1;
  for (const std::string& candidate : candidates) {
    const size_t distance = editDistance(word, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

std::string lastSegment(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// A known key or section within edit distance 2 of `path`; failing that, a key elsewhere with the
// same last segment ("train.lr" -> "optim.lr"); "" when nothing is close.
std::string suggestPath(const std::string& path) {
  std::vector<std::string> candidates;
  for (const SectionSpec& section : sections()) candidates.push_back(section.path);
  for (const KeySpec& key : schema()) candidates.push_back(key.path);
  std::string best = closest(path, candidates);
  if (!best.empty()) return best;
  const std::string name = lastSegment(path);
  for (const KeySpec& key : schema()) {
    if (lastSegment(key.path) == name) return key.path;
  }
  return "";
}

std::string didYouMean(const std::string& suggestion) {
  return suggestion.empty() ? "" : " (did you mean '" + suggestion + "'?)";
}

// ---------------------------------------------------------------------------------------------
// Where a value came from, for messages.

struct Origin {
  std::string source;   // file name, or "" for an override
  int line = 0;         // 1-based; 0 = unknown (a default)
  std::string setPath;  // the --set path, for overrides

  bool isOverride() const { return !setPath.empty(); }
};

int lineOf(const YAML::Node& node, int fallback) {
  const YAML::Mark mark = node.Mark();
  return mark.is_null() || mark.line < 0 ? fallback : mark.line + 1;
}

// Every ConfigError of this file is thrown here. The message names the user's file and line (or
// the --set argument), not this source file: a C++ location would not help fix a config.
[[noreturn]] void fail(const Origin& origin, const std::string& subject, const std::string& what) {
  std::string message;
  if (origin.isOverride()) {
    message = "--set " + origin.setPath + ": ";
    if (subject != origin.setPath && !subject.empty()) message += subject + " ";
  } else {
    message = origin.source;
    if (origin.line > 0) message += ":" + std::to_string(origin.line);
    message += ": ";
    if (!subject.empty()) message += subject + " ";
  }
  message += what;
  throw ConfigError(message);
}

std::string describeNode(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

std::optional<int64_t> parseInt(const std::string& text) {
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (begin != end && *begin == '+') ++begin;
  int64_t value = 0;
  const auto result = std::from_chars(begin, end, value);
  if (result.ec != std::errc() || result.ptr != end || begin == end) return std::nullopt;
  return value;
}

std::optional<uint64_t> parseUnsigned(const std::string& text) {
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (begin != end && *begin == '+') ++begin;
  uint64_t value = 0;
  const auto result = std::from_chars(begin, end, value);
  if (result.ec != std::errc() || result.ptr != end || begin == end) return std::nullopt;
  return value;
}

std::optional<double> parseDouble(const std::string& text) {
  // YAML spells the non-finite values .inf/.nan; read them so that the range check can name them.
  static const std::set<std::string> kNaN = {".nan", ".NaN", ".NAN"};
  static const std::set<std::string> kInf = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"};
  static const std::set<std::string> kNegInf = {"-.inf", "-.Inf", "-.INF"};
  if (kNaN.count(text) != 0) return std::numeric_limits<double>::quiet_NaN();
  if (kInf.count(text) != 0) return std::numeric_limits<double>::infinity();
  if (kNegInf.count(text) != 0) return -std::numeric_limits<double>::infinity();
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (begin != end && *begin == '+') ++begin;
  double value = 0;
  const auto result = std::from_chars(begin, end, value);
  if (result.ec != std::errc() || result.ptr != end || begin == end) return std::nullopt;
  return value;
}

// Reads one YAML value into the field of `key`, checking type, range and allowed values.
// `origin` is where the value came from; element errors refine its line.
void assignValue(const KeySpec& key,
                 const FieldRef& field,
                 const YAML::Node& node,
                 const Origin& origin) {
  const auto at = [&](const YAML::Node& n) {
    Origin refined = origin;
    if (!origin.isOverride()) refined.line = lineOf(n, origin.line);
    return refined;
  };
  const auto checkRange = [&](const YAML::Node& n, const std::string& subject, double value) {
    if (!inRange(key.range, value)) {
      fail(at(n), subject, "must be " + describeRange(key.range) + ", got " + n.Scalar());
    }
  };
  const auto scalarOrFail = [&](const YAML::Node& n, const std::string& subject,
                                const std::string& expected) {
    if (!n.IsScalar()) fail(at(n), subject, "must be " + expected + ", got " + describeNode(n));
    return n.Scalar();
  };

  if (auto* value = std::get_if<int64_t*>(&field)) {
    const std::string text = scalarOrFail(node, key.path, "an integer");
    const auto parsed = parseInt(text);
    if (!parsed) fail(at(node), key.path, "must be an integer, got '" + text + "'");
    checkRange(node, key.path, static_cast<double>(*parsed));
    **value = *parsed;
  } else if (auto* value = std::get_if<uint64_t*>(&field)) {
    const std::string text = scalarOrFail(node, key.path, "a non-negative integer");
    const auto parsed = parseUnsigned(text);
    if (!parsed) fail(at(node), key.path, "must be a non-negative integer, got '" + text + "'");
    **value = *parsed;
  } else if (auto* value = std::get_if<double*>(&field)) {
    const std::string text = scalarOrFail(node, key.path, "a number");
    const auto parsed = parseDouble(text);
    if (!parsed) fail(at(node), key.path, "must be a number, got '" + text + "'");
    if (!std::isfinite(*parsed)) {
      fail(at(node), key.path, "must be a finite number, got '" + text + "'");
    }
    checkRange(node, key.path, *parsed);
    **value = *parsed;
  } else if (auto* value = std::get_if<bool*>(&field)) {
    const std::string text = scalarOrFail(node, key.path, "a boolean (true|false)");
    bool parsed = false;
    if (!YAML::convert<bool>::decode(node, parsed)) {
      fail(at(node), key.path, "must be a boolean (true|false), got '" + text + "'");
    }
    **value = parsed;
  } else if (auto* value = std::get_if<std::string*>(&field)) {
    // An empty value (`hostfile:`) is the empty string.
    const std::string text = node.IsNull() ? "" : scalarOrFail(node, key.path, "a string");
    if (!key.allowed.empty() &&
        std::find(key.allowed.begin(), key.allowed.end(), text) == key.allowed.end() &&
        (key.otherLabel.empty() || text.empty())) {
      fail(at(node), key.path,
           "must be one of " + joinChoices(key, "|") + ", got '" + text + "'" +
               didYouMean(closest(text, key.allowed)));
    }
    if (key.nonEmpty && text.empty()) fail(at(node), key.path, "must not be empty");
    **value = text;
  } else if (auto* value = std::get_if<std::vector<int64_t>*>(&field)) {
    std::vector<int64_t> parsed;
    if (!node.IsNull()) {
      if (!node.IsSequence()) {
        fail(at(node), key.path, "must be a list of integers, got " + describeNode(node));
      }
      for (size_t i = 0; i < node.size(); ++i) {
        const std::string subject = key.path + "[" + std::to_string(i) + "]";
        const std::string text = scalarOrFail(node[i], subject, "an integer");
        const auto entry = parseInt(text);
        if (!entry) fail(at(node[i]), subject, "must be an integer, got '" + text + "'");
        checkRange(node[i], subject, static_cast<double>(*entry));
        parsed.push_back(*entry);
      }
    }
    **value = std::move(parsed);
  } else if (auto* value = std::get_if<std::vector<std::string>*>(&field)) {
    std::vector<std::string> parsed;
    if (!node.IsNull()) {
      if (!node.IsSequence()) {
        fail(at(node), key.path, "must be a list of strings, got " + describeNode(node));
      }
      for (size_t i = 0; i < node.size(); ++i) {
        const std::string subject = key.path + "[" + std::to_string(i) + "]";
        parsed.push_back(scalarOrFail(node[i], subject, "a string"));
      }
    }
    **value = std::move(parsed);
  }
}

// One entry of compression.overrides: "GLOB key=value key=value".
struct CompressionOverride {
  std::string glob;
  std::vector<std::pair<std::string, std::string>> assignments;
};

std::optional<CompressionOverride> parseCompressionOverride(const std::string& text,
                                                            std::string& error) {
  std::istringstream words(text);
  CompressionOverride entry;
  if (!(words >> entry.glob) || entry.glob.find('=') != std::string::npos) {
    error = "must be 'GLOB key=value ...' (e.g. \"*.bias method=none\"), got '" + text + "'";
    return std::nullopt;
  }
  std::string word;
  while (words >> word) {
    const size_t equals = word.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == word.size()) {
      error = "expected key=value after the glob, got '" + word + "' in '" + text + "'";
      return std::nullopt;
    }
    const std::string key = word.substr(0, equals);
    if (key == "overrides" || key.rfind("compression.", 0) == 0) {
      error = "key '" + key +
              "' cannot be overridden per layer (use the key without the "
              "compression. prefix)";
      return std::nullopt;
    }
    entry.assignments.emplace_back(key, word.substr(equals + 1));
  }
  if (entry.assignments.empty()) {
    error = "'" + text + "' sets nothing; add key=value pairs after the glob";
    return std::nullopt;
  }
  return entry;
}

// Parsing state of one fromString() call.
struct Parser {
  Config config;
  std::string source;
  std::map<std::string, Origin> origins;  // key path -> where its value was set

  void parseMapping(const YAML::Node& mapping, const std::string& prefix, int line) {
    if (mapping.IsNull()) return;  // `optim:` with nothing under it: all defaults
    if (!mapping.IsMap()) {
      const std::string what = ", got " + describeNode(mapping);
      if (prefix.empty()) {
        fail(Origin{source, lineOf(mapping, line), ""}, "",
             "the top level must be a mapping of sections (run, data, ...)" + what);
      }
      fail(Origin{source, lineOf(mapping, line), ""}, prefix, "must be a mapping of keys" + what);
    }
    std::map<std::string, int> seen;
    for (const auto& entry : mapping) {
      const YAML::Node& keyNode = entry.first;
      const int keyLine = lineOf(keyNode, line);
      if (!keyNode.IsScalar()) {
        fail(Origin{source, keyLine, ""}, "",
             "keys must be plain names" + std::string(prefix.empty() ? "" : " in " + prefix) +
                 ", got " + describeNode(keyNode));
      }
      const std::string path = prefix.empty() ? keyNode.Scalar() : prefix + "." + keyNode.Scalar();
      const auto [previous, inserted] = seen.emplace(path, keyLine);
      if (!inserted) {
        fail(Origin{source, keyLine, ""}, "",
             "duplicate key '" + path + "' (first at line " + std::to_string(previous->second) +
                 ")");
      }
      if (const KeySpec* key = findKey(path)) {
        Origin origin{source, keyLine, ""};
        assignValue(*key, key->field(config), entry.second, origin);
        origins[path] = origin;
      } else if (isSection(path)) {
        parseMapping(entry.second, path, keyLine);
      } else {
        fail(Origin{source, keyLine, ""}, "",
             "unknown key '" + path + "'" + didYouMean(suggestPath(path)));
      }
    }
  }

  void applyOverride(const std::string& assignment) {
    const size_t equals = assignment.find('=');
    if (equals == std::string::npos || equals == 0) {
      throw ConfigError("--set " + assignment + ": expected path=value, e.g. optim.lr=0.05");
    }
    const std::string path = assignment.substr(0, equals);
    const std::string text = assignment.substr(equals + 1);
    const Origin origin{"", 0, path};
    const KeySpec* key = findKey(path);
    if (key == nullptr) {
      if (isSection(path))
        fail(origin, "", "is a section; set one of its keys, e.g. " + path + ".x");
      fail(origin, "", "unknown key" + didYouMean(suggestPath(path)));
    }
    YAML::Node value;
    try {
      value = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      fail(origin, "", "malformed value '" + text + "': " + e.msg);
    }
    assignValue(*key, key->field(config), value, origin);
    origins[path] = origin;
  }

  Origin originOf(const std::string& path) const {
    const auto found = origins.find(path);
    return found == origins.end() ? Origin{source, 0, ""} : found->second;
  }

  // The origin that best explains a violated cross-key rule: the first key that was set
  // explicitly (the file's line or the --set argument).
  Origin blame(const std::string& path, const std::string& other) const {
    if (origins.count(path) != 0) return originOf(path);
    return originOf(other);
  }

  // Checks the compression keys that depend on each other; `subject` names where `cc` came from
  // (the section or one override entry).
  void checkCompression(const CompressionConfig& cc,
                        const Origin& origin,
                        const std::string& subject) {
    if (cc.feedback == "dgc" && cc.method != "topk" && cc.method != "none" &&
        cc.method != "powersgd") {
      fail(origin, subject, "feedback: dgc needs method: topk, got method: " + cc.method);
    }
    if (cc.feedback == "dgc" && cc.method == "topk" && config.optim.momentum != 0) {
      fail(origin, subject,
           "feedback: dgc applies its own momentum; set optim.momentum: 0 (got " +
               formatDouble(config.optim.momentum) + ")");
    }
    if (cc.signChunk % 8 != 0) {
      fail(origin, subject,
           "sign_chunk must be a multiple of 8 (0 = one scale per tensor), got " +
               std::to_string(cc.signChunk));
    }
    static const std::set<std::string> kSummable = {"identity", "fp16", "bf16", "randomk"};
    if (cc.aggregator == "allreduce" && cc.method != "none" && cc.method != "powersgd" &&
        kSummable.count(cc.method) == 0) {
      fail(origin, subject,
           "aggregator: allreduce needs a summable method (identity, fp16, bf16, randomk), got "
           "method: " +
               cc.method);
    }
  }

  void checkLgreco(const Config& c) {
    const CompressionConfig& cc = c.compression;
    if (cc.policy != "lgreco") return;
    if (cc.method != "topk" && cc.method != "quantize" && cc.method != "powersgd") {
      fail(blame("compression.policy", "compression.method"), "compression.policy",
           "lgreco sets the ratio of topk, the bits of quantize or the rank of powersgd; "
           "got method: " +
               cc.method);
    }
    if (cc.lgreco.warmupSteps < cc.startStep + cc.lgreco.window) {
      fail(blame("compression.lgreco.warmup_steps", "compression.lgreco.window"),
           "compression.lgreco.warmup_steps",
           "must be >= compression.start_step + compression.lgreco.window (" +
               std::to_string(cc.startStep + cc.lgreco.window) + "), got " +
               std::to_string(cc.lgreco.warmupSteps));
    }
    if (cc.lgreco.windowSum == "demand" && cc.method != "powersgd" && cc.feedback != "ef") {
      fail(blame("compression.lgreco.window_sum", "compression.feedback"),
           "compression.lgreco.window_sum",
           "demand needs feedback: ef (or method: powersgd), got feedback: " + cc.feedback);
    }
    if (cc.lgreco.adjustEvery < cc.lgreco.window) {
      fail(blame("compression.lgreco.adjust_every", "compression.lgreco.window"),
           "compression.lgreco.adjust_every",
           "must be >= compression.lgreco.window (" + std::to_string(cc.lgreco.window) + "), got " +
               std::to_string(cc.lgreco.adjustEvery));
    }
    // A family's candidate keys, set to other than their defaults for a job where no layer uses
    // that family, would be ignored without a word; the families in use are the method and any
    // per-layer override's method. (Defaults pass, so that print-config's output, which lists
    // every key, parses again.)
    std::set<std::string> methods = {cc.method};
    for (const std::string& text : cc.overrides) {
      std::string error;
      const auto entry = parseCompressionOverride(text, error);
      if (!entry) continue;  // checkOverrides reports it
      for (const auto& [key, value] : entry->assignments) {
        if (key == "method") methods.insert(value);
      }
    }
    static const std::pair<const char*, const char*> kFamilyKeys[] = {
        {"compression.lgreco.density_factor", "topk"},
        {"compression.lgreco.density_steps", "topk"},
        {"compression.lgreco.bits", "quantize"},
        {"compression.lgreco.rank_low", "powersgd"},
        {"compression.lgreco.rank_high", "powersgd"},
        {"compression.lgreco.rank_change", "powersgd"},
    };
    Config defaults;
    Config copy = c;
    for (const auto& [key, family] : kFamilyKeys) {
      const KeySpec* spec = findKey(key);
      const bool changed = yamlValue(spec->field(copy)) != yamlValue(spec->field(defaults));
      if (changed && origins.count(key) != 0 && methods.count(family) == 0) {
        fail(originOf(key), key,
             std::string("applies only to method: ") + family +
                 ", which no layer uses (method: " + cc.method + ")");
      }
    }
  }

  void checkOverrides() {
    const std::vector<std::string>& entries = config.compression.overrides;
    const Origin origin = originOf("compression.overrides");
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string subject = "compression.overrides[" + std::to_string(i) + "]";
      std::string error;
      const auto entry = parseCompressionOverride(entries[i], error);
      if (!entry) fail(origin, subject, error);
      Parser scratch;
      scratch.config = config;
      for (const auto& [key, value] : entry->assignments) {
        try {
          scratch.applyOverride("compression." + key + "=" + value);
        } catch (const ConfigError& e) {
          std::string what = e.what();
          const std::string prefix = "--set ";
          if (what.rfind(prefix, 0) == 0) what = what.substr(prefix.size());
          fail(origin, subject, "('" + entries[i] + "'): " + what);
        }
      }
      checkCompression(scratch.config.compression, origin, subject);
    }
  }

  void crossCheck() {
    const Config& c = config;
    checkCompression(c.compression, originOf("compression.method"), "compression");
    checkLgreco(c);
    checkOverrides();
    if (c.model.channels.size() != 2) {
      fail(originOf("model.channels"), "model.channels",
           "must have exactly 2 entries (one per convolution block), got " +
               std::to_string(c.model.channels.size()));
    }
    if (c.optim.schedule.warmupSteps > c.train.steps) {
      fail(blame("optim.schedule.warmup_steps", "train.steps"), "optim.schedule.warmup_steps",
           "must be <= train.steps (" + std::to_string(c.train.steps) + "), got " +
               std::to_string(c.optim.schedule.warmupSteps));
    }
    if (c.comm.heartbeatS > c.comm.timeoutS / 4) {
      fail(blame("comm.heartbeat_s", "comm.timeout_s"), "comm.heartbeat_s",
           "must be <= comm.timeout_s / 4 (" + formatDouble(c.comm.timeoutS / 4) + "), got " +
               formatDouble(c.comm.heartbeatS));
    }
    if (!c.comm.status.empty()) {
      try {
        parseHostPort(c.comm.status, "comm.status");
      } catch (const InvalidArgument&) {
        fail(originOf("comm.status"), "comm.status",
             "must be HOST:PORT with a port in 0..65535, got '" + c.comm.status + "'");
      }
    }
    if (c.train.stopAfter > c.train.steps) {
      fail(blame("train.stop_after", "train.steps"), "train.stop_after",
           "must be <= train.steps (" + std::to_string(c.train.steps) + "), got " +
               std::to_string(c.train.stopAfter));
    }
    if (c.optim.name == "onebit_adam" && c.compression.method != "none") {
      fail(blame("compression.method", "optim.name"), "compression.method",
           "must be none with optim.name: onebit_adam (it compresses its own momentum), got '" +
               c.compression.method + "'");
    }
    if (c.optim.nesterov && c.optim.momentum <= 0) {
      fail(blame("optim.nesterov", "optim.momentum"), "optim.nesterov",
           "needs optim.momentum > 0, got " + formatDouble(c.optim.momentum));
    }
    if (!c.launch.tcpInterface.empty() && c.launch.transport != "tcp") {
      fail(blame("launch.tcp_interface", "launch.transport"), "launch.tcp_interface",
           "needs launch.transport: tcp, got '" + c.launch.transport + "'");
    }
    if (c.data.dataset == "fashion_mnist" && c.data.path.empty()) {
      fail(blame("data.path", "data.dataset"), "data.path",
           "must name the Fashion-MNIST directory when data.dataset is fashion_mnist");
    }
    if (c.qat.method != "none" && c.model.type != "llama") {
      fail(blame("qat.method", "model.type"), "qat.method",
           "needs model.type: llama (its attention and MLP linears are quantized), got '" +
               c.model.type + "'");
    }
    if (c.qat.method == "lsq" && (c.qat.wBits == 1 || c.qat.aBits == 1)) {
      fail(blame("qat.w_bits", "qat.a_bits"), "qat.method",
           "lsq needs qat.w_bits and qat.a_bits of 0 or 2..8 (its step gradient is undefined at "
           "1 bit)");
    }
  }
};

// Nesting depth of `base:` files being read by this thread (a bound against cycles).
int& baseDepth() {
  thread_local int depth = 0;
  return depth;
}

// Note [Config base]
// `base: other.yaml` (relative to the including file) starts from other.yaml's effective config
// (itself fully validated) and applies this file's keys on top, so a variant of an experiment is a
// few lines (examples/compression/*.yaml). Lists replace, they do not append. Cross-key rules are
// checked again on the result.

Config parse(const std::string& yaml,
             const std::string& sourceName,
             const std::vector<std::string>& overrides) {
  Parser parser;
  parser.source = sourceName;
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    fail(Origin{sourceName, e.mark.is_null() ? 0 : e.mark.line + 1, ""}, "",
         "malformed YAML: " + e.msg);
  }
  if (root.IsDefined() && root.IsMap() && root["base"]) {
    // See Note [Config base]: the base file's effective values first, this file's on top.
    const YAML::Node baseNode = root["base"];
    const Origin origin{sourceName, lineOf(baseNode, 1), ""};
    if (!baseNode.IsScalar() || baseNode.Scalar().empty()) {
      fail(origin, "base",
           "must be the path of another config file, got " + describeNode(baseNode));
    }
    std::filesystem::path basePath = baseNode.Scalar();
    if (basePath.is_relative()) {
      basePath = std::filesystem::path(sourceName).parent_path() / basePath;
    }
    if (baseDepth() >= 8) fail(origin, "base", "chain is longer than 8 files (a cycle?)");
    ++baseDepth();
    try {
      parser.config = Config::fromFile(basePath.lexically_normal().string());
    } catch (const Error& e) {
      --baseDepth();
      fail(origin, "base", "'" + basePath.string() + "': " + e.what());
    }
    --baseDepth();
    root.remove("base");
  }
  if (root.IsDefined()) parser.parseMapping(root, "", 1);
  for (const std::string& assignment : overrides) parser.applyOverride(assignment);
  parser.crossCheck();
  return parser.config;
}

// Splits "a.b.c" into {"a", "b", "c"}.
std::vector<std::string> splitPath(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream stream(path);
  std::string part;
  while (std::getline(stream, part, '.')) parts.push_back(part);
  return parts;
}

std::string escapeCell(const std::string& text) {
  std::string out;
  for (const char ch : text) {
    if (ch == '|') out += '\\';
    out += ch;
  }
  return out;
}

}  // namespace

Config Config::fromFile(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    throw DataError("cannot read config '" + path + "': " + std::strerror(EISDIR));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot read config '" + path + "': " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw DataError("cannot read config '" + path + "': " + std::strerror(errno));
  Config config = parse(text.str(), path, overrides);
  config.sourcePath = path;
  return config;
}

Config Config::fromString(const std::string& yaml,
                          const std::string& sourceName,
                          const std::vector<std::string>& overrides) {
  return parse(yaml, sourceName, overrides);
}

CompressionConfig compressionFor(const Config& config, const std::string& parameterName) {
  Parser parser;
  parser.config = config;
  for (const std::string& text : config.compression.overrides) {
    std::string error;
    const auto entry = parseCompressionOverride(text, error);
    TW_CHECK(entry.has_value(), "compression.overrides: ", error);
    if (fnmatch(entry->glob.c_str(), parameterName.c_str(), 0) != 0) continue;
    for (const auto& [key, value] : entry->assignments) {
      parser.applyOverride("compression." + key + "=" + value);
    }
  }
  return parser.config.compression;
}

std::string Config::toYaml() const {
  // The accessors take a mutable Config; read through a copy instead of casting const away.
  Config copy = *this;
  std::ostringstream out;
  std::vector<std::string> open;  // the sections of the previous key
  for (const KeySpec& key : schema()) {
    std::vector<std::string> parts = splitPath(key.path);
    const std::string name = parts.back();
    parts.pop_back();
    size_t common = 0;
    while (common < open.size() && common < parts.size() && open[common] == parts[common]) {
      ++common;
    }
    for (size_t depth = common; depth < parts.size(); ++depth) {
      out << std::string(2 * depth, ' ') << parts[depth] << ":\n";
    }
    out << std::string(2 * parts.size(), ' ') << name << ": " << yamlValue(key.field(copy)) << "\n";
    open = parts;
  }
  return out.str();
}

std::string configReferenceMarkdown() {
  Config defaults;
  std::ostringstream out;
  out << "# Configuration reference\n\n"
      << "<!-- Generated from the schema in core/config.cc by `thinwire config-docs`; do not "
         "edit by hand. -->\n\n"
      << "One YAML file describes one experiment. Every key is optional: a missing key keeps "
         "the default below, and an empty file runs the defaults. The whole file is validated "
         "before anything starts; an unknown key, a value of the wrong type or out of range is "
         "an error that names the file, the line and the key path:\n\n"
      << "```text\n"
      << "config.yaml:14: optim.lr must be > 0, got -0.1\n"
      << "config.yaml:3: unknown key 'data.pathh' (did you mean 'data.path'?)\n"
      << "```\n\n"
      << "A file may start from another: `base: fmnist_mlp.yaml` (a path relative to the "
         "file) reads that config first and applies this file's keys on top.\n\n"
      << "Any key can be overridden on the command line with the same path; the value is YAML "
         "(a scalar or a flow list), and overrides apply in order after the file:\n\n"
      << "```sh\n"
      << "thinwire launch examples/fmnist_mlp.yaml --set optim.lr=0.1 --set "
         "model.hidden=[512,512]\n"
      << "```\n\n"
      << "## Full example\n\n"
      << "Every key with its default value (`Config{}.toYaml()`):\n\n"
      << "```yaml\n"
      << defaults.toYaml() << "```\n";
  for (const SectionSpec& section : sections()) {
    if (std::string(section.path).find('.') != std::string::npos) continue;
    out << "\n## `" << section.path << "`\n\n" << section.description << "\n\n";
    for (const SectionSpec& sub : sections()) {
      const std::string subPath = sub.path;
      if (subPath.rfind(std::string(section.path) + ".", 0) == 0) {
        out << "`" << subPath << ".*`: " << sub.description << "\n\n";
      }
    }
    out << "| key | type | default | allowed | description |\n"
        << "|---|---|---|---|---|\n";
    for (const KeySpec& key : schema()) {
      if (key.path.rfind(std::string(section.path) + ".", 0) != 0) continue;
      const FieldRef field = key.field(defaults);
      std::string allowed;
      if (!key.allowed.empty()) {
        for (size_t i = 0; i < key.allowed.size(); ++i) {
          allowed += (i ? ", `" : "`") + key.allowed[i] + "`";
        }
        if (!key.otherLabel.empty()) allowed += ", " + key.otherLabel;
      } else {
        allowed = describeRange(key.range);
        if (std::holds_alternative<std::vector<int64_t>*>(field) && !allowed.empty()) {
          allowed = "entries " + allowed;
        }
        if (key.nonEmpty) allowed = "non-empty";
      }
      if (std::holds_alternative<bool*>(field)) allowed = "`true`, `false`";
      if (allowed.empty()) allowed = "any";
      out << "| `" << key.path << "` | " << typeName(field) << " | `" << yamlValue(field) << "` | "
          << escapeCell(allowed) << " | " << escapeCell(key.description) << " |\n";
    }
  }
  return out.str();
}

}  // namespace thinwire::core

// File: core/config.h
//
// The experiment configuration: one YAML file per experiment, validated in full before anything
// runs, plus `--set path=value` overrides that use the same key paths. core::Config is the only
// place in thinwire that parses YAML (see ARCHITECTURE §4); lower modules receive Options structs.
//
// Every key, its type, default, range and meaning is documented in docs/config.md, which is
// generated from the same schema the parser uses (`thinwire config-docs`), so the two cannot
// drift. Errors are ConfigError with one line naming the file, line, key path and problem:
//   config.yaml:14: optim.lr must be > 0, got -0.1
//   config.yaml:3: unknown key 'data.pathh' (did you mean 'data.path'?)
//
// Threading: a Config is a plain value; parse once, then share by const reference.
//
// Example:
//   Config config = Config::fromFile("examples/fmnist_mlp.yaml", {"optim.lr=0.05"});
//   std::cout << config.optim.lr << "\n";       // 0.05
//   std::string yaml = config.toYaml();         // every key with its effective value
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace thinwire::core {

struct RunConfig {
  std::string name = "default";    // run.name: runs/<name>/ holds metrics and checkpoints
  uint64_t seed = 0;               // run.seed: model init, data order
  std::string outputDir = "runs";  // run.output_dir
  int64_t logEvery = 10;           // run.log_every: steps between metrics records
  std::string logLevel = "info";   // run.log_level: debug|info|warn|error
  bool progress = true;            // run.progress: live progress line on rank 0
};

struct SyntheticDataConfig {
  int64_t trainSamples = 4096;  // data.synthetic.train_samples
  int64_t testSamples = 1024;   // data.synthetic.test_samples
  int64_t features = 784;       // data.synthetic.features
  int64_t classes = 10;         // data.synthetic.classes
};

struct DataConfig {
  std::string dataset = "fashion_mnist";                   // data.dataset: fashion_mnist|...
  std::string path = "/usr/share/datasets/fashion-mnist";  // data.path
  double validationFraction = 0.05;  // data.validation_fraction: text documents held out
  SyntheticDataConfig synthetic;     // data.synthetic.*
};

struct ModelConfig {
  std::string type = "mlp";                    // model.type: mlp|cnn|llama
  std::vector<int64_t> hidden = {2048, 2048};  // model.hidden: MLP hidden widths
  std::vector<int64_t> channels = {32, 64};    // model.channels: CNN conv channels (2)
  int64_t cnnHidden = 128;                     // model.cnn_hidden: CNN fully-connected width
  int64_t dModel = 256;                        // model.d_model: llama residual width
  int64_t layers = 4;                          // model.layers: llama decoder blocks
  int64_t heads = 4;                           // model.heads: llama attention heads
  int64_t seqLen = 128;                        // model.seq_len: llama context = text window
  int64_t mlpMultiple = 256;                   // model.mlp_multiple: SwiGLU hidden rounding
};

struct TrainConfig {
  int64_t steps = 1000;          // train.steps: optimizer steps
  int64_t batchPerRank = 64;     // train.batch_per_rank: samples per rank per micro-step
  int64_t gradAccumulation = 1;  // train.grad_accumulation: micro-steps per optimizer step
  double clipGradNorm = 0.0;     // train.clip_grad_norm: 0 disables
  int64_t evalEvery = 0;         // train.eval_every: steps between evaluations; 0 = end only
  int64_t evalBatch = 1000;      // train.eval_batch
  int64_t checkpointEvery = 0;   // train.checkpoint_every: 0 = only at the end
  int64_t checkpointKeep = 2;    // train.checkpoint_keep: newest N kept
  std::string resume = "auto";   // train.resume: auto|never|<checkpoint directory>
  int64_t threads = 1;           // train.threads: intra-op threads per rank
  std::string device = "cpu";    // train.device: cpu|cuda, where model, batches and optimizer live
  int64_t stopAfter = 0;         // train.stop_after: stop (checkpointed) after this step; 0 = off
  int64_t stopCheckEvery = 10;   // train.stop_check_every: steps between stop-request agreements

  // train.nonfinite: stop|skip|off, what NaN/Inf in a gradient does (core/nonfinite.h)
  std::string nonfinite = "stop";
};

struct ScheduleConfig {
  std::string name = "constant";  // optim.schedule.name: constant|cosine|step
  int64_t warmupSteps = 0;        // optim.schedule.warmup_steps: linear warm-up from 0
  double minLrRatio = 0.0;        // optim.schedule.min_lr_ratio: cosine floor, fraction of lr
  int64_t stepSize = 1000;        // optim.schedule.step_size: steps between step decays
  double gamma = 0.1;             // optim.schedule.gamma: step-decay factor
};

struct OptimConfig {
  std::string name = "sgd";          // optim.name: sgd|adam|adamw|onebit_adam
  double lr = 0.1;                   // optim.lr
  double momentum = 0.0;             // optim.momentum (sgd)
  bool nesterov = false;             // optim.nesterov (sgd)
  double weightDecay = 0.0;          // optim.weight_decay
  double beta1 = 0.9;                // optim.beta1 (adam, adamw)
  double beta2 = 0.999;              // optim.beta2 (adam, adamw)
  double eps = 1e-8;                 // optim.eps (adam, adamw, onebit_adam)
  int64_t freezeStep = 100000;       // optim.freeze_step (onebit_adam): AdamW warm-up steps
  bool biasCorrection = true;        // optim.bias_correction (onebit_adam)
  bool momentumMask = true;          // optim.momentum_mask (onebit_adam)
  bool onebitPreconditioned = true;  // optim.onebit_preconditioned (onebit_adam)
  ScheduleConfig schedule;           // optim.schedule.*
};

struct CommConfig {
  std::string backend = "mpi";     // comm.backend: mpi|local|nccl|tcp
  double bucketMb = 4.0;           // comm.bucket_mb: gradient bucket size in MiB
  double timeoutS = 300.0;         // comm.timeout_s: bound on every collective wait
  bool gradientSync = true;        // comm.gradient_sync: false = compute-only benchmark mode
  std::string overlap = "auto";    // comm.overlap: auto|on|off, start buckets during backward
  std::string allreduce = "auto";  // comm.allreduce: auto|ring|mpi, large-bucket algorithm
  double heartbeatS = 1.0;         // comm.heartbeat_s: watchdog beat period; 0 = no watchdog
  std::string storeHost = "auto";  // comm.store_host: where rank 0's rendezvous store listens
  std::string timeline;            // comm.timeline: Chrome trace path; "" = off
  std::string status;              // comm.status: HOST:PORT of rank 0's status endpoint; "" = off
};

struct DgcConfig {
  double momentum = 0.9;     // compression.dgc.momentum: momentum of the correction
  bool nesterov = false;     // compression.dgc.nesterov
  bool masking = true;       // compression.dgc.masking: momentum factor masking
  double clipNorm = 0.0;     // compression.dgc.clip_norm: local clipping; 0 disables
  int64_t warmupEpochs = 0;  // compression.dgc.warmup_epochs: exponential sparsity warm-up
};

struct LgrecoConfig {
  double alpha = 1.0;             // compression.lgreco.alpha: error budget vs the uniform default
  std::string error = "squared";  // compression.lgreco.error: squared|sum_of_norms|relative
  int64_t window = 10;            // compression.lgreco.window: steps accumulated before a solve
  std::string windowSum = "compensated";  // compression.lgreco.window_sum: compensated|demand
  int64_t warmupSteps = 100;   // compression.lgreco.warmup_steps: first solve at this step
  int64_t adjustEvery = 100;   // compression.lgreco.adjust_every: re-solve period
  int64_t buckets = 10000;     // compression.lgreco.buckets: DP resolution
  double densityFactor = 2.0;  // compression.lgreco.density_factor: top-k grid ratio
  int64_t densitySteps = 3;    // compression.lgreco.density_steps: top-k grid points per side
  std::vector<int64_t> bits = {2, 3, 4, 5, 6, 7, 8};  // compression.lgreco.bits: quantize
  double rankLow = 0.5;              // compression.lgreco.rank_low: lowest PowerSGD rank / rank
  double rankHigh = 2.0;             // compression.lgreco.rank_high: highest PowerSGD rank / rank
  std::string rankChange = "fresh";  // compression.lgreco.rank_change: keep|fresh
};

struct CompressionConfig {
  std::string method = "none";         // compression.method: none|identity|fp16|bf16|topk|...
  std::string feedback = "ef";         // compression.feedback: none|ef|ef21|econtrol|dgc
  std::string aggregator = "auto";     // compression.aggregator: auto|allreduce|allgather|two_phase
  double ratio = 0.01;                 // compression.ratio: top-k / random-k density
  std::string selection = "exact";     // compression.selection: exact|sampled (top-k)
  double sampleRatio = 0.01;           // compression.sample_ratio: sampled threshold
  bool fp16Values = false;             // compression.fp16_values: top-k / random-k values
  bool scaleRandomK = false;           // compression.scale_randomk: unbiased random-k
  int64_t bits = 4;                    // compression.bits: quantize
  int64_t quantizeBucket = 512;        // compression.quantize_bucket
  bool stochasticRounding = false;     // compression.stochastic_rounding: quantize
  int64_t signChunk = 2048;            // compression.sign_chunk: elements per sign scale
  int64_t rank = 1;                    // compression.rank: PowerSGD rank
  bool warmStart = true;               // compression.warm_start: PowerSGD
  double minCompressionRate = 2.0;     // compression.min_compression_rate: PowerSGD
  double eta = -1.0;                   // compression.eta: EControl; < 0 = from the compressor
  double trackingMomentum = 0;         // compression.tracking_momentum: EControl tracks momentum
  bool stepUnits = false;              // compression.step_units: EF residual in lr * g
  DgcConfig dgc;                       // compression.dgc.*
  int64_t minNumel = 65536;            // compression.min_numel: smaller tensors go uncompressed
  bool compressVectors = false;        // compression.compress_vectors: 1-D tensors too
  int64_t startStep = 0;               // compression.start_step: plain averaging before it
  int64_t errorEvery = 100;            // compression.error_every: relative-error sampling period
  double linkGbps = 1.0;               // compression.link_gbps: cost model bandwidth
  double latencyUs = 50.0;             // compression.latency_us: cost model latency
  std::vector<std::string> overrides;  // compression.overrides: "GLOB key=value ..."
  std::string policy = "uniform";      // compression.policy: uniform|lgreco
  LgrecoConfig lgreco;                 // compression.lgreco.*
};

struct QatConfig {
  std::string method = "none";   // qat.method: none|quest|ste|lsq
  int64_t wBits = 4;             // qat.w_bits: weight bits; 0 = full precision
  int64_t aBits = 4;             // qat.a_bits: input-activation bits; 0 = full precision
  double trust = 0.0;            // qat.trust: QuEST gradient-mask scale; 0 = per-bits default
  std::string variant = "half";  // qat.variant: full|half (QuEST Hadamard rotate-back)
};

struct LaunchConfig {
  int64_t ranks = 4;                   // launch.ranks
  std::string hostfile;                // launch.hostfile: empty = this machine
  std::string mpirun = "mpirun";       // launch.mpirun: the mpirun executable
  bool oversubscribe = true;           // launch.oversubscribe
  std::string bindTo = "none";         // launch.bind_to: none|core|socket
  std::string transport = "auto";      // launch.transport: auto|tcp|shm
  std::string tcpInterface;            // launch.tcp_interface: e.g. lo, eth0
  std::vector<std::string> extraArgs;  // launch.extra_args: appended to mpirun verbatim
  std::string srunMpi = "pmix";        // launch.srun_mpi: srun --mpi=<this>
  std::vector<std::string> srunArgs;   // launch.srun_args: appended to srun verbatim
};

struct PvConfig {               // `thinwire quantize` (docs/pv_tuning.md)
  std::string method = "pv";    // pv.method: pv|p_only|ste|rtn
  int64_t bits = 2;             // pv.bits: bits per weight code
  int64_t groupSize = 64;       // pv.group_size: weights per scale along the input dim
  int64_t steps = 100;          // pv.steps: fine-tuning steps (rtn: none)
  std::string loss = "kl";      // pv.loss: kl (to the full-precision teacher)|ce
  double lr = 3e-4;             // pv.lr: P-step Adam (scales, zeros, non-quantized)
  double beta1 = 0.9;           // pv.beta1
  double beta2 = 0.95;          // pv.beta2
  double codeLr = 3e-3;         // pv.code_lr: V-proposal step
  double codeBeta2 = 0.95;      // pv.code_beta2
  double maxCodeChange = 0.01;  // pv.max_code_change: tau
  double trustRatio = 0.0;      // pv.trust_ratio: rho, 0 = off
  int64_t evalEvery = 25;       // pv.eval_every: steps between validation passes
  int64_t evalWindows = 0;      // pv.eval_windows: validation windows per pass, 0 = all
};

struct Config {
  RunConfig run;
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  OptimConfig optim;
  CommConfig comm;
  CompressionConfig compression;
  QatConfig qat;
  LaunchConfig launch;
  PvConfig pv;

  std::string sourcePath;  // the file it was read from ("" for defaults)

  // Parses and validates `path`, then applies `overrides` ("a.b=value", YAML scalar or flow
  // list syntax) in order. Throws ConfigError naming file:line and key path, or DataError when
  // the file cannot be read.
  static Config fromFile(const std::string& path, const std::vector<std::string>& overrides = {});
  // Same, from text; `sourceName` stands in for the file name in messages.
  static Config fromString(const std::string& yaml,
                           const std::string& sourceName = "<string>",
                           const std::vector<std::string>& overrides = {});

  // Every key with its effective value, as YAML that fromString() accepts.
  std::string toYaml() const;
};

// The compression settings of the parameter `parameterName`: `config.compression` with every
// entry of compression.overrides whose glob (fnmatch syntax, e.g. "layers.0.*", "*.bias") matches
// the name applied in order. The overrides were validated when the config was parsed.
CompressionConfig compressionFor(const Config& config, const std::string& parameterName);

// The reference of every key (Markdown), generated from the schema: docs/config.md.
std::string configReferenceMarkdown();

}  // namespace thinwire::core

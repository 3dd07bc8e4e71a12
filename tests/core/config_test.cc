#include "core/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"

namespace thinwire::core {
namespace {

// The message of the ConfigError that parsing `yaml` (as "cfg.yaml") throws, or "<no error>".
std::string configError(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    Config::fromString(yaml, "cfg.yaml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Field-by-field comparison written out here, independently of the schema in config.cc, so that
// a key the schema forgets (or reads into the wrong field) shows up as a difference.
void expectSameConfig(const Config& a, const Config& b) {
  EXPECT_EQ(a.run.name, b.run.name);
  EXPECT_EQ(a.run.seed, b.run.seed);
  EXPECT_EQ(a.run.outputDir, b.run.outputDir);
  EXPECT_EQ(a.run.logEvery, b.run.logEvery);
  EXPECT_EQ(a.run.logLevel, b.run.logLevel);
  EXPECT_EQ(a.run.progress, b.run.progress);
  EXPECT_EQ(a.data.dataset, b.data.dataset);
  EXPECT_EQ(a.data.path, b.data.path);
  EXPECT_EQ(a.data.synthetic.trainSamples, b.data.synthetic.trainSamples);
  EXPECT_EQ(a.data.synthetic.testSamples, b.data.synthetic.testSamples);
  EXPECT_EQ(a.data.synthetic.features, b.data.synthetic.features);
  EXPECT_EQ(a.data.synthetic.classes, b.data.synthetic.classes);
  EXPECT_EQ(a.model.type, b.model.type);
  EXPECT_EQ(a.model.hidden, b.model.hidden);
  EXPECT_EQ(a.model.channels, b.model.channels);
  EXPECT_EQ(a.model.cnnHidden, b.model.cnnHidden);
  EXPECT_EQ(a.train.steps, b.train.steps);
  EXPECT_EQ(a.train.batchPerRank, b.train.batchPerRank);
  EXPECT_EQ(a.train.gradAccumulation, b.train.gradAccumulation);
  EXPECT_EQ(a.train.clipGradNorm, b.train.clipGradNorm);
  EXPECT_EQ(a.train.evalEvery, b.train.evalEvery);
  EXPECT_EQ(a.train.evalBatch, b.train.evalBatch);
  EXPECT_EQ(a.train.checkpointEvery, b.train.checkpointEvery);
  EXPECT_EQ(a.train.checkpointKeep, b.train.checkpointKeep);
  EXPECT_EQ(a.train.resume, b.train.resume);
  EXPECT_EQ(a.train.threads, b.train.threads);
  EXPECT_EQ(a.train.stopAfter, b.train.stopAfter);
  EXPECT_EQ(a.optim.name, b.optim.name);
  EXPECT_EQ(a.optim.lr, b.optim.lr);
  EXPECT_EQ(a.optim.momentum, b.optim.momentum);
  EXPECT_EQ(a.optim.nesterov, b.optim.nesterov);
  EXPECT_EQ(a.optim.weightDecay, b.optim.weightDecay);
  EXPECT_EQ(a.optim.beta1, b.optim.beta1);
  EXPECT_EQ(a.optim.beta2, b.optim.beta2);
  EXPECT_EQ(a.optim.eps, b.optim.eps);
  EXPECT_EQ(a.optim.schedule.name, b.optim.schedule.name);
  EXPECT_EQ(a.optim.schedule.warmupSteps, b.optim.schedule.warmupSteps);
  EXPECT_EQ(a.optim.schedule.minLrRatio, b.optim.schedule.minLrRatio);
  EXPECT_EQ(a.optim.schedule.stepSize, b.optim.schedule.stepSize);
  EXPECT_EQ(a.optim.schedule.gamma, b.optim.schedule.gamma);
  EXPECT_EQ(a.comm.backend, b.comm.backend);
  EXPECT_EQ(a.comm.bucketMb, b.comm.bucketMb);
  EXPECT_EQ(a.comm.timeoutS, b.comm.timeoutS);
  EXPECT_EQ(a.comm.gradientSync, b.comm.gradientSync);
  EXPECT_EQ(a.comm.overlap, b.comm.overlap);
  const CompressionConfig& x = a.compression;
  const CompressionConfig& y = b.compression;
  EXPECT_EQ(x.method, y.method);
  EXPECT_EQ(x.feedback, y.feedback);
  EXPECT_EQ(x.aggregator, y.aggregator);
  EXPECT_EQ(x.ratio, y.ratio);
  EXPECT_EQ(x.selection, y.selection);
  EXPECT_EQ(x.sampleRatio, y.sampleRatio);
  EXPECT_EQ(x.fp16Values, y.fp16Values);
  EXPECT_EQ(x.scaleRandomK, y.scaleRandomK);
  EXPECT_EQ(x.bits, y.bits);
  EXPECT_EQ(x.quantizeBucket, y.quantizeBucket);
  EXPECT_EQ(x.stochasticRounding, y.stochasticRounding);
  EXPECT_EQ(x.signChunk, y.signChunk);
  EXPECT_EQ(x.rank, y.rank);
  EXPECT_EQ(x.warmStart, y.warmStart);
  EXPECT_EQ(x.minCompressionRate, y.minCompressionRate);
  EXPECT_EQ(x.eta, y.eta);
  EXPECT_EQ(x.trackingMomentum, y.trackingMomentum);
  EXPECT_EQ(x.stepUnits, y.stepUnits);
  EXPECT_EQ(x.dgc.momentum, y.dgc.momentum);
  EXPECT_EQ(x.dgc.nesterov, y.dgc.nesterov);
  EXPECT_EQ(x.dgc.masking, y.dgc.masking);
  EXPECT_EQ(x.dgc.clipNorm, y.dgc.clipNorm);
  EXPECT_EQ(x.dgc.warmupEpochs, y.dgc.warmupEpochs);
  EXPECT_EQ(x.minNumel, y.minNumel);
  EXPECT_EQ(x.compressVectors, y.compressVectors);
  EXPECT_EQ(x.startStep, y.startStep);
  EXPECT_EQ(x.errorEvery, y.errorEvery);
  EXPECT_EQ(x.linkGbps, y.linkGbps);
  EXPECT_EQ(x.latencyUs, y.latencyUs);
  EXPECT_EQ(x.overrides, y.overrides);
  EXPECT_EQ(a.launch.ranks, b.launch.ranks);
  EXPECT_EQ(a.launch.hostfile, b.launch.hostfile);
  EXPECT_EQ(a.launch.mpirun, b.launch.mpirun);
  EXPECT_EQ(a.launch.oversubscribe, b.launch.oversubscribe);
  EXPECT_EQ(a.launch.bindTo, b.launch.bindTo);
  EXPECT_EQ(a.launch.transport, b.launch.transport);
  EXPECT_EQ(a.launch.tcpInterface, b.launch.tcpInterface);
  EXPECT_EQ(a.launch.extraArgs, b.launch.extraArgs);
  EXPECT_EQ(a.launch.srunMpi, b.launch.srunMpi);
  EXPECT_EQ(a.launch.srunArgs, b.launch.srunArgs);
}

// Every key path, in the order documented; kept by hand as the test's own list.
const std::vector<std::string> kAllKeys = {"run.name",
                                           "run.seed",
                                           "run.output_dir",
                                           "run.log_every",
                                           "run.log_level",
                                           "run.progress",
                                           "data.dataset",
                                           "data.path",
                                           "data.synthetic.train_samples",
                                           "data.synthetic.test_samples",
                                           "data.synthetic.features",
                                           "data.synthetic.classes",
                                           "model.type",
                                           "model.hidden",
                                           "model.channels",
                                           "model.cnn_hidden",
                                           "train.steps",
                                           "train.batch_per_rank",
                                           "train.grad_accumulation",
                                           "train.clip_grad_norm",
                                           "train.eval_every",
                                           "train.eval_batch",
                                           "train.checkpoint_every",
                                           "train.checkpoint_keep",
                                           "train.resume",
                                           "train.threads",
                                           "train.stop_after",
                                           "optim.name",
                                           "optim.lr",
                                           "optim.momentum",
                                           "optim.nesterov",
                                           "optim.weight_decay",
                                           "optim.beta1",
                                           "optim.beta2",
                                           "optim.eps",
                                           "optim.schedule.name",
                                           "optim.schedule.warmup_steps",
                                           "optim.schedule.min_lr_ratio",
                                           "optim.schedule.step_size",
                                           "optim.schedule.gamma",
                                           "comm.backend",
                                           "comm.bucket_mb",
                                           "comm.timeout_s",
                                           "comm.gradient_sync",
                                           "comm.overlap",
                                           "compression.method",
                                           "compression.feedback",
                                           "compression.aggregator",
                                           "compression.ratio",
                                           "compression.selection",
                                           "compression.sample_ratio",
                                           "compression.fp16_values",
                                           "compression.scale_randomk",
                                           "compression.bits",
                                           "compression.quantize_bucket",
                                           "compression.stochastic_rounding",
                                           "compression.sign_chunk",
                                           "compression.rank",
                                           "compression.warm_start",
                                           "compression.min_compression_rate",
                                           "compression.eta",
                                           "compression.step_units",
                                           "compression.dgc.momentum",
                                           "compression.dgc.nesterov",
                                           "compression.dgc.masking",
                                           "compression.dgc.clip_norm",
                                           "compression.dgc.warmup_epochs",
                                           "compression.min_numel",
                                           "compression.compress_vectors",
                                           "compression.start_step",
                                           "compression.error_every",
                                           "compression.link_gbps",
                                           "compression.latency_us",
                                           "compression.overrides",
                                           "launch.ranks",
                                           "launch.hostfile",
                                           "launch.mpirun",
                                           "launch.oversubscribe",
                                           "launch.bind_to",
                                           "launch.transport",
                                           "launch.tcp_interface",
                                           "launch.extra_args",
                                           "launch.srun_mpi",
                                           "launch.srun_args"};

TEST(ConfigTest, EmptyTextGivesTheStructDefaults) {
  expectSameConfig(Config::fromString(""), Config{});
  expectSameConfig(Config::fromString("# only a comment\n\n"), Config{});
  expectSameConfig(Config::fromString("run:\noptim:\n  schedule:\n"), Config{});
  EXPECT_EQ(Config::fromString("").sourcePath, "");
}

TEST(ConfigTest, ReadsEveryKindOfValue) {
  const Config c = Config::fromString(R"(
run:
  name: exp1
  seed: 18446744073709551615   # the largest uint64
  progress: no
data:
  dataset: synthetic
  synthetic: {features: 32, classes: 4}
model:
  hidden:
    - 64
    - 32
train:
  steps: 300
  clip_grad_norm: 1.5
  resume: /tmp/ckpt/step_100
optim:
  name: adamw
  lr: 3e-4
  schedule: {name: cosine, warmup_steps: 30}
launch:
  hostfile:
  extra_args: [--mca, "btl_base_verbose 1"]
)");
  EXPECT_EQ(c.run.name, "exp1");
  EXPECT_EQ(c.run.seed, 18446744073709551615ULL);
  EXPECT_FALSE(c.run.progress);
  EXPECT_EQ(c.data.dataset, "synthetic");
  EXPECT_EQ(c.data.synthetic.features, 32);
  EXPECT_EQ(c.data.synthetic.classes, 4);
  EXPECT_EQ(c.data.synthetic.trainSamples, 4096);  // untouched sibling keeps its default
  EXPECT_EQ(c.model.hidden, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(c.train.steps, 300);
  EXPECT_DOUBLE_EQ(c.train.clipGradNorm, 1.5);
  EXPECT_EQ(c.train.resume, "/tmp/ckpt/step_100");
  EXPECT_EQ(c.optim.name, "adamw");
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.optim.schedule.name, "cosine");
  EXPECT_EQ(c.optim.schedule.warmupSteps, 30);
  EXPECT_EQ(c.launch.hostfile, "");
  EXPECT_EQ(c.launch.extraArgs, (std::vector<std::string>{"--mca", "btl_base_verbose 1"}));
}

TEST(ConfigTest, MalformedYamlNamesTheLine) {
  const std::string yaml =
      "run:\n"        // 1
      "  name: x\n"   // 2
      " optim: 3\n";  // 3: indented less than its sibling
  const std::string message = configError(yaml);
  EXPECT_EQ(message.rfind("cfg.yaml:3: malformed YAML: ", 0), 0U) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(ConfigTest, UnknownKeysAreRejectedWithASuggestion) {
  EXPECT_EQ(configError("run:\n  name: a\ndata:\n  pathh: /x\n"),
            "cfg.yaml:4: unknown key 'data.pathh' (did you mean 'data.path'?)");
  EXPECT_EQ(configError("optimm:\n  lr: 0.1\n"),
            "cfg.yaml:1: unknown key 'optimm' (did you mean 'optim'?)");
  EXPECT_EQ(configError("optim:\n  schedule:\n    warmup: 10\n"),
            "cfg.yaml:3: unknown key 'optim.schedule.warmup'");
  // A key that exists in another section is suggested there.
  EXPECT_EQ(configError("train:\n  lr: 0.1\n"),
            "cfg.yaml:2: unknown key 'train.lr' (did you mean 'optim.lr'?)");
  EXPECT_EQ(configError("compression:\n  methd: topk\n"),
            "cfg.yaml:2: unknown key 'compression.methd' (did you mean 'compression.method'?)");
}

TEST(ConfigTest, WrongTypesNameKeyLineAndValue) {
  const std::string yaml =
      "run:\n"             // 1
      "  name: a\n"        // 2
      "train:\n"           // 3
      "  eval_every: 0\n"  // 4
      "  steps: ten\n";    // 5
  EXPECT_EQ(configError(yaml), "cfg.yaml:5: train.steps must be an integer, got 'ten'");
  EXPECT_EQ(configError("train:\n  steps: 1.5\n"),
            "cfg.yaml:2: train.steps must be an integer, got '1.5'");
  EXPECT_EQ(configError("optim:\n  lr: fast\n"),
            "cfg.yaml:2: optim.lr must be a number, got 'fast'");
  EXPECT_EQ(configError("optim:\n  lr: .nan\n"),
            "cfg.yaml:2: optim.lr must be a finite number, got '.nan'");
  EXPECT_EQ(configError("run:\n  progress: maybe\n"),
            "cfg.yaml:2: run.progress must be a boolean (true|false), got 'maybe'");
  EXPECT_EQ(configError("run:\n  seed: -1\n"),
            "cfg.yaml:2: run.seed must be a non-negative integer, got '-1'");
  EXPECT_EQ(configError("run:\n  name: [a, b]\n"),
            "cfg.yaml:2: run.name must be a string, got a list");
}

TEST(ConfigTest, ListsAndMappingsWhereAScalarIsExpectedAndViceVersa) {
  EXPECT_EQ(configError("optim:\n  lr: [0.1, 0.2]\n"),
            "cfg.yaml:2: optim.lr must be a number, got a list");
  EXPECT_EQ(configError("optim:\n  lr:\n    value: 0.1\n"),
            "cfg.yaml:3: optim.lr must be a number, got a mapping");
  EXPECT_EQ(configError("optim: 0.1\n"), "cfg.yaml:1: optim must be a mapping of keys, got '0.1'");
  EXPECT_EQ(configError("optim:\n  - lr\n"),
            "cfg.yaml:2: optim must be a mapping of keys, got a list");
  EXPECT_EQ(configError("- run\n- data\n"),
            "cfg.yaml:1: the top level must be a mapping of sections (run, data, ...), got a list");
  EXPECT_EQ(configError("model:\n  hidden: 512\n"),
            "cfg.yaml:2: model.hidden must be a list of integers, got '512'");
  EXPECT_EQ(configError("model:\n  hidden:\n    - 512\n    - wide\n"),
            "cfg.yaml:4: model.hidden[1] must be an integer, got 'wide'");
  EXPECT_EQ(configError("model:\n  hidden:\n    - 512\n    - 0\n"),
            "cfg.yaml:4: model.hidden[1] must be >= 1, got 0");
  EXPECT_EQ(configError("launch:\n  extra_args: [a, [b]]\n"),
            "cfg.yaml:2: launch.extra_args[1] must be a string, got a list");
}

TEST(ConfigTest, OutOfRangeValuesNameTheBound) {
  const std::string yaml =
      "run:\n"                  // 1
      "  name: lr_test\n"       // 2
      "  seed: 1\n"             // 3
      "data:\n"                 // 4
      "  dataset: synthetic\n"  // 5
      "model:\n"                // 6
      "  type: mlp\n"           // 7
      "  hidden: [8]\n"         // 8
      "train:\n"                // 9
      "  steps: 10\n"           // 10
      "optim:\n"                // 11
      "  name: sgd\n"           // 12
      "  momentum: 0.5\n"       // 13
      "  lr: -0.1\n";           // 14
  EXPECT_EQ(configError(yaml), "cfg.yaml:14: optim.lr must be > 0, got -0.1");

  struct Case {
    std::string yaml;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"train:\n  steps: 0\n", "cfg.yaml:2: train.steps must be >= 1, got 0"},
      {"optim:\n  momentum: 1\n", "cfg.yaml:2: optim.momentum must be in [0, 1), got 1"},
      {"optim:\n  beta1: -0.1\n", "cfg.yaml:2: optim.beta1 must be in [0, 1), got -0.1"},
      {"optim:\n  beta2: 1.0\n", "cfg.yaml:2: optim.beta2 must be in [0, 1), got 1.0"},
      {"optim:\n  eps: 0\n", "cfg.yaml:2: optim.eps must be > 0, got 0"},
      {"optim:\n  weight_decay: -1e-4\n", "cfg.yaml:2: optim.weight_decay must be >= 0, got -1e-4"},
      {"train:\n  clip_grad_norm: -0.5\n",
       "cfg.yaml:2: train.clip_grad_norm must be >= 0, got -0.5"},
      {"comm:\n  timeout_s: 0\n", "cfg.yaml:2: comm.timeout_s must be > 0, got 0"},
      {"comm:\n  bucket_mb: 0\n", "cfg.yaml:2: comm.bucket_mb must be > 0, got 0"},
      {"run:\n  log_every: 0\n", "cfg.yaml:2: run.log_every must be >= 1, got 0"},
      {"train:\n  eval_every: -1\n", "cfg.yaml:2: train.eval_every must be >= 0, got -1"},
      {"train:\n  checkpoint_keep: 0\n", "cfg.yaml:2: train.checkpoint_keep must be >= 1, got 0"},
      {"train:\n  threads: 0\n", "cfg.yaml:2: train.threads must be >= 1, got 0"},
      {"train:\n  batch_per_rank: 0\n", "cfg.yaml:2: train.batch_per_rank must be >= 1, got 0"},
      {"launch:\n  ranks: 0\n", "cfg.yaml:2: launch.ranks must be >= 1, got 0"},
      {"data:\n  synthetic:\n    classes: 1\n",
       "cfg.yaml:3: data.synthetic.classes must be >= 2, got 1"},
      {"optim:\n  schedule:\n    min_lr_ratio: 1.5\n",
       "cfg.yaml:3: optim.schedule.min_lr_ratio must be in [0, 1], got 1.5"},
      {"optim:\n  schedule:\n    gamma: 0\n",
       "cfg.yaml:3: optim.schedule.gamma must be in (0, 1], got 0"},
      {"run:\n  name: \"\"\n", "cfg.yaml:2: run.name must not be empty"},
  };
  for (const Case& c : cases) EXPECT_EQ(configError(c.yaml), c.expected) << c.yaml;
  // The bounds themselves are accepted where the interval is closed.
  EXPECT_EQ(configError("optim:\n  momentum: 0\n  weight_decay: 0\n  schedule: {min_lr_ratio: 1, "
                        "gamma: 1}\ntrain: {eval_every: 0, clip_grad_norm: 0}\n"),
            "<no error>");
}

TEST(ConfigTest, EnumsListTheAllowedValues) {
  EXPECT_EQ(configError("optim:\n  name: sdg\n"),
            "cfg.yaml:2: optim.name must be one of sgd|adam|adamw|onebit_adam, got 'sdg' (did you "
            "mean 'sgd'?)");
  EXPECT_EQ(configError("data:\n  dataset: imagenet\n"),
            "cfg.yaml:2: data.dataset must be one of fashion_mnist|synthetic|text, got 'imagenet'");
  EXPECT_EQ(configError("model:\n  type: transformer\n"),
            "cfg.yaml:2: model.type must be one of mlp|cnn|llama, got 'transformer'");
  EXPECT_EQ(configError("run:\n  log_level: verbose\n"),
            "cfg.yaml:2: run.log_level must be one of debug|info|warn|error|off, got 'verbose'");
  EXPECT_EQ(configError("launch:\n  bind_to: numa\n"),
            "cfg.yaml:2: launch.bind_to must be one of none|core|socket, got 'numa'");
  EXPECT_EQ(configError("launch:\n  transport: ib\n"),
            "cfg.yaml:2: launch.transport must be one of auto|tcp|shm, got 'ib'");
  EXPECT_EQ(configError("comm:\n  backend: gloo\n"),
            "cfg.yaml:2: comm.backend must be one of mpi|local|nccl|tcp, got 'gloo'");
  EXPECT_EQ(configError("train:\n  device: gpu0\n"),
            "cfg.yaml:2: train.device must be one of cpu|cuda, got 'gpu0' (did you mean 'cpu'?)");
  EXPECT_EQ(configError("optim:\n  schedule:\n    name: linear\n"),
            "cfg.yaml:3: optim.schedule.name must be one of constant|cosine|step, got 'linear'");
  // train.resume: the two words or any checkpoint path, but not empty.
  EXPECT_EQ(Config::fromString("train: {resume: never}").train.resume, "never");
  EXPECT_EQ(Config::fromString("train: {resume: runs/a/ckpt}").train.resume, "runs/a/ckpt");
  EXPECT_EQ(configError("train:\n  resume: \"\"\n"),
            "cfg.yaml:2: train.resume must be one of auto|never|<checkpoint directory>, got ''");
}

TEST(ConfigTest, CrossKeyRulesNameTheKeyThatWasSet) {
  EXPECT_EQ(configError("model:\n  type: cnn\n  channels: [16, 32, 64]\n"),
            "cfg.yaml:3: model.channels must have exactly 2 entries (one per convolution block), "
            "got 3");
  const std::string warmup =
      "train:\n"                  // 1
      "  steps: 100\n"            // 2
      "optim:\n"                  // 3
      "  schedule:\n"             // 4
      "    warmup_steps: 200\n";  // 5
  EXPECT_EQ(configError(warmup),
            "cfg.yaml:5: optim.schedule.warmup_steps must be <= train.steps (100), got 200");
  // Written inside a flow mapping: the line of the key itself.
  EXPECT_EQ(configError("optim:\n  schedule: {warmup_steps: 20}\ntrain:\n  steps: 10\n"),
            "cfg.yaml:2: optim.schedule.warmup_steps must be <= train.steps (10), got 20");
  // Steps lowered by an override: the key that was written in the file is named.
  EXPECT_EQ(configError("optim:\n  schedule: {warmup_steps: 5}\n", {"train.steps=4"}),
            "cfg.yaml:2: optim.schedule.warmup_steps must be <= train.steps (4), got 5");
  EXPECT_EQ(configError("train:\n  steps: 10\n  stop_after: 11\n"),
            "cfg.yaml:3: train.stop_after must be <= train.steps (10), got 11");
  EXPECT_EQ(configError("optim:\n  nesterov: true\n"),
            "cfg.yaml:2: optim.nesterov needs optim.momentum > 0, got 0");
  EXPECT_EQ(configError("launch:\n  tcp_interface: eth0\n"),
            "cfg.yaml:2: launch.tcp_interface needs launch.transport: tcp, got 'auto'");
  EXPECT_EQ(configError("launch:\n  transport: tcp\n  tcp_interface: eth0\n"), "<no error>");
  // L-GreCo's demand window needs the residual and the gradient apart: error feedback or PowerSGD.
  const std::string demand =
      "compression:\n"             // 1
      "  method: topk\n"           // 2
      "  feedback: econtrol\n"     // 3
      "  policy: lgreco\n"         // 4
      "  lgreco:\n"                // 5
      "    window_sum: demand\n";  // 6
  EXPECT_EQ(configError(demand),
            "cfg.yaml:6: compression.lgreco.window_sum demand needs feedback: ef (or method: "
            "powersgd), got feedback: econtrol");
  EXPECT_EQ(configError(demand, {"compression.feedback=ef"}), "<no error>");
  EXPECT_EQ(configError(demand, {"compression.method=powersgd"}), "<no error>");
  EXPECT_EQ(configError(demand, {"compression.lgreco.window_sum=compensated"}), "<no error>");
  // A family's candidate keys must belong to a method some layer uses.
  const std::string family =
      "compression:\n"       // 1
      "  method: topk\n"     // 2
      "  policy: lgreco\n"   // 3
      "  lgreco:\n"          // 4
      "    bits: [2, 4]\n";  // 5
  EXPECT_EQ(configError(family),
            "cfg.yaml:5: compression.lgreco.bits applies only to method: quantize, which no "
            "layer uses (method: topk)");
  EXPECT_EQ(configError(family, {"compression.method=quantize"}), "<no error>");
  // print-config lists every key with its value; the other families' defaults pass.
  EXPECT_EQ(configError(Config::fromString("compression: {method: topk, policy: lgreco}").toYaml()),
            "<no error>");
  EXPECT_EQ(configError(family, {"compression.policy=uniform"}), "<no error>");
  EXPECT_EQ(configError(family, {"compression.overrides=[\"layers.0.* method=quantize\"]"}),
            "<no error>");
  EXPECT_EQ(configError("compression: {method: quantize, policy: lgreco}",
                        {"compression.lgreco.rank_change=keep"}),
            "--set compression.lgreco.rank_change: applies only to method: powersgd, which no "
            "layer uses (method: quantize)");
  EXPECT_EQ(configError("compression: {method: quantize, policy: lgreco}",
                        {"compression.lgreco.density_steps=2"}),
            "--set compression.lgreco.density_steps: applies only to method: topk, which no "
            "layer uses (method: quantize)");
}

TEST(ConfigTest, DuplicateKeysAreRejected) {
  EXPECT_EQ(configError("optim:\n  lr: 0.1\n  lr: 0.2\n"),
            "cfg.yaml:3: duplicate key 'optim.lr' (first at line 2)");
}

TEST(ConfigTest, OverridesApplyInOrderAndMayCreateKeys) {
  const Config c = Config::fromString(
      "optim:\n  lr: 0.1\n", "cfg.yaml",
      {"optim.lr=0.05", "model.hidden=[512,512]", "train.steps=20", "run.name=two words",
       "train.steps=30", "launch.extra_args=[-x, \"A=b c\"]", "launch.hostfile="});
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.05);
  EXPECT_EQ(c.model.hidden, (std::vector<int64_t>{512, 512}));
  EXPECT_EQ(c.train.steps, 30);
  EXPECT_EQ(c.run.name, "two words");
  EXPECT_EQ(c.launch.extraArgs, (std::vector<std::string>{"-x", "A=b c"}));
  EXPECT_EQ(c.launch.hostfile, "");
}

TEST(ConfigTest, BadOverridesNameTheSetArgument) {
  EXPECT_EQ(configError("", {"optim.lrr=0.1"}),
            "--set optim.lrr: unknown key (did you mean 'optim.lr'?)");
  EXPECT_EQ(configError("", {"optim.lr=-0.1"}), "--set optim.lr: must be > 0, got -0.1");
  EXPECT_EQ(configError("", {"train.steps=many"}),
            "--set train.steps: must be an integer, got 'many'");
  EXPECT_EQ(configError("", {"model.hidden=[512, 0]"}),
            "--set model.hidden: model.hidden[1] must be >= 1, got 0");
  EXPECT_EQ(configError("", {"optim.lr"}),
            "--set optim.lr: expected path=value, e.g. optim.lr=0.05");
  EXPECT_EQ(configError("", {"optim=1"}),
            "--set optim: is a section; set one of its keys, e.g. optim.x");
  EXPECT_EQ(configError("", {"model.hidden=[1, 2"})
                .rfind("--set model.hidden: malformed value '[1, 2': ", 0),
            0U);
  // Cross-key rules blame the override that broke them.
  EXPECT_EQ(configError("train:\n  steps: 100\n", {"optim.schedule.warmup_steps=101"}),
            "--set optim.schedule.warmup_steps: must be <= train.steps (100), got 101");
}

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = std::filesystem::temp_directory_path() /
                 ("thinwire_config_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(directory_);
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (directory_ / name).string();
    std::ofstream(path) << text;
    return path;
  }

  std::filesystem::path directory_;
};

TEST_F(ConfigFileTest, FromFileSetsSourcePathAndNamesTheFileInErrors) {
  const std::string path = write("exp.yaml", "train:\n  steps: 7\n");
  const Config c = Config::fromFile(path, {"optim.lr=0.2"});
  EXPECT_EQ(c.sourcePath, path);
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.2);

  const std::string bad = write("bad.yaml", "train:\n  steps: 0\n");
  try {
    Config::fromFile(bad);
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), bad + ":2: train.steps must be >= 1, got 0");
  }
}

TEST_F(ConfigFileTest, AMissingFileIsADataError) {
  try {
    Config::fromFile("no_such_dir/x.yaml");
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot read config 'no_such_dir/x.yaml': No such file or directory");
  }
}

TEST(ConfigTest, CompressionOverridesApplyToMatchingParametersInOrder) {
  const Config c = Config::fromString(
      "compression:\n"
      "  method: topk\n"
      "  ratio: 0.01\n"
      "  overrides:\n"
      "    - \"layers.0.* ratio=0.1 feedback=econtrol\"\n"
      "    - \"*.bias method=none\"\n"
      "    - \"layers.0.weight ratio=0.2\"\n");
  EXPECT_EQ(compressionFor(c, "layers.2.weight").ratio, 0.01);
  EXPECT_EQ(compressionFor(c, "layers.2.weight").feedback, "ef");
  const CompressionConfig first = compressionFor(c, "layers.0.weight");
  EXPECT_EQ(first.ratio, 0.2);  // the later entry wins
  EXPECT_EQ(first.feedback, "econtrol");
  EXPECT_EQ(first.method, "topk");
  EXPECT_EQ(compressionFor(c, "layers.0.bias").method, "none");
  EXPECT_EQ(compressionFor(c, "layers.0.bias").ratio, 0.1);
  EXPECT_EQ(compressionFor(c, "layers.1.bias").method, "none");
}

TEST(ConfigTest, BadCompressionOverridesNameTheEntryAndTheProblem) {
  const std::string head = "compression:\n  method: topk\n  overrides:\n";
  EXPECT_EQ(configError(head + "    - \"*.bias\"\n"),
            "cfg.yaml:3: compression.overrides[0] '*.bias' sets nothing; add key=value pairs "
            "after the glob");
  EXPECT_EQ(configError(head + "    - \"ok ratio=0.5\"\n    - \"x ratio=1.5\"\n"),
            "cfg.yaml:3: compression.overrides[1] ('x ratio=1.5'): compression.ratio: must be in "
            "(0, 1], got 1.5");
  EXPECT_NE(configError(head + "    - \"x ration=0.5\"\n")
                .find("unknown key (did you mean "
                      "'compression.ratio'?)"),
            std::string::npos)
      << configError(head + "    - \"x ration=0.5\"\n");
  EXPECT_NE(configError(head + "    - \"x ratio\"\n").find("expected key=value"),
            std::string::npos);
  EXPECT_NE(configError(head + "    - \"x overrides=[]\"\n").find("cannot be overridden"),
            std::string::npos);
  // Cross-key rules hold inside an override too.
  EXPECT_NE(configError(head + "    - \"x method=sign feedback=dgc\"\n")
                .find("compression.overrides[0] feedback: dgc needs method: topk"),
            std::string::npos)
      << configError(head + "    - \"x method=sign feedback=dgc\"\n");
}

TEST(ConfigTest, CompressionCrossKeyRules) {
  EXPECT_EQ(configError("optim:\n  momentum: 0.9\ncompression:\n  method: topk\n"
                        "  feedback: dgc\n"),
            "cfg.yaml:4: compression feedback: dgc applies its own momentum; set optim.momentum: "
            "0 (got 0.9)");
  EXPECT_EQ(configError("compression:\n  method: sign\n  sign_chunk: 12\n"),
            "cfg.yaml:2: compression sign_chunk must be a multiple of 8 (0 = one scale per "
            "tensor), got 12");
  EXPECT_EQ(configError("compression:\n  method: topk\n  aggregator: allreduce\n"),
            "cfg.yaml:2: compression aggregator: allreduce needs a summable method (identity, "
            "fp16, bf16, randomk), got method: topk");
  EXPECT_EQ(configError("compression:\n  method: randomk\n  aggregator: allreduce\n"),
            "<no error>");
}

// Each compression example is one of the two default experiments with compression switched on:
// text_llama_*.yaml the language model, every other one fmnist_mlp.yaml.
TEST(ConfigTest, CompressionExamplesStartFromTheDefaultExperiment) {
  const std::string examples = std::string(THINWIRE_SOURCE_DIR) + "/examples";
  const Config mlp = Config::fromFile(examples + "/fmnist_mlp.yaml");
  const Config llama = Config::fromFile(examples + "/text_llama.yaml");
  int count = 0;
  int llamaCount = 0;
  for (const auto& entry : std::filesystem::directory_iterator(examples + "/compression")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    const bool isLlama = entry.path().stem().string().rfind("text_llama", 0) == 0;
    llamaCount += isLlama ? 1 : 0;
    const Config& base = isLlama ? llama : mlp;
    const Config c = Config::fromFile(entry.path().string());
    EXPECT_EQ(c.model.type, base.model.type);
    EXPECT_EQ(c.model.dModel, base.model.dModel);
    EXPECT_NE(c.compression.method, "none");
    EXPECT_EQ(c.run.name, entry.path().stem().string());
    EXPECT_EQ(c.model.hidden, base.model.hidden);
    EXPECT_EQ(c.train.steps, base.train.steps);
    EXPECT_EQ(c.data.path, base.data.path);
    ++count;
  }
  EXPECT_GE(count, 8);
  EXPECT_EQ(llamaCount, 3);
}

TEST_F(ConfigFileTest, BaseFilesAreReadFirstAndTheirErrorsNamed) {
  const std::string basePath = (directory_ / "base.yaml").string();
  std::ofstream(basePath) << "run:\n  name: base\n  seed: 5\noptim:\n  lr: 0.5\n";
  std::ofstream((directory_ / "child.yaml").string()) << "base: base.yaml\noptim:\n  lr: 0.25\n";
  const Config child = Config::fromFile((directory_ / "child.yaml").string());
  EXPECT_EQ(child.run.seed, 5U);
  EXPECT_EQ(child.run.name, "base");
  EXPECT_EQ(child.optim.lr, 0.25);
  EXPECT_EQ(child.toYaml().find("base:"), std::string::npos);

  std::ofstream((directory_ / "missing.yaml").string()) << "base: nowhere.yaml\n";
  try {
    Config::fromFile((directory_ / "missing.yaml").string());
    FAIL() << "a missing base file was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.yaml:1: base '"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nowhere.yaml"), std::string::npos) << e.what();
  }
  std::ofstream((directory_ / "loop.yaml").string()) << "base: loop.yaml\n";
  EXPECT_THROW(Config::fromFile((directory_ / "loop.yaml").string()), ConfigError);
}

TEST(ConfigTest, ToYamlRoundTripsEveryField) {
  Config c;
  c.run.name = "round trip: \"quoted\" #1";
  c.run.seed = 12345678901234ULL;
  c.run.outputDir = "yes";  // a YAML boolean word, must stay a string
  c.run.logEvery = 7;
  c.run.logLevel = "debug";
  c.run.progress = false;
  c.data.dataset = "synthetic";
  c.data.path = "";
  c.data.synthetic = {100, 50, 32, 4};
  c.model.type = "cnn";
  c.model.hidden = {};
  c.model.channels = {8, 16};
  c.model.cnnHidden = 33;
  c.train.steps = 5000;
  c.train.batchPerRank = 17;
  c.train.gradAccumulation = 3;
  c.train.clipGradNorm = 0.1 + 0.2;  // not exactly 0.3: needs all digits
  c.train.evalEvery = 250;
  c.train.evalBatch = 999;
  c.train.checkpointEvery = 100;
  c.train.checkpointKeep = 5;
  c.train.resume = "- not a list";
  c.train.threads = 2;
  c.train.stopAfter = 4000;
  c.optim.name = "adam";
  c.optim.lr = 1.0 / 3.0;
  c.optim.momentum = 0.95;
  c.optim.nesterov = true;
  c.optim.weightDecay = 5e-4;
  c.optim.beta1 = 0.8;
  c.optim.beta2 = 0.99;
  c.optim.eps = 1e-12;
  c.optim.schedule = {"step", 500, 0.01, 700, 0.5};
  c.comm.backend = "local";
  c.comm.bucketMb = 0.25;
  c.comm.timeoutS = 12.5;
  c.comm.gradientSync = false;
  c.comm.overlap = "off";
  c.compression.method = "topk";
  c.compression.feedback = "econtrol";
  c.compression.aggregator = "two_phase";
  c.compression.ratio = 0.003;
  c.compression.selection = "sampled";
  c.compression.sampleRatio = 0.02;
  c.compression.fp16Values = true;
  c.compression.scaleRandomK = true;
  c.compression.bits = 3;
  c.compression.quantizeBucket = 128;
  c.compression.stochasticRounding = true;
  c.compression.signChunk = 0;
  c.compression.rank = 4;
  c.compression.warmStart = false;
  c.compression.minCompressionRate = 3;
  c.compression.eta = 0.05;
  c.compression.stepUnits = true;
  c.compression.dgc = {0.8, true, false, 2.5, 3};
  c.compression.minNumel = 10;
  c.compression.compressVectors = true;
  c.compression.startStep = 20;
  c.compression.errorEvery = 7;
  c.compression.linkGbps = 10;
  c.compression.latencyUs = 5;
  c.compression.overrides = {"*.bias method=none", "layers.0.* ratio=0.1 feedback=ef"};
  c.launch.ranks = 16;
  c.launch.hostfile = "/etc/hosts file";
  c.launch.mpirun = "/opt/ompi/bin/mpirun";
  c.launch.oversubscribe = false;
  c.launch.bindTo = "socket";
  c.launch.transport = "tcp";
  c.launch.tcpInterface = "eth0";
  c.launch.extraArgs = {"--mca", "btl_tcp_links 2", "", "null", "'x'", "a\\b"};
  c.launch.srunMpi = "pmi2";
  c.launch.srunArgs = {"--exclusive"};
  const std::string yaml = c.toYaml();
  expectSameConfig(Config::fromString(yaml), c);
  expectSameConfig(Config::fromString(Config{}.toYaml()), Config{});
}

TEST(ConfigTest, ToYamlListsEveryKeyOnce) {
  const std::string yaml = Config{}.toYaml();
  for (const std::string& key : kAllKeys) {
    const std::string name = key.substr(key.rfind('.') + 1) + ":";
    EXPECT_NE(yaml.find(name), std::string::npos) << key;
  }
  EXPECT_NE(yaml.find("optim:\n  name: sgd\n  lr: 0.1\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("  schedule:\n    name: constant\n"), std::string::npos) << yaml;
}

TEST(ConfigTest, ReferenceDocumentsEveryKeyWithTypeAndDefault) {
  const std::string doc = configReferenceMarkdown();
  for (const std::string& key : kAllKeys) {
    EXPECT_NE(doc.find("| `" + key + "` |"), std::string::npos) << key;
  }
  EXPECT_NE(doc.find("| `optim.lr` | number | `0.1` | > 0 |"), std::string::npos);
  EXPECT_NE(doc.find("| `optim.name` | string | `sgd` | `sgd`, `adam`, `adamw`, `onebit_adam` |"),
            std::string::npos);
  EXPECT_NE(doc.find("| `model.hidden` | list of integers | `[2048, 2048]` | entries >= 1 |"),
            std::string::npos);
  EXPECT_NE(doc.find("| `optim.momentum` | number | `0` | in [0, 1) |"), std::string::npos);
  for (const char* section :
       {"run", "data", "model", "train", "optim", "comm", "compression", "launch"}) {
    EXPECT_NE(doc.find("\n## `" + std::string(section) + "`\n"), std::string::npos) << section;
  }
}

// docs/config.md is generated; it must match the schema byte for byte. Set
// THINWIRE_WRITE_CONFIG_DOCS=1 to rewrite it from this test.
TEST(ConfigTest, CommittedReferenceMatchesTheSchema) {
  const std::string path = std::string(THINWIRE_SOURCE_DIR) + "/docs/config.md";
  const std::string expected = configReferenceMarkdown();
  const char* write = std::getenv("THINWIRE_WRITE_CONFIG_DOCS");
  if (write != nullptr && std::string(write) == "1")
    std::ofstream(path, std::ios::binary) << expected;
  EXPECT_TRUE(readFile(path) == expected)
      << path << " is out of date with the schema in core/config.cc; regenerate it with "
      << "`build/release/bin/thinwire config-docs > docs/config.md`";
}

TEST(ConfigTest, ExampleConfigsParse) {
  const std::string examples = std::string(THINWIRE_SOURCE_DIR) + "/examples/";
  const Config mlp = Config::fromFile(examples + "fmnist_mlp.yaml");
  EXPECT_EQ(mlp.data.dataset, "fashion_mnist");
  EXPECT_EQ(mlp.model.type, "mlp");
  EXPECT_EQ(mlp.model.hidden, (std::vector<int64_t>{2048, 2048}));
  EXPECT_EQ(mlp.launch.ranks, 4);
  EXPECT_EQ(mlp.train.batchPerRank, 64);
  EXPECT_EQ(mlp.optim.name, "sgd");
  EXPECT_DOUBLE_EQ(mlp.optim.momentum, 0.9);
  EXPECT_TRUE(mlp.optim.nesterov);
  EXPECT_DOUBLE_EQ(mlp.optim.lr, 0.05);
  EXPECT_EQ(mlp.optim.schedule.name, "cosine");
  EXPECT_EQ(mlp.run.logEvery, 20);

  const Config cnn = Config::fromFile(examples + "fmnist_cnn.yaml");
  EXPECT_EQ(cnn.model.type, "cnn");
  EXPECT_EQ(cnn.data.dataset, "fashion_mnist");

  const Config smoke = Config::fromFile(examples + "synthetic_smoke.yaml");
  EXPECT_EQ(smoke.data.dataset, "synthetic");
  EXPECT_EQ(smoke.data.synthetic.features, 32);
  EXPECT_EQ(smoke.data.synthetic.classes, 4);
  EXPECT_EQ(smoke.model.hidden, (std::vector<int64_t>{64}));
  EXPECT_EQ(smoke.train.steps, 100);
  EXPECT_EQ(smoke.launch.ranks, 2);
}

}  // namespace
}  // namespace thinwire::core

// The trainer end to end on one GPU (train.device: cuda) against the same run on the CPU: every
// host-side loop of the step (gradient clipping, SGD's fused update, the compression engine's
// staging) must take CUDA tensors, and the losses must follow the CPU's.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/logging.h"
#include "comm/local/local_communicator.h"
#include "core/config.h"
#include "core/trainer.h"
#include "gpu_test_support.h"

namespace thinwire::core {
namespace {

class TrainerCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("thinwire_trainer_cuda_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Config base(const std::string& name) const {
    Config c;
    c.run.name = name;
    c.run.outputDir = dir_.string();
    c.run.seed = 3;
    c.run.logEvery = 1;
    c.run.progress = false;
    c.train.resume = "never";
    c.train.checkpointEvery = 0;
    c.train.evalEvery = 0;
    c.train.threads = 1;
    c.comm.backend = "local";
    return c;
  }

  // Byte-level text: a few hundred short documents in the fortunes format ("%" lines between).
  std::string writeText() const {
    const std::string path = (dir_ / "text.txt").string();
    std::ofstream out(path);
    const char* words[] = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"};
    for (int d = 0; d < 400; ++d) {
      for (int w = 0; w < 12; ++w) out << words[(d * 7 + w * w) % 9] << (w == 11 ? ".\n" : " ");
      out << "%\n";
    }
    return path;
  }

  static TrainResult train(const Config& config) {
    auto world = comm::makeLocalWorld(1);
    Logger log({.rank = 0, .level = LogLevel::kWarn});
    Trainer trainer(config, *world[0], log);
    return trainer.run();
  }

  // The GPU run's per-step losses follow the CPU's (float reductions differ in order, and a
  // quantizer or top-k may flip a tie, so not bit for bit) and the loss falls.
  static void expectSameTrajectory(const TrainResult& gpu,
                                   const TrainResult& cpu,
                                   double relative) {
    ASSERT_EQ(gpu.steps.size(), cpu.steps.size());
    ASSERT_GE(gpu.steps.size(), 4u);
    for (size_t i = 0; i < gpu.steps.size(); ++i) {
      ASSERT_TRUE(std::isfinite(gpu.steps[i].loss)) << "step " << gpu.steps[i].step;
      EXPECT_NEAR(gpu.steps[i].loss, cpu.steps[i].loss, relative * std::abs(cpu.steps[i].loss))
          << "step " << gpu.steps[i].step;
    }
    EXPECT_LT(gpu.steps.back().loss, gpu.steps.front().loss);
  }

  std::filesystem::path dir_;
};

TEST_F(TrainerCudaTest, MlpWithClippingAndFusedMomentumFollowsTheCpu) {
  TW_REQUIRE_GPU();
  Config c = base("mlp");
  c.data.dataset = "synthetic";
  c.data.synthetic = {.trainSamples = 2048, .testSamples = 256, .features = 32, .classes = 4};
  c.model.type = "mlp";
  c.model.hidden = {64, 32};
  c.train.steps = 12;
  c.train.batchPerRank = 64;
  c.train.evalBatch = 256;
  c.train.clipGradNorm = 0.5;  // small enough to clip: the clipping loop runs every step
  c.optim.name = "sgd";
  c.optim.lr = 0.05;
  c.optim.momentum = 0.9;
  const TrainResult cpu = train(c);
  c.train.device = "cuda";
  c.run.name = "mlp_cuda";
  const TrainResult gpu = train(c);
  expectSameTrajectory(gpu, cpu, 1e-3);
}

TEST_F(TrainerCudaTest, LlamaWithQuestW4A4AndWithTopKFeedbackFollowsTheCpu) {
  TW_REQUIRE_GPU();
  Config c = base("llama");
  c.data.dataset = "text";
  c.data.path = writeText();
  c.model.type = "llama";
  c.model.dModel = 128;
  c.model.layers = 1;
  c.model.heads = 2;
  c.model.seqLen = 32;
  c.model.mlpMultiple = 128;
  c.train.steps = 8;
  c.train.batchPerRank = 4;
  c.train.evalBatch = 8;
  c.train.clipGradNorm = 1.0;
  c.optim.name = "adamw";
  c.optim.lr = 0.003;
  for (const std::string variant : {"quest_w4a4", "topk_ef"}) {
    SCOPED_TRACE(variant);
    Config v = c;
    v.run.name = variant;
    if (variant == "quest_w4a4") {
      v.qat.method = "quest";
      v.qat.wBits = 4;
      v.qat.aBits = 4;
    } else {
      v.compression.method = "topk";
      v.compression.ratio = 0.01;
      v.compression.feedback = "ef";
    }
    const TrainResult cpu = train(v);
    v.train.device = "cuda";
    v.run.name = variant + "_cuda";
    const TrainResult gpu = train(v);
    expectSameTrajectory(gpu, cpu, 0.02);
  }
}

}  // namespace
}  // namespace thinwire::core

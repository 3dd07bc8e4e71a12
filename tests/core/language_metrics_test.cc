#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>

#include "core/data/text_dataset.h"
#include "core/metrics.h"
#include "core/models/llama.h"
#include "core/trainer.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

using ::thinwire::testing::TempDir;

TEST(LanguageMetricsTest, BitsPerByteAndPerplexityOfKnownDistributions) {
  // A uniform guess over 256 bytes costs ln 256 nats = 8 bits per byte, perplexity 256.
  EXPECT_NEAR(bitsPerByte(std::log(256.0)), 8.0, 1e-12);
  EXPECT_NEAR(perplexity(std::log(256.0)), 256.0, 1e-9);
  // Probability 1/2 for every byte: 1 bit.
  EXPECT_NEAR(bitsPerByte(-std::log(0.5)), 1.0, 1e-12);
}

TEST(LanguageMetricsTest, EvaluationBitsPerByteMatchesAHandComputedLog2Loss) {
  TempDir dir("lm-metrics");
  std::string text;
  for (int i = 0; i < 40; ++i) text += "line " + std::to_string(i * 37) + " of text\n%\n";
  std::ofstream(dir.file("corpus"), std::ios::binary) << text;
  const TextDataset data(
      {.directory = dir.path(), .split = Split::kTrain, .seqLen = 8, .validationFraction = 0.1});
  LlamaOptions options;
  options.dModel = 16;
  options.layers = 1;
  options.heads = 2;
  options.maxSeqLen = 8;
  options.mlpMultiple = 16;
  Llama model(options);
  model.initFromSeed(3);
  const EvalRecord eval = evaluateModel(model, data, /*batchSize=*/7);
  ASSERT_TRUE(eval.text);
  // Independent: -log2 softmax(logits)[target] by hand, in double, over every token.
  double bits = 0;
  int64_t tokens = 0;
  at::NoGradGuard noGrad;
  for (int64_t i = 0; i < data.size(); ++i) {
    const Batch batch = data.batch({i});
    const at::Tensor logits = model.forward(batch.inputs).to(at::kDouble)[0];
    for (int64_t t = 0; t < 8; ++t) {
      double maxLogit = -1e300;
      for (int64_t v = 0; v < 256; ++v) maxLogit = std::max(maxLogit, logits[t][v].item<double>());
      double sum = 0;
      for (int64_t v = 0; v < 256; ++v) sum += std::exp(logits[t][v].item<double>() - maxLogit);
      const int64_t target = batch.labels[0][t].item<int64_t>();
      const double logProbability = logits[t][target].item<double>() - maxLogit - std::log(sum);
      bits += -logProbability / std::log(2.0);
      ++tokens;
    }
  }
  EXPECT_NEAR(eval.bitsPerByte, bits / static_cast<double>(tokens), 1e-4);
  EXPECT_NEAR(eval.perplexity, std::pow(2.0, bits / static_cast<double>(tokens)), 1e-2);
}

TEST(LanguageMetricsTest, XzBaselineIsCheapForRepeatedTextAndAboutEightBitsForNoise) {
  const XzBaseline probe = xzConditionalBitsPerByte("x", "y");
  if (!probe.available) GTEST_SKIP() << probe.note;
  std::string context;
  for (int i = 0; i < 2000; ++i) context += "the quick brown fox " + std::to_string(i % 50) + "\n";
  const std::string repeated = context.substr(0, 20000);
  const XzBaseline cheap = xzConditionalBitsPerByte(context, repeated);
  ASSERT_TRUE(cheap.available) << cheap.note;
  EXPECT_LT(cheap.bitsPerByte, 0.2);
  std::string noise(50000, '\0');
  uint64_t state = 1;
  for (char& c : noise) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    c = static_cast<char>(state >> 56);
  }
  const XzBaseline expensive = xzConditionalBitsPerByte(context, noise);
  ASSERT_TRUE(expensive.available) << expensive.note;
  EXPECT_GT(expensive.bitsPerByte, 7.9);
  EXPECT_LT(expensive.bitsPerByte, 8.2);
  EXPECT_EQ(expensive.bitsPerByte,
            static_cast<double>(expensive.bothBytes - expensive.contextBytes) * 8.0 / 50000.0);
}

}  // namespace
}  // namespace thinwire::core

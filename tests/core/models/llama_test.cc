#include "core/models/llama.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/models/model.h"

namespace thinwire::core {
namespace {

LlamaOptions smallOptions() {
  LlamaOptions options;
  options.dModel = 32;
  options.layers = 2;
  options.heads = 4;
  options.maxSeqLen = 16;
  options.mlpMultiple = 32;
  return options;
}

std::map<std::string, at::Tensor> parametersOf(torch::nn::Module& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : model.named_parameters()) out[item.key()] = item.value();
  return out;
}

at::Tensor randomTokens(int64_t n, int64_t length, uint64_t seed) {
  at::Tensor tokens = at::empty({n, length}, at::kLong);
  uint64_t state = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (int64_t i = 0; i < tokens.numel(); ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    tokens.data_ptr<int64_t>()[i] = static_cast<int64_t>((state >> 33) % 256);
  }
  return tokens;
}

TEST(LlamaTest, ForwardMapsTokensToPerPositionLogits) {
  Llama model(smallOptions());
  model.initFromSeed(1);
  const at::Tensor logits = model.forward(randomTokens(3, 10, 1));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 10, 256}));
  EXPECT_EQ(logits.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
  EXPECT_THROW(model.forward(randomTokens(1, 17, 1)), InvalidArgument);  // longer than seq_len
  EXPECT_THROW(model.forward(randomTokens(1, 4, 1).to(at::kFloat)), InvalidArgument);
}

TEST(LlamaTest, ParametersAreNamedAndShapedAsDocumented) {
  Llama model(smallOptions());
  auto parameters = parametersOf(model);
  // 8/3 x 32 = 85.3 -> 86 -> rounded up to a multiple of 32: 96.
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"embed.weight", {256, 32}},
      {"layers.0.attn_norm.weight", {32}},
      {"layers.0.attention.q.weight", {32, 32}},
      {"layers.0.attention.k.weight", {32, 32}},
      {"layers.0.attention.v.weight", {32, 32}},
      {"layers.0.attention.o.weight", {32, 32}},
      {"layers.0.mlp_norm.weight", {32}},
      {"layers.0.mlp.gate.weight", {96, 32}},
      {"layers.0.mlp.up.weight", {96, 32}},
      {"layers.0.mlp.down.weight", {32, 96}},
      {"norm.weight", {32}},
      {"head.weight", {256, 32}},
  };
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(parameters.count(name)) << name;
    EXPECT_EQ(parameters[name].sizes(), shape) << name;
  }
  EXPECT_EQ(parameters.size(), 2 * 9 + 3u);  // 9 per block, embed, norm, head; no biases
}

TEST(LlamaTest, ChangingLaterTokensLeavesEarlierOutputsUnchanged) {
  Llama model(smallOptions());
  model.initFromSeed(2);
  torch::NoGradGuard noGrad;
  at::Tensor a = randomTokens(2, 12, 3);
  at::Tensor b = a.clone();
  b.narrow(1, 7, 5).copy_(randomTokens(2, 5, 4));
  const at::Tensor la = model.forward(a);
  const at::Tensor lb = model.forward(b);
  EXPECT_TRUE(at::allclose(la.narrow(1, 0, 7), lb.narrow(1, 0, 7), 1e-5, 1e-6));
  // The changed positions themselves do see the change, so the test can fail.
  EXPECT_GT((la.narrow(1, 7, 5) - lb.narrow(1, 7, 5)).abs().max().item<double>(), 1e-3);
  // And an earlier change reaches every later position.
  at::Tensor c = a.clone();
  c[0][0] = (a[0][0].item<int64_t>() + 1) % 256;
  const at::Tensor lc = model.forward(c);
  EXPECT_GT((la[0][11] - lc[0][11]).abs().max().item<double>(), 1e-5);
}

TEST(LlamaTest, RopeDotProductDependsOnlyOnThePositionDifference) {
  constexpr int64_t kHeadDim = 8;
  constexpr int64_t kLength = 20;
  const at::Tensor q = at::randn({kHeadDim}, at::kDouble);
  const at::Tensor k = at::randn({kHeadDim}, at::kDouble);
  // The same vector at every position: rotation is the only thing that varies.
  const at::Tensor rq = applyRope(q.expand({kLength, kHeadDim}).contiguous(), 10000.0);
  const at::Tensor rk = applyRope(k.expand({kLength, kHeadDim}).contiguous(), 10000.0);
  auto dot = [&](int64_t m, int64_t n) { return at::dot(rq[m], rk[n]).item<double>(); };
  for (int64_t shift : {1, 5, 11}) {
    for (int64_t m : {0, 3}) {
      for (int64_t n : {0, 2, 6}) {
        EXPECT_NEAR(dot(m, n), dot(m + shift, n + shift), 1e-9) << m << " " << n << " " << shift;
      }
    }
  }
  EXPECT_GT(std::abs(dot(0, 0) - dot(0, 3)), 1e-6);  // the difference does matter
  // Independent check of one rotation: pair (1, 1 + 4) at position 3 turns by 3 * 10000^(-2/8).
  const double angle = 3.0 * std::pow(10000.0, -2.0 / 8.0);
  const double x1 = q[1].item<double>(), x2 = q[5].item<double>();
  EXPECT_NEAR(rq[3][1].item<double>(), x1 * std::cos(angle) - x2 * std::sin(angle), 1e-12);
  EXPECT_NEAR(rq[3][5].item<double>(), x1 * std::sin(angle) + x2 * std::cos(angle), 1e-12);
  EXPECT_TRUE(at::allclose(rq[0], q));  // position 0 is the identity
}

TEST(LlamaTest, SwigluHiddenIsRoundedUpToTheMultiple) {
  for (int64_t d : {32, 100, 256, 384, 512}) {
    for (int64_t multiple : {1, 64, 256}) {
      const auto raw = static_cast<int64_t>(std::ceil(8.0 * static_cast<double>(d) / 3.0));
      const int64_t hidden = swigluHidden(d, multiple);
      EXPECT_EQ(hidden % multiple, 0);
      EXPECT_GE(hidden, raw);
      EXPECT_LT(hidden - raw, multiple);
    }
  }
  EXPECT_EQ(swigluHidden(256, 256), 768);
}

TEST(LlamaTest, DefaultConfigGivesEveryLinearAnInputMultipleOf128) {
  Llama model(LlamaOptions{});
  int linears = 0;
  for (const auto& [name, tensor] : parametersOf(model)) {
    if (tensor.dim() != 2 || name == "embed.weight") continue;
    EXPECT_EQ(tensor.size(1) % 128, 0) << name << " " << tensor.sizes();
    ++linears;
  }
  EXPECT_EQ(linears, 4 * 7 + 1);
}

TEST(LlamaTest, InitialisationIsDeterministicPerSeedAndPerModule) {
  Llama a(smallOptions()), b(smallOptions()), c(smallOptions());
  a.initFromSeed(5);
  b.initFromSeed(5);
  c.initFromSeed(6);
  auto pa = parametersOf(a), pb = parametersOf(b), pc = parametersOf(c);
  for (const auto& [name, tensor] : pa) {
    EXPECT_TRUE(at::equal(tensor, pb[name])) << name;
    if (tensor.dim() == 1) {
      EXPECT_TRUE(at::equal(tensor, at::ones_like(tensor))) << name;
    } else {
      EXPECT_FALSE(at::equal(tensor, pc[name])) << name;
      const double bound = 1.0 / std::sqrt(static_cast<double>(tensor.size(1)));
      EXPECT_LE(tensor.abs().max().item<double>(), bound) << name;
    }
  }
  EXPECT_FALSE(at::equal(pa["layers.0.attention.q.weight"], pa["layers.0.attention.k.weight"]));
  EXPECT_FALSE(at::equal(pa["layers.0.attention.q.weight"], pa["layers.1.attention.q.weight"]));
}

TEST(LlamaTest, MakeModelBuildsLlamaForTokenWindows) {
  ModelConfig config;
  config.type = "llama";
  config.dModel = 32;
  config.layers = 1;
  config.heads = 2;
  config.seqLen = 16;
  auto model = makeModel(config, {16}, 256, /*seed=*/0);
  ASSERT_NE(dynamic_cast<Llama*>(model.get()), nullptr);
  EXPECT_EQ(model->forward(randomTokens(2, 16, 0)).sizes(), (std::vector<int64_t>{2, 16, 256}));
  EXPECT_THROW(makeModel(config, {1, 28, 28}, 10, 0), ConfigError);
  config.heads = 3;
  EXPECT_THROW(makeModel(config, {16}, 256, 0), ConfigError);
}

TEST(LlamaTest, GenerateIsReproducibleAndGreedyAtTemperatureZero) {
  Llama model(smallOptions());
  model.initFromSeed(7);
  const std::string prompt(20, 'a');  // longer than maxSeqLen: the context is the tail
  const std::string greedy = generate(model, prompt, {.bytes = 5, .temperature = 0, .seed = 1});
  ASSERT_EQ(greedy.size(), 5u);
  // Greedy: the first byte is the argmax of the last position's logits.
  torch::NoGradGuard noGrad;
  at::Tensor tokens = at::full({1, 16}, static_cast<int64_t>('a'), at::kLong);
  EXPECT_EQ(static_cast<unsigned char>(greedy[0]),
            model.forward(tokens)[0][15].argmax().item<int64_t>());
  const GenerateOptions sampled{.bytes = 12, .temperature = 1.0, .seed = 3};
  EXPECT_EQ(generate(model, prompt, sampled), generate(model, prompt, sampled));
  EXPECT_THROW(generate(model, "", sampled), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::core

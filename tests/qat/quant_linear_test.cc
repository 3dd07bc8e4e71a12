#include "qat/quant_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <set>
#include <string>

#include "base/error.h"
#include "core/models/llama.h"
#include "core/models/model.h"
#include "tests/qat/qat_reference.h"

namespace thinwire::qat {
namespace {

using testing::gaussian;

QatOptions questOptions(int64_t wBits, int64_t aBits, Variant variant) {
  QatOptions qat;
  qat.method = Method::kQuest;
  qat.weightBits = wBits;
  qat.activationBits = aBits;
  qat.variant = variant;
  return qat;
}

std::set<std::string> parameterNames(torch::nn::Module& module) {
  std::set<std::string> names;
  for (const auto& item : module.named_parameters()) names.insert(item.key());
  return names;
}

TEST(QuantLinearTest, NoneIsAPlainLinear) {
  QuantLinear layer(QuantLinearOptions{128, 64, QatOptions{}});
  const at::Tensor x = gaussian({3, 5, 128}, 1);
  EXPECT_TRUE(at::equal(layer->forward(x), at::linear(x, layer->weight)));
  EXPECT_EQ(parameterNames(*layer), (std::set<std::string>{"weight"}));
}

TEST(QuantLinearTest, QuestAndSteKeepTheParameterNamesLsqAddsSteps) {
  QuantLinear quest(QuantLinearOptions{128, 64, questOptions(4, 4, Variant::kHalf)});
  EXPECT_EQ(parameterNames(*quest), (std::set<std::string>{"weight"}));
  QatOptions lsq;
  lsq.method = Method::kLsq;
  QuantLinear lsqLayer(QuantLinearOptions{128, 64, lsq});
  EXPECT_EQ(parameterNames(*lsqLayer),
            (std::set<std::string>{"weight", "weight_step", "input_step"}));
  lsq.weightBits = 1;
  EXPECT_THROW(QuantLinear(QuantLinearOptions{128, 64, lsq}), InvalidArgument);
  EXPECT_THROW(QuantLinear(QuantLinearOptions{100, 64, questOptions(4, 4, Variant::kHalf)}),
               InvalidArgument);
}

// Spec §3.1.9: Half and Full give the same layer output and the same gradients.
TEST(QuantLinearTest, HalfEqualsFull) {
  for (auto [wBits, aBits] : {std::pair<int64_t, int64_t>{4, 4}, {2, 8}, {4, 0}, {0, 3}}) {
    QuantLinear full(QuantLinearOptions{256, 96, questOptions(wBits, aBits, Variant::kFull)});
    QuantLinear half(QuantLinearOptions{256, 96, questOptions(wBits, aBits, Variant::kHalf)});
    {
      torch::NoGradGuard noGrad;
      half->weight.copy_(full->weight);
    }
    const at::Tensor x0 = gaussian({2, 7, 256}, 2);
    const at::Tensor g = gaussian({2, 7, 96}, 3);
    const at::Tensor xFull = x0.clone().requires_grad_(true);
    const at::Tensor xHalf = x0.clone().requires_grad_(true);
    const at::Tensor yFull = full->forward(xFull);
    const at::Tensor yHalf = half->forward(xHalf);
    const double scale = yFull.abs().max().item<double>();
    EXPECT_LT((yFull - yHalf).abs().max().item<double>(), 1e-5 * scale) << wBits << aBits;
    (yFull * g).sum().backward();
    (yHalf * g).sum().backward();
    auto close = [](const at::Tensor& a, const at::Tensor& b) {
      return (a - b).abs().max().item<double>() <= 1e-4 * a.abs().max().item<double>();
    };
    EXPECT_TRUE(close(xFull.grad(), xHalf.grad())) << wBits << aBits;
    EXPECT_TRUE(close(full->weight.grad(), half->weight.grad())) << wBits << aBits;
  }
}

TEST(QuantLinearTest, QuantizesWeightsPerRowAndInputsPerToken) {
  QuantLinear layer(QuantLinearOptions{128, 32, questOptions(2, 3, Variant::kFull)});
  const at::Tensor x = gaussian({4, 128}, 4);
  const at::Tensor expected =
      at::linear(fakeQuantize(x, layer->inputQuantizer()),
                 fakeQuantize(layer->weight.detach(), layer->weightQuantizer()));
  EXPECT_TRUE(at::equal(layer->forward(x).detach(), expected));
  EXPECT_EQ(layer->weightQuantizer().bits, 2);
  EXPECT_EQ(layer->inputQuantizer().bits, 3);
}

// Spec §3.2: only the attention and MLP linears are quantized; embedding, norms and head keep
// their full-precision modules and parameter names are those of the full-precision model.
TEST(QuantLinearTest, LlamaQuantizesOnlyAttentionAndMlpLinears) {
  core::ModelConfig config;
  config.type = "llama";
  config.dModel = 128;
  config.layers = 2;
  config.heads = 2;
  config.seqLen = 16;
  config.mlpMultiple = 128;
  core::QatConfig qatConfig;
  qatConfig.method = "quest";
  auto quantized = core::makeModel(config, {16}, 256, 0, qatConfig);
  auto plain = core::makeModel(config, {16}, 256, 0);
  EXPECT_EQ(parameterNames(*quantized), parameterNames(*plain));
  // Same seeded weights in both.
  const auto plainParameters = plain->named_parameters();
  for (const auto& item : quantized->named_parameters()) {
    EXPECT_TRUE(at::equal(item.value(), plainParameters[item.key()])) << item.key();
  }
  std::set<std::string> quantizedLayers;
  for (const auto& item : quantized->named_modules("", false)) {
    auto layer = std::dynamic_pointer_cast<QuantLinearImpl>(item.value());
    if (layer != nullptr && layer->options().qat.method == Method::kQuest) {
      quantizedLayers.insert(item.key());
    }
  }
  std::set<std::string> expected;
  for (const char* block : {"layers.0", "layers.1"}) {
    for (const char* name : {".attention.q", ".attention.k", ".attention.v", ".attention.o",
                             ".mlp.gate", ".mlp.up", ".mlp.down"}) {
      expected.insert(std::string(block) + name);
    }
  }
  EXPECT_EQ(quantizedLayers, expected);
  const at::Tensor tokens = at::randint(0, 256, {2, 16}, at::kLong);
  const at::Tensor a = quantized->forward(tokens);
  const at::Tensor b = plain->forward(tokens);
  EXPECT_TRUE(at::isfinite(a).all().item<bool>());
  EXPECT_FALSE(at::allclose(a, b));  // the quantizers are in the forward
  core::QatConfig badModel = qatConfig;
  core::ModelConfig mlp;
  EXPECT_THROW(core::makeModel(mlp, {784}, 10, 0, badModel), ConfigError);
}

}  // namespace
}  // namespace thinwire::qat

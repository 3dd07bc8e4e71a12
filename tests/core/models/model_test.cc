#include "core/models/model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/models/cnn.h"
#include "core/models/mlp.h"

namespace thinwire::core {
namespace {

std::map<std::string, at::Tensor> parametersOf(Model& model) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : model.named_parameters()) out[item.key()] = item.value();
  return out;
}

ModelConfig cnnConfig() {
  ModelConfig config;
  config.type = "cnn";
  return config;
}

TEST(ModelTest, DefaultMlpHasTheExpectedLayersAndParameterCount) {
  const std::shared_ptr<Model> model = makeModel(ModelConfig{}, {1, 28, 28}, 10, 0);
  const auto parameters = parametersOf(*model);
  int64_t count = 0;
  for (const auto& [name, tensor] : parameters) count += tensor.numel();
  EXPECT_EQ(count, 784 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10);
  EXPECT_EQ(count, 5824522);
  ASSERT_EQ(parameters.size(), 6u);
  EXPECT_EQ(parameters.at("layers.0.weight").sizes(), (std::vector<int64_t>{2048, 784}));
  EXPECT_EQ(parameters.at("layers.1.weight").sizes(), (std::vector<int64_t>{2048, 2048}));
  EXPECT_EQ(parameters.at("layers.2.weight").sizes(), (std::vector<int64_t>{10, 2048}));
  EXPECT_EQ(parameters.at("layers.2.bias").sizes(), (std::vector<int64_t>{10}));
}

TEST(ModelTest, MlpForwardMatchesAManualComputation) {
  ModelConfig config;
  config.hidden = {16, 8};
  const std::shared_ptr<Model> model = makeModel(config, {1, 4, 4}, 3, 7);
  const auto p = parametersOf(*model);
  const at::Tensor inputs = at::randn({5, 1, 4, 4});
  const at::Tensor logits = model->forward(inputs);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{5, 3}));
  at::Tensor x = inputs.reshape({5, 16});
  x = at::relu(at::matmul(x, p.at("layers.0.weight").t()) + p.at("layers.0.bias"));
  x = at::relu(at::matmul(x, p.at("layers.1.weight").t()) + p.at("layers.1.bias"));
  x = at::matmul(x, p.at("layers.2.weight").t()) + p.at("layers.2.bias");
  EXPECT_TRUE(at::allclose(logits, x, 1e-5, 1e-6));
  EXPECT_THROW(model->forward(at::randn({5, 15})), InvalidArgument);
}

TEST(ModelTest, CnnOutputShapeParametersAndBackward) {
  const std::shared_ptr<Model> model = makeModel(cnnConfig(), {1, 28, 28}, 10, 0);
  const auto p = parametersOf(*model);
  EXPECT_EQ(p.at("conv1.weight").sizes(), (std::vector<int64_t>{32, 1, 5, 5}));
  EXPECT_EQ(p.at("conv2.weight").sizes(), (std::vector<int64_t>{64, 32, 5, 5}));
  // 28 -conv-> 24 -pool-> 12 -conv-> 8 -pool-> 4: fc1 sees 64 * 4 * 4 features.
  EXPECT_EQ(p.at("fc1.weight").sizes(), (std::vector<int64_t>{128, 64 * 4 * 4}));
  EXPECT_EQ(p.at("fc2.weight").sizes(), (std::vector<int64_t>{10, 128}));
  const at::Tensor logits = model->forward(at::randn({3, 1, 28, 28}));
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 10}));
  logits.sum().backward();
  for (const auto& [name, tensor] : p) {
    ASSERT_TRUE(tensor.grad().defined()) << name;
    EXPECT_EQ(tensor.grad().sizes(), tensor.sizes()) << name;
  }
  EXPECT_THROW(model->forward(at::randn({3, 784})), InvalidArgument);
}

TEST(ModelTest, CnnForwardMatchesAManualComputation) {
  ModelConfig config = cnnConfig();
  config.channels = {3, 4};
  config.cnnHidden = 6;
  const std::shared_ptr<Model> model = makeModel(config, {2, 16, 16}, 5, 1);
  const auto p = parametersOf(*model);
  const at::Tensor inputs = at::randn({2, 2, 16, 16});
  at::Tensor x = at::conv2d(inputs, p.at("conv1.weight"), p.at("conv1.bias"));
  x = at::max_pool2d(at::relu(x), {2, 2});
  x = at::max_pool2d(at::relu(at::conv2d(x, p.at("conv2.weight"), p.at("conv2.bias"))), {2, 2});
  x = at::relu(at::linear(x.flatten(1), p.at("fc1.weight"), p.at("fc1.bias")));
  x = at::linear(x, p.at("fc2.weight"), p.at("fc2.bias"));
  EXPECT_TRUE(at::allclose(model->forward(inputs), x, 1e-5, 1e-6));
}

TEST(ModelTest, SameSeedGivesIdenticalWeightsWhateverTheGlobalRng) {
  for (const ModelConfig& config : {ModelConfig{}, cnnConfig()}) {
    at::manual_seed(1);
    const auto a = parametersOf(*makeModel(config, {1, 28, 28}, 10, 42));
    at::manual_seed(2);
    const auto b = parametersOf(*makeModel(config, {1, 28, 28}, 10, 42));
    const auto c = parametersOf(*makeModel(config, {1, 28, 28}, 10, 43));
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [name, tensor] : a) {
      EXPECT_TRUE(tensor.equal(b.at(name))) << config.type << " " << name;
      EXPECT_FALSE(tensor.equal(c.at(name))) << config.type << " " << name;
    }
  }
}

TEST(ModelTest, InitialisationIsUniformWithinTheFanInBound) {
  const auto p = parametersOf(*makeModel(cnnConfig(), {1, 28, 28}, 10, 3));
  const std::map<std::string, int64_t> fanIn = {
      {"conv1", 1 * 25}, {"conv2", 32 * 25}, {"fc1", 1024}, {"fc2", 128}};
  for (const auto& [layer, fan] : fanIn) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan));
    for (const std::string leaf : {".weight", ".bias"}) {
      const at::Tensor values = p.at(layer + leaf).to(at::kDouble);
      EXPECT_LE(values.abs().max().item<double>(), bound) << layer << leaf;
      if (values.numel() >= 500) {
        // U(-b, b): mean 0, standard deviation b / sqrt(3).
        EXPECT_NEAR(values.mean().item<double>(), 0.0, 0.1 * bound) << layer << leaf;
        EXPECT_NEAR(values.std().item<double>(), bound / std::sqrt(3.0), 0.05 * bound)
            << layer << leaf;
      }
    }
  }
}

TEST(ModelTest, CnnRejectsFlatOrTinySamplesWithConfigError) {
  EXPECT_THROW(makeModel(cnnConfig(), {784}, 10, 0), ConfigError);
  EXPECT_THROW(makeModel(cnnConfig(), {1, 8, 8}, 10, 0), ConfigError);
  ModelConfig badChannels = cnnConfig();
  badChannels.channels = {32};
  EXPECT_THROW(makeModel(badChannels, {1, 28, 28}, 10, 0), ConfigError);
  try {
    makeModel(cnnConfig(), {784}, 10, 0);
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("[channels, height, width], got [784]"), std::string::npos)
        << e.what();
  }
}

TEST(ModelTest, InvalidModelConfigsAreConfigErrors) {
  ModelConfig config;
  config.type = "transformer";
  EXPECT_THROW(makeModel(config, {1, 28, 28}, 10, 0), ConfigError);
  config = ModelConfig{};
  config.hidden = {64, 0};
  EXPECT_THROW(makeModel(config, {1, 28, 28}, 10, 0), ConfigError);
  config.hidden = {};
  const auto linear = parametersOf(*makeModel(config, {20}, 4, 0));
  EXPECT_EQ(linear.size(), 2u);
  EXPECT_EQ(linear.at("layers.0.weight").sizes(), (std::vector<int64_t>{4, 20}));
}

}  // namespace
}  // namespace thinwire::core

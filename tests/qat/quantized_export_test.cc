#include "qat/quantized_export.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/nn/module.h>

#include <cstdio>
#include <string>

#include "base/error.h"
#include "core/checkpoint.h"
#include "core/models/model.h"
#include "qat/quant_linear.h"
#include "tests/qat/qat_reference.h"

namespace thinwire::qat {
namespace {

using testing::gaussian;

// Two stacked quantized layers with a full-precision gain in between.
struct TwoLayers : torch::nn::Module {
  explicit TwoLayers(const QatOptions& qat) {
    first = register_module("first", QuantLinear(QuantLinearOptions{256, 128, qat}));
    second = register_module("second", QuantLinear(QuantLinearOptions{128, 64, qat}));
    gain = register_parameter("gain", at::rand({128}) + 0.5);
  }
  at::Tensor forward(const at::Tensor& x) {
    return second->forward(at::relu(first->forward(x)) * gain);
  }
  QuantLinear first{nullptr}, second{nullptr};
  at::Tensor gain;
};

QatOptions settings(Method method, int64_t wBits, int64_t aBits, Variant variant) {
  QatOptions qat;
  qat.method = method;
  qat.weightBits = wBits;
  qat.activationBits = aBits;
  qat.variant = variant;
  return qat;
}

TEST(QuantizedExportTest, RoundTripGivesTheFakeQuantizedOutputsExactly) {
  const QatOptions cases[] = {settings(Method::kQuest, 4, 4, Variant::kHalf),
                              settings(Method::kQuest, 2, 8, Variant::kFull),
                              settings(Method::kQuest, 1, 1, Variant::kHalf),
                              settings(Method::kSte, 4, 4, Variant::kHalf),
                              settings(Method::kLsq, 3, 4, Variant::kHalf)};
  const at::Tensor x = gaussian({3, 5, 256}, 7);
  for (const QatOptions& qat : cases) {
    TwoLayers trained(qat);
    const at::Tensor expected = trained.forward(x).detach();
    const StateDict exported = exportQuantized(trained);
    EXPECT_EQ(exported.at("first.weight.codes").scalar_type(), at::kByte);
    EXPECT_EQ(exported.count("first.weight"), 0u);  // no latent fp32 copy
    EXPECT_LT(exported.at("second.weight.codes").max().item<int64_t>(),
              int64_t{1} << qat.weightBits);

    // Through a file, into a differently initialised model.
    const std::string path = ::testing::TempDir() + "/qat_export_test.twc";
    core::writeStateFile(path, exported);
    TwoLayers fresh(qat);
    EXPECT_FALSE(at::equal(fresh.forward(x).detach(), expected));
    loadQuantized(fresh, core::readStateFile(path));
    std::remove(path.c_str());
    EXPECT_TRUE(at::equal(fresh.forward(x).detach(), expected)) << methodName(qat.method);
  }
}

TEST(QuantizedExportTest, RotatedCodesDescribeTheWeightTimesHadamard) {
  TwoLayers trained(settings(Method::kQuest, 8, 8, Variant::kHalf));
  const StateDict exported = exportQuantized(trained);
  EXPECT_EQ(exported.at("first.weight.rotated").item<int64_t>(), 1);
  const at::Tensor q = (exported.at("first.weight.codes").to(at::kDouble) - 128 + 0.5) *
                       exported.at("first.weight.step").to(at::kDouble).unsqueeze(1);
  // W ~ q H (8 bits: close), computed with the dense reference H.
  const at::Tensor w = at::matmul(q, testing::blockDiagonalHadamard(256));
  const at::Tensor latent = trained.first->weight.detach().to(at::kDouble);
  // 8-bit Gaussian NMSE is 8.8e-5; a wrong rotation or offset would give an NMSE near 1 or more.
  EXPECT_LT(((w - latent).pow(2).mean() / latent.pow(2).mean()).item<double>(), 1e-3);
}

TEST(QuantizedExportTest, RefusesMismatchedSettings) {
  TwoLayers trained(settings(Method::kQuest, 4, 4, Variant::kHalf));
  const StateDict exported = exportQuantized(trained);
  TwoLayers otherBits(settings(Method::kQuest, 2, 4, Variant::kHalf));
  EXPECT_THROW(loadQuantized(otherBits, exported), DataError);
  TwoLayers otherMethod(settings(Method::kSte, 4, 4, Variant::kHalf));
  EXPECT_THROW(loadQuantized(otherMethod, exported), DataError);
  TwoLayers plain(QatOptions{});
  EXPECT_THROW(exportQuantized(plain), InvalidArgument);
}

// The language model: the export's loss equals the fake-quantized model's.
TEST(QuantizedExportTest, LlamaLossOfTheExportEqualsTheFakeQuantizedLoss) {
  core::ModelConfig config;
  config.type = "llama";
  config.dModel = 128;
  config.layers = 2;
  config.heads = 2;
  config.seqLen = 32;
  config.mlpMultiple = 128;
  core::QatConfig qat;
  qat.method = "quest";
  auto model = core::makeModel(config, {32}, 256, /*seed=*/3, qat);
  at::Generator generator = at::detail::createCPUGenerator(9);
  const at::Tensor tokens = at::randint(0, 256, {4, 33}, generator, at::kLong);
  const at::Tensor inputs = tokens.narrow(1, 0, 32), targets = tokens.narrow(1, 1, 32);
  auto loss = [&](core::Model& m) {
    torch::NoGradGuard noGrad;
    return at::cross_entropy_loss(m.forward(inputs).reshape({-1, 256}), targets.reshape({-1}))
        .item<double>();
  };
  const double fakeQuantized = loss(*model);
  auto loaded = core::makeModel(config, {32}, 256, /*seed=*/4, qat);
  loadQuantized(*loaded, exportQuantized(*model));
  EXPECT_EQ(loss(*loaded), fakeQuantized);
}

}  // namespace
}  // namespace thinwire::qat

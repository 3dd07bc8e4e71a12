#include "optim/grad_clip.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "base/error.h"

namespace thinwire::optim {
namespace {

std::vector<NamedParameter> withGradients(const std::vector<std::vector<float>>& grads) {
  std::vector<NamedParameter> parameters;
  for (size_t i = 0; i < grads.size(); ++i) {
    at::Tensor p = at::zeros({static_cast<int64_t>(grads[i].size())}).set_requires_grad(true);
    p.mutable_grad() = at::tensor(grads[i]);
    parameters.push_back({"p" + std::to_string(i), p});
  }
  return parameters;
}

TEST(GradClipTest, ScalesAllGradientsToTheMaximumGlobalNorm) {
  // Global norm of (3, 4) and (12) is 13.
  auto parameters = withGradients({{3, 4}, {12}});
  EXPECT_NEAR(clipGradientNorm(parameters, 6.5), 13.0, 1e-9);
  const double factor = 6.5 / (13.0 + 1e-6);
  EXPECT_NEAR(parameters[0].tensor.grad()[0].item<double>(), 3 * factor, 1e-6);
  EXPECT_NEAR(parameters[0].tensor.grad()[1].item<double>(), 4 * factor, 1e-6);
  EXPECT_NEAR(parameters[1].tensor.grad()[0].item<double>(), 12 * factor, 1e-6);
}

TEST(GradClipTest, LeavesSmallGradientsAndUndefinedOnesAlone) {
  auto parameters = withGradients({{0.3f, 0.4f}});
  at::Tensor noGrad = at::zeros({2}).set_requires_grad(true);
  parameters.push_back({"unused", noGrad});
  EXPECT_NEAR(clipGradientNorm(parameters, 1.0), 0.5, 1e-7);
  EXPECT_FLOAT_EQ(parameters[0].tensor.grad()[1].item<float>(), 0.4f);
  EXPECT_FALSE(noGrad.grad().defined());
  EXPECT_THROW(clipGradientNorm(parameters, 0.0), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::optim

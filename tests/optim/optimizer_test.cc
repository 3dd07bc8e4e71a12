// Optimizers against the plain math, written out independently in double precision, and the
// learning-rate schedules against their closed forms.
#include "optim/optimizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "base/error.h"
#include "optim/lr_schedule.h"

namespace thinwire::optim {
namespace {

// One parameter of 5 elements with a fixed gradient sequence.
struct Problem {
  at::Tensor param = at::tensor({0.5, -1.0, 2.0, 0.0, 3.0}, at::kFloat).set_requires_grad(true);
  std::vector<std::vector<double>> grads = {
      {0.1, -0.2, 0.3, 0.0, 1.0}, {-0.3, 0.1, 0.2, 0.5, -1.0}, {0.2, 0.2, -0.1, -0.5, 0.5}};
  void setGrad(size_t t) {
    param.mutable_grad() = at::tensor(grads[t], at::kDouble).to(at::kFloat);
  }
};

std::vector<double> values(const at::Tensor& t) {
  at::Tensor d = t.detach().to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

void expectNear(const std::vector<double>& actual, const std::vector<double>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5) << i;
}

TEST(SgdOptimizerTest, NesterovMomentumWithWeightDecayMatchesTheFormula) {
  Problem problem;
  const double lr = 0.1, mu = 0.9, wd = 0.01;
  auto opt = makeOptimizer(
      {{"w", problem.param}},
      {.kind = OptimizerKind::kSgd, .momentum = mu, .nesterov = true, .weightDecay = wd});
  std::vector<double> p = values(problem.param), buf(p.size(), 0.0);
  for (size_t t = 0; t < problem.grads.size(); ++t) {
    problem.setGrad(t);
    opt->step(lr);
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = problem.grads[t][i] + wd * p[i];
      buf[i] = t == 0 ? g : mu * buf[i] + g;
      p[i] -= lr * (g + mu * buf[i]);
    }
    expectNear(values(problem.param), p);
  }
}

TEST(AdamOptimizerTest, AdamWMatchesTheFormula) {
  Problem problem;
  const double lr = 0.01, b1 = 0.9, b2 = 0.99, eps = 1e-6, wd = 0.1;
  auto opt = makeOptimizer(
      {{"w", problem.param}},
      {.kind = OptimizerKind::kAdamW, .weightDecay = wd, .beta1 = b1, .beta2 = b2, .eps = eps});
  std::vector<double> p = values(problem.param), m(p.size(), 0.0), v(p.size(), 0.0);
  for (size_t t = 0; t < problem.grads.size(); ++t) {
    problem.setGrad(t);
    opt->step(lr);
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = problem.grads[t][i];
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double mHat = m[i] / (1 - std::pow(b1, t + 1));
      const double vHat = v[i] / (1 - std::pow(b2, t + 1));
      p[i] -= lr * mHat / (std::sqrt(vHat) + eps);
    }
    expectNear(values(problem.param), p);
  }
}

TEST(AdamOptimizerTest, StateRoundTripContinuesBitExactly) {
  Problem a, b;
  OptimizerOptions options{.kind = OptimizerKind::kAdam, .weightDecay = 0.01};
  auto optA = makeOptimizer({{"w", a.param}}, options);
  auto optB = makeOptimizer({{"w", b.param}}, options);
  a.setGrad(0);
  optA->step(0.1);
  {
    at::NoGradGuard guard;
    b.param.copy_(a.param);
  }
  optB->loadState(optA->state());
  for (size_t t = 1; t < a.grads.size(); ++t) {
    a.setGrad(t);
    b.setGrad(t);
    optA->step(0.1);
    optB->step(0.1);
  }
  EXPECT_TRUE(at::equal(a.param, b.param));
}

// The trainer steps each gradient bucket's parameters as soon as the bucket is averaged
// (stepParameters); that must be the same arithmetic as one whole step, bit for bit.
TEST(OptimizerTest, SteppingInPartsEqualsTheWholeStepBitForBit) {
  const std::vector<OptimizerOptions> kinds = {
      {.kind = OptimizerKind::kSgd, .momentum = 0.9, .nesterov = true, .weightDecay = 0.01},
      {.kind = OptimizerKind::kAdam, .weightDecay = 0.01},
      {.kind = OptimizerKind::kAdamW, .weightDecay = 0.05}};
  for (const OptimizerOptions& options : kinds) {
    std::vector<at::Tensor> whole, parts;
    std::vector<NamedParameter> wholeParams, partParams;
    for (int i = 0; i < 3; ++i) {
      at::Tensor init = at::linspace(-1.0 - i, 2.0 + i, 7 + i, at::kFloat);
      whole.push_back(init.clone().set_requires_grad(true));
      parts.push_back(init.clone().set_requires_grad(true));
      wholeParams.push_back({"p" + std::to_string(i), whole.back()});
      partParams.push_back({"p" + std::to_string(i), parts.back()});
    }
    auto optWhole = makeOptimizer(wholeParams, options);
    auto optParts = makeOptimizer(partParams, options);
    for (int t = 0; t < 4; ++t) {
      for (int i = 0; i < 3; ++i) {
        at::Tensor grad = at::sin(at::arange(whole[i].numel(), at::kFloat) * (t + 1) + i);
        whole[i].mutable_grad() = grad.clone();
        parts[i].mutable_grad() = grad.clone();
      }
      optWhole->step(0.1);
      ASSERT_TRUE(optParts->stepParameters(0.1, {2}));
      ASSERT_TRUE(optParts->stepParameters(0.1, {0, 1}));
    }
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(at::equal(whole[i], parts[i])) << optWhole->name() << " parameter " << i;
      // And the update did something: the parameters moved from their start.
      EXPECT_FALSE(at::equal(whole[i], at::linspace(-1.0 - i, 2.0 + i, 7 + i, at::kFloat)));
    }
    EXPECT_THROW(optParts->stepParameters(0.1, {3}), InvalidArgument);
  }
}

TEST(OptimizerTest, RejectsNesterovWithoutMomentum) {
  Problem problem;
  EXPECT_THROW(makeOptimizer({{"w", problem.param}},
                             {.kind = OptimizerKind::kSgd, .momentum = 0, .nesterov = true}),
               InvalidArgument);
  EXPECT_THROW(parseOptimizerKind("sdg"), InvalidArgument);
}

TEST(LrScheduleTest, WarmupThenCosineReachesTheFloor) {
  LrSchedule schedule({.kind = ScheduleKind::kCosine,
                       .baseLr = 0.2,
                       .warmupSteps = 10,
                       .totalSteps = 110,
                       .minLrRatio = 0.1});
  EXPECT_DOUBLE_EQ(schedule.lrAt(0), 0.02);
  EXPECT_DOUBLE_EQ(schedule.lrAt(9), 0.2);
  EXPECT_DOUBLE_EQ(schedule.lrAt(10), 0.2);
  EXPECT_NEAR(schedule.lrAt(60), 0.02 + 0.18 * 0.5, 1e-12);  // half-way: cos(pi/2) = 0
  EXPECT_NEAR(schedule.lrAt(110), 0.02, 1e-12);
  EXPECT_NEAR(schedule.lrAt(500), 0.02, 1e-12);
}

TEST(LrScheduleTest, StepDecayMultipliesByGammaEveryStepSize) {
  LrSchedule schedule({.kind = ScheduleKind::kStep,
                       .baseLr = 1.0,
                       .warmupSteps = 0,
                       .totalSteps = 100,
                       .stepSize = 30,
                       .gamma = 0.5});
  EXPECT_DOUBLE_EQ(schedule.lrAt(29), 1.0);
  EXPECT_DOUBLE_EQ(schedule.lrAt(30), 0.5);
  EXPECT_DOUBLE_EQ(schedule.lrAt(95), 0.125);
}

}  // namespace
}  // namespace thinwire::optim

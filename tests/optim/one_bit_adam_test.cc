// OneBitAdam: the warm-up is AdamW bit for bit, the stage switches exactly at freeze_step with v
// frozen, the compression stage follows the §5.1 update with the §5.2 allreduce of an independent
// reference (tests/compressors/onebit_reference.h), the momentum mask keeps never-updated
// elements at zero, and a state round trip continues bit-exactly.
#include "optim/one_bit_adam.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "optim/adam_optimizer.h"
#include "tests/compressors/onebit_reference.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::optim {
namespace {

// Two parameters (a matrix and a vector), with a leaf tensor per rank.
struct Model {
  // Seeded generators of its own: ranks are threads, the global generator is shared.
  explicit Model(uint64_t seed) {
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    weight = at::randn({6, 5}, generator).set_requires_grad(true);
    bias = at::randn({7}, generator).set_requires_grad(true);
  }
  std::vector<NamedParameter> parameters() { return {{"weight", weight}, {"bias", bias}}; }
  // Gradient of step `step` on rank `rank` (rank -1: the rank-independent "averaged" one).
  void setGrad(int step, int rank) {
    at::Generator generator =
        at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(100 * step + rank + 2));
    weight.mutable_grad() = at::randn({6, 5}, generator);
    bias.mutable_grad() = at::randn({7}, generator);
  }
  at::Tensor weight;
  at::Tensor bias;
};

bool bitEqual(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes().equals(b.sizes()) && a.scalar_type() == b.scalar_type() &&
         std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), a.nbytes()) == 0;
}

OptimizerOptions oneBitOptions(comm::Communicator& comm, int64_t freezeStep) {
  return {.kind = OptimizerKind::kOneBitAdam,
          .weightDecay = 0.05,
          .beta1 = 0.9,
          .beta2 = 0.99,
          .eps = 1e-6,
          .freezeStep = freezeStep,
          .communicator = &comm};
}

TEST(OneBitAdamTest, WarmupIsAdamWBitForBit) {
  auto world = comm::makeLocalWorld(1);
  Model a(1), b(1);
  auto onebit = makeOptimizer(a.parameters(), oneBitOptions(*world[0], 1000));
  OptimizerOptions adamw = oneBitOptions(*world[0], 1000);
  adamw.kind = OptimizerKind::kAdamW;
  AdamOptimizer reference(b.parameters(), adamw);
  EXPECT_EQ(onebit->name(), "onebit_adam");
  for (int step = 0; step < 25; ++step) {
    EXPECT_EQ(onebit->syncMode(), SyncMode::kTrainerAverages);
    a.setGrad(step, -1);
    b.setGrad(step, -1);
    const double lr = 0.01 * (1 + step % 3);
    onebit->step(lr);
    reference.step(lr);
    ASSERT_TRUE(bitEqual(a.weight, b.weight)) << "step " << step;
    ASSERT_TRUE(bitEqual(a.bias, b.bias)) << "step " << step;
  }
  const StateDict mine = onebit->state(), theirs = reference.state();
  EXPECT_TRUE(bitEqual(mine.at("exp_avg.weight"), theirs.at("exp_avg.weight")));
  EXPECT_TRUE(bitEqual(mine.at("exp_avg_sq.weight"), theirs.at("exp_avg_sq.weight")));
  EXPECT_EQ(onebit->commStats().bytesSent, 0);
}

TEST(OneBitAdamTest, SwitchesExactlyAtFreezeStepAndFreezesTheVariance) {
  constexpr int kFreeze = 5;
  auto world = comm::makeLocalWorld(1);
  Model a(3), b(3);
  OneBitAdam onebit(a.parameters(), oneBitOptions(*world[0], kFreeze));
  OptimizerOptions adamw = oneBitOptions(*world[0], kFreeze);
  adamw.kind = OptimizerKind::kAdamW;
  AdamOptimizer reference(b.parameters(), adamw);
  for (int step = 0; step < kFreeze; ++step) {
    EXPECT_EQ(onebit.syncMode(), SyncMode::kTrainerAverages) << "before step " << step;
    a.setGrad(step, -1);
    b.setGrad(step, -1);
    onebit.step(0.01);
    reference.step(0.01);
  }
  EXPECT_EQ(onebit.syncMode(), SyncMode::kOptimizerOwned);
  EXPECT_TRUE(onebit.compressing());
  const at::Tensor frozen = onebit.state().at("exp_avg_sq.weight");
  EXPECT_TRUE(bitEqual(frozen, reference.state().at("exp_avg_sq.weight")));
  EXPECT_TRUE(bitEqual(a.weight, b.weight));
  for (int step = kFreeze; step < kFreeze + 3; ++step) {
    a.setGrad(step, 0);
    onebit.step(0.01);
    EXPECT_EQ(onebit.syncMode(), SyncMode::kOptimizerOwned);
  }
  EXPECT_TRUE(bitEqual(onebit.state().at("exp_avg_sq.weight"), frozen));
  EXPECT_EQ(onebit.state().at("onebit.step").item<int64_t>(), kFreeze + 3);
  EXPECT_EQ(onebit.state().at("onebit.phase").item<int64_t>(), 1);
}

// 3 ranks: the warm-up sees the same (averaged) gradient everywhere, the compression stage each
// rank's own. m must equal the reference allreduce of the ranks' local momenta (or, in the
// preconditioned basis, of m / d, times d) bit for bit, and the parameters the frozen-variance
// update of §5.1 (to float rounding).
void checkCompressionStage(bool preconditioned) {
  constexpr int kRanks = 3, kFreeze = 4, kSteps = 9;
  constexpr double kLr = 0.02, kB1 = 0.9, kB2 = 0.99, kEps = 1e-6, kWd = 0.05;
  auto world = comm::makeLocalWorld(kRanks, {.timeout = std::chrono::seconds(60)});
  // The reference, single process: AdamW warm-up, then per-tensor OneBitReference.
  Model ref(5);
  std::vector<at::Tensor> m = {at::zeros({6, 5}), at::zeros({7})};
  std::vector<at::Tensor> v = {at::zeros({6, 5}), at::zeros({7})};
  std::vector<std::vector<at::Tensor>> rankM(kRanks);
  std::vector<::thinwire::testing::OneBitReference> allreduce = {{kRanks, 30}, {kRanks, 7}};
  std::vector<std::vector<double>> params = {
      std::vector<double>(ref.weight.data_ptr<float>(), ref.weight.data_ptr<float>() + 30),
      std::vector<double>(ref.bias.data_ptr<float>(), ref.bias.data_ptr<float>() + 7)};
  std::vector<std::vector<std::vector<float>>> expectedM(kSteps);
  std::vector<std::vector<std::vector<double>>> expectedParams(kSteps);
  for (int step = 0; step < kSteps; ++step) {
    const int t = step + 1;
    if (step < kFreeze) {
      ref.setGrad(step, -1);
      const at::Tensor grads[] = {ref.weight.grad(), ref.bias.grad()};
      for (int p = 0; p < 2; ++p) {
        m[p].mul_(kB1).add_(grads[p], 1 - kB1);
        v[p].mul_(kB2).addcmul_(grads[p], grads[p], 1 - kB2);
        for (int64_t k = 0; k < m[p].numel(); ++k) {
          const double mHat = m[p].data_ptr<float>()[k] / (1 - std::pow(kB1, t));
          const double vHat = v[p].data_ptr<float>()[k] / (1 - std::pow(kB2, t));
          params[p][k] = params[p][k] * (1 - kLr * kWd) - kLr * mHat / (std::sqrt(vHat) + kEps);
        }
      }
    } else {
      std::vector<std::vector<std::vector<float>>> local(2);  // [param][rank]
      for (int r = 0; r < kRanks; ++r) {
        ref.setGrad(step, r);
        const at::Tensor grads[] = {ref.weight.grad(), ref.bias.grad()};
        for (int p = 0; p < 2; ++p) {
          at::Tensor mr = m[p].mul(kB1).add_(grads[p], 1 - kB1);
          local[p].emplace_back(mr.data_ptr<float>(), mr.data_ptr<float>() + mr.numel());
        }
      }
      for (int p = 0; p < 2; ++p) {
        // The frozen denominator in float, as Adam's update forms it.
        const at::Tensor d = v[p].sqrt().div_(std::sqrt(1 - std::pow(kB2, kFreeze))).add_(kEps);
        if (preconditioned) {
          for (auto& values : local[p]) {
            for (size_t k = 0; k < values.size(); ++k) values[k] /= d.data_ptr<float>()[k];
          }
        }
        std::vector<float> averaged = allreduce[p].step(local[p], {});
        for (int64_t k = 0; k < m[p].numel(); ++k) {
          m[p].data_ptr<float>()[k] =
              preconditioned ? averaged[k] * d.data_ptr<float>()[k] : averaged[k];
        }
        for (int64_t k = 0; k < m[p].numel(); ++k) {
          if (preconditioned) {
            params[p][k] =
                params[p][k] * (1 - kLr * kWd) - kLr * averaged[k] / (1 - std::pow(kB1, t));
            continue;
          }
          const double mHat = averaged[k] / (1 - std::pow(kB1, t));
          const double vHat = v[p].data_ptr<float>()[k] / (1 - std::pow(kB2, kFreeze));
          params[p][k] = params[p][k] * (1 - kLr * kWd) - kLr * mHat / (std::sqrt(vHat) + kEps);
        }
      }
    }
    for (int p = 0; p < 2; ++p) {
      expectedM[step].emplace_back(m[p].data_ptr<float>(), m[p].data_ptr<float>() + m[p].numel());
    }
    expectedParams[step] = params;
  }

  ::thinwire::testing::runOnEveryRank(world, [&](comm::Communicator& comm) {
    Model model(5);
    OptimizerOptions options = oneBitOptions(comm, kFreeze);
    options.beta1 = kB1;
    options.beta2 = kB2;
    options.eps = kEps;
    options.weightDecay = kWd;
    options.preconditioned = preconditioned;
    OneBitAdam opt(model.parameters(), options);
    for (int step = 0; step < kSteps; ++step) {
      model.setGrad(step, step < kFreeze ? -1 : comm.rank());
      opt.step(kLr);
      const StateDict state = opt.state();
      const at::Tensor moments[] = {state.at("exp_avg.weight"), state.at("exp_avg.bias")};
      const at::Tensor values[] = {model.weight, model.bias};
      for (int p = 0; p < 2; ++p) {
        for (int64_t k = 0; k < moments[p].numel(); ++k) {
          EXPECT_EQ(moments[p].data_ptr<float>()[k], expectedM[step][p][k])
              << "step " << step << " param " << p << " m[" << k << "]";
          EXPECT_NEAR(values[p].data_ptr<float>()[k], expectedParams[step][p][k],
                      2e-5 * (1 + std::fabs(expectedParams[step][p][k])))
              << "step " << step << " param " << p << " [" << k << "]";
        }
      }
    }
    // Two collectives per compression step; blocks of 2 scales + the chunks' sign bytes.
    const int64_t block = 2 * 4 + (allreduce[0].chunk() + allreduce[1].chunk()) / 8;
    EXPECT_EQ(opt.commStats().wireBytes, (kSteps - kFreeze) * 2 * (kRanks - 1) * block);
  });
}

TEST(OneBitAdamTest, CompressionStageFollowsTheReferenceOnThreeRanks) {
  checkCompressionStage(/*preconditioned=*/false);
}

TEST(OneBitAdamTest, PreconditionedCompressionStageFollowsTheReferenceOnThreeRanks) {
  checkCompressionStage(/*preconditioned=*/true);
}

// Elements whose gradient is always zero (the first two rows of the weight) keep m = 0, zero
// worker and server errors, and (without weight decay) their value. Without the mask their error
// is non-zero and they drift: the pitfall the mask removes.
TEST(OneBitAdamTest, MomentumMaskKeepsNeverUpdatedElementsAtZero) {
  constexpr int kRanks = 2, kFreeze = 3;
  for (bool masked : {true, false}) {
    SCOPED_TRACE(masked ? "masked" : "unmasked");
    auto world = comm::makeLocalWorld(kRanks, {.timeout = std::chrono::seconds(60)});
    ::thinwire::testing::runOnEveryRank(world, [&](comm::Communicator& comm) {
      Model model(9);
      const at::Tensor start = model.weight.detach().clone();
      OptimizerOptions options = oneBitOptions(comm, kFreeze);
      options.weightDecay = 0;
      options.momentumMask = masked;
      OneBitAdam opt(model.parameters(), options);
      for (int step = 0; step < 20; ++step) {
        model.setGrad(step, step < kFreeze ? -1 : comm.rank());
        model.weight.mutable_grad().narrow(0, 0, 2).zero_();
        opt.step(0.01);
      }
      const at::Tensor m = opt.state().at("exp_avg.weight").narrow(0, 0, 2);
      const StateDict errors = opt.rankState();
      const at::Tensor worker = errors.at("0.worker_error").narrow(0, 0, 10);
      const at::Tensor server = errors.at("0.server_error");
      const at::Tensor still = model.weight.detach().narrow(0, 0, 2);
      if (masked) {
        EXPECT_EQ(m.abs().max().item<float>(), 0.0f);
        EXPECT_EQ(worker.abs().max().item<float>(), 0.0f);
        if (comm.rank() == 0) {
          // Rank 0 serves elements 0..chunk-1, which include the 10 masked ones.
          EXPECT_EQ(server.narrow(0, 0, 10).abs().max().item<float>(), 0.0f);
        }
        EXPECT_TRUE(bitEqual(still, start.narrow(0, 0, 2)));
        EXPECT_GT(model.weight.detach()
                      .narrow(0, 2, 4)
                      .sub(start.narrow(0, 2, 4))
                      .abs()
                      .max()
                      .item<float>(),
                  0.0f);
      } else {
        EXPECT_GT(worker.abs().max().item<float>(), 0.0f);
        EXPECT_FALSE(bitEqual(still, start.narrow(0, 0, 2)));
      }
    });
  }
}

TEST(OneBitAdamTest, StateAndRankStateRoundTripContinueBitExactly) {
  constexpr int kRanks = 2, kFreeze = 3, kSplit = 6, kSteps = 10;
  auto world = comm::makeLocalWorld(kRanks, {.timeout = std::chrono::seconds(60)});
  ::thinwire::testing::runOnEveryRank(world, [&](comm::Communicator& comm) {
    Model whole(11), split(11);
    OneBitAdam uninterrupted(whole.parameters(), oneBitOptions(comm, kFreeze));
    auto first = std::make_unique<OneBitAdam>(split.parameters(), oneBitOptions(comm, kFreeze));
    for (int step = 0; step < kSplit; ++step) {
      whole.setGrad(step, step < kFreeze ? -1 : comm.rank());
      split.setGrad(step, step < kFreeze ? -1 : comm.rank());
      uninterrupted.step(0.01);
      first->step(0.01);
    }
    const StateDict shared = first->state(), own = first->rankState();
    EXPECT_EQ(own.size(), 4u);  // worker and server error of both parameters
    first.reset();
    OneBitAdam resumed(split.parameters(), oneBitOptions(comm, kFreeze));
    resumed.loadState(shared);
    resumed.loadRankState(own);
    EXPECT_EQ(resumed.syncMode(), SyncMode::kOptimizerOwned);
    for (int step = kSplit; step < kSteps; ++step) {
      whole.setGrad(step, comm.rank());
      split.setGrad(step, comm.rank());
      uninterrupted.step(0.01);
      resumed.step(0.01);
    }
    EXPECT_TRUE(bitEqual(whole.weight, split.weight));
    EXPECT_TRUE(bitEqual(whole.bias, split.bias));
  });
}

// The errors of one basis mean nothing in the other: a compression-stage state saved with one
// setting of `preconditioned` is refused by the other, and accepted by its own.
TEST(OneBitAdamTest, ResumeRefusesTheOtherCompressionBasis) {
  auto world = comm::makeLocalWorld(1);
  Model model(3);
  OneBitAdam saved(model.parameters(), oneBitOptions(*world[0], 1));
  for (int step = 0; step < 3; ++step) {
    model.setGrad(step, -1);
    saved.step(0.01);
  }
  const StateDict state = saved.state();
  OptimizerOptions other = oneBitOptions(*world[0], 1);
  other.preconditioned = false;
  OneBitAdam mismatched(model.parameters(), other);
  EXPECT_THROW(mismatched.loadState(state), ConfigError);
  OneBitAdam same(model.parameters(), oneBitOptions(*world[0], 1));
  EXPECT_NO_THROW(same.loadState(state));
  EXPECT_TRUE(same.compressing());
}

TEST(OneBitAdamTest, RefusesMissingCommunicatorAndZeroFreezeStep) {
  auto world = comm::makeLocalWorld(1);
  Model model(1);
  OptimizerOptions options = oneBitOptions(*world[0], 10);
  options.communicator = nullptr;
  EXPECT_THROW(makeOptimizer(model.parameters(), options), InvalidArgument);
  options = oneBitOptions(*world[0], 0);
  EXPECT_THROW(makeOptimizer(model.parameters(), options), InvalidArgument);
  EXPECT_EQ(parseOptimizerKind("onebit_adam"), OptimizerKind::kOneBitAdam);
}

}  // namespace
}  // namespace thinwire::optim

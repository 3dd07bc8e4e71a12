// CompressionEngine with an L-GreCo policy on threads-as-ranks: every rank holds the same
// settings after every re-solve (top-k, quantize, PowerSGD), the averaged gradients stay
// identical across ranks, and a resume from a checkpoint taken inside a window is bit-exact.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "comm/local/local_communicator.h"
#include "compressors/compression_engine.h"
#include "tests/compressors/layerwise_cases.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::compressors {
namespace {

using testing::layerwiseGradient;
using testing::layerwiseLayers;
using testing::layerwiseOptions;
using ::thinwire::testing::runOnEveryRank;

class LayerwiseEngineTest : public ::testing::TestWithParam<LayerwiseFamily> {};

TEST_P(LayerwiseEngineTest, AllRanksHoldTheSameSettingsAfterEverySolve) {
  auto world = comm::makeLocalWorld(4);
  runOnEveryRank(world, [&](comm::Communicator& comm) {
    EXPECT_EQ(testing::runLayerwiseAgreement(comm, GetParam(), 16), 3);  // solves at 6, 10, 14
  });
}

struct Trace {
  std::vector<std::vector<at::Tensor>> outputs;    // [step][layer], rank 0
  std::vector<std::vector<std::string>> settings;  // [step], rank 0
  std::vector<StateDict> states;                   // per rank, after the last step
};

Trace runSteps(const CompressionEngineOptions& options,
               int ranks,
               int64_t first,
               int64_t last,
               const std::vector<StateDict>* restore) {
  auto world = comm::makeLocalWorld(ranks);
  Trace trace;
  trace.states.resize(static_cast<size_t>(ranks));
  runOnEveryRank(world, [&](comm::Communicator& comm) {
    CompressionEngine engine(layerwiseLayers(), comm, options);
    if (restore) engine.loadState((*restore)[static_cast<size_t>(comm.rank())]);
    for (int64_t s = first; s < last; ++s) {
      std::vector<at::Tensor> grads;
      std::vector<size_t> ids;
      for (size_t l = 0; l < engine.layers().size(); ++l) {
        grads.push_back(layerwiseGradient(comm.rank(), l, s));
        ids.push_back(l);
      }
      engine.sync(ids, grads, at::Tensor(), {.step = s, .lr = 0.1, .worldSize = comm.worldSize()});
      if (comm.rank() == 0) {
        trace.outputs.push_back(grads);
        trace.settings.push_back(engine.layerwiseStatus().settings);
      }
    }
    trace.states[static_cast<size_t>(comm.rank())] = engine.state();
  });
  return trace;
}

TEST_P(LayerwiseEngineTest, ResumeInsideAWindowIsBitExact) {
  const CompressionEngineOptions options = layerwiseOptions(GetParam());
  const int ranks = 3;
  const Trace whole = runSteps(options, ranks, 0, 16, nullptr);
  // Step 8 lies inside the window (7-9) of the solve at 10: the checkpoint carries a partial sum.
  const Trace before = runSteps(options, ranks, 0, 8, nullptr);
  EXPECT_EQ(before.states[0].count("layerwise.window_steps"), 1u);
  EXPECT_EQ(before.states[0].at("layerwise.window_steps").item<int64_t>(), 1);
  EXPECT_EQ(before.states[0].count("layerwise.window.0"), 1u);
  const Trace after = runSteps(options, ranks, 8, 16, &before.states);
  ASSERT_EQ(after.outputs.size(), 8u);
  for (size_t s = 0; s < after.outputs.size(); ++s) {
    EXPECT_EQ(after.settings[s], whole.settings[s + 8]) << "step " << s + 8;
    for (size_t l = 0; l < after.outputs[s].size(); ++l) {
      EXPECT_TRUE(after.outputs[s][l].equal(whole.outputs[s + 8][l]))
          << "step " << s + 8 << " layer " << l;
    }
  }
  for (int r = 0; r < ranks; ++r) {
    const StateDict& a = whole.states[static_cast<size_t>(r)];
    const StateDict& b = after.states[static_cast<size_t>(r)];
    ASSERT_EQ(a.size(), b.size()) << "rank " << r;
    for (const auto& [key, tensor] : a) {
      ASSERT_EQ(b.count(key), 1u) << key;
      EXPECT_TRUE(tensor.equal(b.at(key))) << "rank " << r << " " << key;
    }
  }
}

// Note [Window sum]: the window of the solve at 10 covers steps 7-9. With `compensated` it sums
// the compressor's input e_t + g_t of every step; with `demand` it sums e_7 once and g_7..g_9.
// The residuals e_t are read from the states after steps 6, 7 and 8 of the same deterministic run.
TEST_P(LayerwiseEngineTest, WindowSumsTheBacklogOncePerStepOrOnce) {
  const LayerwiseFamily family = GetParam();
  const std::string residualKey =
      family == LayerwiseFamily::kLowRank ? "powersgd.0.e" : "feedback.0.e";
  const auto residualBefore = [&](const CompressionEngineOptions& options, int64_t step) {
    const Trace trace = runSteps(options, 1, 0, step, nullptr);
    return trace.states[0].at(residualKey).view({-1});
  };
  const auto gradient = [](int64_t step) { return layerwiseGradient(0, 0, step).view({-1}); };
  for (const LayerwiseWindowSum mode :
       {LayerwiseWindowSum::kCompensated, LayerwiseWindowSum::kDemand}) {
    CompressionEngineOptions options = layerwiseOptions(family);
    options.layerwise.windowSum = mode;
    const Trace trace = runSteps(options, 1, 0, 10, nullptr);  // steps 0-9: the window is full
    const at::Tensor window = trace.states[0].at("layerwise.window.0");
    at::Tensor expected = at::zeros_like(window);
    at::Tensor otherMode = at::zeros_like(window);
    for (int64_t t = 7; t <= 9; ++t) {
      const at::Tensor e = residualBefore(options, t);
      const bool backlog = mode == LayerwiseWindowSum::kCompensated || t == 7;
      // Same order of additions as the engine: the fused path adds e first, PowerSGD g first.
      if (family == LayerwiseFamily::kLowRank) {
        expected.add_(gradient(t));
        if (backlog) expected.add_(e);
      } else if (mode == LayerwiseWindowSum::kCompensated) {
        expected.add_(e + gradient(t));
      } else {
        if (backlog) expected.add_(e);
        expected.add_(gradient(t));
      }
      const bool otherBacklog = mode == LayerwiseWindowSum::kDemand || t == 7;
      otherMode.add_(gradient(t));
      if (otherBacklog) otherMode.add_(e);
      EXPECT_GT(e.norm().item<double>(), 0.0) << "no backlog before step " << t;
    }
    EXPECT_TRUE(at::allclose(window, expected, 1e-6, 1e-6))
        << "mode " << static_cast<int>(mode) << ": max difference "
        << (window - expected).abs().max().item<float>();
    EXPECT_FALSE(at::allclose(window, otherMode, 1e-3, 1e-3))
        << "mode " << static_cast<int>(mode) << " matches the other mode's sum";
  }
}

INSTANTIATE_TEST_SUITE_P(Families,
                         LayerwiseEngineTest,
                         ::testing::Values(LayerwiseFamily::kTopK,
                                           LayerwiseFamily::kQuantize,
                                           LayerwiseFamily::kLowRank),
                         [](const ::testing::TestParamInfo<LayerwiseFamily>& info) {
                           switch (info.param) {
                             case LayerwiseFamily::kTopK:
                               return std::string("TopK");
                             case LayerwiseFamily::kQuantize:
                               return std::string("Quantize");
                             case LayerwiseFamily::kLowRank:
                               return std::string("PowerSgd");
                           }
                           return std::string("Unknown");
                         });

// The settings and the last report after steps 0..steps-1 on 2 ranks, with every gradient of
// layer w1 multiplied by `scale`.
struct Solved {
  std::vector<std::string> settings;
  double error = 0;
  double defaultError = 0;
};

Solved solveWithScaledLayer(const CompressionEngineOptions& options, float scale, int64_t steps) {
  auto world = comm::makeLocalWorld(2);
  Solved solved;
  runOnEveryRank(world, [&](comm::Communicator& comm) {
    CompressionEngine engine(layerwiseLayers(), comm, options);
    for (int64_t s = 0; s < steps; ++s) {
      std::vector<at::Tensor> grads;
      std::vector<size_t> ids;
      for (size_t l = 0; l < engine.layers().size(); ++l) {
        grads.push_back(layerwiseGradient(comm.rank(), l, s) * (l == 2 ? scale : 1.0f));
        ids.push_back(l);
      }
      engine.sync(ids, grads, at::Tensor(), {.step = s, .lr = 0.1, .worldSize = comm.worldSize()});
    }
    if (comm.rank() == 0) {
      const LayerwiseStatus status = engine.layerwiseStatus();
      solved = {status.settings, status.report.predictedError, status.report.defaultError};
    }
  });
  return solved;
}

TEST_P(LayerwiseEngineTest, RelativeErrorIgnoresEachLayersScale) {
  CompressionEngineOptions options = layerwiseOptions(GetParam());
  // A power of two scales every float operation on w1's path exactly, so w1's relative errors,
  // and with them the solves (at 6 and 10), are the same bit for bit.
  options.layerwise.measure = LayerwiseErrorMeasure::kRelative;
  const Solved plain = solveWithScaledLayer(options, 1.0f, 11);
  const Solved scaled = solveWithScaledLayer(options, 1024.0f, 11);
  EXPECT_EQ(plain.settings, scaled.settings);
  EXPECT_EQ(plain.error, scaled.error);
  EXPECT_EQ(plain.defaultError, scaled.defaultError);
  // Three layers take part, each with a relative error in (0, 1].
  EXPECT_GT(plain.defaultError, 0.0);
  EXPECT_LE(plain.defaultError, 3.0);
  // The squared measure sees the scale: w1's error takes over the budget.
  options.layerwise.measure = LayerwiseErrorMeasure::kSquared;
  const Solved squared = solveWithScaledLayer(options, 1.0f, 11);
  const Solved squaredScaled = solveWithScaledLayer(options, 1024.0f, 11);
  EXPECT_NE(squared.settings, squaredScaled.settings);
  EXPECT_GT(squaredScaled.defaultError, 1e3 * squared.defaultError);
}

TEST(LayerwiseEngineOptionsTest, RejectsAWindowBeforeCompressionStarts) {
  auto world = comm::makeLocalWorld(1);
  CompressionEngineOptions options = layerwiseOptions(LayerwiseFamily::kTopK);
  options.startStep = 5;  // window 3-5 of the first solve at 6 would start before step 5
  EXPECT_THROW(CompressionEngine(layerwiseLayers(), *world[0], options), InvalidArgument);
  options.startStep = 3;
  EXPECT_NO_THROW(CompressionEngine(layerwiseLayers(), *world[0], options));
}

TEST(LayerwiseEngineOptionsTest, DemandWindowSumNeedsErrorFeedback) {
  auto world = comm::makeLocalWorld(1);
  CompressionEngineOptions options = layerwiseOptions(LayerwiseFamily::kTopK);
  options.layerwise.windowSum = LayerwiseWindowSum::kDemand;
  EXPECT_NO_THROW(CompressionEngine(layerwiseLayers(), *world[0], options));
  options.layers[2].feedback.kind = FeedbackKind::kEControl;
  EXPECT_THROW(CompressionEngine(layerwiseLayers(), *world[0], options), InvalidArgument);
  EXPECT_EQ(parseLayerwiseWindowSum("demand"), LayerwiseWindowSum::kDemand);
  EXPECT_EQ(parseLayerwiseWindowSum("compensated"), LayerwiseWindowSum::kCompensated);
  EXPECT_THROW(parseLayerwiseWindowSum("once"), InvalidArgument);
  EXPECT_EQ(parseLayerwiseErrorMeasure("relative"), LayerwiseErrorMeasure::kRelative);
  EXPECT_THROW(parseLayerwiseErrorMeasure("absolute"), InvalidArgument);
}

TEST(LayerwiseEngineOptionsTest, UniformPolicyIsNotAdaptive) {
  auto world = comm::makeLocalWorld(1);
  CompressionEngineOptions options = layerwiseOptions(LayerwiseFamily::kTopK);
  options.layerwise.kind = LayerwiseKind::kUniform;
  CompressionEngine engine(layerwiseLayers(), *world[0], options);
  EXPECT_FALSE(engine.adaptive());
  EXPECT_EQ(engine.state().count("layerwise.choice"), 0u);
  EXPECT_THROW(engine.layerwiseStatus(), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::compressors

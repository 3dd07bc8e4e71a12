// CompressionEngine on threads-as-ranks: the plain-averaging phase before start_step, dense
// routes, wire-byte accounting, the DGC warm-up schedule and bit-exact state round trips.
#include "compressors/compression_engine.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "comm/local/local_communicator.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::compressors {
namespace {

using ::thinwire::testing::runOnEveryRank;

// Rank r's gradient of layer l at step s: a deterministic function of (r, l, s).
at::Tensor gradientOf(int rank, size_t layer, int64_t step, int64_t numel) {
  at::Tensor index = at::arange(numel, at::kFloat);
  return at::sin(index * (0.37f + 0.11f * static_cast<float>(layer)) +
                 static_cast<float>(rank * 7 + step)) *
         static_cast<float>(rank + 1);
}

std::vector<LayerSpec> threeLayers() { return {{"w0", {64, 96}}, {"b0", {64}}, {"w1", {32, 64}}}; }

CompressionEngineOptions topkOptions(int64_t startStep) {
  CompressionEngineOptions options;
  LayerMethod topk;
  topk.route = LayerMethod::Route::kCompressed;
  topk.compressor.kind = CompressorKind::kTopK;
  topk.params.ratio = 0.05;
  topk.feedback.kind = FeedbackKind::kEf;
  topk.aggregator = AggregatorKind::kAllgather;
  options.layers = {topk, LayerMethod{}, topk};
  options.startStep = startStep;
  options.errorEvery = 1;
  options.seed = 3;
  return options;
}

// Runs `steps` steps on every rank; returns rank 0's outputs per step and layer (flattened).
std::vector<std::vector<at::Tensor>> runEngine(int ranks,
                                               const CompressionEngineOptions& options,
                                               int64_t steps,
                                               std::vector<StateDict>* states = nullptr,
                                               const std::vector<StateDict>* restore = nullptr,
                                               int64_t firstStep = 0) {
  auto world = comm::makeLocalWorld(ranks);
  std::vector<std::vector<at::Tensor>> outputs(static_cast<size_t>(steps));
  if (states) states->assign(static_cast<size_t>(ranks), {});
  runOnEveryRank(world, [&](comm::Communicator& comm) {
    CompressionEngine engine(threeLayers(), comm, options);
    if (restore) engine.loadState((*restore)[static_cast<size_t>(comm.rank())]);
    for (int64_t s = firstStep; s < firstStep + steps; ++s) {
      std::vector<at::Tensor> grads;
      std::vector<size_t> ids;
      for (size_t l = 0; l < engine.layers().size(); ++l) {
        int64_t numel = 1;
        for (int64_t d : engine.layers()[l].shape) numel *= d;
        grads.push_back(gradientOf(comm.rank(), l, s, numel));
        ids.push_back(l);
      }
      engine.sync(ids, grads, at::Tensor(), {.step = s, .lr = 0.1, .worldSize = comm.worldSize()});
      if (comm.rank() == 0) outputs[static_cast<size_t>(s - firstStep)] = grads;
    }
    if (states) (*states)[static_cast<size_t>(comm.rank())] = engine.state();
  });
  return outputs;
}

TEST(CompressionEngineTest, BeforeStartStepEveryLayerIsThePlainAverage) {
  const int ranks = 4;
  const auto outputs = runEngine(ranks, topkOptions(/*startStep=*/2), 3);
  const auto specs = threeLayers();
  for (int64_t s = 0; s < 2; ++s) {
    for (size_t l = 0; l < specs.size(); ++l) {
      const int64_t numel = outputs[s][l].numel();
      at::Tensor sum = at::zeros({numel});
      for (int r = 0; r < ranks; ++r) sum += gradientOf(r, l, s, numel);
      EXPECT_TRUE(at::allclose(outputs[s][l], sum / ranks, 1e-6, 1e-6))
          << "step " << s << " layer " << l;
    }
  }
  // From step 2 on, the weight layers are compressed: at most ranks * k non-zeros.
  const int64_t k = static_cast<int64_t>(std::floor(0.05 * 64 * 96));
  EXPECT_LE(outputs[2][0].ne(0).sum().item<int64_t>(), ranks * k);
  EXPECT_GT(outputs[2][0].ne(0).sum().item<int64_t>(), 0);
}

TEST(CompressionEngineTest, DenseRouteAveragesExactlyAndCountsRingBytes) {
  const int ranks = 3;
  auto world = comm::makeLocalWorld(ranks);
  runOnEveryRank(world, [&](comm::Communicator& comm) {
    CompressionEngine engine(threeLayers(), comm, topkOptions(0));
    std::vector<at::Tensor> grads;
    for (size_t l = 0; l < 3; ++l) {
      grads.push_back(gradientOf(comm.rank(), l, 0,
                                 engine.layers()[l].shape.size() == 1
                                     ? 64
                                     : engine.layers()[l].shape[0] * engine.layers()[l].shape[1]));
    }
    engine.sync({0, 1, 2}, grads, at::Tensor(), {.step = 0, .lr = 0.1, .worldSize = ranks});
    at::Tensor expected = at::zeros({64});
    for (int r = 0; r < ranks; ++r) expected += gradientOf(r, 1, 0, 64);
    EXPECT_TRUE(at::allclose(grads[1], expected / ranks, 1e-6, 1e-6));
    const auto& stats = engine.layerStats();
    EXPECT_EQ(stats[1].route, "dense");
    EXPECT_EQ(stats[1].bytesSent, 2 * (ranks - 1) * 64 * 4 / ranks);
    EXPECT_EQ(stats[0].route, "topk+ef/allgather");
    // allgather of k (index, value) pairs: (n - 1) * 8k bytes.
    const int64_t k = static_cast<int64_t>(std::floor(0.05 * 64 * 96));
    EXPECT_EQ(stats[0].bytesSent, (ranks - 1) * 8 * k);
    EXPECT_GT(stats[0].relativeError, 0.0);
    EXPECT_LT(stats[0].relativeError, 1.0);
    EXPECT_EQ(engine.bytesSent(), stats[0].bytesSent + stats[1].bytesSent + stats[2].bytesSent);
    // Ring allreduce bytes per layer (whole bytes per layer, as the engine counts them).
    int64_t dense = 0;
    for (int64_t numel : {64 * 96, 64, 32 * 64}) dense += 2 * (ranks - 1) * numel * 4 / ranks;
    EXPECT_EQ(engine.denseEquivalentBytes(), dense);
  });
}

TEST(CompressionEngineTest, StateRoundTripContinuesBitForBit) {
  const int ranks = 3;
  CompressionEngineOptions options = topkOptions(0);
  options.layers[2].aggregator = AggregatorKind::kTwoPhase;  // server errors too
  const auto uninterrupted = runEngine(ranks, options, 6);
  std::vector<StateDict> states;
  runEngine(ranks, options, 3, &states);
  EXPECT_FALSE(states[1].empty());
  const auto resumed = runEngine(ranks, options, 3, nullptr, &states, /*firstStep=*/3);
  for (int64_t s = 0; s < 3; ++s) {
    for (size_t l = 0; l < 3; ++l) {
      EXPECT_TRUE(at::equal(resumed[s][l], uninterrupted[3 + s][l]))
          << "step " << 3 + s << " layer " << l;
    }
  }
  // Without the state the continuation differs (the residuals matter).
  const auto fresh = runEngine(ranks, options, 3, nullptr, nullptr, /*firstStep=*/3);
  EXPECT_FALSE(at::equal(fresh[0][0], uninterrupted[3][0]));
}

TEST(CompressionEngineTest, DgcWarmupRatioFollowsTheExponentialSchedule) {
  const double ratio = 0.001;
  const int64_t warmup = 4;
  const double coeff = std::pow(ratio, 1.0 / 5.0);
  for (int e = 0; e < 4; ++e) {
    EXPECT_DOUBLE_EQ(dgcWarmupRatio(ratio, warmup, e + 0.5), std::pow(coeff, e + 1)) << e;
  }
  EXPECT_DOUBLE_EQ(dgcWarmupRatio(ratio, warmup, 4.0), ratio);
  EXPECT_DOUBLE_EQ(dgcWarmupRatio(ratio, 0, 0.0), ratio);
  // The paper's schedule for ratio 0.001 over 4 epochs: 25 %, 6.3 %, 1.6 %, 0.4 % kept.
  EXPECT_NEAR(dgcWarmupRatio(ratio, warmup, 0), 0.251, 0.001);
  EXPECT_NEAR(dgcWarmupRatio(ratio, warmup, 3), 0.00398, 0.0001);
}

}  // namespace
}  // namespace thinwire::compressors

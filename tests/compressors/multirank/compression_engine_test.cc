// CompressionEngine on threads-as-ranks: the plain-averaging phase before start_step, dense
// routes, wire-byte accounting, the DGC warm-up schedule and bit-exact state round trips.
#include "compressors/compression_engine.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <thread>
#include <vector>

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "compressors/chunked_compressor.h"
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
    // The dense layer in a bucket of its own: a float32 ring allreduce.
    engine.sync({1}, {grads[1]}, at::Tensor(), {.step = 0, .lr = 0.1, .worldSize = ranks});
    engine.sync({0, 2}, {grads[0], grads[2]}, at::Tensor(),
                {.step = 0, .lr = 0.1, .worldSize = ranks});
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

// Dense layers sharing a bucket with one compressed group travel in its collective
// (Note [Dense riders]): the result is still the exact average, identical on every rank.
TEST(CompressionEngineTest, DenseLayersRideTheCompressedCollectiveAndStayExact) {
  for (AggregatorKind kind : {AggregatorKind::kAllgather, AggregatorKind::kTwoPhase}) {
    const int ranks = 3;
    CompressionEngineOptions options = topkOptions(0);
    options.layers[0].aggregator = kind;
    options.layers[2].aggregator = kind;
    auto world = comm::makeLocalWorld(ranks);
    std::vector<at::Tensor> dense(ranks);
    std::vector<int64_t> denseBytes(ranks);
    runOnEveryRank(world, [&](comm::Communicator& comm) {
      CompressionEngine engine(threeLayers(), comm, options);
      std::vector<at::Tensor> grads = {gradientOf(comm.rank(), 0, 0, 64 * 96),
                                       gradientOf(comm.rank(), 1, 0, 64),
                                       gradientOf(comm.rank(), 2, 0, 32 * 64)};
      engine.sync({0, 1, 2}, grads, at::Tensor(), {.step = 0, .lr = 0.1, .worldSize = ranks});
      dense[comm.rank()] = grads[1];
      denseBytes[comm.rank()] = engine.layerStats()[1].bytesSent;
    });
    at::Tensor expected = at::zeros({64});
    for (int r = 0; r < ranks; ++r) expected += gradientOf(r, 1, 0, 64);
    expected /= ranks;
    for (int r = 0; r < ranks; ++r) {
      EXPECT_TRUE(at::allclose(dense[r], expected, 1e-6, 1e-7)) << toString(kind) << " rank " << r;
      EXPECT_TRUE(at::equal(dense[r], dense[0])) << toString(kind) << " rank " << r;
    }
    // Allgather: every rank's 64 floats go to the n-1 others. Two-phase: rank 0 sends the
    // chunks it does not own to their owners, then its averaged chunk to the n-1 others.
    const int64_t own = ChunkedCompressor::chunkRange(64, ranks, 1, 0).length;
    const int64_t expectedBytes = kind == AggregatorKind::kAllgather
                                      ? (ranks - 1) * 64 * 4
                                      : (64 - own) * 4 + (ranks - 1) * own * 4;
    EXPECT_EQ(denseBytes[0], expectedBytes) << toString(kind);
  }
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

// Two buckets per step, {w1, b0} then {w0}, synchronised either by sync() per bucket or as the
// trainer's GradSync does it: bucket 2's encode() on a second thread while bucket 1's
// exchange() runs. Returns rank 0's outputs per step and layer.
std::vector<std::vector<at::Tensor>> runTwoBuckets(int ranks,
                                                   const CompressionEngineOptions& options,
                                                   int64_t steps,
                                                   bool split) {
  auto world = comm::makeLocalWorld(ranks);
  std::vector<std::vector<at::Tensor>> outputs(static_cast<size_t>(steps));
  runOnEveryRank(world, [&](comm::Communicator& comm) {
    CompressionEngine engine(threeLayers(), comm, options);
    const std::vector<std::vector<size_t>> buckets = {{2, 1}, {0}};
    for (int64_t s = 0; s < steps; ++s) {
      const StepInfo step{.step = s, .lr = 0.1, .worldSize = comm.worldSize()};
      std::vector<at::Tensor> all(3);
      std::vector<std::vector<at::Tensor>> grads(2);
      for (size_t b = 0; b < 2; ++b) {
        for (size_t l : buckets[b]) {
          int64_t numel = 1;
          for (int64_t d : engine.layers()[l].shape) numel *= d;
          all[l] = gradientOf(comm.rank(), l, s, numel);
          grads[b].push_back(all[l]);
        }
      }
      if (split) {
        engine.encode(buckets[0], grads[0], step);
        std::thread encoder([&] { engine.encode(buckets[1], grads[1], step); });
        engine.exchange(buckets[0], grads[0], at::Tensor(), step);
        encoder.join();
        engine.exchange(buckets[1], grads[1], at::Tensor(), step);
      } else {
        for (size_t b = 0; b < 2; ++b) engine.sync(buckets[b], grads[b], at::Tensor(), step);
      }
      if (comm.rank() == 0) outputs[static_cast<size_t>(s)] = all;
    }
  });
  return outputs;
}

TEST(CompressionEngineTest, EncodeOnAnotherThreadThenExchangeEqualsSyncBitForBit) {
  CompressionEngineOptions options = topkOptions(/*startStep=*/1);
  options.layers[0].aggregator = AggregatorKind::kTwoPhase;
  const auto together = runTwoBuckets(3, options, 4, /*split=*/false);
  const auto split = runTwoBuckets(3, options, 4, /*split=*/true);
  for (size_t s = 0; s < together.size(); ++s) {
    for (size_t l = 0; l < 3; ++l) {
      EXPECT_TRUE(at::equal(split[s][l], together[s][l])) << "step " << s << " layer " << l;
    }
  }
  // Compression happened: the compressed layer differs from the plain average.
  at::Tensor plain = at::zeros_like(together[3][2]);
  for (int r = 0; r < 3; ++r) plain += gradientOf(r, 2, 3, plain.numel());
  EXPECT_FALSE(at::allclose(together[3][2], plain / 3));
}

TEST(CompressionEngineTest, ExchangeWithoutEncodeIsRefused) {
  auto world = comm::makeLocalWorld(1);
  runOnEveryRank(world, [&](comm::Communicator& comm) {
    CompressionEngine engine(threeLayers(), comm, topkOptions(0));
    std::vector<at::Tensor> grads = {gradientOf(0, 0, 0, 64 * 96)};
    const StepInfo step{.step = 0, .lr = 0.1, .worldSize = 1};
    EXPECT_THROW(engine.exchange({0}, grads, at::Tensor(), step), InvalidArgument);
    engine.encode({0}, grads, step);
    // An encode for another step does not count either.
    EXPECT_THROW(engine.exchange({0}, grads, at::Tensor(), {.step = 1, .lr = 0.1, .worldSize = 1}),
                 InvalidArgument);
    EXPECT_NO_THROW(engine.exchange({0}, grads, at::Tensor(), step));
    // The payload is consumed: a second exchange needs a new encode.
    EXPECT_THROW(engine.exchange({0}, grads, at::Tensor(), step), InvalidArgument);
  });
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

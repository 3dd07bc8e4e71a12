// The aggregator cost model (Note [Aggregator cost model]) and the small helpers of
// compressors/aggregator.h. Expected choices are computed here from the note's formulas with the
// compressors' documented payload sizes, not taken from the implementation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "base/error.h"
#include "compressors/aggregator.h"
#include "compressors/cast_compressor.h"
#include "compressors/identity_compressor.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"

namespace thinwire::compressors {
namespace {

constexpr double kLatency = 50e-6;
constexpr double kBytesPerSecond = 125e6;

// Exact top-k payload: k int32 indices and k float32 values.
int64_t topKBytes(int64_t numel, double ratio) {
  if (numel == 0) return 0;
  return 8 * std::max<int64_t>(1, static_cast<int64_t>(std::floor(ratio * numel)));
}

// Sign, one scale per `chunk` elements: packed bits plus a float32 per chunk.
int64_t signBytes(int64_t numel, int64_t chunk) {
  return (numel + 7) / 8 + 4 * ((numel + chunk - 1) / chunk);
}

// Predicted time of Note [Aggregator cost model]: alpha * rounds + bytes / bandwidth.
double seconds(double rounds, double bytes) { return kLatency * rounds + bytes / kBytesPerSecond; }

TEST(AggregatorCostTest, SummablePayloadsAreAllreduced) {
  IdentityCompressor identity;
  CastCompressor fp16(at::kHalf);
  LayerParams params;
  for (int n : {2, 3, 4, 8, 64}) {
    for (int64_t numel : {int64_t{1}, int64_t{1000}, int64_t{1} << 22}) {
      EXPECT_EQ(chooseAggregator(identity, numel, params, n), AggregatorKind::kAllreduce);
      EXPECT_EQ(chooseAggregator(fp16, numel, params, n), AggregatorKind::kAllreduce);
    }
  }
  // Wire formula: 2(n-1)/n * 4 * numel.
  EXPECT_EQ(predictedBytesSent(AggregatorKind::kAllreduce, identity, 1000, params, 4), 6000);
  EXPECT_EQ(predictedBytesSent(AggregatorKind::kAllreduce, fp16, 1000, params, 4), 3000);
  EXPECT_EQ(predictedBytesSent(AggregatorKind::kAllgather, identity, 1000, params, 4), 12000);
}

TEST(AggregatorCostTest, SignGoesTwoPhaseFromThreeRanks) {
  SignCompressor sign(SignOptions{.chunk = 2048});
  LayerParams params;
  const int64_t numel = int64_t{1} << 22;
  for (int n : {3, 4, 8, 16}) {
    EXPECT_EQ(chooseAggregator(sign, numel, params, n), AggregatorKind::kTwoPhase) << "n=" << n;
  }
  // n = 2: both move the same bytes, allgather in fewer rounds.
  EXPECT_EQ(chooseAggregator(sign, numel, params, 2), AggregatorKind::kAllgather);
  // 2^22 elements = 2048 scale chunks, split evenly over 4 ranks: the chunked payload is the
  // whole payload, so two-phase sends 2 (n-1)/n of it and allgather (n-1) times it.
  const int64_t whole = signBytes(numel, 2048);
  EXPECT_EQ(predictedBytesSent(AggregatorKind::kTwoPhase, sign, numel, params, 4),
            2 * 3 * whole / 4);
  EXPECT_EQ(predictedBytesSent(AggregatorKind::kAllgather, sign, numel, params, 4), 3 * whole);
  EXPECT_THROW(predictedBytesSent(AggregatorKind::kAllreduce, sign, numel, params, 4),
               InvalidArgument);
}

TEST(AggregatorCostTest, TopKIsGatheredWhileThatBeatsADenseAllreduce) {
  TopKCompressor topk;
  LayerParams params;
  const int n = 4;
  for (double ratio : {0.001, 0.01, 0.05, 0.1, 0.3, 0.5}) {
    params.ratio = ratio;
    for (int64_t numel : {int64_t{1000}, int64_t{100000}, int64_t{1} << 20}) {
      const int64_t whole = topKBytes(numel, ratio);
      int64_t chunks = 0;  // each rank's quarter keeps `ratio` of itself
      for (int d = 0; d < n; ++d) {
        const int64_t length = numel / n + (d < numel % n ? 1 : 0);
        chunks += topKBytes(length, ratio);
      }
      EXPECT_EQ(predictedBytesSent(AggregatorKind::kAllgather, topk, numel, params, n),
                (n - 1) * whole);
      EXPECT_EQ(predictedBytesSent(AggregatorKind::kTwoPhase, topk, numel, params, n),
                2 * (n - 1) * chunks / n);
      // Gather below the break-even with a dense float32 ring allreduce (density < 1/n for int32
      // indices and float32 values); beyond it, the cheaper of the two by the formula.
      const int64_t dense = 2 * (n - 1) * numel * 4 / n;
      AggregatorKind expected = AggregatorKind::kAllgather;
      if ((n - 1) * whole > dense) {
        const double allgather = seconds(n - 1, static_cast<double>((n - 1) * whole));
        const double twoPhase = seconds(2 * (n - 1), static_cast<double>(2 * (n - 1) * chunks / n));
        expected = twoPhase < allgather ? AggregatorKind::kTwoPhase : AggregatorKind::kAllgather;
      }
      EXPECT_EQ(chooseAggregator(topk, numel, params, n), expected)
          << "numel " << numel << " ratio " << ratio;
    }
  }
  params.ratio = 0.01;
  EXPECT_EQ(chooseAggregator(topk, int64_t{1} << 20, params, n), AggregatorKind::kAllgather);
  params.ratio = 0.5;
  EXPECT_EQ(chooseAggregator(topk, int64_t{1} << 20, params, n), AggregatorKind::kTwoPhase);
}

TEST(AggregatorCostTest, DataDependentSizesCountTheBoundAndTheSizeExchange) {
  TopKCompressor sampled(TopKOptions{.sampled = true});
  LayerParams params;
  params.ratio = 0.01;
  const int64_t bound = sampled.maxPayloadBytes(100000, params);
  ASSERT_EQ(sampled.payloadBytes(100000, params), -1);
  EXPECT_EQ(predictedBytesSent(AggregatorKind::kAllgather, sampled, 100000, params, 4),
            3 * (bound + 8));
  int64_t chunks = 0;
  for (int d = 0; d < 4; ++d) chunks += sampled.maxPayloadBytes(25000, params);
  EXPECT_EQ(predictedBytesSent(AggregatorKind::kTwoPhase, sampled, 100000, params, 4),
            2 * 3 * chunks / 4 + 2 * 3 * 8);
}

TEST(AggregatorCostTest, OneRankSendsNothing) {
  IdentityCompressor identity;
  SignCompressor sign;
  TopKCompressor topk;
  LayerParams params;
  for (AggregatorKind kind : {AggregatorKind::kAllgather, AggregatorKind::kTwoPhase}) {
    EXPECT_EQ(predictedBytesSent(kind, sign, 1 << 20, params, 1), 0);
    EXPECT_EQ(predictedBytesSent(kind, topk, 1 << 20, params, 1), 0);
  }
  EXPECT_EQ(predictedBytesSent(AggregatorKind::kAllreduce, identity, 1 << 20, params, 1), 0);
  // Every method costs nothing: the first candidate stays.
  EXPECT_EQ(chooseAggregator(identity, 1 << 20, params, 1), AggregatorKind::kAllreduce);
  EXPECT_EQ(chooseAggregator(sign, 1 << 20, params, 1), AggregatorKind::kAllgather);
  EXPECT_EQ(chooseAggregator(topk, 1 << 20, params, 1), AggregatorKind::kAllgather);
}

TEST(AggregatorCostTest, RejectsInvalidArguments) {
  IdentityCompressor identity;
  LayerParams params;
  EXPECT_THROW(predictedBytesSent(AggregatorKind::kAllreduce, identity, 10, params, 0),
               InvalidArgument);
  EXPECT_THROW(predictedBytesSent(AggregatorKind::kAllreduce, identity, -1, params, 2),
               InvalidArgument);
  EXPECT_THROW(chooseAggregator(identity, 10, params, 2, {.bytesPerSecond = 0}), InvalidArgument);
}

TEST(AggregatorCostTest, KindsParseAndPrint) {
  for (AggregatorKind kind :
       {AggregatorKind::kAllreduce, AggregatorKind::kAllgather, AggregatorKind::kTwoPhase}) {
    EXPECT_EQ(parseAggregatorKind(toString(kind)), kind);
    EXPECT_EQ(makeAggregator(kind)->kind(), kind);
  }
  EXPECT_EQ(toString(AggregatorKind::kTwoPhase), "two_phase");
  EXPECT_THROW(parseAggregatorKind("ring"), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::compressors

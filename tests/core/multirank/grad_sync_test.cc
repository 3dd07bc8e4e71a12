// GradSync over threads-as-ranks: averaged gradients equal the plain mean of every rank's
// gradient, with accumulation, unused parameters and any bucket layout.
#include "core/grad_sync.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "comm/local/local_communicator.h"
#include "core/trainer.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::core {
namespace {

// Parameters of 3, 5 and 7 elements; rank r's loss makes d loss / d w_k = (r + 1) * c_k * micro
// for micro-step `micro` (1-based), and the third parameter gets no gradient when `skipLast`.
struct RankProblem {
  std::vector<at::Tensor> weights = {at::zeros({3}).set_requires_grad(true),
                                     at::zeros({5}).set_requires_grad(true),
                                     at::zeros({7}).set_requires_grad(true)};
  std::vector<optim::NamedParameter> named() {
    return {{"a", weights[0]}, {"b", weights[1]}, {"c", weights[2]}};
  }
  void backward(int rank, int micro, bool skipLast) {
    at::Tensor loss = at::zeros({});
    for (size_t k = 0; k < weights.size(); ++k) {
      if (skipLast && k + 1 == weights.size()) continue;
      at::Tensor coefficient =
          at::arange(weights[k].numel(), at::kFloat).add(1.0 + static_cast<double>(k));
      loss = loss + (weights[k] * coefficient).sum() * static_cast<double>((rank + 1) * micro);
    }
    loss.backward();
  }
};

// Expected averaged gradient of parameter k over `ranks` ranks after micro-steps 1..micros.
at::Tensor expectedGradient(size_t k, int64_t numel, int ranks, int micros) {
  double factor = 0;
  for (int r = 0; r < ranks; ++r) {
    for (int m = 1; m <= micros; ++m) factor += (r + 1) * m;
  }
  return at::arange(numel, at::kFloat).add(1.0 + static_cast<double>(k)).mul(factor / ranks);
}

void runCase(int ranks, int64_t bucketBytes, bool overlap, int micros, bool skipLast) {
  auto world = comm::makeLocalWorld(ranks);
  std::vector<RankProblem> problems(ranks);
  ::thinwire::testing::runOnEveryRank(world, [&](comm::Communicator& comm) {
    const int r = comm.rank();
    GradSync sync(problems[r].named(), comm, {.bucketBytes = bucketBytes, .overlap = overlap});
    for (int m = 1; m <= micros; ++m) {
      sync.prepare(/*synchronize=*/m == micros);
      problems[r].backward(r, m, skipLast);
    }
    sync.finish();
  });
  for (int r = 0; r < ranks; ++r) {
    for (size_t k = 0; k < 3; ++k) {
      const at::Tensor& w = problems[r].weights[k];
      at::Tensor expected = (skipLast && k == 2) ? at::zeros({w.numel()})
                                                 : expectedGradient(k, w.numel(), ranks, micros);
      ASSERT_TRUE(w.grad().defined()) << "rank " << r << " parameter " << k;
      EXPECT_TRUE(at::allclose(w.grad(), expected, 1e-6, 1e-6))
          << "rank " << r << " parameter " << k << "\n"
          << w.grad() << "\nexpected\n"
          << expected;
    }
  }
}

TEST(GradSyncTest, AveragesGradientsAcrossRanksForEveryBucketLayout) {
  for (int ranks : {2, 3}) {
    for (int64_t bucketBytes : {4, 24, 1 << 20}) {  // one bucket per parameter .. one for all
      for (bool overlap : {true, false}) {
        SCOPED_TRACE(::testing::Message() << ranks << " ranks, buckets of " << bucketBytes
                                          << " bytes, overlap " << overlap);
        runCase(ranks, bucketBytes, overlap, /*micros=*/1, /*skipLast=*/false);
      }
    }
  }
}

TEST(GradSyncTest, AccumulatedMicroStepsAreAveragedOnce) {
  runCase(3, 24, true, /*micros=*/3, /*skipLast=*/false);
}

TEST(GradSyncTest, ParametersWithoutGradientContributeZeros) {
  runCase(2, 24, true, /*micros=*/1, /*skipLast=*/true);
}

TEST(GradSyncTest, BucketsFollowTheConfiguredSize) {
  auto world = comm::makeLocalWorld(1);
  RankProblem problem;
  EXPECT_EQ(GradSync(problem.named(), *world[0], {.bucketBytes = 4}).numBuckets(), 3);
  EXPECT_EQ(GradSync(problem.named(), *world[0], {.bucketBytes = 48}).numBuckets(), 2);
  EXPECT_EQ(GradSync(problem.named(), *world[0], {.bucketBytes = 1 << 20}).numBuckets(), 1);
}

TEST(OverlapTest, AutoNeedsACorePerComputeThreadPlusOneForCommunication) {
  EXPECT_FALSE(overlapEnabled("auto", 4, 1, 2));
  EXPECT_TRUE(overlapEnabled("auto", 4, 1, 8));
  EXPECT_FALSE(overlapEnabled("auto", 4, 2, 8));
  EXPECT_TRUE(overlapEnabled("on", 4, 1, 2));
  EXPECT_FALSE(overlapEnabled("off", 1, 1, 64));
  EXPECT_THROW(overlapEnabled("sometimes", 1, 1, 1), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::core

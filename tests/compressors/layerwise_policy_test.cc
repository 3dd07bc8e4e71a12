// L-GreCo's solver against brute force, its guarantees (alpha = 1, alpha -> infinity, the
// infeasible fallback), the low-rank error table against an exact SVD, candidate sets, the
// schedule and the policy's state round trip.
#include "compressors/layerwise_policy.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "base/error.h"
#include "tests/compressors/test_tensors.h"

namespace thinwire::compressors {
namespace {

// Random instance: up to 6 layers, up to 4 candidates each; some zero errors and equal sizes.
LayerwiseProblem randomProblem(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> layerCount(1, 6), candidateCount(1, 4), size(0, 60);
  std::uniform_real_distribution<double> error(0.0, 10.0);
  std::bernoulli_distribution zero(0.1);
  LayerwiseProblem problem;
  const int layers = layerCount(rng);
  for (int l = 0; l < layers; ++l) {
    const int count = candidateCount(rng);
    std::vector<int64_t> sizes;
    std::vector<double> errors;
    for (int c = 0; c < count; ++c) {
      sizes.push_back(size(rng));
      errors.push_back(zero(rng) ? 0.0 : error(rng));
    }
    problem.sizes.push_back(sizes);
    problem.errors.push_back(errors);
    problem.defaults.push_back(std::uniform_int_distribution<size_t>(0, count - 1)(rng));
  }
  return problem;
}

// Every configuration of `problem`, in odometer order.
template <typename Visit>
void forEachConfiguration(const LayerwiseProblem& problem, Visit visit) {
  std::vector<size_t> choice(problem.sizes.size(), 0);
  while (true) {
    visit(choice);
    size_t l = 0;
    while (l < choice.size() && ++choice[l] == problem.sizes[l].size()) choice[l++] = 0;
    if (l == choice.size()) return;
  }
}

struct Totals {
  int64_t size = 0;
  double error = 0;
};

Totals totals(const LayerwiseProblem& problem, const std::vector<size_t>& choice) {
  Totals t;
  for (size_t l = 0; l < choice.size(); ++l) {
    t.size += problem.sizes[l][choice[l]];
    t.error += problem.errors[l][choice[l]];
  }
  return t;
}

// Brute force of the discretised problem as the spec states it (specs §4.3 with the slack fix):
// unit w = T / B, cost ceil(E / w), capacity B + L; -1 when nothing fits.
int64_t bruteForceDiscretised(const LayerwiseProblem& problem, double alpha, int64_t buckets) {
  double defaultError = 0;
  for (size_t l = 0; l < problem.defaults.size(); ++l) {
    defaultError += problem.errors[l][problem.defaults[l]];
  }
  const double target = alpha * defaultError;
  const double unit = target / static_cast<double>(buckets);
  const double capacity = static_cast<double>(buckets + static_cast<int64_t>(problem.sizes.size()));
  int64_t best = -1;
  forEachConfiguration(problem, [&](const std::vector<size_t>& choice) {
    double cost = 0;
    for (size_t l = 0; l < choice.size(); ++l) {
      const double e = problem.errors[l][choice[l]];
      cost += unit > 0 ? std::ceil(e / unit) : (e == 0 ? 0.0 : capacity + 1);
    }
    if (cost > capacity) return;
    const int64_t size = totals(problem, choice).size;
    if (best < 0 || size < best) best = size;
  });
  return best;
}

// Brute force of the real-valued problem: minimal size with total error <= target; -1 if none.
int64_t bruteForceExact(const LayerwiseProblem& problem, double target) {
  int64_t best = -1;
  forEachConfiguration(problem, [&](const std::vector<size_t>& choice) {
    const Totals t = totals(problem, choice);
    if (t.error <= target && (best < 0 || t.size < best)) best = t.size;
  });
  return best;
}

TEST(LayerwiseSolverTest, EqualsBruteForceOnRandomSmallInstances) {
  int feasibleCount = 0, infeasibleCount = 0;
  for (uint64_t seed = 0; seed < 600; ++seed) {
    std::mt19937_64 rng(seed);
    const LayerwiseProblem problem = randomProblem(rng);
    const double alphas[] = {0.3, 0.8, 1.0, 1.5, 4.0};
    const int64_t bucketChoices[] = {3, 17, 1000, 10000};
    const double alpha = alphas[seed % 5];
    const int64_t buckets = bucketChoices[(seed / 5) % 4];
    const LayerwiseSolution solution = solveLayerwise(problem, {alpha, buckets}, {});
    const int64_t expected = bruteForceDiscretised(problem, alpha, buckets);
    SCOPED_TRACE(::testing::Message()
                 << "seed " << seed << " alpha " << alpha << " buckets " << buckets);
    if (expected < 0) {
      ++infeasibleCount;
      EXPECT_FALSE(solution.feasible);
      EXPECT_EQ(solution.choice, problem.defaults);
      continue;
    }
    ++feasibleCount;
    ASSERT_TRUE(solution.feasible);
    const Totals t = totals(problem, solution.choice);
    EXPECT_EQ(solution.size, expected);
    EXPECT_EQ(t.size, expected);
    EXPECT_DOUBLE_EQ(solution.error, t.error);
    // Against the undiscretised problem: never worse than its optimum, error within the slack.
    const double target = alpha * solution.defaultError;
    const int64_t exact = bruteForceExact(problem, target);
    if (exact >= 0) {
      EXPECT_LE(solution.size, exact);
    }
    EXPECT_LE(t.error, target + static_cast<double>(problem.sizes.size()) * target /
                                    static_cast<double>(buckets) * (1 + 1e-12));
  }
  EXPECT_GT(feasibleCount, 300);
  EXPECT_GT(infeasibleCount, 5);
}

TEST(LayerwiseSolverTest, AlphaOneNeverExceedsTheUniformDefault) {
  for (uint64_t seed = 0; seed < 300; ++seed) {
    std::mt19937_64 rng(seed + 1000);
    const LayerwiseProblem problem = randomProblem(rng);
    const LayerwiseSolution solution = solveLayerwise(problem, {1.0, 100}, {});
    const Totals defaults = totals(problem, problem.defaults);
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    ASSERT_TRUE(solution.feasible);  // the slack fix: the default always fits
    EXPECT_LE(solution.size, defaults.size);
    EXPECT_LE(solution.error, defaults.error + solution.slack * (1 + 1e-12));
    EXPECT_DOUBLE_EQ(solution.slack,
                     static_cast<double>(problem.sizes.size()) * defaults.error / 100.0);
  }
}

TEST(LayerwiseSolverTest, HugeAlphaPicksTheSmallestSizes) {
  for (uint64_t seed = 0; seed < 100; ++seed) {
    std::mt19937_64 rng(seed + 5000);
    const LayerwiseProblem problem = randomProblem(rng);
    int64_t smallest = 0;
    for (const auto& sizes : problem.sizes)
      smallest += *std::min_element(sizes.begin(), sizes.end());
    const LayerwiseSolution solution = solveLayerwise(problem, {1e12, 10000}, {});
    // A default error of 0 makes every budget 0; skip those instances.
    if (solution.defaultError == 0) continue;
    EXPECT_EQ(solution.size, smallest) << "seed " << seed;
  }
}

TEST(LayerwiseSolverTest, InfeasibleBudgetKeepsThePreviousChoice) {
  LayerwiseProblem problem;
  problem.sizes = {{10, 20, 40}, {10, 20}};
  problem.errors = {{8, 5, 4}, {9, 6}};
  problem.defaults = {1, 1};                    // error 11
  const std::vector<size_t> previous = {2, 0};  // what the last solve chose
  const LayerwiseSolution solution = solveLayerwise(problem, {0.5, 1000}, previous);  // T = 5.5
  EXPECT_FALSE(solution.feasible);
  EXPECT_EQ(solution.choice, previous);
  EXPECT_EQ(solution.size, 50);
  EXPECT_DOUBLE_EQ(solution.error, 13.0);
  // Without a previous choice the defaults stay.
  EXPECT_EQ(solveLayerwise(problem, {0.5, 1000}, {}).choice, problem.defaults);
}

TEST(LayerwiseSolverTest, MovesTheBudgetToTheLayerThatNeedsIt) {
  // Layer 0's error hardly depends on its size, layer 1's does: L-GreCo shrinks layer 0 and
  // spends part of the saving on layer 1, smaller and more accurate than the uniform default.
  LayerwiseProblem problem;
  problem.sizes = {{10, 40, 80}, {10, 20, 30}};
  problem.errors = {{1.0, 0.99, 0.98}, {50.0, 10.0, 0.5}};
  problem.defaults = {1, 1};  // size 60, error 10.99
  const LayerwiseSolution solution = solveLayerwise(problem, {1.0, 10000}, {});
  ASSERT_TRUE(solution.feasible);
  EXPECT_EQ(solution.choice, (std::vector<size_t>{0, 2}));
  EXPECT_EQ(solution.size, 40);
  EXPECT_DOUBLE_EQ(solution.error, 1.5);
  EXPECT_EQ(solution.defaultSize, 60);
  EXPECT_DOUBLE_EQ(solution.defaultError, 10.99);
}

TEST(LayerwiseSolverTest, RejectsMalformedProblems) {
  LayerwiseProblem problem{{{1, 2}}, {{1.0, 0.5}}, {0}};
  EXPECT_THROW(solveLayerwise(problem, {0.0, 10}, {}), InvalidArgument);
  EXPECT_THROW(solveLayerwise(problem, {1.0, 0}, {}), InvalidArgument);
  EXPECT_THROW(solveLayerwise(problem, {1.0, 10}, {5}), InvalidArgument);
  LayerwiseProblem negative{{{1, 2}}, {{-1.0, 0.5}}, {0}};
  EXPECT_THROW(solveLayerwise(negative, {1.0, 10}, {}), InvalidArgument);
  LayerwiseProblem badDefault{{{1, 2}}, {{1.0, 0.5}}, {2}};
  EXPECT_THROW(solveLayerwise(badDefault, {1.0, 10}, {}), InvalidArgument);
}

// Exact squared errors of rank-r truncations from the SVD of `matrix`.
std::vector<double> svdErrors(const at::Tensor& matrix, int64_t maxRank) {
  const at::Tensor s = at::linalg_svdvals(matrix.to(at::kDouble));
  std::vector<double> errors;
  for (int64_t r = 0; r <= maxRank; ++r) {
    double rest = 0;
    for (int64_t j = r; j < s.numel(); ++j) rest += s[j].item<double>() * s[j].item<double>();
    errors.push_back(rest);
  }
  return errors;
}

TEST(LowRankErrorsTest, MatchesTheSvdTruncationError) {
  // A matrix with decaying spectrum: a subspace of dimension 6 converges to the top singular
  // vectors within a few iterations.
  const at::Tensor u = std::get<0>(at::linalg_qr(test::gaussian(40 * 8, 1).view({40, 8})));
  const at::Tensor v = std::get<0>(at::linalg_qr(test::gaussian(24 * 8, 2).view({24, 8})));
  const at::Tensor s = at::tensor({9.0f, 5.0f, 3.0f, 2.0f, 1.0f, 0.5f, 0.2f, 0.1f});
  const at::Tensor matrix = at::matmul(u * s, v.t()).contiguous();
  const std::vector<double> expected = svdErrors(matrix, 6);
  const std::vector<double> got = lowRankErrors(matrix, 6, 30, 7);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t r = 0; r < got.size(); ++r) {
    EXPECT_NEAR(got[r], expected[r], 1e-4 * expected[0]) << "rank " << r;
    EXPECT_GE(got[r], expected[r] - 1e-4 * expected[0]) << "rank " << r;
  }
}

TEST(LowRankErrorsTest, FullRankLeavesNothingAndZeroMatrixHasNoError) {
  const at::Tensor matrix = test::gaussian(5 * 3, 4).view({5, 3});
  const std::vector<double> errors = lowRankErrors(matrix, 5, 2, 1);
  EXPECT_GT(errors[2], 0);
  EXPECT_EQ(errors[3], 0);
  EXPECT_EQ(errors[5], 0);
  const std::vector<double> zero = lowRankErrors(at::zeros({4, 4}), 2, 1, 1);
  EXPECT_EQ(zero, std::vector<double>(3, 0.0));
}

TEST(LayerwiseCandidatesTest, DefaultGridsAroundTheUniformDefault) {
  LayerwisePolicyOptions options;
  options.densitySteps = 2;
  const LayerwiseCandidates topk = layerwiseCandidates(LayerwiseFamily::kTopK, 0.01, options);
  ASSERT_EQ(topk.values.size(), 5u);
  EXPECT_DOUBLE_EQ(topk.values[0], 0.0025);
  EXPECT_DOUBLE_EQ(topk.values[4], 0.04);
  EXPECT_DOUBLE_EQ(topk.values[topk.defaultIndex], 0.01);
  const LayerwiseCandidates capped = layerwiseCandidates(LayerwiseFamily::kTopK, 0.5, options);
  EXPECT_DOUBLE_EQ(capped.values.back(), 1.0);  // 1 and 2 both capped at 1, kept once
  EXPECT_EQ(capped.values.size(), 4u);
  const LayerwiseCandidates bits = layerwiseCandidates(LayerwiseFamily::kQuantize, 4, options);
  EXPECT_EQ(bits.values, (std::vector<double>{2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(bits.defaultIndex, 2u);
  const LayerwiseCandidates ranks = layerwiseCandidates(LayerwiseFamily::kLowRank, 4, options);
  EXPECT_EQ(ranks.values, (std::vector<double>{2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(ranks.defaultIndex, 2u);
  const LayerwiseCandidates one = layerwiseCandidates(LayerwiseFamily::kLowRank, 1, options);
  EXPECT_EQ(one.values, (std::vector<double>{1, 2}));
  options.bits = {1, 4};
  EXPECT_THROW(layerwiseCandidates(LayerwiseFamily::kQuantize, 4, options), InvalidArgument);
}

TEST(LayerwisePolicyTest, SolvesAfterWarmUpAndAccumulatesTheWindowBefore) {
  LayerwisePolicyOptions options;
  options.kind = LayerwiseKind::kLGreco;
  options.warmupSteps = 20;
  options.window = 5;
  options.adjustEvery = 10;
  LayerwisePolicy policy(options, {layerwiseCandidates(LayerwiseFamily::kQuantize, 4, options)});
  std::vector<int64_t> solves, accumulates;
  for (int64_t s = 0; s < 42; ++s) {
    if (policy.solvesAt(s)) solves.push_back(s);
    if (policy.accumulatesAt(s)) accumulates.push_back(s);
  }
  EXPECT_EQ(solves, (std::vector<int64_t>{20, 30, 40}));
  EXPECT_EQ(accumulates,
            (std::vector<int64_t>{15, 16, 17, 18, 19, 25, 26, 27, 28, 29, 35, 36, 37, 38, 39}));
  options.kind = LayerwiseKind::kUniform;
  LayerwisePolicy uniform(options, {layerwiseCandidates(LayerwiseFamily::kQuantize, 4, options)});
  EXPECT_FALSE(uniform.solvesAt(20));
  EXPECT_FALSE(uniform.accumulatesAt(19));
  options.window = 30;
  EXPECT_THROW(LayerwisePolicy(options, {}), InvalidArgument);
}

// Squared errors {4, 1, 0} per layer (norms {2, 1, 0}), default the middle one: under the squared
// budget (2) moving one layer down to the cheapest candidate costs 4 and cannot be paid for; under
// the sum of norms (budget 2) it costs 2, paid by the other layer going to error 0: 14 bytes
// instead of 20.
TEST(LayerwisePolicyTest, SumOfNormsBudgetsUnsquaredErrors) {
  const std::vector<std::vector<int64_t>> sizes = {{2, 10, 12}, {2, 10, 12}};
  const std::vector<std::vector<double>> squared = {{4, 1, 0}, {4, 1, 0}};
  const LayerwiseCandidates layer{LayerwiseFamily::kQuantize, {2, 4, 8}, 1};
  LayerwisePolicyOptions options;
  options.kind = LayerwiseKind::kLGreco;
  LayerwisePolicy squaredPolicy(options, {layer, layer});
  const LayerwiseSolution plain = squaredPolicy.solve(sizes, squared);
  EXPECT_EQ(plain.choice, (std::vector<size_t>{1, 1}));
  EXPECT_EQ(plain.size, 20);
  EXPECT_DOUBLE_EQ(plain.defaultError, 2.0);
  options.measure = parseLayerwiseErrorMeasure("sum_of_norms");
  LayerwisePolicy normsPolicy(options, {layer, layer});
  const LayerwiseSolution norms = normsPolicy.solve(sizes, squared);
  EXPECT_EQ(norms.size, 14);
  EXPECT_DOUBLE_EQ(norms.error, 2.0);
  EXPECT_DOUBLE_EQ(norms.defaultError, 2.0);  // 1 + 1 in norms
  EXPECT_EQ(norms.choice[0] + norms.choice[1], 2u);
  EXPECT_NE(norms.choice[0], 1u);
  EXPECT_EQ(parseLayerwiseErrorMeasure("squared"), LayerwiseErrorMeasure::kSquared);
  EXPECT_THROW(parseLayerwiseErrorMeasure("norms"), InvalidArgument);
}

TEST(LayerwisePolicyTest, StateRoundTripKeepsChoiceReportAndWindow) {
  LayerwisePolicyOptions options;
  options.kind = LayerwiseKind::kLGreco;
  std::vector<LayerwiseCandidates> layers = {
      layerwiseCandidates(LayerwiseFamily::kTopK, 0.01, options),
      layerwiseCandidates(LayerwiseFamily::kTopK, 0.01, options)};
  LayerwisePolicy policy(options, layers);
  policy.window(1, 6).add_(at::arange(6, at::kFloat));
  policy.countWindowStep();
  LayerwiseReport report;
  report.solves = 3;
  report.lastSolveStep = 300;
  report.predictedBytes = 1234;
  report.defaultBytes = 5678;
  report.predictedError = 0.25;
  report.defaultError = 0.5;
  policy.apply({0, 5}, report);
  LayerwisePolicy restored(options, layers);
  restored.loadState(policy.state());
  EXPECT_EQ(restored.choice(), (std::vector<size_t>{0, 5}));
  EXPECT_EQ(restored.report().solves, 3);
  EXPECT_EQ(restored.report().lastSolveStep, 300);
  EXPECT_EQ(restored.report().predictedBytes, 1234);
  EXPECT_EQ(restored.report().defaultError, 0.5);
  EXPECT_EQ(restored.windowSteps(), 1);
  EXPECT_FALSE(restored.windowOf(0).defined());
  EXPECT_TRUE(restored.windowOf(1).equal(at::arange(6, at::kFloat)));
  StateDict bad = policy.state();
  bad["choice"] = at::tensor({0, 99}, at::kLong);
  EXPECT_THROW(restored.loadState(bad), DataError);
}

}  // namespace
}  // namespace thinwire::compressors

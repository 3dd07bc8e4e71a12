#include "compressors/layerwise_policy.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "base/error.h"
#include "compressors/power_sgd.h"

namespace thinwire::compressors {

namespace {

constexpr int64_t kNoSize = std::numeric_limits<int64_t>::max();

void checkProblem(const LayerwiseProblem& problem, const std::vector<size_t>& previous) {
  const size_t layers = problem.sizes.size();
  TW_CHECK(layers > 0, "solveLayerwise: no layers");
  TW_CHECK(problem.errors.size() == layers && problem.defaults.size() == layers,
           "solveLayerwise: ", layers, " size rows, ", problem.errors.size(), " error rows and ",
           problem.defaults.size(), " defaults");
  TW_CHECK(previous.empty() || previous.size() == layers, "solveLayerwise: previous choice has ",
           previous.size(), " entries for ", layers, " layers");
  for (size_t l = 0; l < layers; ++l) {
    const size_t count = problem.sizes[l].size();
    TW_CHECK(count > 0 && problem.errors[l].size() == count, "solveLayerwise: layer ", l, " has ",
             count, " sizes and ", problem.errors[l].size(), " errors");
    TW_CHECK(problem.defaults[l] < count, "solveLayerwise: default ", problem.defaults[l],
             " of layer ", l, " out of range (", count, " candidates)");
    TW_CHECK(previous.empty() || previous[l] < count, "solveLayerwise: previous choice ",
             previous[l], " of layer ", l, " out of range (", count, " candidates)");
    for (size_t c = 0; c < count; ++c) {
      TW_CHECK(problem.sizes[l][c] >= 0, "solveLayerwise: negative size at layer ", l);
      TW_CHECK(std::isfinite(problem.errors[l][c]) && problem.errors[l][c] >= 0,
               "solveLayerwise: error of layer ", l, " candidate ", c,
               " must be finite and >= 0, got ", problem.errors[l][c]);
    }
  }
}

void summarise(const LayerwiseProblem& problem, LayerwiseSolution& solution) {
  solution.size = 0;
  solution.error = 0;
  for (size_t l = 0; l < solution.choice.size(); ++l) {
    solution.size += problem.sizes[l][solution.choice[l]];
    solution.error += problem.errors[l][solution.choice[l]];
  }
}

}  // namespace

LayerwiseSolution solveLayerwise(const LayerwiseProblem& problem,
                                 const LayerwiseSolverOptions& options,
                                 const std::vector<size_t>& previous) {
  checkProblem(problem, previous);
  TW_CHECK(options.alpha > 0 && std::isfinite(options.alpha),
           "solveLayerwise: alpha must be > 0, got ", options.alpha);
  TW_CHECK(options.buckets >= 1, "solveLayerwise: buckets must be >= 1, got ", options.buckets);
  const size_t layers = problem.sizes.size();
  LayerwiseSolution solution;
  for (size_t l = 0; l < layers; ++l) {
    solution.defaultSize += problem.sizes[l][problem.defaults[l]];
    solution.defaultError += problem.errors[l][problem.defaults[l]];
  }
  solution.target = options.alpha * solution.defaultError;
  const int64_t capacity = options.buckets + static_cast<int64_t>(layers);
  const double unit = solution.target / static_cast<double>(options.buckets);
  solution.slack = static_cast<double>(layers) * unit;

  // Integer cost of every candidate; capacity + 1 marks "never fits".
  std::vector<std::vector<int64_t>> cost(layers);
  for (size_t l = 0; l < layers; ++l) {
    for (double error : problem.errors[l]) {
      int64_t q = capacity + 1;
      if (unit > 0) {
        const double units = std::ceil(error / unit);
        if (units <= static_cast<double>(capacity)) q = static_cast<int64_t>(units);
      } else if (error == 0) {
        q = 0;  // a zero target admits exactly the zero-error candidates
      }
      cost[l].push_back(q);
    }
  }

  // dp[b]: minimal size of the layers so far at total cost exactly b (Note [L-GreCo DP]).
  const size_t width = static_cast<size_t>(capacity) + 1;
  std::vector<int64_t> dp(width, kNoSize), next(width);
  std::vector<std::vector<int32_t>> argmin(layers, std::vector<int32_t>(width, -1));
  dp[0] = 0;
  for (size_t l = 0; l < layers; ++l) {
    std::fill(next.begin(), next.end(), kNoSize);
    for (size_t c = 0; c < cost[l].size(); ++c) {
      const int64_t q = cost[l][c];
      if (q > capacity) continue;
      const int64_t size = problem.sizes[l][c];
      for (size_t b = static_cast<size_t>(q); b < width; ++b) {
        const int64_t before = dp[b - static_cast<size_t>(q)];
        if (before == kNoSize) continue;
        const int64_t total = before + size;
        if (total < next[b]) {  // strict: the lower candidate index wins ties
          next[b] = total;
          argmin[l][b] = static_cast<int32_t>(c);
        }
      }
    }
    dp.swap(next);
  }
  size_t best = width;
  for (size_t b = 0; b < width; ++b) {
    if (dp[b] != kNoSize && (best == width || dp[b] < dp[best])) best = b;
  }
  if (best == width) {
    solution.feasible = false;
    solution.choice = previous.empty() ? problem.defaults : previous;
    summarise(problem, solution);
    return solution;
  }
  solution.feasible = true;
  solution.choice.assign(layers, 0);
  size_t b = best;
  for (size_t l = layers; l-- > 0;) {
    const int32_t c = argmin[l][b];
    TW_ASSERT(c >= 0, "solveLayerwise: broken backtrack at layer ", l);
    solution.choice[l] = static_cast<size_t>(c);
    b -= static_cast<size_t>(cost[l][static_cast<size_t>(c)]);
  }
  TW_ASSERT(b == 0, "solveLayerwise: backtrack ended at cost ", b);
  summarise(problem, solution);
  return solution;
}

std::vector<double> lowRankErrors(const at::Tensor& matrix,
                                  int64_t maxRank,
                                  int64_t iterations,
                                  uint64_t seed) {
  TW_CHECK(matrix.defined() && matrix.dim() == 2 && matrix.device().is_cpu(),
           "lowRankErrors needs a CPU matrix");
  TW_CHECK(maxRank >= 0, "lowRankErrors: maxRank must be >= 0, got ", maxRank);
  TW_CHECK(iterations >= 1, "lowRankErrors: iterations must be >= 1, got ", iterations);
  const at::Tensor g = matrix.to(at::kFloat).contiguous();
  const int64_t rows = g.size(0), cols = g.size(1);
  const double total = g.to(at::kDouble).pow(2).sum().item<double>();
  std::vector<double> errors(static_cast<size_t>(maxRank) + 1, total);
  const int64_t dimension = std::min({maxRank, rows, cols});
  if (dimension == 0 || total == 0) {
    if (total == 0) std::fill(errors.begin(), errors.end(), 0.0);
    return errors;
  }
  // Subspace iteration on Q^T (dimension x cols): P = G Q, orthonormalise, Q = G^T P.
  at::Tensor qt = PowerSgd::freshQ(seed, 0, 0, dimension, cols);
  at::Tensor pt;
  for (int64_t it = 0; it < iterations; ++it) {
    PowerSgd::orthonormalizeRows(qt, 0.0);
    pt = at::matmul(qt, g.t()).contiguous();  // (G Q)^T
    PowerSgd::orthonormalizeRows(pt, 0.0);
    qt = at::matmul(pt, g).contiguous();  // (G^T P)^T = P^T G
  }
  // qt = P^T G: the projection of G onto span(P), whose best rank-r part is the best rank-r
  // approximation of G inside that span.
  const at::Tensor singular = at::linalg_svdvals(qt.to(at::kDouble));
  const double* s = singular.data_ptr<double>();
  double kept = 0;
  for (int64_t r = 1; r <= maxRank; ++r) {
    if (r <= singular.numel()) kept += s[r - 1] * s[r - 1];
    errors[static_cast<size_t>(r)] = std::max(0.0, total - kept);
  }
  if (dimension == std::min(rows, cols)) {
    // The subspace spans G's row or column space: the full rank leaves nothing.
    for (int64_t r = dimension; r <= maxRank; ++r) errors[static_cast<size_t>(r)] = 0;
  }
  return errors;
}

LayerwiseKind parseLayerwiseKind(const std::string& name) {
  if (name == "uniform") return LayerwiseKind::kUniform;
  if (name == "lgreco") return LayerwiseKind::kLGreco;
  TW_THROW(InvalidArgument, "unknown layer-wise policy '", name, "' (uniform|lgreco)");
}

LayerwiseCandidates layerwiseCandidates(LayerwiseFamily family,
                                        double defaultValue,
                                        const LayerwisePolicyOptions& options) {
  std::vector<double> values{defaultValue};
  switch (family) {
    case LayerwiseFamily::kTopK:
      TW_CHECK(defaultValue > 0 && defaultValue <= 1,
               "L-GreCo: top-k density must be in (0, 1], got ", defaultValue);
      for (int64_t j = 1; j <= options.densitySteps; ++j) {
        const double step = std::pow(options.densityFactor, static_cast<double>(j));
        values.push_back(defaultValue / step);
        values.push_back(std::min(1.0, defaultValue * step));
      }
      break;
    case LayerwiseFamily::kQuantize:
      for (int64_t bits : options.bits) {
        TW_CHECK(bits >= 2 && bits <= 8, "L-GreCo: quantizer bits must be in [2, 8], got ", bits);
        values.push_back(static_cast<double>(bits));
      }
      break;
    case LayerwiseFamily::kLowRank: {
      const int64_t low =
          std::max<int64_t>(1, static_cast<int64_t>(std::floor(options.rankLow * defaultValue)));
      const int64_t high = static_cast<int64_t>(std::ceil(options.rankHigh * defaultValue));
      for (int64_t r = low; r <= high; ++r) values.push_back(static_cast<double>(r));
      break;
    }
  }
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  LayerwiseCandidates candidates;
  candidates.family = family;
  candidates.defaultIndex = static_cast<size_t>(
      std::lower_bound(values.begin(), values.end(), defaultValue) - values.begin());
  candidates.values = std::move(values);
  return candidates;
}

std::string describeSetting(LayerwiseFamily family, double value) {
  std::ostringstream out;
  switch (family) {
    case LayerwiseFamily::kTopK:
      out << "ratio=" << value;
      break;
    case LayerwiseFamily::kQuantize:
      out << "bits=" << static_cast<int64_t>(value);
      break;
    case LayerwiseFamily::kLowRank:
      out << "rank=" << static_cast<int64_t>(value);
      break;
  }
  return out.str();
}

LayerwisePolicy::LayerwisePolicy(LayerwisePolicyOptions options,
                                 std::vector<LayerwiseCandidates> layers)
    : options_(std::move(options)), layers_(std::move(layers)) {
  TW_CHECK(options_.alpha > 0, "L-GreCo: alpha must be > 0, got ", options_.alpha);
  TW_CHECK(options_.window >= 1, "L-GreCo: window must be >= 1, got ", options_.window);
  TW_CHECK(options_.warmupSteps >= options_.window, "L-GreCo: warmup_steps (", options_.warmupSteps,
           ") must be >= window (", options_.window, ")");
  TW_CHECK(options_.adjustEvery >= options_.window, "L-GreCo: adjust_every (", options_.adjustEvery,
           ") must be >= window (", options_.window, ")");
  TW_CHECK(options_.buckets >= 1, "L-GreCo: buckets must be >= 1, got ", options_.buckets);
  TW_CHECK(options_.densityFactor > 1, "L-GreCo: density factor must be > 1, got ",
           options_.densityFactor);
  TW_CHECK(options_.densitySteps >= 0, "L-GreCo: density steps must be >= 0");
  TW_CHECK(options_.rankLow > 0 && options_.rankLow <= 1 && options_.rankHigh >= 1,
           "L-GreCo: rank range factors must satisfy 0 < low <= 1 <= high, got ", options_.rankLow,
           " and ", options_.rankHigh);
  TW_CHECK(options_.errorIterations >= 1, "L-GreCo: error iterations must be >= 1");
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerwiseCandidates& c = layers_[l];
    TW_CHECK(!c.values.empty() && c.defaultIndex < c.values.size(), "L-GreCo: layer ", l,
             " has no default among its ", c.values.size(), " candidates");
    choice_.push_back(c.defaultIndex);
  }
  windows_.resize(layers_.size());
}

LayerwiseErrorMeasure parseLayerwiseErrorMeasure(const std::string& name) {
  if (name == "squared") return LayerwiseErrorMeasure::kSquared;
  if (name == "sum_of_norms") return LayerwiseErrorMeasure::kSumOfNorms;
  if (name == "relative") return LayerwiseErrorMeasure::kRelative;
  TW_THROW(InvalidArgument,
           "L-GreCo error measure must be squared, sum_of_norms or relative, got '", name, "'");
}

LayerwiseWindowSum parseLayerwiseWindowSum(const std::string& name) {
  if (name == "compensated") return LayerwiseWindowSum::kCompensated;
  if (name == "demand") return LayerwiseWindowSum::kDemand;
  TW_THROW(InvalidArgument, "L-GreCo window sum must be compensated or demand, got '", name, "'");
}

bool LayerwisePolicy::solvesAt(int64_t step) const {
  if (!adaptive() || step < options_.warmupSteps) return false;
  return (step - options_.warmupSteps) % options_.adjustEvery == 0;
}

bool LayerwisePolicy::accumulatesAt(int64_t step) const {
  if (!adaptive() || step < 0) return false;
  // The first solve after `step`.
  int64_t next = options_.warmupSteps;
  if (step >= options_.warmupSteps) {
    next = options_.warmupSteps +
           ((step - options_.warmupSteps) / options_.adjustEvery + 1) * options_.adjustEvery;
  }
  return next - step <= options_.window;
}

at::Tensor& LayerwisePolicy::window(size_t layer, int64_t numel) {
  TW_CHECK(layer < windows_.size(), "L-GreCo: layer ", layer, " out of range");
  at::Tensor& sum = windows_[layer];
  if (!sum.defined()) sum = at::zeros({numel}, at::kFloat);
  TW_CHECK(sum.numel() == numel, "L-GreCo: window of layer ", layer, " holds ", sum.numel(),
           " elements, not ", numel);
  return sum;
}

void LayerwisePolicy::clearWindow() {
  for (at::Tensor& sum : windows_) sum = at::Tensor();
  windowSteps_ = 0;
}

LayerwiseSolution LayerwisePolicy::solve(const std::vector<std::vector<int64_t>>& sizes,
                                         const std::vector<std::vector<double>>& errors) const {
  LayerwiseProblem problem{sizes, errors, {}};
  if (options_.measure == LayerwiseErrorMeasure::kSumOfNorms) {
    for (std::vector<double>& row : problem.errors) {
      for (double& e : row) e = std::sqrt(std::max(0.0, e));
    }
  }
  for (const LayerwiseCandidates& c : layers_) problem.defaults.push_back(c.defaultIndex);
  return solveLayerwise(problem, {.alpha = options_.alpha, .buckets = options_.buckets}, choice_);
}

void LayerwisePolicy::apply(const std::vector<size_t>& choice, const LayerwiseReport& report) {
  TW_CHECK(choice.size() == layers_.size(), "L-GreCo: choice of ", choice.size(), " layers for ",
           layers_.size());
  for (size_t l = 0; l < choice.size(); ++l) {
    TW_CHECK(choice[l] < layers_[l].values.size(), "L-GreCo: choice ", choice[l], " of layer ", l,
             " out of range");
  }
  choice_ = choice;
  report_ = report;
}

StateDict LayerwisePolicy::state() const {
  StateDict state;
  at::Tensor choice = at::empty({static_cast<int64_t>(choice_.size())}, at::kLong);
  for (size_t l = 0; l < choice_.size(); ++l) {
    choice.data_ptr<int64_t>()[l] = static_cast<int64_t>(choice_[l]);
  }
  state["choice"] = choice;
  at::Tensor report = at::empty({7}, at::kDouble);
  double* r = report.data_ptr<double>();
  r[0] = static_cast<double>(report_.solves);
  r[1] = static_cast<double>(report_.lastSolveStep);
  r[2] = report_.feasible ? 1.0 : 0.0;
  r[3] = static_cast<double>(report_.predictedBytes);
  r[4] = static_cast<double>(report_.defaultBytes);
  r[5] = report_.predictedError;
  r[6] = report_.defaultError;
  state["report"] = report;
  state["window_steps"] = scalarTensor(windowSteps_);
  for (size_t l = 0; l < windows_.size(); ++l) {
    if (windows_[l].defined()) state["window." + std::to_string(l)] = windows_[l].clone();
  }
  return state;
}

void LayerwisePolicy::loadState(const StateDict& state) {
  if (state.find("choice") == state.end()) return;
  const at::Tensor choice = state.at("choice").to(at::kLong).contiguous();
  if (choice.numel() != static_cast<int64_t>(layers_.size())) {
    TW_THROW(DataError, "L-GreCo state: choice of ", choice.numel(), " layers, this run has ",
             layers_.size());
  }
  std::vector<size_t> restored;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const int64_t c = choice.data_ptr<int64_t>()[l];
    if (c < 0 || c >= static_cast<int64_t>(layers_[l].values.size())) {
      TW_THROW(DataError, "L-GreCo state: choice ", c, " of layer ", l, " out of range");
    }
    restored.push_back(static_cast<size_t>(c));
  }
  const at::Tensor report = requireEntry(state, "report").to(at::kDouble).contiguous();
  if (report.numel() != 7) TW_THROW(DataError, "L-GreCo state: report has ", report.numel());
  const double* r = report.data_ptr<double>();
  std::vector<at::Tensor> windows(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    auto found = state.find("window." + std::to_string(l));
    if (found != state.end()) windows[l] = found->second.to(at::kFloat).contiguous().clone();
  }
  choice_ = std::move(restored);
  report_.solves = static_cast<int64_t>(r[0]);
  report_.lastSolveStep = static_cast<int64_t>(r[1]);
  report_.feasible = r[2] != 0;
  report_.predictedBytes = static_cast<int64_t>(r[3]);
  report_.defaultBytes = static_cast<int64_t>(r[4]);
  report_.predictedError = r[5];
  report_.defaultError = r[6];
  windowSteps_ = requireEntry(state, "window_steps").item<int64_t>();
  windows_ = std::move(windows);
}

}  // namespace thinwire::compressors

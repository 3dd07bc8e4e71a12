// File: compressors/layerwise_policy.h
//
// Layer-wise compression settings (ARCHITECTURE §2 step 3, specs/compressors.md §4): either the
// uniform default of the config for every layer, or L-GreCo (Alimohammadi et al., MLSys 2024),
// which re-chooses one parameter per compressed layer — the top-k density, the quantizer's bits
// or the PowerSGD rank — so that the total compressed size is minimal while the total squared
// compression error stays within alpha times that of the uniform default:
//
//   minimise sum_l S_l(c_l)   subject to   sum_l E_l(c_l) <= alpha * sum_l E_l(default_l)
//
// with S_l(c) the payload bytes and E_l(c) = ||C_c(G_l) - G_l||^2 measured on G_l, the sum of
// the error-feedback-compensated gradients (what the compressor is given) of the last `window`
// steps before a solve. The discretised knapsack DP is solveLayerwise(), usable alone (Note
// [L-GreCo DP]). LayerwiseErrorMeasure::kSumOfNorms uses E_l(c) = ||C_c(G_l) - G_l|| instead, as
// the reference code sums unsquared norms (specs §4.1 pitfall); only for comparisons with it.
// LayerwiseErrorMeasure::kRelative uses E_l(c) = ||C_c(G_l) - G_l||^2 / ||G_l||^2, so that every
// layer's error counts in proportion to its own gradient, whatever that gradient's scale.
//
// This file provides the pieces; CompressionEngine wires them into a training step (Note
// [L-GreCo protocol] in compression_engine.cc): it feeds the window, measures the tables on rank 0,
// runs solve(), broadcasts the choice and applies it at the same step on every rank.
//
// Ownership: LayerwisePolicy owns its window buffers (float32, one per participating layer, on the
// rank that accumulates) and the current choice.
// Threading: not synchronised. The engine touches a layer's window buffer from the thread that
// encodes (or exchanges) that layer, and everything else between steps.
//
// Example:
//   LayerwiseProblem problem{.sizes = {{10, 20}, {10, 20}}, .errors = {{4, 1}, {9, 2}},
//                            .defaults = {1, 1}};
//   LayerwiseSolution best = solveLayerwise(problem, {.alpha = 3.0}, /*previous=*/{1, 1});
//   // best.choice == {0, 1}: 30 bytes at error 6 <= 3 * (1 + 2)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/state_dict.h"

namespace thinwire::compressors {

// ---------------------------------------------------------------------------------------------
// The solver.

// Per participating layer l and candidate c: payload bytes sizes[l][c] >= 0 and squared error
// errors[l][c] >= 0; defaults[l] is the uniform default's candidate index.
struct LayerwiseProblem {
  std::vector<std::vector<int64_t>> sizes;
  std::vector<std::vector<double>> errors;
  std::vector<size_t> defaults;
};

struct LayerwiseSolverOptions {
  double alpha = 1.0;       // error budget as a multiple of the uniform default's error, > 0
  int64_t buckets = 10000;  // B: error units the budget is cut into, >= 1
};

struct LayerwiseSolution {
  bool feasible = false;       // false: nothing fits the budget; `choice` is `previous`
  std::vector<size_t> choice;  // candidate index per layer
  int64_t size = 0;            // sum of sizes of `choice`
  double error = 0;            // sum of errors of `choice`
  int64_t defaultSize = 0;     // sum of sizes of the defaults
  double defaultError = 0;     // sum of errors of the defaults
  double target = 0;           // alpha * defaultError
  double slack = 0;            // L * target / B: what discretisation may add to the target
};

// Blocking, pure. Solves the discretised problem of Note [L-GreCo DP]: w = target / B, integer
// cost q = ceil(E / w), capacity B + L, minimise the total size over configurations whose total
// cost is at most the capacity (ties: the smaller total cost, then the lower candidate indices).
// Every configuration with total error <= target fits, so with alpha >= 1 the defaults always
// fit and the result is never larger than the defaults; the result's total error is at most
// target + slack. A zero target admits only zero-error candidates. When nothing fits (alpha < 1
// can do that), returns feasible = false with `previous` as the choice (`previous` empty: the
// defaults). Throws InvalidArgument for mismatched or empty tables, a negative or non-finite
// size or error, a default or previous index out of range, alpha <= 0 or buckets < 1.
LayerwiseSolution solveLayerwise(const LayerwiseProblem& problem,
                                 const LayerwiseSolverOptions& options,
                                 const std::vector<size_t>& previous);

// ---------------------------------------------------------------------------------------------
// Error tables.

// Blocking, pure. Squared errors of the best rank-r approximations of `matrix` (rows x cols,
// float32 CPU) for r = 0..maxRank, estimated in a subspace of dimension min(maxRank, rows, cols)
// found by `iterations` subspace (power) iterations from the N(0,1) start PowerSgd::freshQ draws
// for `seed`: err[r] = ||G||^2 - sum_{j<r} s_j^2 with s_j the singular values of P^T G, P an
// orthonormal basis of that subspace. Exact (up to rounding) once the subspace holds the top
// singular vectors; never below the exact SVD error. err[r] = 0 for r >= rank(G). Throws
// InvalidArgument for a non-matrix, maxRank < 0 or iterations < 1.
std::vector<double> lowRankErrors(const at::Tensor& matrix,
                                  int64_t maxRank,
                                  int64_t iterations,
                                  uint64_t seed);

// ---------------------------------------------------------------------------------------------
// The policy.

enum class LayerwiseKind { kUniform, kLGreco };

// What the budget sums per layer: squared errors (the model-wide squared norm; the default),
// unsquared norms (the reference code's measure, for parity) or squared errors relative to the
// layer's squared window norm (kRelative; the engine divides when it measures, Note [Relative
// error] in compression_engine.cc).
enum class LayerwiseErrorMeasure { kSquared, kSumOfNorms, kRelative };

// Parses "squared" | "sum_of_norms" | "relative"; throws InvalidArgument otherwise.
LayerwiseErrorMeasure parseLayerwiseErrorMeasure(const std::string& name);

// What the window sums per layer before a solve. kCompensated: the error-feedback-compensated
// gradient g_t + e_t of every window step (specs §4.2, the reference code); a layer whose
// residual e has grown counts that backlog once per window step. kDemand: the backlog once, at
// the window's first step, plus the gradients g_t of every step: what the layer has to send over
// the window (Note [Window sum] in compression_engine.cc).
enum class LayerwiseWindowSum { kCompensated, kDemand };

// Parses "compensated" | "demand"; throws InvalidArgument otherwise.
LayerwiseWindowSum parseLayerwiseWindowSum(const std::string& name);

// Parses "uniform" | "lgreco"; throws InvalidArgument otherwise.
LayerwiseKind parseLayerwiseKind(const std::string& name);

// The parameter a family re-chooses per layer.
enum class LayerwiseFamily {
  kTopK,      // kept fraction (LayerParams::ratio)
  kQuantize,  // bits per element (LayerParams::bits)
  kLowRank,   // PowerSGD rank (LayerMethod::lowRank)
};

struct LayerwisePolicyOptions {
  LayerwiseKind kind = LayerwiseKind::kUniform;
  double alpha = 1.0;  // error budget relative to the uniform default, > 0
  LayerwiseErrorMeasure measure = LayerwiseErrorMeasure::kSquared;
  int64_t window = 10;  // steps accumulated before each solve, >= 1
  LayerwiseWindowSum windowSum = LayerwiseWindowSum::kCompensated;
  int64_t warmupSteps = 100;  // first solve at this step; >= window (+ the engine's startStep)
  int64_t adjustEvery = 100;  // re-solve period in steps, >= window
  int64_t buckets = 10000;    // DP resolution B
  // top-k candidates: default * densityFactor^j for j = -densitySteps..densitySteps, capped at 1
  double densityFactor = 2.0;
  int64_t densitySteps = 3;
  std::vector<int64_t> bits = {2, 3, 4, 5, 6, 7, 8};  // quantize candidates, each in [2, 8]
  // PowerSGD candidates: every rank in [max(1, floor(rankLow * r0)), ceil(rankHigh * r0)]
  double rankLow = 0.5;
  double rankHigh = 2.0;
  int64_t errorIterations = 5;  // PowerSGD: subspace iterations of lowRankErrors()
};

// One participating layer: its family and candidate values (density, bits or rank), ascending,
// with the uniform default among them.
struct LayerwiseCandidates {
  LayerwiseFamily family = LayerwiseFamily::kTopK;
  std::vector<double> values;
  size_t defaultIndex = 0;
};

// The candidate set of one layer of `family` whose uniform default is `defaultValue`, per the
// options above (the default is always included; bits outside [2, 8] throw InvalidArgument).
LayerwiseCandidates layerwiseCandidates(LayerwiseFamily family,
                                        double defaultValue,
                                        const LayerwisePolicyOptions& options);

// "ratio=0.0025", "bits=3", "rank=2".
std::string describeSetting(LayerwiseFamily family, double value);

// What the last solve decided, for metrics (identical on every rank: the solver's rank
// broadcasts it with the choice).
struct LayerwiseReport {
  int64_t solves = 0;          // solves so far (0: the uniform defaults are in force)
  int64_t lastSolveStep = -1;  // step at which the last choice took effect
  bool feasible = true;        // false: the last solve kept the previous choice
  int64_t predictedBytes = 0;  // payload bytes per step of the chosen candidates, on the window
  int64_t defaultBytes = 0;    // the same for the uniform defaults
  double predictedError = 0;   // total error of the choice on the window (options' measure)
  double defaultError = 0;     // total error of the defaults on the window (options' measure)
};

class LayerwisePolicy {
 public:
  // `layers`: the participating layers in a fixed order (the same on every rank). Throws
  // InvalidArgument for out-of-range options or a candidate set without its default.
  LayerwisePolicy(LayerwisePolicyOptions options, std::vector<LayerwiseCandidates> layers);

  const LayerwisePolicyOptions& options() const { return options_; }
  bool adaptive() const { return options_.kind == LayerwiseKind::kLGreco; }
  size_t size() const { return layers_.size(); }
  const LayerwiseCandidates& candidates(size_t layer) const { return layers_[layer]; }

  // True when a new choice takes effect at the start of `step`: step >= warmupSteps and
  // (step - warmupSteps) % adjustEvery == 0. Never for the uniform policy.
  bool solvesAt(int64_t step) const;
  // True when `step`'s compensated gradients belong to the window of the next solve (one of the
  // `window` steps before it).
  bool accumulatesAt(int64_t step) const;

  // The window sum of `layer` (zeros of `numel` elements at the first call after a clear):
  // add this step's compensated gradient to it in place. Throws InvalidArgument when the layer
  // holds a window of another size.
  at::Tensor& window(size_t layer, int64_t numel);
  // Undefined when the layer has not accumulated since the last clear.
  const at::Tensor& windowOf(size_t layer) const { return windows_[layer]; }
  // Steps accumulated since the last clear (the engine counts each step once).
  int64_t windowSteps() const { return windowSteps_; }
  void countWindowStep() { ++windowSteps_; }
  void clearWindow();

  // Solves with `sizes` and squared `errors` (one row per layer, one column per candidate)
  // against the current choice as the fallback; with kSumOfNorms the budget sums their square
  // roots, and the solution's errors are in those units. Does not change the choice: apply() does.
  LayerwiseSolution solve(const std::vector<std::vector<int64_t>>& sizes,
                          const std::vector<std::vector<double>>& errors) const;
  // Makes `choice` current (one index per layer) with its report; throws InvalidArgument for an
  // index out of range.
  void apply(const std::vector<size_t>& choice, const LayerwiseReport& report);

  const std::vector<size_t>& choice() const { return choice_; }
  double value(size_t layer) const { return layers_[layer].values[choice_[layer]]; }
  const LayerwiseReport& report() const { return report_; }

  // Choice, report and window (sums and step count): bit-exact resume. Keys "choice", "report",
  // "window_steps", "window.<layer>".
  StateDict state() const;
  // Restores state(); a state without "choice" (written by a uniform run) leaves the defaults.
  // Throws DataError for a choice of another length or an index out of range.
  void loadState(const StateDict& state);

 private:
  LayerwisePolicyOptions options_;
  std::vector<LayerwiseCandidates> layers_;
  std::vector<size_t> choice_;
  std::vector<at::Tensor> windows_;
  int64_t windowSteps_ = 0;
  LayerwiseReport report_;
};

// Note [L-GreCo DP]
// Errors are real numbers; the DP needs integer costs. With target T = alpha * sum E(default)
// and unit w = T / B, a candidate costs q = ceil(E / w) units. Rounding up over-states each layer
// by less than one unit, so a configuration of true error <= T costs less than B + L units: with
// capacity B + L (not B, the reference code's choice, which can exclude the default itself) every
// configuration within the budget fits, and whatever fits has true error < T + L w (the slack).
// dp[l][b] = minimal size of layers 0..l at total cost exactly b, O(L |C| (B + L)) time, and the
// argmin per cell for the backtrack. An empty last row (every configuration over capacity) keeps
// the previous choice instead of backtracking from an infinite cell.

}  // namespace thinwire::compressors

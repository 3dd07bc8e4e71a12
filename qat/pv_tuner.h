// File: qat/pv_tuner.h
//
// PvTuner: one PV-Tuning optimizer step (Malinovskii et al. 2024; specs/qat.md §2.2,
// docs/pv_tuning.md) over a model whose chosen 2-D weights are held in the scalar group-wise
// representation of qat/pv_quantized.h. The model keeps plain dense parameters W; the tuner
// keeps, per quantized weight, the codes q, the continuous scales s and zeros z, and an fp32
// straight-through buffer B (initialised to D(q, s, z)). After the caller's backward has left
// the (data-parallel averaged) dense gradients G = dL/dW in every parameter's .grad(), step()
// does, in this order:
//   1. chain rule of G through D to dL/ds, dL/dz (codes have no gradient);
//   2. P-step: one Adam step on s, z and every non-quantized parameter;
//      V-proposal: v <- b2 v + (1 - b2) G^2, B <- B - codeLr * G / (sqrt(v / (1 - b2^t)) + eps)
//      (beta1 = 0: no momentum);
//   3. V-step with the updated s, z: W_prev = D(q_old, s_new, z_new), drift d = (B - W_prev)^2
//      per weight, the K = ceil(tau N) weights of largest drift are re-projected,
//      q <- clamp(round(B / s + z)), all others keep their codes bit for bit; an optional trust
//      ratio reverts the tail of the selection (specs §2.2 step 3);
//   4. re-dequantize: W <- D(q_new, s_new, z_new) exactly.
// Methods share this path: kPv as above; kSte re-projects every code each step (tau = 1);
// kPOnly skips the V-proposal and V-step (codes frozen); kRtn changes nothing (the
// round-to-nearest baseline; step() only clears gradients).
//
// Data parallel: every rank holds a PvTuner over its replica and calls step() after the same
// gradient averaging. With a communicator of more than one rank, step() broadcasts rank 0's new
// codes (one uint8 collective), so every rank applies the identical V-step decision even if
// floating-point reductions differed in the last bit.
//
// Ownership: the tuner shares storage with the model's parameters (NamedParameter tensors) and
// owns codes, scales, zeros, buffers and optimizer state; it borrows the communicator.
// Threading: one thread per instance; step() is collective when a communicator is set.
//
// Example:
//   PvTuner tuner(quantizedWeights, otherParameters, {.method = PvMethod::kPv});
//   loss.backward();                 // G in .grad(), averaged across ranks by the caller
//   PvStepStats stats = tuner.step();
//   ASSERT(stats.changedFraction <= 0.01);
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/state_dict.h"
#include "optim/optimizer.h"
#include "qat/pv_quantized.h"

namespace thinwire::comm {
class Communicator;
}  // namespace thinwire::comm

namespace thinwire::qat {

enum class PvMethod {
  kRtn,    // round-to-nearest, no tuning
  kPOnly,  // continuous parameters only, codes frozen
  kSte,    // straight-through: every code re-projected from B each step
  kPv,     // PV-Tuning: at most ceil(tau N) codes re-projected per step
};

// "rtn", "p_only", "ste" or "pv"; InvalidArgument for any other word.
PvMethod pvMethodFromName(const std::string& name);
const char* pvMethodName(PvMethod method);

struct PvTunerOptions {
  PvMethod method = PvMethod::kPv;
  PvScalarGrid grid;            // representation of every quantized weight
  double lr = 3e-4;             // P-step Adam: scales, zeros and the non-quantized parameters
  double beta1 = 0.9;           // P-step Adam
  double beta2 = 0.95;          // P-step Adam
  double eps = 1e-6;            // P-step Adam
  double codeLr = 1e-2;         // V-proposal step size (weight units after RMS normalisation)
  double codeBeta2 = 0.95;      // V-proposal second-moment decay (its beta1 is 0)
  double codeEps = 1e-6;        // V-proposal
  double maxCodeChange = 0.01;  // tau in (0, 1]: fraction of codes eligible per step (kPv)
  double trustRatio = 0.0;      // rho >= 0; 0 = off (specs §2.2 step 3)
  // Borrowed; when set with worldSize > 1, rank 0's codes are broadcast after each V-step.
  comm::Communicator* communicator = nullptr;
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
};

struct PvLayerStats {
  std::string name;
  int64_t codes = 0;     // weights (= code groups) in the layer
  int64_t selected = 0;  // re-projected this step (after the trust ratio)
  int64_t changed = 0;   // codes whose value differs from before the step
};

struct PvStepStats {
  int64_t step = 0;  // 1-based
  int64_t codes = 0, selected = 0, changed = 0;
  double changedFraction = 0;          // changed / codes over the whole model
  double maxLayerChangedFraction = 0;  // the largest per-layer changed / codes
  std::vector<PvLayerStats> layers;
};

// One quantized weight as the tuner holds it.
struct PvLayer {
  std::string name;
  at::Tensor weight;            // the model's dense parameter W (shared storage)
  PvQuantizedWeight quantized;  // codes, and scales/zeros as fp32 leaves with .grad()
  at::Tensor buffer;            // fp32 straight-through buffer B [out, in]
  at::Tensor codeSquare;        // V-proposal second moment v [out, in]
};

class PvTuner {
 public:
  // Quantizes every `quantized` parameter (2-D, fp32) by round-to-nearest and writes
  // D(q, s, z) into it in place; `others` are trained by the P-step's Adam. InvalidArgument
  // for an empty quantized list, a bad grid (qat/pv_quantized.h) or tau outside (0, 1].
  PvTuner(std::vector<optim::NamedParameter> quantized,
          std::vector<optim::NamedParameter> others,
          const PvTunerOptions& options);
  ~PvTuner();
  PvTuner(const PvTuner&) = delete;
  PvTuner& operator=(const PvTuner&) = delete;

  // One step as in the banner, reading every parameter's .grad() (undefined = zero) and
  // clearing them afterwards. Blocking; collective when a communicator is set. Throws the
  // communicator's CommError/TimeoutError.
  PvStepStats step();

  const std::vector<PvLayer>& layers() const { return layers_; }
  const PvTunerOptions& options() const { return options_; }
  int64_t steps() const { return steps_; }

  // The quantized model: per layer "<name>.codes" (uint8), ".scales", ".zeros" (fp32), plus
  // every non-quantized parameter under its own name. Tensors are clones.
  StateDict exportState() const;

 private:
  // The indices (into the flattened weight) whose codes are re-projected this step, sorted by
  // decreasing drift, or an undefined tensor for "all".
  at::Tensor selectForProjection(const PvLayer& layer, const at::Tensor& previous) const;
  void agreeOnCodes();

  PvTunerOptions options_;
  std::vector<PvLayer> layers_;
  std::vector<optim::NamedParameter> others_;
  std::unique_ptr<optim::Optimizer> adam_;
  int64_t steps_ = 0;
};

// ceil(tau * n), at least 1 and at most n: the V-step's change budget.
int64_t pvChangeBudget(double tau, int64_t n);

// The selected indices after the trust ratio rho (specs §2.2 step 3): `order` lists candidate
// indices by decreasing drift, `delta` their squared change ||D(q_new)_j - W_prev,j||^2 in the
// same order; keeps the first 1 + #{prefixes whose cumulative norm sqrt(sum delta) is below
// rho * previousNorm} (at least one). rho = 0 keeps all. Pure.
at::Tensor applyTrustRatio(const at::Tensor& order,
                           const at::Tensor& delta,
                           double rho,
                           double previousNorm);

}  // namespace thinwire::qat

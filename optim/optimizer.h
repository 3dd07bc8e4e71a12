// File: optim/optimizer.h
//
// The parameter-update interface and its factory. An Optimizer owns its per-parameter state
// (momentum, Adam moments) and updates the parameters it was handed, in place, from their
// `.grad()`; it never touches communication unless its syncMode() says it owns it.
//
// Ownership: the optimizer holds (shared-storage) references to the parameter tensors; the model
// keeps owning them. State tensors are owned by the optimizer and exposed through state().
//
// Threading: one thread per optimizer.
//
// Example:
//   std::unique_ptr<Optimizer> opt = makeOptimizer(namedParameters(model), options);
//   loss.backward();                 // fills .grad()
//   opt->step(schedule.lrAt(step));  // in-place update under no-grad
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/state_dict.h"

namespace thinwire::comm {
class Communicator;
}  // namespace thinwire::comm

namespace thinwire::optim {

struct NamedParameter {
  std::string name;
  at::Tensor tensor;  // a leaf that requires grad; shares storage with the model's parameter
};

// Who communicates gradients. kTrainerAverages: the trainer averages gradients across ranks
// before step(). kOptimizerOwned: the trainer skips gradient communication and step() runs the
// optimizer's own collectives (1-bit Adam after its warm-up).
enum class SyncMode { kTrainerAverages, kOptimizerOwned };

enum class OptimizerKind { kSgd, kAdam, kAdamW, kOneBitAdam };

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kSgd;
  double momentum = 0.0;     // SGD: heavy-ball factor in [0, 1)
  bool nesterov = false;     // SGD: Nesterov momentum (needs momentum > 0)
  double weightDecay = 0.0;  // SGD/Adam: L2 added to the gradient; AdamW: decoupled decay
  double beta1 = 0.9;        // Adam/AdamW
  double beta2 = 0.999;      // Adam/AdamW
  double eps = 1e-8;         // Adam/AdamW/1-bit Adam
  // 1-bit Adam (optim/one_bit_adam.h): Adam steps before the variance is frozen (>= 1).
  int64_t freezeStep = 100000;
  bool biasCorrection = true;  // 1-bit Adam: torch-style bias correction (see one_bit_adam.h)
  bool momentumMask = true;    // 1-bit Adam: never-updated elements stay out of the compression
  bool preconditioned = true;  // 1-bit Adam: compress m / (sqrt(v) + eps), not m (one_bit_adam.h)
  // 1-bit Adam: the group its compressed momentum allreduce runs on (borrowed, must outlive the
  // optimizer; required for kOneBitAdam, ignored by the others), and the bound on each wait.
  comm::Communicator* communicator = nullptr;
  std::chrono::milliseconds commTimeout{std::chrono::seconds(300)};
};

// Bytes an optimizer that owns communication (SyncMode::kOptimizerOwned) sent since construction.
struct OptimizerCommStats {
  int64_t bytesSent = 0;  // payload bytes handed to the communicator
  int64_t wireBytes = 0;  // bytes this rank sent on the wire (ring formulas, specs §0)
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Updates every parameter in place from its .grad() with learning rate `lr`. Parameters whose
  // .grad() is undefined are skipped (their state does not advance). Blocking.
  virtual void step(double lr) = 0;

  // Updates only the parameters at `indices` (positions in the list the optimizer was built
  // with), exactly as step(lr) would update them: per-parameter optimizers give bit-identical
  // results whether a step runs whole or in parts, as long as each parameter is updated once per
  // step. The trainer uses it to update a gradient bucket's parameters while later buckets are
  // still being reduced (Note [Optimizer overlap] in core/trainer.h). Returns false, updating
  // nothing, when the optimizer cannot step in parts (it couples parameters).
  virtual bool stepParameters(double lr, const std::vector<size_t>& indices) { return false; }

  // Who communicates gradients for the NEXT step(): asked by the trainer before every step's
  // backward; may change between steps (1-bit Adam switches after its warm-up), identically on
  // every rank.
  virtual SyncMode syncMode() const { return SyncMode::kTrainerAverages; }

  // What the optimizer's own collectives sent so far (zero for optimizers that own none).
  virtual OptimizerCommStats commStats() const { return {}; }

  // Complete state for bit-exact resume (tensors are clones, safe to keep).
  virtual StateDict state() const = 0;
  // Restores a state() from the same optimizer kind and parameter set; throws DataError when an
  // entry is missing or has another shape.
  virtual void loadState(const StateDict& state) = 0;

  // State that differs between ranks (1-bit Adam's error buffers), saved per rank next to
  // state(), which is identical on every rank and saved once. Empty by default.
  virtual StateDict rankState() const { return {}; }
  // Restores a rankState() of this rank; an empty dict resets that state. Throws DataError for a
  // malformed entry.
  virtual void loadRankState(const StateDict& /*state*/) {}

  virtual std::string name() const = 0;
};

// Builds the optimizer `options.kind` names over `parameters`. Throws InvalidArgument for an
// out-of-range option (e.g. nesterov without momentum, 1-bit Adam without a communicator).
std::unique_ptr<Optimizer> makeOptimizer(std::vector<NamedParameter> parameters,
                                         const OptimizerOptions& options);

// Parses "sgd" | "adam" | "adamw" | "onebit_adam".
OptimizerKind parseOptimizerKind(const std::string& name);

}  // namespace thinwire::optim

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

#include <memory>
#include <string>
#include <vector>

#include "base/state_dict.h"

namespace thinwire::optim {

struct NamedParameter {
  std::string name;
  at::Tensor tensor;  // a leaf that requires grad; shares storage with the model's parameter
};

// Who communicates gradients. kTrainerAverages: the trainer averages gradients across ranks
// before step(). kOptimizerOwned: the trainer skips gradient communication and step() runs the
// optimizer's own collectives (1-bit Adam after its warm-up).
enum class SyncMode { kTrainerAverages, kOptimizerOwned };

enum class OptimizerKind { kSgd, kAdam, kAdamW };

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kSgd;
  double momentum = 0.0;     // SGD: heavy-ball factor in [0, 1)
  bool nesterov = false;     // SGD: Nesterov momentum (needs momentum > 0)
  double weightDecay = 0.0;  // SGD/Adam: L2 added to the gradient; AdamW: decoupled decay
  double beta1 = 0.9;        // Adam/AdamW
  double beta2 = 0.999;      // Adam/AdamW
  double eps = 1e-8;         // Adam/AdamW
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

  virtual SyncMode syncMode() const { return SyncMode::kTrainerAverages; }

  // Complete state for bit-exact resume (tensors are clones, safe to keep).
  virtual StateDict state() const = 0;
  // Restores a state() from the same optimizer kind and parameter set; throws DataError when an
  // entry is missing or has another shape.
  virtual void loadState(const StateDict& state) = 0;

  virtual std::string name() const = 0;
};

// Builds the optimizer `options.kind` names over `parameters`. Throws InvalidArgument for an
// out-of-range option (e.g. nesterov without momentum).
std::unique_ptr<Optimizer> makeOptimizer(std::vector<NamedParameter> parameters,
                                         const OptimizerOptions& options);

// Parses "sgd" | "adam" | "adamw".
OptimizerKind parseOptimizerKind(const std::string& name);

}  // namespace thinwire::optim

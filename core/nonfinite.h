// File: core/nonfinite.h
//
// The non-finite gradient policy (train.nonfinite): after backward, and before any compressor,
// error-feedback or optimizer state sees the step's gradients, every rank tests its own gradients
// for NaN/Inf and the ranks agree on the result with one small allreduce, so all of them take the
// same decision on the same step: `skip` drops the step everywhere (no state changes), `stop`
// makes every rank throw NonFiniteGradientError naming the step and the ranks that saw it.
// See Note [Non-finite gradients] for where GradSync runs the check.
//
// Ownership: free functions; nothing is kept. Threading: agreeOnNonFinite() is a collective and
// follows the communicator's rules (one issuing thread, same order on every rank).
//
// Example:
//   const bool local = !allFinite(gradients);
//   const std::vector<int> ranks = agreeOnNonFinite(comm, local, timeout);
//   if (!ranks.empty() && policy == NonFinitePolicy::kStop)
//     throw NonFiniteGradientError(nonFiniteMessage(step, ranks));
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "comm/communicator.h"

namespace thinwire::core {

enum class NonFinitePolicy {
  kStop,  // every rank throws NonFiniteGradientError (the default)
  kSkip,  // the step is dropped on every rank: no optimizer, feedback or compressor update
  kOff,   // no check (NaN/Inf reach the optimizer and feedback state)
};

// Parses "stop" | "skip" | "off"; InvalidArgument naming the value otherwise.
NonFinitePolicy parseNonFinitePolicy(const std::string& name);
std::string toString(NonFinitePolicy policy);

// Thrown on every rank, with the same text, when the policy is kStop. An Error (not a CommError):
// the ranks agreed on it, so the communicator is still consistent and nobody needs to abort.
class NonFiniteGradientError : public Error {
 public:
  using Error::Error;
};

// True when every element of every defined tensor is finite. Undefined tensors count as finite.
// Blocking, reads only.
bool allFinite(const std::vector<at::Tensor>& tensors);

// Collective (one allreduce of worldSize floats, waited for with `timeout`): every rank passes
// whether it saw a non-finite value; every rank gets the sorted list of the ranks that did
// (empty: all finite). Throws the communicator's CommError/TimeoutError.
std::vector<int> agreeOnNonFinite(comm::Communicator& comm,
                                  bool localNonFinite,
                                  std::chrono::milliseconds timeout);

// "non-finite gradient (NaN or Inf) at step 12 on rank 1 (train.nonfinite: stop)"; `step` is
// 1-based, as in the metrics.
std::string nonFiniteMessage(int64_t step, const std::vector<int>& ranks, NonFinitePolicy policy);

// Note [Non-finite gradients]
// The check must see every gradient before anything stateful does. Plain buckets are tested by
// GradSync as they are filled (before their allreduce starts; an allreduce has no state), and the
// agreement's allreduce is issued before the buckets that finish() launches. A compression
// engine's encode() updates error-feedback memories, so with an engine and the check on, GradSync
// launches no bucket during backward: finish() tests all buckets, agrees, and only then encodes
// (or, on a skipped step, encodes nothing). That costs the encode/backward overlap of compressed
// runs; `train.nonfinite: off` restores it. Per-bucket optimizer steps (Note [Optimizer overlap])
// start only after the agreement.
}  // namespace thinwire::core

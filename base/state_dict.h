// File: base/state_dict.h
//
// `StateDict`: named tensors that together are the state of one component (model, optimizer,
// schedule, error-feedback memory, RNG). Checkpoints store one StateDict per component; keys
// are dotted paths ("layers.0.weight", "momentum.layers.0.weight", "step").
//
// Ownership: the map owns its tensors (shared storage, as at::Tensor always is); clone before
// mutating a tensor that a live component still uses.
//
// Example:
//   StateDict state;
//   state["step"] = scalarTensor(int64_t{42});
//   int64_t step = state.at("step").item<int64_t>();
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

namespace thinwire {

using StateDict = std::map<std::string, at::Tensor>;

// Inserts every entry of `from` into `into` under "<prefix>.<key>".
void mergeWithPrefix(StateDict& into, const StateDict& from, const std::string& prefix);

// The entries of `from` whose key starts with "<prefix>.", with the prefix removed.
StateDict extractPrefix(const StateDict& from, const std::string& prefix);

// A 1-element int64 or float64 CPU tensor, for counters and scalars inside a StateDict.
at::Tensor scalarTensor(int64_t value);
at::Tensor scalarTensor(double value);

// Looks up `key`; throws DataError ("checkpoint lacks '<key>'") when it is missing.
const at::Tensor& requireEntry(const StateDict& state, const std::string& key);

}  // namespace thinwire

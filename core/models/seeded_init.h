// File: core/models/seeded_init.h
//
// Deterministic parameter initialisation from a seed, independent of libtorch's global RNG and
// of its version: every parameter is overwritten with values from its own SeededRandom stream
// (core/data/seeded_random.h), keyed by (seed, parameter name). The bounds follow libtorch's
// defaults for Linear and Conv (kaiming_uniform with a = sqrt(5)): a weight with fan-in F, and
// the bias next to it, are drawn uniformly from [-1/sqrt(F), 1/sqrt(F)).
//
// Ownership: modifies the module's parameters in place; keeps no reference.
// Threading: call before the module is shared.
//
// Example:
//   auto model = std::make_shared<Mlp>(options);
//   initParametersFromSeed(*model, /*seed=*/42);   // same seed -> bit-identical weights
#pragma once

#include <torch/nn/module.h>

#include <cstdint>

namespace thinwire::core {

// Overwrites every parameter of `module` (recursively) as described above. Names must follow
// "<prefix>.weight" / "<prefix>.bias"; a bias without a weight of >= 2 dimensions under the same
// prefix, or any other parameter name, throws InvalidArgument. Blocking; in place, without
// recording autograd history.
void initParametersFromSeed(torch::nn::Module& module, uint64_t seed);

}  // namespace thinwire::core

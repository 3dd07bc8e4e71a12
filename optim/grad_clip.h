// File: optim/grad_clip.h
//
// Gradient-norm clipping over a set of parameters (torch.nn.utils.clip_grad_norm_ semantics):
// the global L2 norm over every defined .grad() is computed in double precision and, when it
// exceeds `maxNorm`, every gradient is scaled in place by maxNorm / (norm + 1e-6).
//
// Threading: one thread; modifies the parameters' .grad() in place.
//
// Example:
//   double norm = clipGradientNorm(parameters, 1.0);   // norm before clipping
#pragma once

#include <vector>

#include "optim/optimizer.h"

namespace thinwire::optim {

// Returns the global norm before clipping. maxNorm must be > 0 (InvalidArgument otherwise).
double clipGradientNorm(std::vector<NamedParameter>& parameters, double maxNorm);

}  // namespace thinwire::optim

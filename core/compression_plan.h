// File: core/compression_plan.h
//
// Turns the `compression:` section of a Config (with its per-layer overrides) into the options of
// a compressors::CompressionEngine for a model's parameters: which tensors are compressed and
// how, which go uncompressed (small or 1-D), and the engine-wide settings (start step, error
// sampling, cost model, seeds). A pure function of the config and the parameter shapes, so every
// rank derives the same plan.
//
// Example:
//   if (compressionEnabled(config)) {
//     CompressionEngine engine(layerSpecs(parameters), comm,
//                              compressionPlan(config, parameters, timeout));
//   }
#pragma once

#include <chrono>
#include <vector>

#include "compressors/compression_engine.h"
#include "core/config.h"
#include "optim/optimizer.h"

namespace thinwire::core {

// True when gradients go through the compression engine: compression.method is not `none` (in the
// section or in any override) and comm.gradient_sync is on.
bool compressionEnabled(const Config& config);

// One LayerSpec per parameter, in the same order.
std::vector<compressors::LayerSpec> layerSpecs(
    const std::vector<optim::NamedParameter>& parameters);

// The method of one parameter under its resolved settings `settings` (compressionFor()).
compressors::LayerMethod layerMethod(const CompressionConfig& settings,
                                     const at::Tensor& parameter);

// Engine options for `parameters` under `config`. Throws ConfigError when no parameter ends up
// compressed although compression was asked for (every tensor below compression.min_numel).
compressors::CompressionEngineOptions compressionPlan(
    const Config& config,
    const std::vector<optim::NamedParameter>& parameters,
    std::chrono::milliseconds timeout);

}  // namespace thinwire::core

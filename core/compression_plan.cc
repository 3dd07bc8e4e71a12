#include "core/compression_plan.h"

#include <ATen/core/Tensor.h>

#include "base/error.h"

namespace thinwire::core {

using compressors::LayerMethod;

bool compressionEnabled(const Config& config) {
  if (!config.comm.gradientSync) return false;
  if (config.compression.method != "none") return true;
  for (const std::string& entry : config.compression.overrides) {
    if (entry.find("method=") != std::string::npos &&
        entry.find("method=none") == std::string::npos) {
      return true;
    }
  }
  return false;
}

std::vector<compressors::LayerSpec> layerSpecs(
    const std::vector<optim::NamedParameter>& parameters) {
  std::vector<compressors::LayerSpec> specs;
  for (const auto& p : parameters) {
    specs.push_back(
        {p.name, std::vector<int64_t>(p.tensor.sizes().begin(), p.tensor.sizes().end())});
  }
  return specs;
}

LayerMethod layerMethod(const CompressionConfig& settings, const at::Tensor& parameter) {
  LayerMethod method;
  const bool small = parameter.numel() < settings.minNumel;
  const bool vector = parameter.dim() <= 1 && !settings.compressVectors;
  if (settings.method == "none" || small || vector) return method;  // dense
  if (settings.method == "powersgd") {
    method.route = LayerMethod::Route::kLowRank;
    method.lowRank = static_cast<int>(settings.rank);
    return method;
  }
  method.route = LayerMethod::Route::kCompressed;
  compressors::CompressorOptions& c = method.compressor;
  c.kind = compressors::parseCompressorKind(settings.method);
  c.sampledThreshold = settings.selection == "sampled";
  c.sampleRatio = settings.sampleRatio;
  c.fp16Values = settings.fp16Values;
  c.scaleRandomK = settings.scaleRandomK;
  c.signChunk = settings.signChunk;
  c.quantizeBucket = settings.quantizeBucket;
  c.stochasticRounding = settings.stochasticRounding;
  method.params.ratio = settings.ratio;
  method.params.bits = static_cast<int>(settings.bits);
  compressors::FeedbackOptions& f = method.feedback;
  f.kind = compressors::parseFeedbackKind(settings.feedback);
  f.stepUnits = settings.stepUnits;
  f.eta = settings.eta;
  f.trackingMomentum = settings.trackingMomentum;
  f.momentum = settings.dgc.momentum;
  f.nesterov = settings.dgc.nesterov;
  f.momentumMasking = settings.dgc.masking;
  f.clipNorm = settings.dgc.clipNorm;
  if (settings.aggregator != "auto") {
    method.aggregator = compressors::parseAggregatorKind(settings.aggregator);
  }
  if (f.kind == compressors::FeedbackKind::kDgc) method.dgcWarmupEpochs = settings.dgc.warmupEpochs;
  return method;
}

compressors::CompressionEngineOptions compressionPlan(
    const Config& config,
    const std::vector<optim::NamedParameter>& parameters,
    std::chrono::milliseconds timeout) {
  compressors::CompressionEngineOptions options;
  const CompressionConfig& base = config.compression;
  bool any = false;
  for (const auto& p : parameters) {
    options.layers.push_back(layerMethod(compressionFor(config, p.name), p.tensor));
    any = any || options.layers.back().route != LayerMethod::Route::kDense;
  }
  if (!any) {
    throw ConfigError("compression.method: " + base.method +
                      " compresses no tensor of this model: every parameter is 1-D or below "
                      "compression.min_numel (" +
                      std::to_string(base.minNumel) + " elements)");
  }
  options.powerSgdWarmStart = base.warmStart;
  options.powerSgdKeepQOnRankChange = base.lgreco.rankChange == "keep";
  options.powerSgdMinCompressionRate = base.minCompressionRate;
  options.costModel.bytesPerSecond = base.linkGbps * 1e9 / 8.0;
  options.costModel.latencySeconds = base.latencyUs * 1e-6;
  options.startStep = base.startStep;
  options.errorEvery = base.errorEvery;
  options.seed = config.run.seed;
  options.timeout = timeout;
  compressors::LayerwisePolicyOptions& layerwise = options.layerwise;
  layerwise.kind = compressors::parseLayerwiseKind(base.policy);
  layerwise.alpha = base.lgreco.alpha;
  layerwise.measure = compressors::parseLayerwiseErrorMeasure(base.lgreco.error);
  layerwise.window = base.lgreco.window;
  layerwise.windowSum = compressors::parseLayerwiseWindowSum(base.lgreco.windowSum);
  layerwise.warmupSteps = base.lgreco.warmupSteps;
  layerwise.adjustEvery = base.lgreco.adjustEvery;
  layerwise.buckets = base.lgreco.buckets;
  layerwise.densityFactor = base.lgreco.densityFactor;
  layerwise.densitySteps = base.lgreco.densitySteps;
  layerwise.bits = base.lgreco.bits;
  layerwise.rankLow = base.lgreco.rankLow;
  layerwise.rankHigh = base.lgreco.rankHigh;
  return options;
}

}  // namespace thinwire::core

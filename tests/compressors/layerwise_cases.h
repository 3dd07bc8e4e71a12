// File: tests/compressors/layerwise_cases.h
//
// L-GreCo engine scenarios shared by the multirank (threads as ranks) and mpi tiers: a small
// model with heterogeneous layers, one CompressionEngine per family (top-k, quantize, PowerSGD)
// with an L-GreCo policy that re-solves every few steps, and the agreement check: after every
// step all ranks hold the same per-layer settings and the same report (allgathered and
// compared on every rank).
//
// Example:
//   runLayerwiseAgreement(comm, LayerwiseFamily::kTopK);   // on every rank of a world
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "compressors/compression_engine.h"
#include "compressors/layerwise_policy.h"
#include "tests/compressors/test_tensors.h"

namespace thinwire::compressors::testing {

inline std::vector<LayerSpec> layerwiseLayers() {
  return {{"w0", {48, 64}}, {"b0", {48}}, {"w1", {32, 48}}, {"w2", {40, 40}}};
}

// Rank r's gradient of layer l at step s. w0: large values at a fixed 1 % of its positions over
// small noise (top-k at 1.25 % loses almost nothing); w1: plain Gaussian noise; w2: close to rank
// 1 (PowerSGD rank 1 loses little). Layers that profit differently from a larger budget.
inline at::Tensor layerwiseGradient(int rank, size_t layer, int64_t step) {
  const std::vector<int64_t> shape = layerwiseLayers()[layer].shape;
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const uint64_t seed = static_cast<uint64_t>(rank) * 100003 + static_cast<uint64_t>(step) * 131 +
                        static_cast<uint64_t>(layer);
  at::Tensor noise = test::gaussian(numel, seed);
  if (layer == 0) {
    const at::Tensor spikes = (test::gaussian(numel, 99).abs() > 2.58f).to(at::kFloat);
    return (spikes * (10.0f + 0.1f * static_cast<float>(rank)) + noise * 0.05f).contiguous();
  }
  if (layer == 3) {
    const at::Tensor u = at::sin(at::arange(shape[0], at::kFloat) * 0.3f + 0.1f * step);
    const at::Tensor v = at::cos(at::arange(shape[1], at::kFloat) * 0.2f + 0.05f * rank);
    return (at::outer(u, v).reshape({-1}) * 4.0f + noise * 0.2f).contiguous();
  }
  return noise;
}

inline CompressionEngineOptions layerwiseOptions(LayerwiseFamily family) {
  CompressionEngineOptions options;
  LayerMethod method;
  switch (family) {
    case LayerwiseFamily::kTopK:
      method.route = LayerMethod::Route::kCompressed;
      method.compressor.kind = CompressorKind::kTopK;
      method.params.ratio = 0.05;
      method.aggregator = AggregatorKind::kAllgather;
      break;
    case LayerwiseFamily::kQuantize:
      method.route = LayerMethod::Route::kCompressed;
      method.compressor.kind = CompressorKind::kQuantize;
      method.compressor.quantizeBucket = 64;
      method.params.bits = 4;
      method.aggregator = AggregatorKind::kTwoPhase;
      break;
    case LayerwiseFamily::kLowRank:
      method.route = LayerMethod::Route::kLowRank;
      method.lowRank = 2;
      break;
  }
  method.feedback.kind = FeedbackKind::kEf;
  options.layers = {method, LayerMethod{}, method, method};
  options.startStep = 1;
  options.seed = 11;
  options.layerwise.kind = LayerwiseKind::kLGreco;
  options.layerwise.alpha = 1.0;
  options.layerwise.window = 3;
  options.layerwise.warmupSteps = 6;  // solves at 6, 10, 14, ...; windows 3-5, 7-9, 11-13
  options.layerwise.adjustEvery = 4;
  options.layerwise.densitySteps = 2;
  return options;
}

// The number after '=' of a setting such as "ratio=0.0125", as int64 bits of the double.
inline int64_t settingBits(const std::string& setting) {
  const double value = std::stod(setting.substr(setting.find('=') + 1));
  int64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// Runs `steps` steps of the family's engine on this rank and, after every step, checks that all
// ranks hold the same settings and report. Returns the number of solves seen.
inline int64_t runLayerwiseAgreement(comm::Communicator& comm,
                                     LayerwiseFamily family,
                                     int64_t steps = 16) {
  CompressionEngine engine(layerwiseLayers(), comm, layerwiseOptions(family));
  EXPECT_TRUE(engine.adaptive());
  bool changed = false;
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<at::Tensor> grads;
    std::vector<size_t> ids;
    for (size_t l = 0; l < engine.layers().size(); ++l) {
      grads.push_back(layerwiseGradient(comm.rank(), l, s));
      ids.push_back(l);
    }
    engine.sync(ids, grads, at::Tensor(), {.step = s, .lr = 0.1, .worldSize = comm.worldSize()});
    const LayerwiseStatus status = engine.layerwiseStatus();
    std::vector<int64_t> mine;
    for (const std::string& setting : status.settings) mine.push_back(settingBits(setting));
    mine.push_back(status.report.solves);
    mine.push_back(status.report.predictedBytes);
    mine.push_back(status.report.defaultBytes);
    double errors[2] = {status.report.predictedError, status.report.defaultError};
    for (double e : errors) {
      int64_t bits = 0;
      std::memcpy(&bits, &e, sizeof bits);
      mine.push_back(bits);
    }
    at::Tensor local = at::tensor(mine, at::kLong);
    at::Tensor all = at::empty({local.numel() * comm.worldSize()}, at::kLong);
    comm.allgather(local, all)->wait(comm::kDefaultTimeout);
    for (int r = 0; r < comm.worldSize(); ++r) {
      EXPECT_TRUE(all.narrow(0, r * local.numel(), local.numel()).equal(local))
          << "step " << s << ": rank " << r << " disagrees with rank " << comm.rank();
    }
    // With alpha = 1 a solve never picks more bytes than the uniform default, and its error stays
    // within the default's plus the discretisation slack.
    if (status.report.solves > 0) {
      EXPECT_LE(status.report.predictedBytes, status.report.defaultBytes);
      EXPECT_LE(status.report.predictedError,
                status.report.defaultError * (1 + 3.0 / 10000) + 1e-12);
      // Fixed-size payloads: what was sent since the solve is what the solve predicted.
      EXPECT_DOUBLE_EQ(status.measuredBytesPerStep,
                       static_cast<double>(status.report.predictedBytes))
          << "step " << s;
    }
    const CompressionEngineOptions defaults = layerwiseOptions(family);
    for (size_t p = 0; p < status.settings.size(); ++p) {
      const LayerwiseCandidates c = layerwiseCandidates(
          family,
          family == LayerwiseFamily::kTopK       ? defaults.layers[0].params.ratio
          : family == LayerwiseFamily::kQuantize ? defaults.layers[0].params.bits
                                                 : defaults.layers[0].lowRank,
          defaults.layerwise);
      changed = changed || status.settings[p] != describeSetting(family, c.values[c.defaultIndex]);
    }
  }
  EXPECT_TRUE(changed) << "no solve moved any layer away from the uniform default";
  return engine.layerwiseStatus().report.solves;
}

}  // namespace thinwire::compressors::testing

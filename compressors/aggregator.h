// File: compressors/aggregator.h
//
// `Aggregator`: how the compressed messages of all ranks become their average on every rank
// (specs/compressors.md §1.3, §2.3, §5.2):
//   - AllreduceAggregator: summable payloads (identity, fp16/bf16, random-k values) are summed by
//     one allreduce and decoded once;
//   - AllgatherAggregator: any payload; every rank receives every rank's payload (allgatherv with
//     variable sizes when the compressor's size depends on the data) and decodes them with a
//     fused scatter-add;
//   - TwoPhaseAggregator: any compressor; each rank compresses one chunk per destination, an
//     all-to-all sends chunk d to rank d, which decodes and averages its chunk of every rank, adds
//     its server error, re-compresses (keeping the new server error) and allgathers the result.
// An aggregator handles a batch of layers at once: their payloads travel in one message per
// collective, so a bucket of layers costs one collective's latency, not one per layer.
//
// chooseAggregator() is the cost model that picks one per layer (Note [Aggregator cost model]).
//
// Ownership: an aggregator owns its per-layer server state (two-phase) and scratch buffers; it
// borrows compressors and the communicator for the duration of run().
// Threading: one thread at a time per aggregator (the thread that issues the collectives).
//
// Example:
//   AllgatherAggregator gather;
//   std::vector<AggregationTask> tasks = {{.layer = 0, .compressor = topk.get(), .params = params,
//                                          .payload = std::move(message), .output = average}};
//   gather.run(tasks, comm, timeout);   // average = mean over ranks of decode(payload)
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/state_dict.h"
#include "comm/communicator.h"
#include "compressors/compressor.h"
#include "compressors/feedback.h"
#include "compressors/payload.h"

namespace thinwire::compressors {

enum class AggregatorKind { kAllreduce, kAllgather, kTwoPhase };

// One layer's part of a collective aggregation.
struct AggregationTask {
  LayerId layer = 0;                 // identifies per-layer aggregator state (two-phase)
  Compressor* compressor = nullptr;  // the compressor that wrote `payload` (borrowed)
  LayerParams params;                // the params it was written with
  Payload payload;                   // this rank's message; two-phase: chunked (Payload::parts)
  at::Tensor output;                 // float32, payload.numel elements: receives the average
  int64_t bytesSent = 0;             // set by run(): bytes this rank sent for this layer
};

class Aggregator {
 public:
  virtual ~Aggregator() = default;

  virtual AggregatorKind kind() const = 0;

  // Blocking, collective: every rank calls run() with the same layers in the same order, each
  // with the same numel, compressor kind and params. On return every task's `output` holds the
  // mean over ranks of the decoded payloads (divided by the world size exactly once; two-phase:
  // of the server's re-compressed chunk averages) and is identical on every rank. Waits at most
  // `timeout` per collective; rethrows the communicator's CommError/TimeoutError. Throws
  // InvalidArgument for a payload this aggregator cannot move (AllreduceAggregator with a
  // non-summable compressor).
  virtual void run(std::vector<AggregationTask>& tasks,
                   comm::Communicator& comm,
                   std::chrono::milliseconds timeout) = 0;

  // Per-rank server state (two-phase error buffers): keys "<layer>.<buffer>".
  virtual StateDict state() const { return {}; }
  virtual void loadState(const StateDict& /*state*/) {}
};

std::unique_ptr<Aggregator> makeAggregator(AggregatorKind kind);

// Blocking, collective: every rank contributes `mine` (the same number of values on every rank);
// returns worldSize * mine.size() values, rank r's at offset r * mine.size(). The aggregators use
// it to agree on payload sizes that depend on the data before a variable-size collective. Waits
// at most `timeout`; rethrows the communicator's CommError/TimeoutError.
std::vector<int64_t> allgatherSizes(const std::vector<int64_t>& mine,
                                    comm::Communicator& comm,
                                    std::chrono::milliseconds timeout);

// Parses "allreduce" | "allgather" | "two_phase".
AggregatorKind parseAggregatorKind(const std::string& name);
std::string toString(AggregatorKind kind);

// Bytes one rank sends to aggregate one layer of `numel` elements with `compressor` and
// `params` over `worldSize` ranks (ring formulas of specs §0 and §6.4; for data-dependent sizes,
// the compressor's maxPayloadBytes()).
int64_t predictedBytesSent(AggregatorKind kind,
                           const Compressor& compressor,
                           int64_t numel,
                           const LayerParams& params,
                           int worldSize);

struct CostModelOptions {
  double latencySeconds = 50e-6;  // alpha: cost of one message round
  double bytesPerSecond = 125e6;  // beta^-1: link bandwidth (default 1 Gbit/s)
};

// The aggregator with the lowest predicted time alpha * rounds + bytes / bandwidth for this
// layer, among those that can move the compressor's payloads. See Note [Aggregator cost model].
AggregatorKind chooseAggregator(const Compressor& compressor,
                                int64_t numel,
                                const LayerParams& params,
                                int worldSize,
                                const CostModelOptions& options = {});

// Note [Aggregator cost model]
// Per rank and layer, with s the payload bytes of the whole tensor and n ranks (specs §0):
//   allreduce (summable only)  2(n-1)/n * s bytes, 2(n-1) rounds
//   allgather                  (n-1) * s bytes,      n-1 rounds (+1 size exchange if variable)
//   two-phase                  (n-1)/n * s (all-to-all) + (n-1)/n * s' (allgather of the
//                              server's re-compressed chunk, s' = s), 2(n-1) rounds
// So a summable payload is allreduced, and a fixed-size non-summable one (sign, quantize) goes
// two-phase for n >= 3. Sparse payloads (top-k, Compressor::isSparse()) are gathered as long as
// (n-1) s stays below a dense float32 allreduce of the tensor (density below about 1/n), although
// two-phase would send fewer bytes: its server re-selects the sum, which is a second, lossy
// compression (measured to cost accuracy, see chooseAggregator()); beyond that break-even the
// gather is worse than not compressing, and two-phase is used.
// With n = 1 nothing is sent and the identity is exact: every method decodes its own payload.

}  // namespace thinwire::compressors

// File: compressors/two_phase_aggregator.h
//
// `TwoPhaseAggregator`: the compressed reduce-scatter + allgather of DeepSpeed's 1-bit Adam
// (specs/compressors.md §2.3, §5.2), for any compressor. Each rank's payload is chunked with
// ChunkedCompressor(inner, n): part d compresses range d = chunkRange(numel, n,
// inner.alignment(params), d). One run(), for all tasks at once:
//   phase 1  one allToAll: rank r sends part d of every task to rank d and receives part r of
//            every rank (byte counts known locally for fixed-size compressors, else an allToAll
//            of the int64 counts first);
//   server   rank r, per task: scratch = sum over ranks s (in order 0..n-1) of decode(part r of
//            s) with alpha 1, then scratch *= 1/n (float32); then the INNER compressor compresses
//            with the server error of (layer, chunk r) as residual and scratch as addend:
//            server_err <- server_err + avg - C(server_err + avg);
//   phase 2  one allgatherv of every rank's re-compressed chunk payloads (counts exchanged by an
//            allgather first when data dependent); each rank zeroes the output and decodes rank
//            d's payload into range d. Every rank decodes the same bytes: identical outputs.
// With n == 1 nothing is sent and the server step is skipped, as in DeepSpeed (which skips
// compression at world size 1): output = decode(payload) exactly and no server error is created.
//
// Task compressor: either the ChunkedCompressor(inner, n) that wrote the payload (its inner()
// re-compresses on the server), or the inner compressor itself with a payload chunked by
// ChunkedCompressor(inner, n). payload.parts must have n entries.
//
// State: the server error of each (layer, chunk r), float32, zero-initialised on first use,
// per rank; state() keys "<layer>.server_error". Checkpointed so resume is bit-exact.
// Wire: bytesSent per task = sum over d != r of parts[d] (phase 1) + (n-1) * bytes of the
// re-compressed chunk r (phase 2), + 2 (n-1) * 8 when sizes are exchanged. Averaged over ranks
// this is 2(n-1)/n * s for fixed-size compressors (predictedBytesSent).
//
// Ownership: owns the server errors and scratch; borrows compressors and the communicator for
// the duration of run().
// Threading: one thread at a time.
//
// Example:
//   ChunkedCompressor chunked(sign, comm.worldSize());
//   chunked.compress(workerError, gradient, 1.0f, message, params);
//   TwoPhaseAggregator twoPhase;
//   std::vector<AggregationTask> tasks = {{.layer = 0, .compressor = &chunked, .params = params,
//                                          .payload = std::move(message), .output = average}};
//   twoPhase.run(tasks, comm, comm::kDefaultTimeout);
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <map>
#include <vector>

#include "base/state_dict.h"
#include "compressors/aggregator.h"

namespace thinwire::compressors {

class TwoPhaseAggregator : public Aggregator {
 public:
  AggregatorKind kind() const override { return AggregatorKind::kTwoPhase; }

  // See Aggregator::run. Blocking, collective. Throws InvalidArgument (before any
  // communication) when payload.parts does not have worldSize entries, a part's size differs
  // from the inner compressor's payloadBytes(), an output is not float32 of payload.numel
  // elements, or a layer's server error was created for another chunk size.
  void run(std::vector<AggregationTask>& tasks,
           comm::Communicator& comm,
           std::chrono::milliseconds timeout) override;

  // Copies of the server errors: "<layer>.server_error" (float32, the chunk's elements).
  StateDict state() const override;
  // Replaces every server error by those in `state` (a state() of this aggregator). Throws
  // DataError on a key that is not "<layer>.server_error" or a tensor that is not float32.
  void loadState(const StateDict& state) override;

 private:
  std::map<LayerId, at::Tensor> serverErrors_;
  std::vector<Payload> serverPayloads_;  // scratch: each task's re-compressed chunk
};

}  // namespace thinwire::compressors

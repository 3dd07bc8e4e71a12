// File: compressors/allgather_aggregator.h
//
// `AllgatherAggregator`: averages payloads of any compressor by giving every rank every rank's
// payload (specs/compressors.md §1.3: GRACE Allgather, DGC). One run():
//   1. the payload bytes of all tasks are concatenated (uint8 view) into one send buffer;
//   2. per-rank byte counts: computed locally when every compressor's payloadBytes() is known;
//      otherwise one allgather of the int64 byte counts of the tasks whose size is data
//      dependent (the others are still computed locally);
//   3. one allgatherv of the buffers;
//   4. per task: output.zero_(), then decompressAdd of rank 0's, 1's, ... payload with alpha 1
//      (a fused scatter-add: colliding sparse indices add up), then output *= 1/n (float32).
//      The /n happens exactly once, after the sum, so the summation order (rank 0..n-1) and
//      the single rounding of the scale make the result identical on every rank, and equal to
//      the allreduce aggregator's for payloads whose sum is exact.
// With n == 1 no collective is issued and the output is decode(payload) exactly.
// Wire: bytesSent = (n-1) * own payload bytes per task, + (n-1) * 8 for a task whose size was
// exchanged.
//
// Chunked payloads (Payload::parts non-empty) are accepted when their size is known: every rank
// then has the same parts, and received payloads get this rank's.
//
// Ownership: borrows compressors and the communicator for the duration of run(); owns its send
// and receive buffers, reused across calls.
// Threading: one thread at a time.
//
// Example:
//   AllgatherAggregator gather;
//   std::vector<AggregationTask> tasks = {{.layer = 0, .compressor = &topk, .params = params,
//                                          .payload = std::move(message), .output = average}};
//   gather.run(tasks, comm, comm::kDefaultTimeout);   // average = mean over ranks of decode
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <vector>

#include "compressors/aggregator.h"

namespace thinwire::compressors {

class AllgatherAggregator : public Aggregator {
 public:
  AggregatorKind kind() const override { return AggregatorKind::kAllgather; }

  // See Aggregator::run. Blocking, collective. Throws InvalidArgument (before any
  // communication) for an output that is not float32 of payload.numel elements, a payload whose
  // size differs from the compressor's payloadBytes(), or a chunked payload of unknown size.
  void run(std::vector<AggregationTask>& tasks,
           comm::Communicator& comm,
           std::chrono::milliseconds timeout) override;

 private:
  at::Tensor sendBuffer_;     // uint8, this rank's payloads back to back
  at::Tensor receiveBuffer_;  // uint8, every rank's send buffer, rank order
};

}  // namespace thinwire::compressors

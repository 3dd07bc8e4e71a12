// File: compressors/allreduce_aggregator.h
//
// `AllreduceAggregator`: averages summable payloads (identity, fp16/bf16 casts, random-k values;
// Compressor::isSummable()) by summing them with one allreduce and decoding the sum once
// (specs/compressors.md §1.3 "Allreduce only for summable payloads").
//
// One run(): the payloads of all tasks are concatenated into one buffer per payload dtype (one
// buffer when every task shares a dtype, the usual case), each buffer is allreduced (kSum) in
// its own dtype, and each task decodes its slice of the sum with alpha = 1/n into its zeroed
// output. The /n is that alpha, applied once. With n == 1 no collective is issued and the
// output is decode(payload) exactly.
// Wire: bytesSent = 2(n-1)/n * payload bytes per task (ring allreduce), integer division.
//
// Ownership: borrows compressors and the communicator for the duration of run(); no state.
// Threading: one thread at a time.
//
// Example:
//   AllreduceAggregator sum;
//   std::vector<AggregationTask> tasks = {{.layer = 0, .compressor = &fp16, .params = params,
//                                          .payload = std::move(message), .output = average}};
//   sum.run(tasks, comm, comm::kDefaultTimeout);   // average = mean over ranks of decode
#pragma once

#include <chrono>
#include <vector>

#include "compressors/aggregator.h"

namespace thinwire::compressors {

class AllreduceAggregator : public Aggregator {
 public:
  AggregatorKind kind() const override { return AggregatorKind::kAllreduce; }

  // See Aggregator::run. Blocking, collective. Throws InvalidArgument (on every rank alike,
  // before any communication) when a task's compressor is not summable, when a payload does not
  // have payload.numel-element output of float32, or when its data is missing for numel > 0.
  void run(std::vector<AggregationTask>& tasks,
           comm::Communicator& comm,
           std::chrono::milliseconds timeout) override;
};

}  // namespace thinwire::compressors

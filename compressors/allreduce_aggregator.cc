#include "compressors/allreduce_aggregator.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "compressors/chunked_compressor.h"

namespace thinwire::compressors {
namespace {

void checkTask(const AggregationTask& task) {
  TW_CHECK(task.compressor != nullptr, "allreduce aggregation: layer ", task.layer,
           " has no compressor");
  TW_CHECK(task.compressor->isSummable(), "allreduce aggregation: compressor '",
           task.compressor->name(), "' of layer ", task.layer,
           " is not summable; use the allgather or two-phase aggregator");
  TW_CHECK(task.output.defined() && task.output.scalar_type() == at::kFloat &&
               task.output.is_contiguous() && task.output.numel() == task.payload.numel,
           "allreduce aggregation: layer ", task.layer, " needs a contiguous float32 output of ",
           task.payload.numel, " elements");
  TW_CHECK(task.payload.numel == 0 || task.payload.wireBytes() > 0, "allreduce aggregation: layer ",
           task.layer, " has ", task.payload.numel, " elements but an empty payload");
}

}  // namespace

void AllreduceAggregator::run(std::vector<AggregationTask>& tasks,
                              comm::Communicator& comm,
                              std::chrono::milliseconds timeout) {
  for (const AggregationTask& task : tasks) checkTask(task);
  const int worldSize = comm.worldSize();
  const float alpha = 1.0f / static_cast<float>(worldSize);

  // Group by payload dtype in order of first appearance: every rank has the same tasks, so the
  // groups and their collectives are the same everywhere.
  std::vector<at::ScalarType> dtypes;
  for (const AggregationTask& task : tasks) {
    if (task.payload.numel == 0) continue;
    const at::ScalarType dtype = task.payload.data.scalar_type();
    if (std::find(dtypes.begin(), dtypes.end(), dtype) == dtypes.end()) dtypes.push_back(dtype);
  }

  for (const at::ScalarType dtype : dtypes) {
    int64_t totalBytes = 0;
    for (const AggregationTask& task : tasks) {
      if (task.payload.numel > 0 && task.payload.data.scalar_type() == dtype) {
        totalBytes += task.payload.wireBytes();
      }
    }
    const int64_t elementSize = static_cast<int64_t>(c10::elementSize(dtype));
    at::Tensor sum = at::empty({totalBytes / elementSize}, at::TensorOptions().dtype(dtype));
    at::Tensor sumBytes = sum.view(at::kByte);
    int64_t offset = 0;
    for (const AggregationTask& task : tasks) {
      if (task.payload.numel == 0 || task.payload.data.scalar_type() != dtype) continue;
      const int64_t bytes = task.payload.wireBytes();
      std::memcpy(sumBytes.data_ptr<uint8_t>() + offset, bytesOf(task.payload).data_ptr<uint8_t>(),
                  static_cast<size_t>(bytes));
      offset += bytes;
    }
    if (worldSize > 1) comm.allreduce(sum, {.op = comm::ReduceOp::kSum})->wait(timeout);

    offset = 0;
    for (AggregationTask& task : tasks) {
      if (task.payload.numel == 0 || task.payload.data.scalar_type() != dtype) continue;
      const int64_t bytes = task.payload.wireBytes();
      Payload summed = payloadFromBytes(sumBytes, offset, bytes, dtype, task.payload.numel);
      summed.parts = task.payload.parts;
      task.output.zero_();
      task.compressor->decompressAdd(summed, task.output, alpha, task.params);
      offset += bytes;
    }
  }

  for (AggregationTask& task : tasks) {
    if (task.payload.numel == 0) task.output.zero_();
    task.bytesSent = 2 * static_cast<int64_t>(worldSize - 1) * task.payload.wireBytes() / worldSize;
  }
}

}  // namespace thinwire::compressors

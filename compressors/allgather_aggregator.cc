#include "compressors/allgather_aggregator.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "compressors/chunked_compressor.h"

namespace thinwire::compressors {
namespace {

// Bytes of one int64 count in the size exchange.
constexpr int64_t kCountBytes = static_cast<int64_t>(sizeof(int64_t));

void checkTask(const AggregationTask& task) {
  TW_CHECK(task.compressor != nullptr, "allgather aggregation: layer ", task.layer,
           " has no compressor");
  TW_CHECK(task.output.defined() && task.output.scalar_type() == at::kFloat &&
               task.output.is_contiguous() && task.output.numel() == task.payload.numel,
           "allgather aggregation: layer ", task.layer, " needs a contiguous float32 output of ",
           task.payload.numel, " elements");
}

// out *= scale, one pass over raw floats.
void scaleInPlace(at::Tensor& out, float scale) {
  float* values = out.data_ptr<float>();
  const int64_t numel = out.numel();
  for (int64_t i = 0; i < numel; ++i) values[i] *= scale;
}

}  // namespace

void AllgatherAggregator::run(std::vector<AggregationTask>& tasks,
                              comm::Communicator& comm,
                              std::chrono::milliseconds timeout) {
  const int worldSize = comm.worldSize();
  const size_t taskCount = tasks.size();

  // Byte counts of every (rank, task): known sizes locally, the others exchanged below.
  std::vector<int64_t> counts(static_cast<size_t>(worldSize) * taskCount, 0);
  std::vector<size_t> exchanged;  // tasks whose size is data dependent
  for (size_t t = 0; t < taskCount; ++t) {
    const AggregationTask& task = tasks[t];
    checkTask(task);
    const int64_t ownBytes = task.payload.wireBytes();
    const int64_t knownBytes = task.compressor->payloadBytes(task.payload.numel, task.params);
    if (knownBytes >= 0) {
      TW_CHECK(ownBytes == knownBytes, "allgather aggregation: layer ", task.layer, " payload has ",
               ownBytes, " bytes, compressor '", task.compressor->name(), "' says ", knownBytes);
      for (int rank = 0; rank < worldSize; ++rank) counts[rank * taskCount + t] = knownBytes;
    } else {
      TW_CHECK(task.payload.parts.empty(), "allgather aggregation: layer ", task.layer,
               " is chunked with a data-dependent size; receivers could not split its parts");
      exchanged.push_back(t);
      counts[comm.rank() * taskCount + t] = ownBytes;
    }
  }

  if (worldSize == 1) {
    for (AggregationTask& task : tasks) {
      task.output.zero_();
      if (task.payload.numel > 0) {
        task.compressor->decompressAdd(task.payload, task.output, 1.0f, task.params);
      }
      task.bytesSent = 0;
    }
    return;
  }

  if (!exchanged.empty()) {
    const auto exchangedCount = static_cast<int64_t>(exchanged.size());
    std::vector<int64_t> mine;
    for (int64_t i = 0; i < exchangedCount; ++i) {
      mine.push_back(tasks[exchanged[i]].payload.wireBytes());
    }
    const std::vector<int64_t> all = allgatherSizes(mine, comm, timeout);
    for (int rank = 0; rank < worldSize; ++rank) {
      for (int64_t i = 0; i < exchangedCount; ++i) {
        counts[rank * taskCount + exchanged[i]] = all[rank * exchangedCount + i];
      }
    }
  }

  std::vector<int64_t> rankBytes(worldSize, 0);
  for (int rank = 0; rank < worldSize; ++rank) {
    for (size_t t = 0; t < taskCount; ++t) rankBytes[rank] += counts[rank * taskCount + t];
  }
  int64_t receiveBytes = 0;
  for (int64_t bytes : rankBytes) receiveBytes += bytes;

  const int64_t sendBytes = rankBytes[comm.rank()];
  if (!sendBuffer_.defined() || sendBuffer_.numel() != sendBytes) {
    sendBuffer_ = at::empty({sendBytes}, at::kByte);
  }
  int64_t offset = 0;
  for (const AggregationTask& task : tasks) {
    const int64_t bytes = task.payload.wireBytes();
    if (bytes == 0) continue;
    std::memcpy(sendBuffer_.data_ptr<uint8_t>() + offset, bytesOf(task.payload).data_ptr<uint8_t>(),
                static_cast<size_t>(bytes));
    offset += bytes;
  }
  if (!receiveBuffer_.defined() || receiveBuffer_.numel() != receiveBytes) {
    receiveBuffer_ = at::empty({receiveBytes}, at::kByte);
  }
  comm.allgatherv(sendBuffer_, receiveBuffer_, rankBytes)->wait(timeout);

  // Where each rank's block starts in the receive buffer; advanced task by task.
  std::vector<int64_t> cursor(worldSize, 0);
  for (int rank = 1; rank < worldSize; ++rank)
    cursor[rank] = cursor[rank - 1] + rankBytes[rank - 1];
  const float scale = 1.0f / static_cast<float>(worldSize);
  for (size_t t = 0; t < taskCount; ++t) {
    AggregationTask& task = tasks[t];
    task.output.zero_();
    const at::ScalarType dtype =
        task.payload.data.defined() ? task.payload.data.scalar_type() : at::kByte;
    for (int rank = 0; rank < worldSize; ++rank) {
      const int64_t bytes = counts[rank * taskCount + t];
      if (task.payload.numel > 0) {
        Payload received =
            payloadFromBytes(receiveBuffer_, cursor[rank], bytes, dtype, task.payload.numel);
        received.parts = task.payload.parts;
        task.compressor->decompressAdd(received, task.output, 1.0f, task.params);
      }
      cursor[rank] += bytes;
    }
    scaleInPlace(task.output, scale);
    const bool sizeExchanged = std::find(exchanged.begin(), exchanged.end(), t) != exchanged.end();
    task.bytesSent =
        (worldSize - 1) * (task.payload.wireBytes() + (sizeExchanged ? kCountBytes : 0));
  }
}

}  // namespace thinwire::compressors

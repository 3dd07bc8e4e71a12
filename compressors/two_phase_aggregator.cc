#include "compressors/two_phase_aggregator.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "base/error.h"
#include "compressors/chunked_compressor.h"

namespace thinwire::compressors {
namespace {

constexpr int64_t kCountBytes = static_cast<int64_t>(sizeof(int64_t));
constexpr const char* kServerErrorKey = "server_error";

// The compressor that wrote each chunk: the task's ChunkedCompressor's inner one, or the task's
// compressor itself.
Compressor& innerOf(const AggregationTask& task, int worldSize) {
  if (auto* chunked = dynamic_cast<ChunkedCompressor*>(task.compressor)) {
    TW_CHECK(chunked->parts() == worldSize, "two-phase aggregation: layer ", task.layer,
             " was chunked in ", chunked->parts(), " parts for ", worldSize, " ranks");
    return chunked->inner();
  }
  return *task.compressor;
}

void checkTask(const AggregationTask& task, int worldSize) {
  TW_CHECK(task.compressor != nullptr, "two-phase aggregation: layer ", task.layer,
           " has no compressor");
  TW_CHECK(static_cast<int>(task.payload.parts.size()) == worldSize,
           "two-phase aggregation: layer ", task.layer, " payload has ", task.payload.parts.size(),
           " parts, expected one per rank (", worldSize,
           "); compress it with ChunkedCompressor(inner, worldSize)");
  int64_t partBytes = 0;
  for (int64_t bytes : task.payload.parts) partBytes += bytes;
  TW_CHECK(partBytes == task.payload.wireBytes(), "two-phase aggregation: layer ", task.layer,
           " parts add up to ", partBytes, " bytes, payload has ", task.payload.wireBytes());
  TW_CHECK(task.output.defined() && task.output.scalar_type() == at::kFloat &&
               task.output.is_contiguous() && task.output.numel() == task.payload.numel,
           "two-phase aggregation: layer ", task.layer, " needs a contiguous float32 output of ",
           task.payload.numel, " elements");
}

void scaleInPlace(at::Tensor& out, float scale) {
  float* values = out.data_ptr<float>();
  const int64_t numel = out.numel();
  for (int64_t i = 0; i < numel; ++i) values[i] *= scale;
}

// Per-task chunk layout of one run(): ranges, and the dtype the parts are read in.
struct TaskLayout {
  Compressor* inner = nullptr;
  std::vector<ChunkRange> ranges;   // one per rank
  std::vector<int64_t> knownBytes;  // inner.payloadBytes of each range; -1 if data dependent
  bool sizeExchanged = false;       // some range's size is data dependent
  at::ScalarType dtype = at::kByte;
};

}  // namespace

void TwoPhaseAggregator::run(std::vector<AggregationTask>& tasks,
                             comm::Communicator& comm,
                             std::chrono::milliseconds timeout) {
  const int worldSize = comm.worldSize();
  const int rank = comm.rank();
  const size_t taskCount = tasks.size();

  std::vector<TaskLayout> layouts(taskCount);
  std::vector<size_t> exchanged;
  for (size_t t = 0; t < taskCount; ++t) {
    const AggregationTask& task = tasks[t];
    checkTask(task, worldSize);
    TaskLayout& layout = layouts[t];
    layout.inner = &innerOf(task, worldSize);
    layout.dtype = task.payload.data.defined() ? task.payload.data.scalar_type() : at::kByte;
    const int64_t alignment = layout.inner->alignment(task.params);
    for (int d = 0; d < worldSize; ++d) {
      const ChunkRange range =
          ChunkedCompressor::chunkRange(task.payload.numel, worldSize, alignment, d);
      layout.ranges.push_back(range);
      const int64_t bytes =
          range.length == 0 ? 0 : layout.inner->payloadBytes(range.length, task.params);
      layout.knownBytes.push_back(bytes);
      if (bytes < 0) {
        layout.sizeExchanged = true;
      } else {
        TW_CHECK(task.payload.parts[d] == bytes, "two-phase aggregation: layer ", task.layer,
                 " part ", d, " has ", task.payload.parts[d], " bytes, compressor '",
                 layout.inner->name(), "' says ", bytes);
      }
    }
    if (layout.sizeExchanged) exchanged.push_back(t);
    auto found = serverErrors_.find(task.layer);
    TW_CHECK(found == serverErrors_.end() || worldSize == 1 ||
                 found->second.numel() == layout.ranges[rank].length,
             "two-phase aggregation: layer ", task.layer, " server error has ",
             found == serverErrors_.end() ? 0 : found->second.numel(), " elements, its chunk ",
             layout.ranges[rank].length);
  }

  if (worldSize == 1) {
    // DeepSpeed skips compression at world size 1: the message is the result.
    for (AggregationTask& task : tasks) {
      task.output.zero_();
      if (task.payload.numel > 0) {
        task.compressor->decompressAdd(task.payload, task.output, 1.0f, task.params);
      }
      task.bytesSent = 0;
    }
    return;
  }

  // ---- Phase 1: part d of every task to rank d.
  // receivedBytes[s * taskCount + t]: bytes of part `rank` of task t from rank s.
  std::vector<int64_t> receivedBytes(static_cast<size_t>(worldSize) * taskCount, 0);
  for (size_t t = 0; t < taskCount; ++t) {
    for (int source = 0; source < worldSize; ++source) {
      receivedBytes[source * taskCount + t] = std::max<int64_t>(0, layouts[t].knownBytes[rank]);
    }
  }
  const auto exchangedCount = static_cast<int64_t>(exchanged.size());
  if (exchangedCount > 0) {
    at::Tensor sendCounts = at::empty({exchangedCount * worldSize}, at::kLong);
    at::Tensor receiveCounts = at::empty({exchangedCount * worldSize}, at::kLong);
    for (int d = 0; d < worldSize; ++d) {
      for (int64_t i = 0; i < exchangedCount; ++i) {
        sendCounts.data_ptr<int64_t>()[d * exchangedCount + i] =
            tasks[exchanged[i]].payload.parts[d];
      }
    }
    const std::vector<int64_t> perRank(worldSize, exchangedCount);
    comm.allToAll(sendCounts, receiveCounts, perRank, perRank)->wait(timeout);
    for (int source = 0; source < worldSize; ++source) {
      for (int64_t i = 0; i < exchangedCount; ++i) {
        receivedBytes[source * taskCount + exchanged[i]] =
            receiveCounts.data_ptr<int64_t>()[source * exchangedCount + i];
      }
    }
  }

  std::vector<int64_t> sendCounts(worldSize, 0);
  for (const AggregationTask& task : tasks) {
    for (int d = 0; d < worldSize; ++d) sendCounts[d] += task.payload.parts[d];
  }
  std::vector<int64_t> receiveCounts(worldSize, 0);
  for (int source = 0; source < worldSize; ++source) {
    for (size_t t = 0; t < taskCount; ++t) {
      receiveCounts[source] += receivedBytes[source * taskCount + t];
    }
  }
  int64_t sendTotal = 0;
  int64_t receiveTotal = 0;
  for (int d = 0; d < worldSize; ++d) {
    sendTotal += sendCounts[d];
    receiveTotal += receiveCounts[d];
  }

  // Destination-major: for d, for t, part d of task t.
  at::Tensor sendBuffer = at::empty({sendTotal}, at::kByte);
  {
    std::vector<at::Tensor> taskBytes;
    std::vector<std::vector<int64_t>> partOffsets(taskCount);
    for (size_t t = 0; t < taskCount; ++t) {
      taskBytes.push_back(bytesOf(tasks[t].payload));
      int64_t offset = 0;
      for (int d = 0; d < worldSize; ++d) {
        partOffsets[t].push_back(offset);
        offset += tasks[t].payload.parts[d];
      }
    }
    uint8_t* destination = sendBuffer.data_ptr<uint8_t>();
    for (int d = 0; d < worldSize; ++d) {
      for (size_t t = 0; t < taskCount; ++t) {
        const int64_t bytes = tasks[t].payload.parts[d];
        if (bytes == 0) continue;
        std::memcpy(destination, taskBytes[t].data_ptr<uint8_t>() + partOffsets[t][d],
                    static_cast<size_t>(bytes));
        destination += bytes;
      }
    }
  }
  at::Tensor receiveBuffer = at::empty({receiveTotal}, at::kByte);
  comm.allToAll(sendBuffer, receiveBuffer, sendCounts, receiveCounts)->wait(timeout);

  // ---- Server: average chunk `rank` of every task, add the server error, re-compress.
  serverPayloads_.resize(taskCount);
  std::vector<int64_t> sourceCursor(worldSize, 0);
  for (int source = 1; source < worldSize; ++source) {
    sourceCursor[source] = sourceCursor[source - 1] + receiveCounts[source - 1];
  }
  const float scale = 1.0f / static_cast<float>(worldSize);
  for (size_t t = 0; t < taskCount; ++t) {
    AggregationTask& task = tasks[t];
    const TaskLayout& layout = layouts[t];
    const ChunkRange mine = layout.ranges[rank];
    Payload& serverPayload = serverPayloads_[t];
    serverPayload.parts.clear();
    if (mine.length == 0) {
      for (int source = 0; source < worldSize; ++source) {
        sourceCursor[source] += receivedBytes[source * taskCount + t];
      }
      serverPayload.data = at::Tensor();
      serverPayload.numel = 0;
      continue;
    }
    at::Tensor average = at::zeros({mine.length}, at::kFloat);
    for (int source = 0; source < worldSize; ++source) {
      const int64_t bytes = receivedBytes[source * taskCount + t];
      Payload part =
          payloadFromBytes(receiveBuffer, sourceCursor[source], bytes, layout.dtype, mine.length);
      layout.inner->decompressAdd(part, average, 1.0f, task.params);
      sourceCursor[source] += bytes;
    }
    scaleInPlace(average, scale);
    at::Tensor& serverError = serverErrors_[task.layer];
    if (!serverError.defined()) serverError = at::zeros({mine.length}, at::kFloat);
    layout.inner->compress(serverError, average, 1.0f, serverPayload, task.params);
    if (layout.knownBytes[rank] >= 0) {
      TW_ASSERT(serverPayload.wireBytes() == layout.knownBytes[rank], "layer ", task.layer,
                " re-compressed chunk has ", serverPayload.wireBytes(), " bytes, expected ",
                layout.knownBytes[rank]);
    }
  }

  // ---- Phase 2: every rank's re-compressed chunk to every rank.
  // gatheredBytes[s * taskCount + t]: bytes of rank s's re-compressed chunk s of task t.
  std::vector<int64_t> gatheredBytes(static_cast<size_t>(worldSize) * taskCount, 0);
  for (size_t t = 0; t < taskCount; ++t) {
    for (int source = 0; source < worldSize; ++source) {
      gatheredBytes[source * taskCount + t] = std::max<int64_t>(0, layouts[t].knownBytes[source]);
    }
  }
  if (exchangedCount > 0) {
    std::vector<int64_t> mine;
    for (int64_t i = 0; i < exchangedCount; ++i) {
      mine.push_back(serverPayloads_[exchanged[i]].wireBytes());
    }
    const std::vector<int64_t> all = allgatherSizes(mine, comm, timeout);
    for (int source = 0; source < worldSize; ++source) {
      for (int64_t i = 0; i < exchangedCount; ++i) {
        gatheredBytes[source * taskCount + exchanged[i]] = all[source * exchangedCount + i];
      }
    }
  }
  std::vector<int64_t> gatherCounts(worldSize, 0);
  for (int source = 0; source < worldSize; ++source) {
    for (size_t t = 0; t < taskCount; ++t) {
      gatherCounts[source] += gatheredBytes[source * taskCount + t];
    }
  }
  int64_t gatherTotal = 0;
  for (int64_t bytes : gatherCounts) gatherTotal += bytes;
  at::Tensor chunkBuffer = at::empty({gatherCounts[rank]}, at::kByte);
  {
    uint8_t* destination = chunkBuffer.data_ptr<uint8_t>();
    for (size_t t = 0; t < taskCount; ++t) {
      const int64_t bytes = serverPayloads_[t].wireBytes();
      if (bytes == 0) continue;
      std::memcpy(destination, bytesOf(serverPayloads_[t]).data_ptr<uint8_t>(),
                  static_cast<size_t>(bytes));
      destination += bytes;
    }
  }
  at::Tensor gathered = at::empty({gatherTotal}, at::kByte);
  comm.allgatherv(chunkBuffer, gathered, gatherCounts)->wait(timeout);

  std::vector<int64_t> gatherCursor(worldSize, 0);
  for (int source = 1; source < worldSize; ++source) {
    gatherCursor[source] = gatherCursor[source - 1] + gatherCounts[source - 1];
  }
  for (size_t t = 0; t < taskCount; ++t) {
    AggregationTask& task = tasks[t];
    const TaskLayout& layout = layouts[t];
    task.output.zero_();
    at::Tensor flatOutput = task.output.view({-1});
    for (int source = 0; source < worldSize; ++source) {
      const int64_t bytes = gatheredBytes[source * taskCount + t];
      const ChunkRange range = layout.ranges[source];
      if (range.length > 0) {
        Payload chunk =
            payloadFromBytes(gathered, gatherCursor[source], bytes, layout.dtype, range.length);
        at::Tensor chunkOutput = flatOutput.narrow(0, range.offset, range.length);
        layout.inner->decompressAdd(chunk, chunkOutput, 1.0f, task.params);
      }
      gatherCursor[source] += bytes;
    }
    int64_t phaseOneBytes = 0;
    for (int d = 0; d < worldSize; ++d) {
      if (d != rank) phaseOneBytes += task.payload.parts[d];
    }
    task.bytesSent = phaseOneBytes + (worldSize - 1) * serverPayloads_[t].wireBytes() +
                     (layout.sizeExchanged ? 2 * (worldSize - 1) * kCountBytes : 0);
  }
}

StateDict TwoPhaseAggregator::state() const {
  StateDict state;
  for (const auto& [layer, error] : serverErrors_) {
    state[std::to_string(layer) + "." + kServerErrorKey] = error.clone();
  }
  return state;
}

void TwoPhaseAggregator::loadState(const StateDict& state) {
  std::map<LayerId, at::Tensor> loaded;
  const std::string suffix = std::string(".") + kServerErrorKey;
  for (const auto& [key, tensor] : state) {
    const bool hasSuffix = key.size() > suffix.size() &&
                           key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (!hasSuffix) TW_THROW(DataError, "two-phase aggregator state: unexpected key '", key, "'");
    const std::string layerText = key.substr(0, key.size() - suffix.size());
    size_t parsed = 0;
    LayerId layer = 0;
    try {
      layer = std::stoll(layerText, &parsed);
    } catch (const std::exception&) {
      parsed = 0;
    }
    if (parsed != layerText.size()) {
      TW_THROW(DataError, "two-phase aggregator state: key '", key, "' does not name a layer");
    }
    if (!tensor.defined() || tensor.scalar_type() != at::kFloat) {
      TW_THROW(DataError, "two-phase aggregator state: '", key, "' is not a float32 tensor");
    }
    loaded[layer] = tensor.reshape({-1}).clone();
  }
  serverErrors_ = std::move(loaded);
}

}  // namespace thinwire::compressors

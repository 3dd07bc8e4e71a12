// File: tests/compressors/aggregator_cases.h
//
// The aggregator suite: test bodies that take a comm::Communicator& and check every aggregator
// with several compressors against a single-process reference that each rank computes itself
// from every rank's deterministic inputs (rankInput). The same bodies run on the local backend
// (threads as ranks, tests/compressors/multirank) and under mpiexec (tests/compressors/mpi),
// for world sizes 1, 2, 3, 4 and 7.
//
// Inputs are multiples of 1/16 in [-16, 16], so the sum over up to 7 ranks of identity or fp16
// payloads is exact in float32 and float16 whatever order a backend adds them in: the allreduce
// reference is exact, and every comparison is bitwise. The reference decodes each rank's message
// with a fresh compressor of its own, sums in rank order, scales by the float 1/n once, and for
// the two-phase aggregator re-implements the server (average of chunk d over ranks, plus the
// server error of chunk d, re-compressed with the inner compressor) for every chunk.
//
// Threading: a body runs on every rank at once. Bodies use EXPECT_* only after the first
// collective and issue every collective unconditionally, so a failed check on one rank never
// leaves the others waiting.
//
// Example:
//   for (const AggregatorCase& c : aggregatorCases()) runAggregatorCase(c, comm);   // every rank
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "compressors/aggregator.h"
#include "compressors/cast_compressor.h"
#include "compressors/chunked_compressor.h"
#include "compressors/identity_compressor.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"

namespace thinwire::compressors::testing {

inline constexpr std::chrono::milliseconds kTestTimeout{std::chrono::seconds(60)};

// Layer sizes of one run() call: empty, one element, not a multiple of 8, and large and odd.
inline const std::vector<int64_t>& layerSizes() {
  static const std::vector<int64_t> sizes = {0, 1, 13, 4096 + 5};
  return sizes;
}

enum class Method {
  kIdentity,
  kFp16,
  kTopK,         // exact top-k, ratio 0.1, random inputs (partial index overlap, many ties)
  kTopKCollide,  // exact top-k on inputs whose large entries sit at the same indices everywhere
  kTopKSampled,  // DGC sampled threshold: data-dependent payload sizes (count exchange)
  kTopKFp16,     // exact top-k with float16 values
  kSign,         // scaled sign, one scale per 64 elements
};

inline std::string toString(Method method) {
  switch (method) {
    case Method::kIdentity:
      return "identity";
    case Method::kFp16:
      return "fp16";
    case Method::kTopK:
      return "topk";
    case Method::kTopKCollide:
      return "topk_collide";
    case Method::kTopKSampled:
      return "topk_sampled";
    case Method::kTopKFp16:
      return "topk_fp16";
    case Method::kSign:
      return "sign";
  }
  return "?";
}

inline std::unique_ptr<Compressor> makeMethod(Method method) {
  switch (method) {
    case Method::kIdentity:
      return std::make_unique<IdentityCompressor>();
    case Method::kFp16:
      return std::make_unique<CastCompressor>(at::kHalf);
    case Method::kTopK:
    case Method::kTopKCollide:
      return std::make_unique<TopKCompressor>(TopKOptions{});
    case Method::kTopKSampled:
      return std::make_unique<TopKCompressor>(TopKOptions{.sampled = true, .sampleRatio = 0.1});
    case Method::kTopKFp16:
      return std::make_unique<TopKCompressor>(TopKOptions{.fp16Values = true});
    case Method::kSign:
      return std::make_unique<SignCompressor>(SignOptions{.chunk = 64});
  }
  return nullptr;
}

// The params of rank `rank`'s message; rankSeed is private to the rank (sampled top-k draws its
// sample from it), everything else is shared.
inline LayerParams paramsFor(int rank, int layer, int step) {
  LayerParams params;
  params.ratio = 0.1;
  params.seed = 1000 + 10 * static_cast<uint64_t>(step) + static_cast<uint64_t>(layer);
  params.rankSeed = 77 + 1000 * static_cast<uint64_t>(rank) + 10 * static_cast<uint64_t>(step) +
                    static_cast<uint64_t>(layer);
  return params;
}

inline uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Rank `rank`'s gradient for (layer, step): multiples of 1/16 in [-8, 8]; kTopKCollide puts
// magnitudes >= 9 at every index i with i % 10 == 3 on every rank (10% of the entries, what
// ratio 0.1 keeps), so all ranks select the same indices.
inline at::Tensor rankInput(Method method, int rank, int layer, int step, int64_t numel) {
  at::Tensor input = at::empty({numel}, at::kFloat);
  float* values = input.data_ptr<float>();
  for (int64_t i = 0; i < numel; ++i) {
    const uint64_t h = mix(mix(mix(static_cast<uint64_t>(step) * 131 + layer) * 977 + rank) + i);
    float value = static_cast<float>(static_cast<int64_t>(h % 257) - 128) / 16.0f;
    if (method == Method::kTopKCollide && i % 10 == 3) {
      value = (value < 0 ? -1.0f : 1.0f) * (9.0f + static_cast<float>((h >> 20) % 64) / 16.0f);
    }
    values[i] = value;
  }
  return input;
}

// Independent restatement of the chunk split (ChunkedCompressor::chunkRange's contract): the
// ceil(numel / alignment) blocks dealt out evenly, earlier chunks taking the extra ones.
inline std::pair<int64_t, int64_t> referenceRange(int64_t numel,
                                                  int parts,
                                                  int64_t alignment,
                                                  int index) {
  std::vector<int64_t> blocksOf(parts, 0);
  const int64_t blocks = (numel + alignment - 1) / alignment;
  for (int64_t b = 0; b < blocks; ++b) blocksOf[b % parts] += 1;  // round-robin counts
  int64_t begin = 0;
  for (int i = 0; i < index; ++i) begin += blocksOf[i] * alignment;
  begin = std::min(begin, numel);
  const int64_t end = std::min(numel, begin + blocksOf[index] * alignment);
  return {begin, end - begin};
}

inline void scaleByInverse(at::Tensor& values, int worldSize) {
  const float scale = 1.0f / static_cast<float>(worldSize);
  float* data = values.data_ptr<float>();
  for (int64_t i = 0; i < values.numel(); ++i) data[i] *= scale;
}

struct AggregatorCase {
  std::string name;
  AggregatorKind kind;
  Method method;
};

// gtest prints a parameter by its name.
inline void PrintTo(const AggregatorCase& aggregatorCase, std::ostream* out) {
  *out << aggregatorCase.name;
}

inline std::vector<AggregatorCase> aggregatorCases() {
  std::vector<AggregatorCase> cases;
  for (Method method : {Method::kIdentity, Method::kFp16}) {
    cases.push_back({"allreduce_" + toString(method), AggregatorKind::kAllreduce, method});
  }
  for (AggregatorKind kind : {AggregatorKind::kAllgather, AggregatorKind::kTwoPhase}) {
    for (Method method : {Method::kIdentity, Method::kFp16, Method::kTopK, Method::kTopKCollide,
                          Method::kTopKSampled, Method::kTopKFp16, Method::kSign}) {
      cases.push_back({compressors::toString(kind) + "_" + toString(method), kind, method});
    }
  }
  return cases;
}

// The single-process reference of one step: every rank's message regenerated here, then
// averaged as the case's aggregator promises. `serverErrors[layer][d]`: the reference's server
// error of chunk d (two-phase), carried across steps.
class AggregationReference {
 public:
  AggregationReference(const AggregatorCase& aggregatorCase, int worldSize)
      : case_(aggregatorCase), worldSize_(worldSize), compressor_(makeMethod(case_.method)) {}

  at::Tensor average(int layer, int step, int64_t numel) {
    at::Tensor out = at::zeros({numel}, at::kFloat);
    if (numel == 0) return out;
    if (case_.kind != AggregatorKind::kTwoPhase || worldSize_ == 1) {
      for (int rank = 0; rank < worldSize_; ++rank) {
        at::Tensor residual = rankInput(case_.method, rank, layer, step, numel);
        Payload message;
        const LayerParams params = paramsFor(rank, layer, step);
        compressor_->compress(residual, at::Tensor(), 1.0f, message, params);
        compressor_->decompressAdd(message, out, 1.0f, params);
      }
      if (case_.kind != AggregatorKind::kTwoPhase) scaleByInverse(out, worldSize_);
      return out;
    }
    const int64_t alignment = compressor_->alignment(paramsFor(0, layer, step));
    std::vector<at::Tensor>& errors = serverErrors_[layer];
    errors.resize(worldSize_);
    for (int chunk = 0; chunk < worldSize_; ++chunk) {
      const auto [offset, length] = referenceRange(numel, worldSize_, alignment, chunk);
      if (length == 0) continue;
      at::Tensor chunkAverage = at::zeros({length}, at::kFloat);
      for (int rank = 0; rank < worldSize_; ++rank) {
        at::Tensor residual =
            rankInput(case_.method, rank, layer, step, numel).narrow(0, offset, length).clone();
        Payload part;
        const LayerParams params = paramsFor(rank, layer, step);
        compressor_->compress(residual, at::Tensor(), 1.0f, part, params);
        compressor_->decompressAdd(part, chunkAverage, 1.0f, params);
      }
      scaleByInverse(chunkAverage, worldSize_);
      if (!errors[chunk].defined()) errors[chunk] = at::zeros({length}, at::kFloat);
      Payload serverMessage;
      const LayerParams serverParams = paramsFor(chunk, layer, step);  // chunk d's server is rank d
      compressor_->compress(errors[chunk], chunkAverage, 1.0f, serverMessage, serverParams);
      at::Tensor outChunk = out.narrow(0, offset, length);
      compressor_->decompressAdd(serverMessage, outChunk, 1.0f, serverParams);
    }
    return out;
  }

 private:
  AggregatorCase case_;
  int worldSize_;
  std::unique_ptr<Compressor> compressor_;
  std::map<int, std::vector<at::Tensor>> serverErrors_;
};

// Gathers `values` (same numel on every rank) and checks that every rank holds the same bits.
inline void expectIdenticalOnEveryRank(comm::Communicator& comm,
                                       const at::Tensor& values,
                                       const std::string& what) {
  at::Tensor all = at::empty({values.numel() * comm.worldSize()}, values.options());
  comm.allgather(values, all)->wait(kTestTimeout);
  for (int rank = 0; rank < comm.worldSize(); ++rank) {
    EXPECT_TRUE(at::equal(all.narrow(0, rank * values.numel(), values.numel()), values))
        << what << ": rank " << comm.rank() << " differs from rank " << rank;
  }
}

// Three steps of the case on `comm`: steps 0 and 1 with one aggregator (server errors carried),
// step 2 with a fresh aggregator restored from the first one's state(). Every step checks each
// layer's output bitwise against the reference, across ranks, and the bytes sent against
// predictedBytesSent.
inline void runAggregatorCase(const AggregatorCase& aggregatorCase, comm::Communicator& comm) {
  const int worldSize = comm.worldSize();
  const int rank = comm.rank();
  std::unique_ptr<Compressor> compressor = makeMethod(aggregatorCase.method);
  const bool twoPhase = aggregatorCase.kind == AggregatorKind::kTwoPhase;
  ChunkedCompressor chunked(*compressor, worldSize);
  Compressor& sender = twoPhase ? static_cast<Compressor&>(chunked) : *compressor;
  std::unique_ptr<Aggregator> aggregator = makeAggregator(aggregatorCase.kind);
  AggregationReference reference(aggregatorCase, worldSize);
  const std::vector<int64_t>& sizes = layerSizes();

  for (int step = 0; step < 3; ++step) {
    if (step == 2) {
      std::unique_ptr<Aggregator> restored = makeAggregator(aggregatorCase.kind);
      restored->loadState(aggregator->state());
      aggregator = std::move(restored);
    }
    std::vector<AggregationTask> tasks;
    for (int layer = 0; layer < static_cast<int>(sizes.size()); ++layer) {
      AggregationTask task;
      task.layer = layer;
      task.compressor = &sender;
      task.params = paramsFor(rank, layer, step);
      at::Tensor residual = rankInput(aggregatorCase.method, rank, layer, step, sizes[layer]);
      sender.compress(residual, at::Tensor(), 1.0f, task.payload, task.params);
      task.output = at::full({sizes[layer]}, 123.0f);  // must be overwritten, not accumulated
      tasks.push_back(std::move(task));
    }
    aggregator->run(tasks, comm, kTestTimeout);

    at::Tensor bytesSent = at::empty({static_cast<int64_t>(tasks.size())}, at::kLong);
    for (size_t t = 0; t < tasks.size(); ++t) bytesSent.data_ptr<int64_t>()[t] = tasks[t].bytesSent;
    at::Tensor allBytes = at::empty({bytesSent.numel() * worldSize}, at::kLong);
    comm.allgather(bytesSent, allBytes)->wait(kTestTimeout);

    for (size_t t = 0; t < tasks.size(); ++t) {
      const std::string where = aggregatorCase.name + " n=" + std::to_string(worldSize) + " step " +
                                std::to_string(step) + " layer " + std::to_string(t) + " (numel " +
                                std::to_string(sizes[t]) + ")";
      at::Tensor expected = reference.average(static_cast<int>(t), step, sizes[t]);
      const bool equal = at::equal(tasks[t].output, expected);
      EXPECT_TRUE(equal) << where << ": output differs from the reference, max |diff| "
                         << (sizes[t] > 0 ? (tasks[t].output - expected).abs().max().item<float>()
                                          : 0.0f);
      expectIdenticalOnEveryRank(comm, tasks[t].output, where);

      int64_t totalBytes = 0;
      for (int r = 0; r < worldSize; ++r) {
        totalBytes += allBytes.data_ptr<int64_t>()[r * tasks.size() + t];
      }
      const int64_t predicted = predictedBytesSent(aggregatorCase.kind, *compressor, sizes[t],
                                                   tasks[t].params, worldSize);
      if (compressor->payloadBytes(sizes[t], tasks[t].params) >= 0) {
        EXPECT_EQ(totalBytes / worldSize, predicted) << where << ": mean bytes sent per rank";
      } else {
        EXPECT_LE(totalBytes / worldSize, predicted) << where << ": bytes sent above the bound";
      }
      if (worldSize == 1) {
        EXPECT_EQ(tasks[t].bytesSent, 0) << where;
      }
    }
  }
}

}  // namespace thinwire::compressors::testing

// PowerSgd on the local backend (ranks as threads) against a single-process reference that
// recomputes the exchange from every rank's inputs in double precision, with ATen's QR instead of
// the Gram-Schmidt under test. The estimate P Q^T = P P^T mean(M) only depends on span(P) =
// span(sum_i M_i Q), so the reference is free to use any orthonormal basis.
#include "compressors/power_sgd.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <vector>

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "tests/testing/local_ranks.h"

namespace thinwire::compressors {
namespace {

using testing::runOnEveryRank;

constexpr std::chrono::milliseconds kTimeout{std::chrono::seconds(60)};
constexpr int64_t kSteps = 5;

at::Tensor randomMatrix(int64_t rows, int64_t cols, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({rows, cols}, generator, at::kFloat);
}

struct Shape {
  LayerId layer;
  int64_t rows;
  int64_t cols;
  int rank;
};

// Effective ranks 2, 1, 4 then 2 (a layer-wise rank change at step 3), 1, 0 (empty matrix).
const std::vector<Shape> kShapes = {
    {0, 7, 5, 2}, {1, 1, 9, 3}, {2, 16, 33, 4}, {5, 8, 1, 1}, {6, 0, 3, 2}};

int rankAt(const Shape& shape, int64_t step) {
  return shape.layer == 2 && step >= 3 ? 2 : shape.rank;
}

at::Tensor localInput(const Shape& shape, int64_t step, int rank) {
  return randomMatrix(shape.rows, shape.cols, 1000 * step + 100 * shape.layer + rank + 1);
}

// Forwards to a real communicator and records the bytes of every allreduce.
class CountingCommunicator : public comm::Communicator {
 public:
  explicit CountingCommunicator(comm::Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int worldSize() const override { return inner_.worldSize(); }
  std::string backendName() const override { return "counting"; }
  std::unique_ptr<comm::Work> allreduce(at::Tensor& inout,
                                        const comm::AllreduceOptions& options) override {
    EXPECT_EQ(options.op, comm::ReduceOp::kSum);
    EXPECT_EQ(inout.scalar_type(), at::kFloat);
    allreduceBytes.push_back(inout.numel() * static_cast<int64_t>(inout.element_size()));
    return inner_.allreduce(inout, options);
  }
  std::unique_ptr<comm::Work> allgather(const at::Tensor& input, at::Tensor& output) override {
    ADD_FAILURE() << "unexpected allgather";
    return inner_.allgather(input, output);
  }
  std::unique_ptr<comm::Work> allgatherv(const at::Tensor& input,
                                         at::Tensor& output,
                                         const std::vector<int64_t>& counts) override {
    ADD_FAILURE() << "unexpected allgatherv";
    return inner_.allgatherv(input, output, counts);
  }
  std::unique_ptr<comm::Work> allToAll(const at::Tensor& input,
                                       at::Tensor& output,
                                       const std::vector<int64_t>& sendCounts,
                                       const std::vector<int64_t>& recvCounts) override {
    ADD_FAILURE() << "unexpected allToAll";
    return inner_.allToAll(input, output, sendCounts, recvCounts);
  }
  std::unique_ptr<comm::Work> reduceScatter(const at::Tensor& input,
                                            at::Tensor& output,
                                            const std::vector<int64_t>& counts,
                                            const comm::ReduceScatterOptions& options) override {
    ADD_FAILURE() << "unexpected reduceScatter";
    return inner_.reduceScatter(input, output, counts, options);
  }
  std::unique_ptr<comm::Work> broadcast(at::Tensor& inout,
                                        const comm::BroadcastOptions& options) override {
    ADD_FAILURE() << "unexpected broadcast";
    return inner_.broadcast(inout, options);
  }
  std::unique_ptr<comm::Work> barrier() override {
    ADD_FAILURE() << "unexpected barrier";
    return inner_.barrier();
  }
  void abort(const std::string& reason) noexcept override { inner_.abort(reason); }

  std::vector<int64_t> allreduceBytes;

 private:
  comm::Communicator& inner_;
};

// What one rank saw, per step.
struct RankRecord {
  std::vector<std::vector<at::Tensor>> outputs;  // [step][task]
  std::vector<StateDict> states;                 // after each step
  std::vector<std::vector<int64_t>> bytesSent;   // [step][task]
  std::vector<int64_t> allreduceBytes;           // every allreduce, in order
};

std::vector<RankRecord> runWorld(int worldSize, const PowerSgdOptions& options) {
  auto world = comm::makeLocalWorld(worldSize, {.timeout = kTimeout});
  std::vector<RankRecord> records(worldSize);
  runOnEveryRank(world, [&](comm::Communicator& inner) {
    CountingCommunicator comm(inner);
    PowerSgd powerSgd(options);
    RankRecord& record = records[comm.rank()];
    for (int64_t step = 0; step < kSteps; ++step) {
      std::vector<LowRankTask> tasks;
      for (const Shape& shape : kShapes) {
        tasks.push_back({.layer = shape.layer,
                         .grad = localInput(shape, step, comm.rank()),
                         .rank = rankAt(shape, step)});
      }
      powerSgd.run(tasks, StepInfo{.step = step, .worldSize = worldSize}, comm, kTimeout);
      record.outputs.emplace_back();
      record.bytesSent.emplace_back();
      for (const LowRankTask& task : tasks) {
        record.outputs.back().push_back(task.grad);
        record.bytesSent.back().push_back(task.bytesSent);
      }
      record.states.push_back(powerSgd.state());
    }
    record.allreduceBytes = comm.allreduceBytes;
  });
  return records;
}

// The exchange of specs §6.2 for all ranks at once, in double.
class Reference {
 public:
  Reference(const PowerSgdOptions& options, int worldSize)
      : options_(options), worldSize_(worldSize) {}

  // Returns P Q^T for `inputs` (one per rank) and advances the residuals and Q.
  at::Tensor step(const Shape& shape,
                  int rank,
                  int64_t step,
                  const std::vector<at::Tensor>& inputs) {
    Layer& layer = layers_[shape.layer];
    if (layer.residuals.empty()) {
      for (int i = 0; i < worldSize_; ++i) {
        layer.residuals.push_back(at::zeros({shape.rows, shape.cols}, at::kDouble));
      }
    }
    std::vector<at::Tensor> m;
    at::Tensor sum = at::zeros({shape.rows, shape.cols}, at::kDouble);
    for (int i = 0; i < worldSize_; ++i) {
      at::Tensor mi = inputs[i].to(at::kDouble);
      if (options_.errorFeedback) mi = mi + layer.residuals[i];
      m.push_back(mi);
      sum += mi;
    }
    int64_t r = std::min<int64_t>({rank, shape.rows, shape.cols});
    if (r == 0) return sum;  // empty
    at::Tensor q;
    if (options_.warmStart && layer.q.defined() && layer.q.size(1) == r) {
      q = layer.q;
    } else {
      q = PowerSgd::freshQ(options_.seed, shape.layer, step, r, shape.cols).to(at::kDouble).t();
    }
    at::Tensor p = std::get<0>(at::linalg_qr(at::matmul(sum, q), "reduced"));
    at::Tensor mean = sum / worldSize_;
    layer.q = at::matmul(mean.t(), p);
    at::Tensor estimate = at::matmul(p, layer.q.t());
    if (options_.errorFeedback) {
      for (int i = 0; i < worldSize_; ++i) layer.residuals[i] = m[i] - estimate;
    }
    return estimate;
  }

 private:
  struct Layer {
    std::vector<at::Tensor> residuals;
    at::Tensor q;  // cols x r
  };
  PowerSgdOptions options_;
  int worldSize_;
  std::map<LayerId, Layer> layers_;
};

double maxAbs(const at::Tensor& t) { return t.numel() == 0 ? 0 : t.abs().max().item<double>(); }

class PowerSgdMultirankTest : public ::testing::TestWithParam<int> {};

TEST_P(PowerSgdMultirankTest, EveryRankGetsTheReferenceEstimateBitwiseAlike) {
  const int worldSize = GetParam();
  const std::vector<PowerSgdOptions> variants = {
      {.errorFeedback = true, .warmStart = true, .seed = 3},
      {.errorFeedback = false, .warmStart = true, .seed = 4},
      {.errorFeedback = true, .warmStart = false, .seed = 5},
  };
  for (const PowerSgdOptions& options : variants) {
    SCOPED_TRACE(::testing::Message() << "worldSize " << worldSize << " ef "
                                      << options.errorFeedback << " warm " << options.warmStart);
    std::vector<RankRecord> records = runWorld(worldSize, options);
    Reference reference(options, worldSize);
    for (int64_t step = 0; step < kSteps; ++step) {
      for (size_t t = 0; t < kShapes.size(); ++t) {
        const Shape& shape = kShapes[t];
        for (int i = 1; i < worldSize; ++i) {
          EXPECT_TRUE(at::equal(records[i].outputs[step][t], records[0].outputs[step][t]))
              << "rank " << i << " step " << step << " layer " << shape.layer;
        }
        std::vector<at::Tensor> inputs;
        for (int i = 0; i < worldSize; ++i) inputs.push_back(localInput(shape, step, i));
        at::Tensor expected = reference.step(shape, rankAt(shape, step), step, inputs);
        at::Tensor actual = records[0].outputs[step][t].to(at::kDouble);
        double tolerance = 1e-4 * std::max(1.0, maxAbs(expected));
        EXPECT_TRUE(at::allclose(actual, expected, 1e-4, tolerance))
            << "step " << step << " layer " << shape.layer << " max error "
            << maxAbs(actual - expected);
      }
      // Shared Q: every rank keeps the same Q^T bit for bit.
      for (int i = 1; i < worldSize; ++i) {
        for (const auto& [key, tensor] : records[0].states[step]) {
          if (key.size() > 2 && key.substr(key.size() - 2) == ".q") {
            EXPECT_TRUE(at::equal(records[i].states[step].at(key), tensor))
                << "rank " << i << " step " << step << " " << key;
          }
        }
      }
    }
  }
}

TEST_P(PowerSgdMultirankTest, ResidualsSumToInputsMinusNTimesTheEstimate) {
  const int worldSize = GetParam();
  std::vector<RankRecord> records = runWorld(worldSize, PowerSgdOptions{.seed = 8});
  for (int64_t step = 0; step < kSteps; ++step) {
    for (size_t t = 0; t < kShapes.size(); ++t) {
      const Shape& shape = kShapes[t];
      const std::string key = std::to_string(shape.layer) + ".e";
      at::Tensor residualSum = at::zeros({shape.rows, shape.cols}, at::kDouble);
      at::Tensor inputSum = at::zeros({shape.rows, shape.cols}, at::kDouble);
      for (int i = 0; i < worldSize; ++i) {
        residualSum += records[i].states[step].at(key).to(at::kDouble);
        inputSum += localInput(shape, step, i).to(at::kDouble);
        if (step > 0) inputSum += records[i].states[step - 1].at(key).to(at::kDouble);
      }
      at::Tensor expected = inputSum - worldSize * records[0].outputs[step][t].to(at::kDouble);
      double tolerance = 1e-5 * std::max(1.0, maxAbs(inputSum));
      EXPECT_TRUE(at::allclose(residualSum, expected, 0, tolerance))
          << "step " << step << " layer " << shape.layer << " max error "
          << maxAbs(residualSum - expected);
      if (shape.rows * shape.cols > 0 && std::min(shape.rows, shape.cols) > rankAt(shape, step)) {
        EXPECT_GT(maxAbs(residualSum), 1e-3) << "a truncated rank must leave a residual";
      }
    }
  }
}

TEST_P(PowerSgdMultirankTest, BytesSentIsWhatTheTwoAllreducesMoved) {
  const int worldSize = GetParam();
  std::vector<RankRecord> records = runWorld(worldSize, PowerSgdOptions{});
  for (int i = 0; i < worldSize; ++i) {
    ASSERT_EQ(records[i].allreduceBytes.size(), static_cast<size_t>(2 * kSteps)) << "rank " << i;
    for (int64_t step = 0; step < kSteps; ++step) {
      int64_t pBytes = 0;
      int64_t qBytes = 0;
      int64_t reported = 0;
      for (size_t t = 0; t < kShapes.size(); ++t) {
        const Shape& shape = kShapes[t];
        int64_t r = std::min<int64_t>({rankAt(shape, step), shape.rows, shape.cols});
        pBytes += 4 * r * shape.rows;
        qBytes += 4 * r * shape.cols;
        reported += records[i].bytesSent[step][t];
      }
      EXPECT_EQ(records[i].allreduceBytes[2 * step], pBytes) << "step " << step;
      EXPECT_EQ(records[i].allreduceBytes[2 * step + 1], qBytes) << "step " << step;
      // A ring allreduce of S bytes sends 2 (n - 1) / n S per rank; each task rounds down.
      double ring = 2.0 * (worldSize - 1) / worldSize *
                    static_cast<double>(records[i].allreduceBytes[2 * step] +
                                        records[i].allreduceBytes[2 * step + 1]);
      EXPECT_LE(static_cast<double>(reported), ring + 1e-6) << "step " << step;
      EXPECT_GT(static_cast<double>(reported), ring - static_cast<double>(kShapes.size()))
          << "step " << step;
    }
  }
}

TEST_P(PowerSgdMultirankTest, SameExactlyLowRankMatrixOnEveryRankIsReproduced) {
  const int worldSize = GetParam();
  at::Tensor u = randomMatrix(24, 3, 1).to(at::kDouble);
  at::Tensor v = randomMatrix(17, 3, 2).to(at::kDouble);
  at::Tensor target = at::matmul(u, v.t()).to(at::kFloat);
  auto world = comm::makeLocalWorld(worldSize, {.timeout = kTimeout});
  std::vector<at::Tensor> outputs(worldSize);
  runOnEveryRank(world, [&](comm::Communicator& comm) {
    PowerSgd powerSgd(PowerSgdOptions{});
    for (int64_t step = 0; step < 4; ++step) {
      std::vector<LowRankTask> tasks{{.layer = 0, .grad = target.clone(), .rank = 3}};
      powerSgd.run(tasks, StepInfo{.step = step}, comm, kTimeout);
      outputs[comm.rank()] = tasks[0].grad;
    }
  });
  for (int i = 0; i < worldSize; ++i) {
    EXPECT_TRUE(at::allclose(outputs[i], target, 1e-4, 1e-4 * maxAbs(target)))
        << "rank " << i << " max error " << maxAbs(outputs[i] - target);
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes,
                         PowerSgdMultirankTest,
                         ::testing::Values(1, 2, 3, 4, 7),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return "n" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace thinwire::compressors

// Unit tests of PowerSgd on a one-rank world: orthonormalisation, the fresh Q generator, exact
// reconstruction of low-rank matrices, the error-feedback residual, state round trips, and the
// failure contract. The multi-rank behaviour is in multirank/power_sgd_test.cc.
#include "compressors/power_sgd.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <vector>

#include "base/error.h"
#include "comm/local/local_communicator.h"
#include "tests/testing/error_message.h"

namespace thinwire::compressors {
namespace {

using testing::errorMessageOf;

constexpr std::chrono::milliseconds kTimeout{std::chrono::seconds(60)};

at::Tensor randomMatrix(int64_t rows, int64_t cols, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn({rows, cols}, generator, at::kFloat);
}

// Exactly rank-r matrix U V^T with Gaussian factors, computed in double then rounded.
at::Tensor lowRankMatrix(int64_t rows, int64_t cols, int64_t rank, uint64_t seed) {
  at::Tensor u = randomMatrix(rows, rank, seed).to(at::kDouble);
  at::Tensor v = randomMatrix(cols, rank, seed + 1).to(at::kDouble);
  return at::matmul(u, v.t()).to(at::kFloat);
}

// Classical Gram-Schmidt on the rows, in double: the independent reference. The projections are
// applied twice, as documented: with eps > 0 the earlier rows are not quite unit vectors, so a
// second pass changes the result (with eps = 0 it removes only rounding).
at::Tensor referenceGramSchmidt(const at::Tensor& vectors, double eps) {
  at::Tensor v = vectors.to(at::kDouble).clone();
  for (int64_t j = 0; j < v.size(0); ++j) {
    at::Tensor row = v[j].clone();
    for (int pass = 0; pass < 2; ++pass) {
      at::Tensor coefficients = at::matmul(v.slice(0, 0, j), row);
      row -= at::matmul(coefficients, v.slice(0, 0, j));
    }
    double norm = row.norm().item<double>();
    v[j] = norm == 0 ? row : row / (norm + eps);
  }
  return v;
}

// A one-rank communicator whose allreduce number `failAt` (0-based) fails with CommError; the
// others leave the tensor as it is (the sum over one rank).
class FailingCommunicator : public comm::Communicator {
 public:
  explicit FailingCommunicator(int failAt) : failAt_(failAt) {}
  int rank() const override { return 0; }
  int worldSize() const override { return 1; }
  std::string backendName() const override { return "failing"; }
  std::unique_ptr<comm::Work> allreduce(at::Tensor& /*inout*/,
                                        const comm::AllreduceOptions& /*options*/) override {
    if (allreduces_++ == failAt_) TW_THROW(CommError, "injected allreduce failure");
    return comm::completedWork();
  }
  std::unique_ptr<comm::Work> allgather(const at::Tensor&, at::Tensor&) override { unused(); }
  std::unique_ptr<comm::Work> allgatherv(const at::Tensor&,
                                         at::Tensor&,
                                         const std::vector<int64_t>&) override {
    unused();
  }
  std::unique_ptr<comm::Work> allToAll(const at::Tensor&,
                                       at::Tensor&,
                                       const std::vector<int64_t>&,
                                       const std::vector<int64_t>&) override {
    unused();
  }
  std::unique_ptr<comm::Work> reduceScatter(const at::Tensor&,
                                            at::Tensor&,
                                            const std::vector<int64_t>&,
                                            const comm::ReduceScatterOptions&) override {
    unused();
  }
  std::unique_ptr<comm::Work> broadcast(at::Tensor&, const comm::BroadcastOptions&) override {
    unused();
  }
  std::unique_ptr<comm::Work> barrier() override { unused(); }
  void abort(const std::string& /*reason*/) noexcept override {}

  int allreduces() const { return allreduces_; }

 private:
  [[noreturn]] static void unused() { TW_THROW(Error, "PowerSgd must only allreduce"); }

  int failAt_;
  int allreduces_ = 0;
};

class PowerSgdTest : public ::testing::Test {
 protected:
  std::vector<std::unique_ptr<comm::Communicator>> world_ = comm::makeLocalWorld(1);
  comm::Communicator& comm() { return *world_[0]; }
};

TEST(PowerSgdStaticTest, WorthCompressingMatchesTheFormula) {
  for (int64_t rows : {0, 1, 2, 4, 7, 16, 100, 1000}) {
    for (int64_t cols : {0, 1, 3, 4, 9, 64, 513}) {
      for (int rank : {1, 2, 4, 32}) {
        for (double rate : {0.5, 1.0, 2.0, 3.5}) {
          // Factor elements times the rate against dense elements, in long double.
          long double factors = static_cast<long double>(rank) * (rows + cols) * rate;
          long double dense = static_cast<long double>(rows) * cols;
          EXPECT_EQ(PowerSgd::worthCompressing(rows, cols, rank, rate), factors < dense)
              << rows << "x" << cols << " rank " << rank << " rate " << rate;
        }
      }
    }
  }
  EXPECT_FALSE(PowerSgd::worthCompressing(4, 4, 1, 2.0));  // 16 < 16 is false
  EXPECT_TRUE(PowerSgd::worthCompressing(5, 4, 1, 2.0));   // 18 < 20
}

TEST(PowerSgdStaticTest, BytesSentIsTheRingCostOfBothFactors) {
  for (int worldSize : {1, 2, 3, 4, 7}) {
    for (int64_t rows : {0, 1, 7, 64}) {
      for (int64_t cols : {1, 5, 100}) {
        for (int rank : {1, 2, 8}) {
          int64_t effective = std::min<int64_t>({rank, rows, cols});
          double exact = 2.0 * (worldSize - 1) / worldSize * 4.0 * effective * (rows + cols);
          EXPECT_EQ(PowerSgd::bytesSent(rows, cols, rank, worldSize),
                    static_cast<int64_t>(std::floor(exact + 1e-9)))
              << rows << "x" << cols << " rank " << rank << " n " << worldSize;
        }
      }
    }
  }
}

TEST(PowerSgdStaticTest, OrthonormalizedRowsHaveIdentityGram) {
  for (int64_t r : {1, 2, 4, 7}) {
    for (int64_t length : {7, 9, 100, 1000}) {
      at::Tensor vectors = randomMatrix(r, length, 10 * r + length);
      at::Tensor original = vectors.clone();
      EXPECT_EQ(PowerSgd::orthonormalizeRows(vectors, 0.0), 0);
      at::Tensor v = vectors.to(at::kDouble);
      at::Tensor gram = at::matmul(v, v.t());
      EXPECT_TRUE(at::allclose(gram, at::eye(r, at::kDouble), 0, 1e-5))
          << r << "x" << length << "\n"
          << gram;
      // Gram-Schmidt, not any orthonormal basis: row j spans what rows 0..j spanned.
      EXPECT_TRUE(at::allclose(v, referenceGramSchmidt(original, 0.0), 1e-4, 1e-5))
          << r << "x" << length;
    }
  }
}

TEST(PowerSgdStaticTest, NearlyDependentRowsStayOrthogonal) {
  at::Tensor base = randomMatrix(1, 200, 5);
  at::Tensor vectors = at::cat({base, base + 1e-4 * randomMatrix(1, 200, 6)}, 0);
  PowerSgd::orthonormalizeRows(vectors, 0.0);
  at::Tensor v = vectors.to(at::kDouble);
  EXPECT_NEAR(at::dot(v[0], v[1]).item<double>(), 0.0, 1e-5);
  EXPECT_NEAR(v[1].norm().item<double>(), 1.0, 1e-5);
}

TEST(PowerSgdStaticTest, ZeroRowsStayZeroWithoutNaN) {
  at::Tensor zeros = at::zeros({3, 11});
  EXPECT_EQ(PowerSgd::orthonormalizeRows(zeros, 0.0), 3);
  EXPECT_TRUE(at::equal(zeros, at::zeros({3, 11})));

  at::Tensor vectors = randomMatrix(3, 11, 7);
  vectors[1].zero_();
  at::Tensor original = vectors.clone();
  EXPECT_EQ(PowerSgd::orthonormalizeRows(vectors, 0.0), 1);
  EXPECT_TRUE(at::isfinite(vectors).all().item<bool>());
  EXPECT_TRUE(at::equal(vectors[1], at::zeros({11})));
  EXPECT_TRUE(
      at::allclose(vectors.to(at::kDouble), referenceGramSchmidt(original, 0.0), 1e-4, 1e-5));
}

TEST(PowerSgdStaticTest, EpsilonDividesByNormPlusEpsilon) {
  at::Tensor vectors = randomMatrix(2, 9, 8);
  at::Tensor original = vectors.clone();
  PowerSgd::orthonormalizeRows(vectors, 0.5);
  EXPECT_TRUE(
      at::allclose(vectors.to(at::kDouble), referenceGramSchmidt(original, 0.5), 1e-4, 1e-5));
  at::Tensor zeros = at::zeros({2, 4});
  PowerSgd::orthonormalizeRows(zeros, 0.5);
  EXPECT_TRUE(at::equal(zeros, at::zeros({2, 4})));
}

TEST(PowerSgdStaticTest, OrthonormalizeRejectsOtherLayouts) {
  at::Tensor doubles = at::ones({2, 3}, at::kDouble);
  errorMessageOf<InvalidArgument>([&] { PowerSgd::orthonormalizeRows(doubles, 0.0); });
  at::Tensor transposed = at::ones({3, 2}).t();
  errorMessageOf<InvalidArgument>([&] { PowerSgd::orthonormalizeRows(transposed, 0.0); });
  at::Tensor fine = at::ones({2, 3});
  errorMessageOf<InvalidArgument>([&] { PowerSgd::orthonormalizeRows(fine, -1.0); });
}

TEST(PowerSgdStaticTest, FreshQIsAPureFunctionOfSeedLayerAndStep) {
  at::Tensor q = PowerSgd::freshQ(3, 5, 7, 4, 9);
  ASSERT_EQ(q.sizes(), (at::IntArrayRef{4, 9}));
  EXPECT_TRUE(at::equal(q, PowerSgd::freshQ(3, 5, 7, 4, 9)));
  EXPECT_FALSE(at::equal(q, PowerSgd::freshQ(4, 5, 7, 4, 9)));
  EXPECT_FALSE(at::equal(q, PowerSgd::freshQ(3, 6, 7, 4, 9)));
  EXPECT_FALSE(at::equal(q, PowerSgd::freshQ(3, 5, 8, 4, 9)));
  // Odd sizes: the first elements are the same stream.
  at::Tensor odd = PowerSgd::freshQ(3, 5, 7, 1, 7);
  EXPECT_TRUE(at::equal(odd[0], q.flatten().slice(0, 0, 7)));
  EXPECT_EQ(PowerSgd::freshQ(3, 5, 7, 0, 9).numel(), 0);
  EXPECT_EQ(PowerSgd::freshQ(3, 5, 7, 2, 0).numel(), 0);
}

TEST(PowerSgdStaticTest, FreshQIsStandardNormal) {
  const int64_t count = 200000;
  at::Tensor q = PowerSgd::freshQ(0, 1, 2, 1, count).to(at::kDouble);
  EXPECT_TRUE(at::isfinite(q).all().item<bool>());
  double mean = q.mean().item<double>();
  double variance = q.var().item<double>();
  double fourth = (q - mean).pow(4).mean().item<double>();
  EXPECT_LT(std::abs(mean), 4.0 / std::sqrt(count));
  EXPECT_LT(std::abs(variance - 1.0), 4.0 * std::sqrt(2.0 / count));
  EXPECT_LT(std::abs(fourth - 3.0), 0.1);  // Gaussian kurtosis, not uniform (1.8)
  EXPECT_NEAR((q.abs() < 1.0).to(at::kDouble).mean().item<double>(), 0.6827, 0.005);
}

TEST_F(PowerSgdTest, ExactLowRankMatrixIsReproduced) {
  struct Case {
    int64_t rows, cols, rank;
  };
  for (Case c : {Case{30, 20, 2}, Case{7, 5, 1}, Case{9, 64, 4}, Case{3, 8, 3}}) {
    for (bool errorFeedback : {true, false}) {
      PowerSgd powerSgd(PowerSgdOptions{.errorFeedback = errorFeedback});
      at::Tensor target = lowRankMatrix(c.rows, c.cols, c.rank, 100 + c.rows);
      for (int64_t step = 0; step < 3; ++step) {
        std::vector<LowRankTask> tasks{
            {.layer = 4, .grad = target.clone(), .rank = static_cast<int>(c.rank)}};
        powerSgd.run(tasks, StepInfo{.step = step}, comm(), kTimeout);
        double scale = target.abs().max().item<double>();
        EXPECT_TRUE(at::allclose(tasks[0].grad, target, 1e-4, 1e-4 * scale))
            << c.rows << "x" << c.cols << " rank " << c.rank << " step " << step << " ef "
            << errorFeedback << " max error "
            << (tasks[0].grad - target).abs().max().item<double>();
      }
    }
  }
}

// One rank, rank 1, no feedback: grad = p p^T M with p = normalised M q, q = normalised fresh Q.
TEST_F(PowerSgdTest, OneRankOutputIsTheProjectionOntoMQ) {
  for (int64_t rows : {1, 7, 13}) {
    for (int64_t cols : {1, 8, 9}) {
      PowerSgd powerSgd(PowerSgdOptions{.errorFeedback = false, .seed = 11});
      at::Tensor m = randomMatrix(rows, cols, rows * 100 + cols);
      std::vector<LowRankTask> tasks{{.layer = 2, .grad = m.clone(), .rank = 1}};
      powerSgd.run(tasks, StepInfo{.step = 5}, comm(), kTimeout);

      at::Tensor md = m.to(at::kDouble);
      at::Tensor q = PowerSgd::freshQ(11, 2, 5, 1, cols).to(at::kDouble).t();
      at::Tensor p = at::matmul(md, q);
      p = p / p.norm();
      at::Tensor expected = at::matmul(p, at::matmul(p.t(), md));
      EXPECT_TRUE(at::allclose(tasks[0].grad.to(at::kDouble), expected, 1e-4, 1e-5))
          << rows << "x" << cols;
      // What was left out is orthogonal to the estimate's columns (P^T P = I in disguise).
      at::Tensor left = md - tasks[0].grad.to(at::kDouble);
      EXPECT_LT(at::matmul(tasks[0].grad.to(at::kDouble).t(), left).abs().max().item<double>(),
                1e-4);
    }
  }
}

TEST_F(PowerSgdTest, ResidualIsInputPlusOldResidualMinusEstimate) {
  PowerSgd powerSgd(PowerSgdOptions{});
  at::Tensor residual = at::zeros({12, 10});
  for (int64_t step = 0; step < 4; ++step) {
    at::Tensor grad = randomMatrix(12, 10, 40 + step);
    std::vector<LowRankTask> tasks{{.layer = 0, .grad = grad.clone(), .rank = 2}};
    powerSgd.run(tasks, StepInfo{.step = step}, comm(), kTimeout);
    at::Tensor newResidual = powerSgd.state().at("0.e");
    // e' = (g + e) - P Q^T, elementwise in float32 exactly as stated.
    EXPECT_TRUE(at::allclose(newResidual, (grad + residual) - tasks[0].grad, 0, 1e-6));
    EXPECT_GT(newResidual.abs().max().item<float>(), 0.01f);  // rank 2 of 10 loses something
    residual = newResidual;
  }
}

TEST_F(PowerSgdTest, ZeroMatrixGivesZerosAndThenRecovers) {
  PowerSgd powerSgd(PowerSgdOptions{});
  std::vector<LowRankTask> tasks{{.layer = 1, .grad = at::zeros({6, 5}), .rank = 2}};
  powerSgd.run(tasks, StepInfo{.step = 0}, comm(), kTimeout);
  EXPECT_TRUE(at::equal(tasks[0].grad, at::zeros({6, 5})));
  StateDict state = powerSgd.state();
  EXPECT_TRUE(at::equal(state.at("1.e"), at::zeros({6, 5})));
  EXPECT_TRUE(at::isfinite(state.at("1.q")).all().item<bool>());
  // The warm Q is now zero; the next step must still reproduce a rank-2 matrix.
  at::Tensor target = lowRankMatrix(6, 5, 2, 77);
  tasks[0].grad = target.clone();
  powerSgd.run(tasks, StepInfo{.step = 1}, comm(), kTimeout);
  EXPECT_TRUE(at::allclose(tasks[0].grad, target, 1e-4, 1e-4)) << tasks[0].grad - target;
}

TEST_F(PowerSgdTest, EmptyAndDegenerateShapes) {
  PowerSgd powerSgd(PowerSgdOptions{});
  at::Tensor row = randomMatrix(1, 7, 1);
  at::Tensor column = randomMatrix(7, 1, 2);
  std::vector<LowRankTask> tasks{{.layer = 0, .grad = at::zeros({0, 4}), .rank = 2},
                                 {.layer = 1, .grad = row.clone(), .rank = 3},
                                 {.layer = 2, .grad = column.clone(), .rank = 1}};
  powerSgd.run(tasks, StepInfo{}, comm(), kTimeout);
  EXPECT_EQ(tasks[0].grad.numel(), 0);
  // A 1-row or 1-column matrix is its own rank-1 approximation.
  EXPECT_TRUE(at::allclose(tasks[1].grad, row, 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(tasks[2].grad, column, 1e-5, 1e-5));
  EXPECT_EQ(powerSgd.state().at("1.q").sizes(), (at::IntArrayRef{1, 7}));

  std::vector<LowRankTask> onlyEmpty{{.layer = 0, .grad = at::zeros({0, 4}), .rank = 2}};
  FailingCommunicator counting(-1);
  powerSgd.run(onlyEmpty, StepInfo{}, counting, kTimeout);
  EXPECT_EQ(counting.allreduces(), 0);
  std::vector<LowRankTask> none;
  powerSgd.run(none, StepInfo{}, counting, kTimeout);
  EXPECT_EQ(counting.allreduces(), 0);
}

TEST_F(PowerSgdTest, InterruptedRunEqualsUninterruptedBitwise) {
  for (bool warmStart : {true, false}) {
    auto makeTasks = [](int64_t step) {
      return std::vector<LowRankTask>{
          {.layer = 0, .grad = randomMatrix(16, 9, 1000 + step), .rank = 2},
          {.layer = 3, .grad = randomMatrix(5, 33, 2000 + step), .rank = 4}};
    };
    PowerSgdOptions options{.warmStart = warmStart, .seed = 9};
    PowerSgd whole(options);
    std::vector<at::Tensor> wholeOutputs;
    for (int64_t step = 0; step < 6; ++step) {
      std::vector<LowRankTask> tasks = makeTasks(step);
      whole.run(tasks, StepInfo{.step = step}, comm(), kTimeout);
      for (const LowRankTask& task : tasks) wholeOutputs.push_back(task.grad);
    }

    std::vector<at::Tensor> resumedOutputs;
    StateDict checkpoint;
    {
      PowerSgd first(options);
      for (int64_t step = 0; step < 3; ++step) {
        std::vector<LowRankTask> tasks = makeTasks(step);
        first.run(tasks, StepInfo{.step = step}, comm(), kTimeout);
        for (const LowRankTask& task : tasks) resumedOutputs.push_back(task.grad);
      }
      checkpoint = first.state();
      // Later steps of the original object must not change the checkpoint (it holds copies).
      std::vector<LowRankTask> tasks = makeTasks(99);
      first.run(tasks, StepInfo{.step = 99}, comm(), kTimeout);
    }
    PowerSgd second(options);
    second.loadState(checkpoint);
    for (int64_t step = 3; step < 6; ++step) {
      std::vector<LowRankTask> tasks = makeTasks(step);
      second.run(tasks, StepInfo{.step = step}, comm(), kTimeout);
      for (const LowRankTask& task : tasks) resumedOutputs.push_back(task.grad);
    }
    ASSERT_EQ(resumedOutputs.size(), wholeOutputs.size());
    for (size_t i = 0; i < wholeOutputs.size(); ++i) {
      EXPECT_TRUE(at::equal(resumedOutputs[i], wholeOutputs[i])) << "output " << i;
    }
    StateDict a = whole.state();
    StateDict b = second.state();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [key, tensor] : a) EXPECT_TRUE(at::equal(tensor, b.at(key))) << key;
  }
}

TEST_F(PowerSgdTest, StateHoldsResidualAndTransposedQ) {
  PowerSgd withFeedback(PowerSgdOptions{});
  std::vector<LowRankTask> tasks{{.layer = 7, .grad = randomMatrix(8, 6, 3), .rank = 3}};
  withFeedback.run(tasks, StepInfo{}, comm(), kTimeout);
  StateDict state = withFeedback.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state.at("7.e").sizes(), (at::IntArrayRef{8, 6}));
  EXPECT_EQ(state.at("7.q").sizes(), (at::IntArrayRef{3, 6}));

  PowerSgd withoutFeedback(PowerSgdOptions{.errorFeedback = false});
  withoutFeedback.run(tasks, StepInfo{}, comm(), kTimeout);
  EXPECT_EQ(withoutFeedback.state().count("7.e"), 0u);
  std::string what = errorMessageOf<DataError>([&] { withoutFeedback.loadState(state); });
  EXPECT_NE(what.find("7.e"), std::string::npos) << what;
}

TEST_F(PowerSgdTest, LoadStateRefusesMalformedEntries) {
  PowerSgd powerSgd(PowerSgdOptions{});
  for (const char* key : {"x.e", "3.z", "3", ".e", "3x.e"}) {
    std::string what = errorMessageOf<DataError>([&] {
      powerSgd.loadState(StateDict{{key, at::zeros({2, 2})}});
    });
    EXPECT_NE(what.find(key), std::string::npos) << what;
  }
  errorMessageOf<DataError>([&] { powerSgd.loadState(StateDict{{"1.e", at::zeros({4})}}); });
  errorMessageOf<DataError>([&] {
    powerSgd.loadState(StateDict{{"1.e", at::zeros({2, 2}, at::kDouble)}});
  });
  errorMessageOf<DataError>([&] {
    powerSgd.loadState(StateDict{{"1.e", at::zeros({2, 3})}, {"1.q", at::zeros({1, 4})}});
  });
}

TEST_F(PowerSgdTest, RankChangeKeepsResidualAndDrawsQFresh) {
  PowerSgd changing(PowerSgdOptions{.seed = 5});
  std::vector<LowRankTask> tasks{{.layer = 0, .grad = randomMatrix(10, 8, 1), .rank = 2}};
  changing.run(tasks, StepInfo{.step = 0}, comm(), kTimeout);
  StateDict before = changing.state();

  // Rank 3 from a state that has e but no Q behaves like the changed layer: fresh Q, same e.
  PowerSgd fromResidual(PowerSgdOptions{.seed = 5});
  fromResidual.loadState(StateDict{{"0.e", before.at("0.e")}});

  at::Tensor grad = randomMatrix(10, 8, 2);
  std::vector<LowRankTask> a{{.layer = 0, .grad = grad.clone(), .rank = 3}};
  std::vector<LowRankTask> b{{.layer = 0, .grad = grad.clone(), .rank = 3}};
  changing.run(a, StepInfo{.step = 1}, comm(), kTimeout);
  fromResidual.run(b, StepInfo{.step = 1}, comm(), kTimeout);
  EXPECT_TRUE(at::equal(a[0].grad, b[0].grad));
  EXPECT_EQ(changing.state().at("0.q").sizes(), (at::IntArrayRef{3, 8}));
  EXPECT_TRUE(at::equal(changing.state().at("0.e"), fromResidual.state().at("0.e")));
}

TEST_F(PowerSgdTest, KeepQOnRankChangeKeepsTheConvergedSubspace) {
  // M = U diag(sigma) V^T with well-separated singular values: a warm start converges to the
  // leading subspace in a few steps, while one power iteration from a random Q does not. After a
  // change of rank, the kept Q must still give the best approximation of the new rank (shrink)
  // or at least beat the best one of the old rank (grow), and beat a fresh Q in both cases.
  const int64_t rows = 30, cols = 20;
  at::Tensor u = std::get<0>(at::linalg_qr(randomMatrix(rows, rows, 21).to(at::kDouble)));
  at::Tensor v = std::get<0>(at::linalg_qr(randomMatrix(cols, cols, 22).to(at::kDouble)));
  at::Tensor sigma = at::zeros({rows, cols}, at::kDouble);
  const double values[] = {16, 8, 4, 1, 0.5, 0.25};
  for (int64_t i = 0; i < cols; ++i) sigma[i][i] = i < 6 ? values[i] : 0.1;
  at::Tensor m = u.matmul(sigma).matmul(v.t()).to(at::kFloat).contiguous();
  at::Tensor singular = std::get<1>(at::linalg_svd(m.to(at::kDouble), false));
  auto best = [&](int64_t rank) { return singular.slice(0, rank).norm().item<double>(); };

  for (int to : {1, 3}) {
    auto errorAfterChange = [&](bool keep) {
      PowerSgd powerSgd(PowerSgdOptions{.errorFeedback = false, .keepQOnRankChange = keep});
      for (int64_t step = 0; step < 10; ++step) {
        std::vector<LowRankTask> t{{.layer = 0, .grad = m.clone(), .rank = 2}};
        powerSgd.run(t, StepInfo{.step = step}, comm(), kTimeout);
      }
      std::vector<LowRankTask> t{{.layer = 0, .grad = m.clone(), .rank = to}};
      powerSgd.run(t, StepInfo{.step = 10}, comm(), kTimeout);
      EXPECT_EQ(powerSgd.state().at("0.q").size(0), to);
      return (m - t[0].grad).norm().item<double>();
    };
    double kept = errorAfterChange(true);
    double fresh = errorAfterChange(false);
    SCOPED_TRACE("rank 2 -> " + std::to_string(to));
    if (to < 2) {
      EXPECT_LT(kept, best(to) * 1.001);
    } else {
      EXPECT_LT(kept, best(2));
    }
    EXPECT_LT(kept, fresh);
  }
}

TEST_F(PowerSgdTest, WarmStartReusesQAndColdStartDoesNot) {
  // With a fixed input, the warm start keeps iterating the power method: its error can only
  // shrink; the cold start repeats the same one-step estimate from a different Q every step.
  at::Tensor m = randomMatrix(40, 30, 12);
  PowerSgd warm(PowerSgdOptions{.errorFeedback = false, .warmStart = true});
  PowerSgd cold(PowerSgdOptions{.errorFeedback = false, .warmStart = false});
  double lastWarmError = 1e30;
  at::Tensor firstCold;
  for (int64_t step = 0; step < 8; ++step) {
    std::vector<LowRankTask> w{{.layer = 0, .grad = m.clone(), .rank = 2}};
    std::vector<LowRankTask> c{{.layer = 0, .grad = m.clone(), .rank = 2}};
    warm.run(w, StepInfo{.step = step}, comm(), kTimeout);
    cold.run(c, StepInfo{.step = step}, comm(), kTimeout);
    double warmError = (m - w[0].grad).norm().item<double>();
    EXPECT_LE(warmError, lastWarmError * (1 + 1e-5)) << "step " << step;
    lastWarmError = warmError;
    if (step == 0) {
      firstCold = c[0].grad;
      EXPECT_TRUE(at::equal(w[0].grad, c[0].grad));  // both start from the fresh Q of step 0
    } else {
      EXPECT_FALSE(at::equal(c[0].grad, firstCold));
    }
  }
  // Eight power iterations get close to the best rank-2 approximation (SVD, in double).
  at::Tensor singular = std::get<1>(at::linalg_svd(m.to(at::kDouble), false));
  double best = singular.slice(0, 2).norm().item<double>();
  EXPECT_LT(lastWarmError, best * 1.01);
}

TEST_F(PowerSgdTest, InvalidTasksThrowBeforeTouchingAnything) {
  PowerSgd powerSgd(PowerSgdOptions{});
  at::Tensor good = randomMatrix(4, 3, 1);
  std::vector<LowRankTask> first{{.layer = 0, .grad = good.clone(), .rank = 1}};
  powerSgd.run(first, StepInfo{}, comm(), kTimeout);
  StateDict before = powerSgd.state();

  auto expectRejected = [&](at::Tensor bad, int rank, LayerId badLayer) {
    at::Tensor untouched = good.clone();
    std::vector<LowRankTask> tasks{{.layer = 0, .grad = untouched, .rank = 1},
                                   {.layer = badLayer, .grad = bad, .rank = rank}};
    errorMessageOf<InvalidArgument>(
        [&] { powerSgd.run(tasks, StepInfo{.step = 1}, comm(), kTimeout); });
    EXPECT_TRUE(at::equal(untouched, good));
    StateDict after = powerSgd.state();
    ASSERT_EQ(after.size(), before.size());
    for (const auto& [key, tensor] : before) EXPECT_TRUE(at::equal(tensor, after.at(key))) << key;
  };
  expectRejected(at::zeros({4, 3}, at::kDouble), 1, 1);
  expectRejected(at::zeros({12}), 1, 1);
  expectRejected(at::zeros({3, 4}).t(), 1, 1);
  expectRejected(at::zeros({4, 3}), 0, 1);
  expectRejected(at::zeros({4, 3}), 1, 0);  // layer 0 twice
  expectRejected(at::zeros({5, 3}), 1, 0);  // wrong shape for layer 0 (and twice)
  std::vector<LowRankTask> reshaped{{.layer = 0, .grad = at::zeros({3, 4}), .rank = 1}};
  std::string what = errorMessageOf<InvalidArgument>(
      [&] { powerSgd.run(reshaped, StepInfo{}, comm(), kTimeout); });
  EXPECT_NE(what.find("layer 0"), std::string::npos) << what;

  errorMessageOf<InvalidArgument>([] { PowerSgd(PowerSgdOptions{.minCompressionRate = 0}); });
  errorMessageOf<InvalidArgument>([] { PowerSgd(PowerSgdOptions{.orthogonalizationEps = -1}); });
}

// Large enough for several parallel chunks of rows (P = M Q, reconstruction) and of columns
// (Q = M^T P); nested inside a parallel region every kernel runs on one thread.
TEST_F(PowerSgdTest, ResultsDoNotDependOnTheThreadCount) {
  at::Tensor input = randomMatrix(300, 2500, 21);
  auto runTwice = [&](PowerSgd& powerSgd) {
    std::vector<at::Tensor> outputs;
    for (int64_t step = 0; step < 2; ++step) {
      std::vector<LowRankTask> tasks{{.layer = 0, .grad = input.clone(), .rank = 4}};
      powerSgd.run(tasks, StepInfo{.step = step}, comm(), kTimeout);
      outputs.push_back(tasks[0].grad);
    }
    return outputs;
  };
  PowerSgd parallel(PowerSgdOptions{});
  std::vector<at::Tensor> parallelOutputs = runTwice(parallel);
  PowerSgd serial(PowerSgdOptions{});
  std::vector<at::Tensor> serialOutputs;
  at::parallel_for(0, 1, 1, [&](int64_t, int64_t) { serialOutputs = runTwice(serial); });
  ASSERT_EQ(serialOutputs.size(), parallelOutputs.size());
  for (size_t i = 0; i < serialOutputs.size(); ++i) {
    EXPECT_TRUE(at::equal(serialOutputs[i], parallelOutputs[i])) << "step " << i;
  }
  EXPECT_TRUE(at::equal(serial.state().at("0.e"), parallel.state().at("0.e")));
  EXPECT_TRUE(at::equal(serial.state().at("0.q"), parallel.state().at("0.q")));
}

TEST(PowerSgdFailureTest, FailedExchangeLeavesStateUnchanged) {
  for (int failAt : {0, 1}) {
    PowerSgd powerSgd(PowerSgdOptions{});
    FailingCommunicator healthy(-1);
    std::vector<LowRankTask> tasks{{.layer = 0, .grad = randomMatrix(6, 5, 1), .rank = 2}};
    powerSgd.run(tasks, StepInfo{.step = 0}, healthy, kTimeout);
    StateDict before = powerSgd.state();

    FailingCommunicator failing(failAt);
    tasks[0].grad = randomMatrix(6, 5, 2);
    errorMessageOf<CommError>([&] { powerSgd.run(tasks, StepInfo{.step = 1}, failing, kTimeout); });
    StateDict after = powerSgd.state();
    ASSERT_EQ(after.size(), before.size());
    for (const auto& [key, tensor] : before) {
      EXPECT_TRUE(at::equal(tensor, after.at(key))) << key << " after failure " << failAt;
    }
  }
}

}  // namespace
}  // namespace thinwire::compressors

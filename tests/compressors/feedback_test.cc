// Tests of the feedback policies (compressors/feedback.h) against independent reference math:
// the per-step invariants of specs §1.4 and §3.3, the degenerate equivalences of §8.4 (identity
// compressor => plain averaging, DGC with k = numel => momentum SGD), bit-exact resume, and the
// factory. Several workers are simulated in one process: each has its own Feedback object and
// the average is formed here (sum of decompressAdd of every payload, divided by n once).
#include "compressors/feedback.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "compressors/dgc_feedback.h"
#include "compressors/econtrol_feedback.h"
#include "compressors/ef21_feedback.h"
#include "compressors/error_feedback.h"
#include "compressors/identity_compressor.h"
#include "compressors/no_feedback.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"

namespace thinwire::compressors {
namespace {

at::Tensor fromVector(const std::vector<float>& values) {
  return at::tensor(at::ArrayRef<float>(values), at::TensorOptions().dtype(at::kFloat)).clone();
}

std::vector<float> toVector(const at::Tensor& tensor) {
  at::Tensor flat = tensor.contiguous().reshape({-1});
  const float* data = flat.data_ptr<float>();
  return std::vector<float>(data, data + flat.numel());
}

// Standard normal values from a private generator (independent of libtorch's RNG).
at::Tensor gaussian(int64_t numel, uint64_t seed) {
  if (numel == 0) return at::zeros({0});
  std::mt19937_64 engine(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(numel));
  for (float& value : values) value = normal(engine);
  return at::from_blob(values.data(), {numel}, at::TensorOptions().dtype(at::kFloat)).clone();
}

// Integers in [-50, 50]: sums, differences and divisions by powers of two are exact in fp32,
// so paths that are mathematically equal must agree bit for bit.
at::Tensor integers(int64_t numel, uint64_t seed) {
  if (numel == 0) return at::zeros({0});
  std::mt19937_64 engine(seed);
  std::uniform_int_distribution<int> uniform(-50, 50);
  std::vector<float> values(static_cast<size_t>(numel));
  for (float& value : values) value = static_cast<float>(uniform(engine));
  return at::from_blob(values.data(), {numel}, at::TensorOptions().dtype(at::kFloat)).clone();
}

bool bitEqual(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() != b.numel()) return false;
  at::Tensor x = a.contiguous();
  at::Tensor y = b.contiguous();
  return a.numel() == 0 ||
         std::memcmp(x.data_ptr<float>(), y.data_ptr<float>(), a.numel() * sizeof(float)) == 0;
}

at::Tensor decodeDense(const Compressor& compressor,
                       const Payload& payload,
                       int64_t numel,
                       const LayerParams& params) {
  at::Tensor dense = at::zeros({numel}, at::TensorOptions().dtype(at::kFloat));
  compressor.decompressAdd(payload, dense, 1.0f, params);
  return dense;
}

// The reference aggregation: (1/n) * sum of every worker's decoded payload.
at::Tensor averageOf(const Compressor& compressor,
                     const std::vector<Payload>& payloads,
                     int64_t numel,
                     const LayerParams& params) {
  at::Tensor sum = at::zeros({numel}, at::TensorOptions().dtype(at::kFloat));
  for (const Payload& payload : payloads) compressor.decompressAdd(payload, sum, 1.0f, params);
  return sum / static_cast<float>(payloads.size());
}

// Positions of the k largest |p|, lower index first among equal magnitudes (top_k_compressor.h).
std::vector<int64_t> referenceTopK(const at::Tensor& p, int64_t k) {
  std::vector<float> values = toVector(p);
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return std::fabs(values[a]) > std::fabs(values[b]);
  });
  order.resize(static_cast<size_t>(std::min<int64_t>(k, static_cast<int64_t>(order.size()))));
  std::sort(order.begin(), order.end());
  return order;
}

int64_t referenceK(int64_t numel, double ratio) {
  if (numel == 0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(std::floor(ratio * static_cast<double>(numel))));
}

at::Tensor stateEntry(const Feedback& feedback, const std::string& key) {
  StateDict state = feedback.state();
  auto it = state.find(key);
  if (it == state.end()) return at::Tensor();
  return it->second;
}

const std::vector<int64_t> kSizes = {0, 1, 7, 100, 1001};

// ---------------------------------------------------------------------------------------------
// Factory

TEST(FeedbackFactoryTest, ParsesEveryKindAndBuildsTheMatchingPolicy) {
  const std::vector<std::pair<std::string, FeedbackKind>> kinds = {
      {"none", FeedbackKind::kNone},
      {"ef", FeedbackKind::kEf},
      {"ef21", FeedbackKind::kEf21},
      {"econtrol", FeedbackKind::kEControl},
      {"dgc", FeedbackKind::kDgc}};
  for (const auto& [word, kind] : kinds) {
    EXPECT_EQ(parseFeedbackKind(word), kind);
    FeedbackOptions options;
    options.kind = kind;
    EXPECT_EQ(makeFeedback(options)->name(), word);
  }
  EXPECT_THROW(parseFeedbackKind("EF"), InvalidArgument);
  EXPECT_THROW(parseFeedbackKind("topk"), InvalidArgument);
  EXPECT_THROW(parseFeedbackKind(""), InvalidArgument);
}

TEST(FeedbackFactoryTest, RejectsOutOfRangeOptions) {
  FeedbackOptions econtrol;
  econtrol.kind = FeedbackKind::kEControl;
  econtrol.eta = 1.5;
  EXPECT_THROW(makeFeedback(econtrol), InvalidArgument);
  econtrol.eta = std::nan("");
  EXPECT_THROW(makeFeedback(econtrol), InvalidArgument);
  FeedbackOptions dgc;
  dgc.kind = FeedbackKind::kDgc;
  dgc.momentum = 1.0;
  EXPECT_THROW(makeFeedback(dgc), InvalidArgument);
  dgc.momentum = 0.9;
  dgc.clipNorm = -1;
  EXPECT_THROW(makeFeedback(dgc), InvalidArgument);
}

TEST(FeedbackTest, RejectsAGradientOfAnotherSizeOrDtype) {
  IdentityCompressor identity;
  LayerParams params;
  for (FeedbackKind kind : {FeedbackKind::kEf, FeedbackKind::kEf21, FeedbackKind::kEControl}) {
    FeedbackOptions options;
    options.kind = kind;
    std::unique_ptr<Feedback> feedback = makeFeedback(options);
    Payload out;
    at::Tensor grad = gaussian(8, 1);
    feedback->encode(3, grad, identity, params, {}, out);
    at::Tensor longer = gaussian(9, 2);
    EXPECT_THROW(feedback->encode(3, longer, identity, params, {}, out), InvalidArgument);
    at::Tensor doubles = gaussian(8, 3).to(at::kDouble);
    EXPECT_THROW(feedback->encode(3, doubles, identity, params, {}, out), InvalidArgument);
  }
}

// ---------------------------------------------------------------------------------------------
// EF14

TEST(ErrorFeedbackTest, DeltaPlusNewResidualIsOldResidualPlusGradientBitForBit) {
  TopKCompressor topk;  // exact selection, float32 values
  for (bool stepUnits : {false, true}) {
    for (int64_t numel : kSizes) {
      FeedbackOptions options;
      options.stepUnits = stepUnits;
      ErrorFeedback ef(options);
      LayerParams params;
      params.ratio = 0.1;
      at::Tensor residual = at::zeros({numel}, at::TensorOptions().dtype(at::kFloat));
      for (int step = 0; step < 4; ++step) {
        StepInfo info;
        info.step = step;
        info.lr = 0.3 / (1 + step);
        const float scale = stepUnits ? static_cast<float>(info.lr) : 1.0f;
        at::Tensor grad = gaussian(numel, 100 * numel + step);
        at::Tensor expected = fromVector([&] {
          std::vector<float> e = toVector(residual);
          std::vector<float> g = toVector(grad);
          for (size_t i = 0; i < e.size(); ++i) e[i] = e[i] + scale * g[i];
          return e;
        }());
        at::Tensor gradCopy = grad.clone();
        Payload out;
        ef.encode(7, grad, topk, params, info, out);
        EXPECT_TRUE(bitEqual(grad, gradCopy)) << "EF must not modify the gradient";
        at::Tensor delta = decodeDense(topk, out, numel, params);
        at::Tensor newResidual = stateEntry(ef, "7.e");
        ASSERT_TRUE(newResidual.defined());
        EXPECT_TRUE(bitEqual(delta + newResidual, expected))
            << "numel " << numel << " step " << step << " stepUnits " << stepUnits;
        // What was sent: the k largest |p|, and the residual is exactly 0 there.
        const std::vector<int64_t> kept = referenceTopK(expected, referenceK(numel, 0.1));
        std::vector<float> deltaValues = toVector(delta);
        std::vector<float> residualValues = toVector(newResidual);
        std::vector<float> p = toVector(expected);
        for (int64_t i = 0; i < numel; ++i) {
          const bool sent = std::binary_search(kept.begin(), kept.end(), i);
          EXPECT_EQ(deltaValues[i], sent ? p[i] : 0.0f) << i;
          EXPECT_EQ(residualValues[i], sent ? 0.0f : p[i]) << i;
        }
        residual = newResidual;
      }
    }
  }
}

TEST(ErrorFeedbackTest, StepUnitsDecodeDividesByTheLearningRate) {
  FeedbackOptions options;
  options.stepUnits = true;
  ErrorFeedback ef(options);
  at::Tensor average = gaussian(33, 5);
  at::Tensor expected = average / 0.25f;
  StepInfo info;
  info.lr = 0.25;
  ef.decode(0, average, info);
  EXPECT_TRUE(bitEqual(average, expected));
  info.lr = 0;
  EXPECT_THROW(ef.decode(0, average, info), InvalidArgument);

  ErrorFeedback gradientUnits{FeedbackOptions{}};
  at::Tensor unchanged = expected.clone();
  gradientUnits.decode(0, unchanged, info);
  EXPECT_TRUE(bitEqual(unchanged, expected));
}

// Three workers with heterogeneous quadratics f_i(x) = 0.5 ||x - c_i||^2 (gradient x - c_i),
// top-k with EF, x <- x - lr_t * decode(average). Returns the final x.
std::vector<float> runEfTrajectory(bool stepUnits, const std::function<double(int)>& lr) {
  constexpr int kWorkers = 3;
  constexpr int64_t kDim = 17;
  TopKCompressor topk;
  LayerParams params;
  params.ratio = 0.2;
  std::vector<at::Tensor> centers;
  for (int i = 0; i < kWorkers; ++i) centers.push_back(gaussian(kDim, 40 + i) * 3.0f);
  std::vector<std::unique_ptr<Feedback>> workers;
  for (int i = 0; i < kWorkers; ++i) {
    FeedbackOptions options;
    options.stepUnits = stepUnits;
    workers.push_back(makeFeedback(options));
  }
  at::Tensor x = gaussian(kDim, 7);
  for (int step = 0; step < 40; ++step) {
    StepInfo info;
    info.step = step;
    info.lr = lr(step);
    info.worldSize = kWorkers;
    std::vector<Payload> payloads(kWorkers);
    for (int i = 0; i < kWorkers; ++i) {
      at::Tensor grad = x - centers[i];
      workers[i]->encode(0, grad, topk, params, info, payloads[i]);
    }
    at::Tensor average = averageOf(topk, payloads, kDim, params);
    workers[0]->decode(0, average, info);
    x = x - static_cast<float>(info.lr) * average;
  }
  return toVector(x);
}

TEST(ErrorFeedbackTest, StepAndGradientUnitsAgreeUnderConstantLrAndDifferUnderASchedule) {
  auto constant = [](int) { return 0.1; };
  std::vector<float> gradientUnits = runEfTrajectory(false, constant);
  std::vector<float> stepUnits = runEfTrajectory(true, constant);
  EXPECT_TRUE(at::allclose(fromVector(gradientUnits), fromVector(stepUnits), 1e-4, 1e-5));

  auto decaying = [](int step) { return step < 5 ? 0.4 : 0.4 / (1 + step - 5); };
  std::vector<float> gradientScheduled = runEfTrajectory(false, decaying);
  std::vector<float> stepScheduled = runEfTrajectory(true, decaying);
  const double difference =
      (fromVector(gradientScheduled) - fromVector(stepScheduled)).abs().max().item<float>();
  EXPECT_GT(difference, 1e-3) << "an old residual applied with a new rate must show";
}

// ---------------------------------------------------------------------------------------------
// EF21

TEST(Ef21FeedbackTest, LocalTrackerGrowsByTheMessageAndMeanTrackerIsTheMeanOfThem) {
  constexpr int kWorkers = 3;
  TopKCompressor topk;
  LayerParams params;
  params.ratio = 0.15;
  for (int64_t numel : kSizes) {
    std::vector<Ef21Feedback> workers(kWorkers);
    std::vector<at::Tensor> local(kWorkers, at::zeros({numel}));
    at::Tensor mean = at::zeros({numel});
    for (int step = 0; step < 5; ++step) {
      std::vector<Payload> payloads(kWorkers);
      for (int i = 0; i < kWorkers; ++i) {
        at::Tensor grad = gaussian(numel, 1000 * step + 10 * i + numel);
        workers[i].encode(2, grad, topk, params, {}, payloads[i]);
        at::Tensor delta = decodeDense(topk, payloads[i], numel, params);
        at::Tensor updated = stateEntry(workers[i], "2.h_i");
        EXPECT_TRUE(at::allclose(updated - local[i], delta, 1e-6, 1e-6)) << numel;
        local[i] = updated;
      }
      at::Tensor average = averageOf(topk, payloads, numel, params);
      at::Tensor first;
      for (int i = 0; i < kWorkers; ++i) {
        at::Tensor decoded = average.clone();
        workers[i].decode(2, decoded, {});
        if (i == 0) {
          EXPECT_TRUE(at::allclose(decoded, mean + average, 1e-6, 1e-6));
          first = decoded;
        }
        EXPECT_TRUE(bitEqual(decoded, first)) << "every rank holds the same h";
        EXPECT_TRUE(bitEqual(decoded, stateEntry(workers[i], "2.h")));
      }
      mean = first;
      at::Tensor meanOfLocal = (local[0] + local[1] + local[2]) / 3.0f;
      EXPECT_TRUE(at::allclose(mean, meanOfLocal, 1e-5, 1e-5)) << "h == mean_i h_i";
    }
  }
}

TEST(Ef21FeedbackTest, FirstMessageIsTheCompressedGradient) {
  TopKCompressor topk;
  LayerParams params;
  params.ratio = 0.3;
  Ef21Feedback ef21;
  at::Tensor grad = gaussian(10, 77);
  const std::vector<int64_t> kept = referenceTopK(grad, 3);
  at::Tensor expected = at::zeros({10});
  for (int64_t index : kept) expected[index] = grad[index];
  Payload out;
  at::Tensor scratch = grad.clone();
  ef21.encode(0, scratch, topk, params, {}, out);
  EXPECT_TRUE(bitEqual(decodeDense(topk, out, 10, params), expected));
}

// ---------------------------------------------------------------------------------------------
// EControl

TEST(EControlFeedbackTest, ErrorPlusLocalTrackerGrowsByTheGradient) {
  TopKCompressor topk;
  SignCompressor sign(SignOptions{});
  LayerParams params;
  params.ratio = 0.1;
  for (double eta : {-1.0, 0.0, 0.05, 0.3, 1.0}) {
    for (Compressor* compressor : std::vector<Compressor*>{&topk, &sign}) {
      for (int64_t numel : kSizes) {
        FeedbackOptions options;
        options.kind = FeedbackKind::kEControl;
        options.eta = eta;
        EControlFeedback econtrol(options);
        at::Tensor e = at::zeros({numel});
        at::Tensor h = at::zeros({numel});
        for (int step = 0; step < 5; ++step) {
          at::Tensor grad = gaussian(numel, 31 * step + numel);
          at::Tensor expected = e + grad;
          // The message is C(eta e + g - h_i): rebuild p independently.
          const double usedEta = econtrol.effectiveEta(*compressor, numel, params);
          at::Tensor p = static_cast<float>(usedEta) * e + grad - h;
          Payload out;
          econtrol.encode(4, grad, *compressor, params, {}, out);
          at::Tensor newE = stateEntry(econtrol, "4.e");
          at::Tensor newH = stateEntry(econtrol, "4.h_i");
          EXPECT_TRUE(at::allclose(newE + newH, expected, 1e-6, 1e-5))
              << compressor->name() << " eta " << eta << " numel " << numel << " step " << step;
          at::Tensor delta = decodeDense(*compressor, out, numel, params);
          EXPECT_TRUE(at::allclose(newH - h, delta, 1e-6, 1e-5));
          if (compressor == &topk) {
            // Sent: the k largest |p| (Delta = p there).
            const std::vector<int64_t> kept = referenceTopK(p, referenceK(numel, params.ratio));
            at::Tensor expectedDelta = at::zeros({numel});
            for (int64_t index : kept) expectedDelta[index] = p[index];
            EXPECT_TRUE(at::allclose(delta, expectedDelta, 1e-6, 1e-6));
          }
          e = newE;
          h = newH;
        }
      }
    }
  }
}

// With tracking momentum beta the tracked signal is v <- beta v + (1 - beta) g: the invariant
// becomes e' + h_i' == e + v, and the message is C(eta e + v - h_i).
TEST(EControlFeedbackTest, TrackingMomentumTracksTheLocalAverage) {
  TopKCompressor topk;
  LayerParams params;
  params.ratio = 0.1;
  const int64_t numel = 1000;
  FeedbackOptions options;
  options.kind = FeedbackKind::kEControl;
  options.eta = 0.05;
  options.trackingMomentum = 0.8;
  EControlFeedback econtrol(options);
  at::Tensor e = at::zeros({numel});
  at::Tensor h = at::zeros({numel});
  at::Tensor v = at::zeros({numel});
  for (int step = 0; step < 6; ++step) {
    at::Tensor grad = gaussian(numel, 97 * step + 5);
    v = 0.8f * v + 0.2f * grad;
    at::Tensor p = 0.05f * e + v - h;
    Payload out;
    econtrol.encode(2, grad, topk, params, {}, out);
    at::Tensor newE = stateEntry(econtrol, "2.e");
    at::Tensor newH = stateEntry(econtrol, "2.h_i");
    EXPECT_TRUE(at::allclose(stateEntry(econtrol, "2.v"), v, 1e-6, 1e-6)) << "step " << step;
    EXPECT_TRUE(at::allclose(newE + newH, e + v, 1e-6, 1e-5)) << "step " << step;
    const std::vector<int64_t> kept = referenceTopK(p, referenceK(numel, params.ratio));
    at::Tensor expectedDelta = at::zeros({numel});
    for (int64_t index : kept) expectedDelta[index] = p[index];
    EXPECT_TRUE(at::allclose(decodeDense(topk, out, numel, params), expectedDelta, 1e-6, 1e-6))
        << "step " << step;
    e = newE;
    h = newH;
  }
  FeedbackOptions bad = options;
  bad.trackingMomentum = 1.0;
  EXPECT_THROW(EControlFeedback{bad}, InvalidArgument);
}

TEST(EControlFeedbackTest, DefaultEtaIsHalfTheCompressorsDelta) {
  TopKCompressor topk;
  IdentityCompressor identity;
  EControlFeedback econtrol(FeedbackOptions{FeedbackKind::kEControl});
  LayerParams params;
  params.ratio = 0.1;
  EXPECT_DOUBLE_EQ(econtrol.effectiveEta(topk, 20, params), 0.5 * 2.0 / 20.0);
  EXPECT_DOUBLE_EQ(econtrol.effectiveEta(topk, 1005, params), 0.5 * 100.0 / 1005.0);
  EXPECT_DOUBLE_EQ(econtrol.effectiveEta(identity, 7, params), 0.5);
  FeedbackOptions explicitEta;
  explicitEta.kind = FeedbackKind::kEControl;
  explicitEta.eta = 0.02;
  EXPECT_DOUBLE_EQ(EControlFeedback(explicitEta).effectiveEta(topk, 20, params), 0.02);
}

// A compressor that claims no contraction: EControl must refuse to derive eta from it.
class NotContractive : public IdentityCompressor {
 public:
  double deltaHint(int64_t /*numel*/, const LayerParams& /*params*/) const override { return 0; }
};

TEST(EControlFeedbackTest, RefusesToDeriveEtaFromANonContractiveCompressor) {
  NotContractive compressor;
  EControlFeedback derived(FeedbackOptions{FeedbackKind::kEControl});
  at::Tensor grad = gaussian(5, 1);
  Payload out;
  EXPECT_THROW(derived.encode(0, grad, compressor, {}, {}, out), InvalidArgument);
  FeedbackOptions explicitEta;
  explicitEta.kind = FeedbackKind::kEControl;
  explicitEta.eta = 0.1;
  EControlFeedback given(explicitEta);
  EXPECT_NO_THROW(given.encode(0, grad, compressor, {}, {}, out));
}

TEST(EControlFeedbackTest, IdentityCompressorKeepsErrorZeroAndDecodesThePlainAverage) {
  constexpr int kWorkers = 4;
  IdentityCompressor identity;
  for (int64_t numel : {1, 7, 130}) {
    std::vector<EControlFeedback> workers(kWorkers, EControlFeedback(FeedbackOptions{}));
    for (int step = 0; step < 6; ++step) {
      std::vector<Payload> payloads(kWorkers);
      at::Tensor sum = at::zeros({numel});
      for (int i = 0; i < kWorkers; ++i) {
        at::Tensor grad = integers(numel, 97 * step + i);
        sum += grad;
        workers[i].encode(0, grad, identity, {}, {}, payloads[i]);
        EXPECT_EQ(stateEntry(workers[i], "0.e").abs().max().item<float>(), 0.0f);
      }
      at::Tensor plainAverage = sum / static_cast<float>(kWorkers);
      at::Tensor average = averageOf(identity, payloads, numel, {});
      for (int i = 0; i < kWorkers; ++i) {
        at::Tensor decoded = average.clone();
        workers[i].decode(0, decoded, {});
        EXPECT_TRUE(bitEqual(decoded, plainAverage)) << "numel " << numel << " step " << step;
      }
    }
  }
}

TEST(EControlFeedbackTest, ZeroEtaReproducesEf21) {
  constexpr int kWorkers = 3;
  constexpr int64_t kDim = 50;
  TopKCompressor topk;
  LayerParams params;
  params.ratio = 0.1;
  FeedbackOptions zeroEta;
  zeroEta.kind = FeedbackKind::kEControl;
  zeroEta.eta = 0;
  std::vector<EControlFeedback> econtrol(kWorkers, EControlFeedback(zeroEta));
  std::vector<Ef21Feedback> ef21(kWorkers);
  for (int step = 0; step < 10; ++step) {
    std::vector<Payload> fromEControl(kWorkers);
    std::vector<Payload> fromEf21(kWorkers);
    for (int i = 0; i < kWorkers; ++i) {
      at::Tensor grad = gaussian(kDim, 13 * step + i);
      at::Tensor copy = grad.clone();
      econtrol[i].encode(1, grad, topk, params, {}, fromEControl[i]);
      ef21[i].encode(1, copy, topk, params, {}, fromEf21[i]);
      EXPECT_TRUE(at::equal(fromEControl[i].data, fromEf21[i].data)) << step;
      EXPECT_TRUE(bitEqual(stateEntry(econtrol[i], "1.h_i"), stateEntry(ef21[i], "1.h_i")));
    }
    at::Tensor a = averageOf(topk, fromEControl, kDim, params);
    at::Tensor b = averageOf(topk, fromEf21, kDim, params);
    econtrol[0].decode(1, a, {});
    ef21[0].decode(1, b, {});
    EXPECT_TRUE(bitEqual(a, b)) << step;
  }
}

// ---------------------------------------------------------------------------------------------
// Every policy but DGC with the identity compressor is plain averaging.

TEST(FeedbackTest, IdentityCompressorEqualsUncompressedAveragingForEveryPolicy) {
  constexpr int kWorkers = 4;  // a power of two: the /n is exact on integer data
  IdentityCompressor identity;
  struct Case {
    std::string label;
    FeedbackOptions options;
  };
  std::vector<Case> cases;
  for (FeedbackKind kind :
       {FeedbackKind::kNone, FeedbackKind::kEf, FeedbackKind::kEf21, FeedbackKind::kEControl}) {
    FeedbackOptions options;
    options.kind = kind;
    cases.push_back({makeFeedback(options)->name(), options});
  }
  FeedbackOptions stepUnits;
  stepUnits.stepUnits = true;
  cases.push_back({"ef step units", stepUnits});
  FeedbackOptions smallEta;
  smallEta.kind = FeedbackKind::kEControl;
  smallEta.eta = 0.1;
  cases.push_back({"econtrol eta 0.1", smallEta});

  for (const Case& testCase : cases) {
    for (int64_t numel : {0, 1, 7, 300}) {
      std::vector<std::unique_ptr<Feedback>> workers;
      for (int i = 0; i < kWorkers; ++i) workers.push_back(makeFeedback(testCase.options));
      for (int step = 0; step < 6; ++step) {
        StepInfo info;
        info.step = step;
        info.lr = step % 2 == 0 ? 0.5 : 0.25;  // powers of two keep step units exact
        info.worldSize = kWorkers;
        std::vector<Payload> payloads(kWorkers);
        at::Tensor sum = at::zeros({numel});
        for (int i = 0; i < kWorkers; ++i) {
          at::Tensor grad = integers(numel, 1000 * step + 10 * i + numel);
          sum += grad;
          workers[i]->encode(5, grad, identity, {}, info, payloads[i]);
        }
        at::Tensor plainAverage = sum / static_cast<float>(kWorkers);
        at::Tensor average = averageOf(identity, payloads, numel, {});
        for (int i = 0; i < kWorkers; ++i) {
          at::Tensor decoded = average.clone();
          workers[i]->decode(5, decoded, info);
          EXPECT_TRUE(bitEqual(decoded, plainAverage))
              << testCase.label << " numel " << numel << " step " << step << " worker " << i;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// DGC

// The optimizer a DGC run at ratio 1 is compared with, applied to the averaged gradient G.
enum class Reference {
  kHeavyBall,    // b <- m b + G; x -= lr b            (torch.optim.SGD, dampening 0)
  kNesterov,     // b <- m b + G; x -= lr (G + m b)    (torch.optim.SGD, nesterov)
  kSgd,          // x -= lr G
  kSgdOnePlusM,  // x -= lr (1 + m) G
};

// n workers with f_i(x) = 0.5 ||x - c_i||^2 + 0.25 (i + 1) ||x||^2; DGC at ratio 1 against
// `reference` in double. Returns the largest |x_dgc - x_ref| over the run, relative to
// max(1, |x_ref|).
double dgcAgainstReference(bool nesterov, bool masking, Reference reference) {
  constexpr int kWorkers = 3;
  constexpr int64_t kDim = 13;
  constexpr double kMomentum = 0.9;
  constexpr float kLr = 0.05f;
  TopKCompressor topk;
  LayerParams params;
  params.ratio = 1.0;
  FeedbackOptions options;
  options.kind = FeedbackKind::kDgc;
  options.momentum = kMomentum;
  options.nesterov = nesterov;
  options.momentumMasking = masking;
  std::vector<DgcFeedback> workers(kWorkers, DgcFeedback(options));
  std::vector<at::Tensor> centers;
  for (int i = 0; i < kWorkers; ++i) centers.push_back(gaussian(kDim, 300 + i));
  auto gradient = [&](const at::Tensor& x, int worker) {
    return x - centers[worker] + 0.5f * static_cast<float>(worker + 1) * x;
  };
  at::Tensor x = gaussian(kDim, 9);
  at::Tensor xRef = x.clone().to(at::kDouble);
  at::Tensor buffer = at::zeros({kDim}, at::TensorOptions().dtype(at::kDouble));
  double worst = 0;
  for (int step = 0; step < 30; ++step) {
    StepInfo info;
    info.step = step;
    info.worldSize = kWorkers;
    std::vector<Payload> payloads(kWorkers);
    for (int i = 0; i < kWorkers; ++i) {
      at::Tensor grad = gradient(x, i);
      workers[i].encode(0, grad, topk, params, info, payloads[i]);
    }
    at::Tensor average = averageOf(topk, payloads, kDim, params);
    workers[0].decode(0, average, info);
    x = x - kLr * average;

    // Reference (torch.optim.SGD semantics, dampening 0), in double.
    at::Tensor meanGrad = at::zeros({kDim}, at::TensorOptions().dtype(at::kDouble));
    for (int i = 0; i < kWorkers; ++i) {
      meanGrad += gradient(xRef.to(at::kFloat), i).to(at::kDouble);
    }
    meanGrad /= kWorkers;
    at::Tensor update = meanGrad;
    buffer = kMomentum * buffer + meanGrad;
    if (reference == Reference::kHeavyBall) update = buffer;
    if (reference == Reference::kNesterov) update = meanGrad + kMomentum * buffer;
    if (reference == Reference::kSgdOnePlusM) update = (1 + kMomentum) * meanGrad;
    xRef = xRef - static_cast<double>(kLr) * update;
    const double error = (x.to(at::kDouble) - xRef).abs().max().item<double>() /
                         std::max(1.0, xRef.abs().max().item<double>());
    worst = std::max(worst, error);
  }
  return worst;
}

TEST(DgcFeedbackTest, FullRatioWithoutMaskingIsMomentumSgd) {
  EXPECT_LT(dgcAgainstReference(/*nesterov=*/false, /*masking=*/false, Reference::kHeavyBall),
            1e-5);
  // The comparison can fail: the same run is far from plain SGD and from Nesterov.
  EXPECT_GT(dgcAgainstReference(false, false, Reference::kSgd), 1e-2);
  EXPECT_GT(dgcAgainstReference(false, false, Reference::kNesterov), 1e-2);
}

TEST(DgcFeedbackTest, FullRatioWithoutMaskingIsNesterovSgd) {
  EXPECT_LT(dgcAgainstReference(/*nesterov=*/true, /*masking=*/false, Reference::kNesterov), 1e-5);
  EXPECT_GT(dgcAgainstReference(true, false, Reference::kHeavyBall), 1e-2);
}

TEST(DgcFeedbackTest, FullRatioWithMaskingClearsAllMomentumEveryStep) {
  // Every coordinate is sent every step, so masking zeroes all of u after each step (as the
  // reference DGC code does): the plain form is SGD, the Nesterov form sends u + g = (1 + m) g.
  EXPECT_LT(dgcAgainstReference(false, /*masking=*/true, Reference::kSgd), 1e-5);
  EXPECT_LT(dgcAgainstReference(true, /*masking=*/true, Reference::kSgdOnePlusM), 1e-5);
}

TEST(DgcFeedbackTest, MaskingZeroesMomentumExactlyAtTheSentPositions) {
  TopKCompressor topk;
  for (bool nesterov : {false, true}) {
    for (bool masking : {false, true}) {
      for (int64_t numel : {1, 7, 100, 1001}) {
        FeedbackOptions options;
        options.kind = FeedbackKind::kDgc;
        options.momentum = 0.75;
        options.nesterov = nesterov;
        options.momentumMasking = masking;
        DgcFeedback dgc(options);
        LayerParams params;
        params.ratio = 0.05;
        std::vector<float> u(numel, 0.0f);
        std::vector<float> v(numel, 0.0f);
        for (int step = 0; step < 4; ++step) {
          at::Tensor grad = gaussian(numel, 500 * step + numel);
          std::vector<float> g = toVector(grad);
          for (int64_t i = 0; i < numel; ++i) {
            if (nesterov) {
              u[i] = 0.75f * (u[i] + g[i]);
              v[i] = v[i] + (u[i] + g[i]);
            } else {
              u[i] = 0.75f * u[i] + g[i];
              v[i] = v[i] + u[i];
            }
          }
          const std::vector<int64_t> kept =
              referenceTopK(fromVector(v), referenceK(numel, params.ratio));
          Payload out;
          dgc.encode(0, grad, topk, params, {}, out);
          at::Tensor delta = decodeDense(topk, out, numel, params);
          std::vector<float> sent = toVector(delta);
          std::vector<float> newU = toVector(stateEntry(dgc, "0.u"));
          std::vector<float> newV = toVector(stateEntry(dgc, "0.v"));
          for (int64_t i = 0; i < numel; ++i) {
            const bool isSent = std::binary_search(kept.begin(), kept.end(), i);
            EXPECT_FLOAT_EQ(sent[i], isSent ? v[i] : 0.0f) << i;
            if (isSent) {
              EXPECT_EQ(newV[i], 0.0f) << "v is reset where sent, " << i;
              if (masking) {
                EXPECT_EQ(newU[i], 0.0f) << i;
              } else {
                EXPECT_FLOAT_EQ(newU[i], u[i]) << i;
              }
            } else {
              EXPECT_FLOAT_EQ(newU[i], u[i]) << "u untouched where not sent, " << i;
              EXPECT_FLOAT_EQ(newV[i], v[i]) << i;
            }
          }
          // Continue from the policy's own state so float differences do not accumulate.
          u = newU;
          v = newV;
        }
      }
    }
  }
}

TEST(DgcFeedbackTest, MasksTheSentPositionsWithFloat16ValuesAndSampledSelection) {
  for (bool sampled : {false, true}) {
    TopKOptions topkOptions;
    topkOptions.fp16Values = true;
    topkOptions.sampled = sampled;
    TopKCompressor topk(topkOptions);
    DgcFeedback dgc(FeedbackOptions{FeedbackKind::kDgc});
    LayerParams params;
    params.ratio = 0.05;
    const int64_t numel = 997;
    at::Tensor grad = gaussian(numel, 4242);
    Payload out;
    dgc.encode(0, grad, topk, params, {}, out);
    std::vector<float> sent = toVector(decodeDense(topk, out, numel, params));
    std::vector<float> u = toVector(stateEntry(dgc, "0.u"));
    std::vector<float> g = toVector(gaussian(numel, 4242));
    int64_t sentCount = 0;
    for (int64_t i = 0; i < numel; ++i) {
      // First step: u = g; sent positions are cleared, the others keep g exactly.
      if (sent[i] != 0.0f) {
        ++sentCount;
        EXPECT_EQ(u[i], 0.0f) << i;
      } else {
        EXPECT_EQ(u[i], g[i]) << i;
      }
    }
    EXPECT_GT(sentCount, 0);
    EXPECT_LE(sentCount, referenceK(numel, params.ratio));
  }
}

TEST(DgcFeedbackTest, ClipsTheLocalGradientToClipNormOverSqrtWorldSize) {
  TopKCompressor topk;
  LayerParams params;
  params.ratio = 1.0;
  FeedbackOptions options;
  options.kind = FeedbackKind::kDgc;
  options.clipNorm = 2.0;
  StepInfo info;
  info.worldSize = 4;  // limit 2 / sqrt(4) = 1
  {
    DgcFeedback dgc(options);
    at::Tensor grad = fromVector({3.0f, 0.0f, -4.0f, 0.0f, 0.0f});  // norm 5
    Payload out;
    dgc.encode(0, grad, topk, params, info, out);
    at::Tensor expected = fromVector({0.6f, 0.0f, -0.8f, 0.0f, 0.0f});
    EXPECT_TRUE(at::allclose(decodeDense(topk, out, 5, params), expected, 1e-6, 1e-7));
  }
  {
    DgcFeedback dgc(options);
    at::Tensor grad = fromVector({0.3f, 0.0f, -0.4f, 0.1f, 0.0f});  // norm < 1: unchanged
    at::Tensor copy = grad.clone();
    Payload out;
    dgc.encode(0, grad, topk, params, info, out);
    EXPECT_TRUE(bitEqual(decodeDense(topk, out, 5, params), copy));
  }
}

TEST(DgcFeedbackTest, RefusesANonTopKCompressorBeforeChangingState) {
  IdentityCompressor identity;
  DgcFeedback dgc(FeedbackOptions{FeedbackKind::kDgc});
  at::Tensor grad = gaussian(10, 3);
  Payload out;
  EXPECT_THROW(dgc.encode(0, grad, identity, {}, {}, out), InvalidArgument);
  EXPECT_TRUE(dgc.state().empty());
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

// Runs `steps` steps of two layers (numel 7 and 100) on one worker from step `first`, with
// deterministic gradients; returns every payload's bytes and decoded output, flattened.
std::vector<at::Tensor> runSteps(Feedback& feedback, Compressor& compressor, int first, int last) {
  std::vector<at::Tensor> trace;
  LayerParams params;
  params.ratio = 0.2;
  for (int step = first; step < last; ++step) {
    StepInfo info;
    info.step = step;
    info.lr = 0.1 * (1 + step % 3);
    for (LayerId layer : {0, 1}) {
      const int64_t numel = layer == 0 ? 7 : 100;
      at::Tensor grad = gaussian(numel, 10000 * layer + step);
      Payload out;
      feedback.encode(layer, grad, compressor, params, info, out);
      trace.push_back(out.data.clone());
      at::Tensor average = decodeDense(compressor, out, numel, params);
      feedback.decode(layer, average, info);
      trace.push_back(average);
    }
  }
  return trace;
}

TEST(FeedbackStateTest, ResumeFromStateIsBitExact) {
  TopKCompressor topk;
  std::vector<FeedbackOptions> policies;
  for (FeedbackKind kind : {FeedbackKind::kNone, FeedbackKind::kEf, FeedbackKind::kEf21,
                            FeedbackKind::kEControl, FeedbackKind::kDgc}) {
    FeedbackOptions options;
    options.kind = kind;
    policies.push_back(options);
  }
  policies.push_back(FeedbackOptions{});
  policies.back().stepUnits = true;
  policies.push_back(FeedbackOptions{});
  policies.back().kind = FeedbackKind::kDgc;
  policies.back().nesterov = true;

  for (const FeedbackOptions& options : policies) {
    std::unique_ptr<Feedback> uninterrupted = makeFeedback(options);
    std::vector<at::Tensor> full = runSteps(*uninterrupted, topk, 0, 10);

    std::unique_ptr<Feedback> first = makeFeedback(options);
    std::vector<at::Tensor> trace = runSteps(*first, topk, 0, 5);
    StateDict saved = first->state();
    first.reset();
    std::unique_ptr<Feedback> resumed = makeFeedback(options);
    resumed->loadState(saved);
    std::vector<at::Tensor> rest = runSteps(*resumed, topk, 5, 10);
    trace.insert(trace.end(), rest.begin(), rest.end());

    ASSERT_EQ(trace.size(), full.size());
    for (size_t i = 0; i < full.size(); ++i) {
      EXPECT_TRUE(at::equal(trace[i], full[i])) << uninterrupted->name() << " entry " << i;
    }
    StateDict finalFull = uninterrupted->state();
    StateDict finalResumed = resumed->state();
    ASSERT_EQ(finalFull.size(), finalResumed.size());
    for (const auto& [key, value] : finalFull) {
      ASSERT_TRUE(finalResumed.count(key)) << key;
      EXPECT_TRUE(bitEqual(finalResumed.at(key), value)) << key;
    }
  }
}

TEST(FeedbackStateTest, StateHoldsTheDocumentedKeysAsIndependentCopies) {
  TopKCompressor topk;
  const std::vector<std::pair<FeedbackKind, std::vector<std::string>>> expected = {
      {FeedbackKind::kNone, {}},
      {FeedbackKind::kEf, {"0.e", "1.e"}},
      {FeedbackKind::kEf21, {"0.h", "0.h_i", "1.h", "1.h_i"}},
      {FeedbackKind::kEControl, {"0.e", "0.h", "0.h_i", "1.e", "1.h", "1.h_i"}},
      {FeedbackKind::kDgc, {"0.u", "0.v", "1.u", "1.v"}}};
  for (const auto& [kind, keys] : expected) {
    FeedbackOptions options;
    options.kind = kind;
    std::unique_ptr<Feedback> feedback = makeFeedback(options);
    runSteps(*feedback, topk, 0, 2);
    StateDict state = feedback->state();
    std::vector<std::string> actual;
    for (const auto& entry : state) {
      actual.push_back(entry.first);
      EXPECT_EQ(entry.second.scalar_type(), at::kFloat);
    }
    EXPECT_EQ(actual, keys);
    if (keys.empty()) continue;
    at::Tensor before = state.at(keys.front()).clone();
    runSteps(*feedback, topk, 2, 3);
    EXPECT_TRUE(bitEqual(state.at(keys.front()), before)) << "state() must not alias";
  }
}

TEST(FeedbackStateTest, LoadStateRejectsMissingForeignAndMistypedEntries) {
  TopKCompressor topk;
  FeedbackOptions options;
  options.kind = FeedbackKind::kEControl;
  std::unique_ptr<Feedback> econtrol = makeFeedback(options);
  runSteps(*econtrol, topk, 0, 2);
  StateDict good = econtrol->state();

  StateDict missing = good;
  missing.erase("1.h_i");
  EXPECT_THROW(makeFeedback(options)->loadState(missing), DataError);
  StateDict foreign = good;
  foreign["1.u"] = at::zeros({100});
  EXPECT_THROW(makeFeedback(options)->loadState(foreign), DataError);
  StateDict badKey = good;
  badKey["layer.e"] = at::zeros({100});
  EXPECT_THROW(makeFeedback(options)->loadState(badKey), DataError);
  StateDict mistyped = good;
  mistyped["0.e"] = at::zeros({7}, at::TensorOptions().dtype(at::kDouble));
  EXPECT_THROW(makeFeedback(options)->loadState(mistyped), DataError);
  StateDict resized = good;
  resized["0.h"] = at::zeros({8});
  EXPECT_THROW(makeFeedback(options)->loadState(resized), DataError);
  EXPECT_THROW(makeFeedback(FeedbackOptions{FeedbackKind::kNone})->loadState(good), DataError);

  // A failed load leaves the object as it was.
  StateDict before = econtrol->state();
  EXPECT_THROW(econtrol->loadState(missing), DataError);
  StateDict after = econtrol->state();
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [key, value] : before) EXPECT_TRUE(bitEqual(after.at(key), value)) << key;
  // Loaded state is copied, not aliased.
  std::unique_ptr<Feedback> loaded = makeFeedback(options);
  loaded->loadState(good);
  runSteps(*loaded, topk, 2, 3);
  EXPECT_TRUE(bitEqual(good.at("0.e"), before.at("0.e")));
}

}  // namespace
}  // namespace thinwire::compressors

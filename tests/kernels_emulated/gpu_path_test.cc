// The GPU path of the compressors and of QuEST (kernels/*.cu through kernels/*.cc,
// compressors/cuda_paths.cc and qat/cuda_rows.cc), run by the emulator on the CPU, against the CPU
// implementations on the same inputs: payload bytes, residuals, decompress-add, QuEST values,
// codes, steps, masks and gradients must agree bit for bit, with the fibers of every block run in
// both orders (a missing barrier shows up in one of them). The same comparisons as tests/gpu
// (which need a GPU), on smaller tensors: the emulator runs every CUDA thread as a fiber.
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "base/error.h"
#include "compressors/cuda_paths.h"
#include "compressors/quantize_compressor.h"
#include "compressors/sampled_threshold.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"
#include "kernels/emulation/emulator.h"
#include "qat/cuda_rows.h"
#include "qat/hadamard.h"
#include "qat/quantizer.h"
#include "tests/gpu/gpu_test_support.h"

namespace thinwire {
namespace {

using compressors::LayerParams;
using compressors::Payload;
using kernels::emulation::Order;
using testing::expectBitEqual;
using testing::gradientLike;

const char* nameOf(Order order) { return order == Order::kForward ? "forward" : "reverse"; }

// Runs body once with the fibers of every block in each order.
void inBothOrders(const std::function<void(const std::string&)>& body) {
  const Order previous = kernels::emulation::order();
  for (Order order : {Order::kForward, Order::kReverse}) {
    kernels::emulation::setOrder(order);
    body(std::string(" [") + nameOf(order) + " order]");
  }
  kernels::emulation::setOrder(previous);
}

// A contiguous copy of t whose data starts 4 bytes past a 16-byte boundary when misaligned: the
// kernels' scalar paths instead of their float4 ones.
at::Tensor placed(const at::Tensor& t, bool misaligned) {
  if (!misaligned) return t.clone();
  at::Tensor storage = at::empty({t.numel() + 1}, t.options());
  at::Tensor view = storage.narrow(0, 1, t.numel()).view(t.sizes());
  view.copy_(t);
  return view;
}

struct GpuPath {
  std::function<void(at::Tensor&, const at::Tensor&, float, Payload&)> compress;
  std::function<void(const Payload&, at::Tensor&, float)> decompressAdd;
};

// The CPU compressor and the GPU path from the same residual and addend: payload, residual,
// and the decoding of either payload into the same accumulator.
void expectSamePaths(compressors::Compressor& cpu,
                     const GpuPath& gpu,
                     int64_t numel,
                     const LayerParams& params,
                     bool withAddend,
                     bool misaligned,
                     const std::string& context) {
  const at::Tensor residual = gradientLike(numel, 11) * 0.25f;
  const at::Tensor addend = gradientLike(numel, 12);
  at::Tensor cpuResidual = residual.clone();
  at::Tensor gpuResidual = placed(residual, misaligned);
  const at::Tensor cpuAddend = withAddend ? addend : at::Tensor();
  const at::Tensor gpuAddend = withAddend ? placed(addend, misaligned) : at::Tensor();
  Payload cpuPayload;
  Payload gpuPayload;
  cpu.compress(cpuResidual, cpuAddend, 0.5f, cpuPayload, params);
  gpu.compress(gpuResidual, gpuAddend, 0.5f, gpuPayload);
  EXPECT_EQ(gpuPayload.numel, cpuPayload.numel) << context;
  expectBitEqual(gpuPayload.data, cpuPayload.data, context + " payload");
  expectBitEqual(gpuResidual, cpuResidual, context + " residual");

  const at::Tensor start = gradientLike(numel, 13);
  at::Tensor cpuOut = start.clone();
  at::Tensor gpuOut = placed(start, misaligned);
  cpu.decompressAdd(cpuPayload, cpuOut, 0.25f, params);
  gpu.decompressAdd(gpuPayload, gpuOut, 0.25f);
  expectBitEqual(gpuOut, cpuOut, context + " decompressAdd");
  at::Tensor fromCpuPayload = placed(start, misaligned);
  gpu.decompressAdd(cpuPayload, fromCpuPayload, 0.25f);
  expectBitEqual(fromCpuPayload, cpuOut, context + " decompressAdd of the CPU payload");
}

struct Compressed {
  Payload cpuPayload;
  at::Tensor gpuResidual;
};

// The CPU compressor and the GPU path on the same residual without an addend: the same payload
// and residual.
Compressed expectSameCompression(compressors::Compressor& cpu,
                                 const GpuPath& gpu,
                                 const at::Tensor& residual,
                                 const LayerParams& params,
                                 const std::string& context) {
  at::Tensor cpuResidual = residual.clone();
  at::Tensor gpuResidual = residual.clone();
  Payload cpuPayload;
  Payload gpuPayload;
  cpu.compress(cpuResidual, at::Tensor(), 1.0f, cpuPayload, params);
  gpu.compress(gpuResidual, at::Tensor(), 1.0f, gpuPayload);
  expectBitEqual(gpuPayload.data, cpuPayload.data, context + " payload");
  expectBitEqual(gpuResidual, cpuResidual, context + " residual");
  return {cpuPayload, gpuResidual};
}

GpuPath topKPath(const compressors::TopKOptions& options, const LayerParams& params) {
  return {[=](at::Tensor& r, const at::Tensor& a, float s, Payload& p) {
            compressors::compressTopKOnCuda(options, r, a, s, p, params);
          },
          [=](const Payload& p, at::Tensor& o, float alpha) {
            compressors::decompressAddTopKOnCuda(options, p, o, alpha, params);
          }};
}

GpuPath signPath(const compressors::SignCompressor& cpu, int64_t numel) {
  const compressors::SignOptions options = cpu.options();
  const int64_t bytes = cpu.payloadBytes(numel, LayerParams{});
  return {[=](at::Tensor& r, const at::Tensor& a, float s, Payload& p) {
            compressors::compressSignOnCuda(options, r, a, s, p, bytes);
          },
          [=](const Payload& p, at::Tensor& o, float alpha) {
            compressors::decompressAddSignOnCuda(options, p, o, alpha);
          }};
}

GpuPath quantizePath(const compressors::QuantizeCompressor& cpu,
                     int64_t numel,
                     const LayerParams& params) {
  const compressors::QuantizeOptions options = cpu.options();
  const int bits = static_cast<int>(params.bits);
  const int64_t bytes = cpu.payloadBytes(numel, params);
  return {[=](at::Tensor& r, const at::Tensor& a, float s, Payload& p) {
            compressors::compressQuantizeOnCuda(options, bits, r, a, s, p, params, bytes);
          },
          [=](const Payload& p, at::Tensor& o, float alpha) {
            compressors::decompressAddQuantizeOnCuda(options, bits, p, o, alpha, params);
          }};
}

TEST(EmulatedTopKTest, ExactSelectionMatchesTheCpuBitForBit) {
  inBothOrders([](const std::string& order) {
    for (bool fp16 : {false, true}) {
      const compressors::TopKOptions options{.sampled = false, .fp16Values = fp16};
      compressors::TopKCompressor cpu(options);
      for (int64_t numel : {int64_t{1}, int64_t{17}, int64_t{4096}, int64_t{20011}}) {
        for (double ratio : {0.001, 0.01, 0.3, 1.0}) {
          for (bool withAddend : {true, false}) {
            const LayerParams params{.ratio = ratio, .rankSeed = 7};
            expectSamePaths(
                cpu, topKPath(options, params), numel, params, withAddend, numel % 2 == 1,
                "exact top-k numel " + std::to_string(numel) + " ratio " + std::to_string(ratio) +
                    (fp16 ? " fp16" : "") + (withAddend ? " +addend" : "") + order);
          }
        }
      }
    }
  });
}

TEST(EmulatedTopKTest, SampledSelectionMatchesTheCpuBitForBit) {
  inBothOrders([](const std::string& order) {
    for (bool fp16 : {false, true}) {
      const compressors::TopKOptions options{.sampled = true, .fp16Values = fp16};
      compressors::TopKCompressor cpu(options);
      for (int64_t numel : {int64_t{100}, int64_t{65536}, int64_t{100003}}) {
        for (uint64_t seed : {uint64_t{1}, uint64_t{99}}) {
          const LayerParams params{.ratio = 0.01, .rankSeed = seed};
          expectSamePaths(cpu, topKPath(options, params), numel, params, true, false,
                          "sampled top-k numel " + std::to_string(numel) + " seed " +
                              std::to_string(seed) + (fp16 ? " fp16" : "") + order);
        }
      }
    }
  });
}

TEST(EmulatedTopKTest, SampledAdaptationLowersTheThresholdLikeTheCpu) {
  inBothOrders([](const std::string& order) {
    // Large values exactly at the sampled positions put the first threshold far too high: the
    // adaptation lowers it several times (rescans), then the candidates exceed k and are cut.
    const compressors::TopKOptions options{.sampled = true, .sampleRatio = 0.01};
    compressors::TopKCompressor cpu(options);
    const int64_t numel = 1 << 17;
    const LayerParams params{.ratio = 0.05, .rankSeed = 3};
    const int64_t k = compressors::topKCount(numel, params.ratio);
    const compressors::ThresholdSamplePlan plan = compressors::planThresholdSample(
        numel,
        compressors::ThresholdSampleOptions{.fraction = static_cast<double>(k) * 1.15 / numel,
                                            .sampleRatio = 0.01,
                                            .minSamples = 4096,
                                            .seed = params.rankSeed});
    at::Tensor residual = gradientLike(numel, 21);
    residual.index_put_(
        {at::arange(plan.first, plan.first + plan.count * plan.stride, plan.stride)}, 10.0f);
    const Compressed adapted =
        expectSameCompression(cpu, topKPath(options, params), residual, params, "adapted" + order);
    EXPECT_GT(adapted.cpuPayload.data.numel(), plan.count * 8)
        << "the adaptation did not lower the threshold" << order;
  });
}

TEST(EmulatedTopKTest, NanAndInfinityAreOrderedLikeTheCpu) {
  inBothOrders([](const std::string& order) {
    const compressors::TopKOptions options{};
    const LayerParams params{.ratio = 0.01};
    compressors::TopKCompressor cpu(options);
    at::Tensor residual = gradientLike(5000, 31);
    residual[10] = std::numeric_limits<float>::quiet_NaN();
    residual[20] = std::numeric_limits<float>::infinity();
    residual[30] = -std::numeric_limits<float>::infinity();
    expectSameCompression(cpu, topKPath(options, params), residual, params,
                          "with NaN and inf" + order);
  });
}

TEST(EmulatedTopKTest, DecompressAddRejectsAnIndexOutOfRange) {
  Payload payload;
  payload.numel = 100;
  payload.data = at::zeros({8}, at::kByte);
  payload.data.view(at::kInt)[0] = 100;  // one entry: index 100, value 0
  at::Tensor out = at::zeros({100});
  EXPECT_THROW(topKPath({}, {.ratio = 0.01}).decompressAdd(payload, out, 1.0f), InvalidArgument);
}

TEST(EmulatedSignTest, MatchesTheCpuBitForBit) {
  inBothOrders([](const std::string& order) {
    for (compressors::SignScale scale :
         {compressors::SignScale::kL1, compressors::SignScale::kL2}) {
      for (int64_t chunk :
           {int64_t{8}, int64_t{24}, int64_t{2048}, int64_t{4096}, int64_t{8192}, int64_t{0}}) {
        compressors::SignCompressor cpu(compressors::SignOptions{.chunk = chunk, .scale = scale});
        for (int64_t numel : {int64_t{1}, int64_t{13}, int64_t{2048}, int64_t{20011}}) {
          for (bool withAddend : {true, false}) {
            for (bool misaligned : {false, true}) {
              expectSamePaths(
                  cpu, signPath(cpu, numel), numel, LayerParams{}, withAddend, misaligned,
                  "sign chunk " + std::to_string(chunk) + " numel " + std::to_string(numel) +
                      (scale == compressors::SignScale::kL2 ? " l2" : " l1") +
                      (withAddend ? " +addend" : "") + (misaligned ? " misaligned" : "") + order);
            }
          }
        }
      }
    }
  });
}

TEST(EmulatedQuantizeTest, MatchesTheCpuBitForBit) {
  inBothOrders([](const std::string& order) {
    for (bool stochastic : {false, true}) {
      for (int64_t bucket : {int64_t{512}, int64_t{100}, int64_t{5000}, int64_t{16}, int64_t{3}}) {
        compressors::QuantizeCompressor cpu(
            compressors::QuantizeOptions{.bucket = bucket, .stochastic = stochastic});
        for (int bits : {2, 3, 4, 8}) {
          // A bucket that is not a multiple of 8 takes the one-block-per-bucket kernel, whose
          // emulation is slow: shorter tensors there.
          const std::vector<int64_t> sizes = bucket % 8 == 0
                                                 ? std::vector<int64_t>{1, 7, 4099, 20011}
                                                 : std::vector<int64_t>{1, 7, 1001};
          for (int64_t numel : sizes) {
            const LayerParams params{.bits = bits, .rankSeed = 1234};
            expectSamePaths(cpu, quantizePath(cpu, numel, params), numel, params, true,
                            numel % 2 == 1 && numel > 7,
                            "quantize bucket " + std::to_string(bucket) + " bits " +
                                std::to_string(bits) + " numel " + std::to_string(numel) +
                                (stochastic ? " stochastic" : "") + order);
          }
        }
      }
    }
  });
}

TEST(EmulatedQuantizeTest, ConstantBucketsDecodeExactly) {
  inBothOrders([](const std::string& order) {
    compressors::QuantizeCompressor cpu(compressors::QuantizeOptions{.bucket = 64});
    const LayerParams params{.bits = 4};
    const Compressed constant = expectSameCompression(
        cpu, quantizePath(cpu, 1000, params), at::full({1000}, 0.375f), params, "constant" + order);
    EXPECT_EQ(constant.gpuResidual.abs().max().item<float>(), 0.0f) << order;
  });
}

// A bad argument that the CPU compressor rejects with InvalidArgument is rejected the same way by
// its GPU path (compressors/cuda_paths.h promises the same InvalidArgument cases).
TEST(EmulatedErrorsTest, GpuPathsRejectWhatTheCpuRejects) {
  const int64_t numel = 1000;
  compressors::TopKCompressor topK(compressors::TopKOptions{});
  compressors::SignCompressor sign(compressors::SignOptions{.chunk = 64});
  compressors::QuantizeCompressor quantize(compressors::QuantizeOptions{.bucket = 64});
  struct Subject {
    std::string name;
    compressors::Compressor* cpu;
    GpuPath gpu;
    LayerParams params;
    Payload payload;  // a valid one, from the CPU, to corrupt
  };
  const LayerParams topKParams{.ratio = 0.01};
  const LayerParams fourBits{.bits = 4};
  std::vector<Subject> subjects = {
      {"top-k", &topK, topKPath({}, topKParams), topKParams, {}},
      {"sign", &sign, signPath(sign, numel), {}, {}},
      {"quantize", &quantize, quantizePath(quantize, numel, fourBits), fourBits, {}}};
  for (Subject& subject : subjects) {
    at::Tensor residual = gradientLike(numel, 41);
    subject.cpu->compress(residual, at::Tensor(), 1.0f, subject.payload, subject.params);
  }

  // Decoding a payload cut short by `cutBytes`, into an output of `outSize` elements.
  struct BadDecode {
    size_t subject;
    std::string what;
    int64_t cutBytes;
    int64_t outSize;
  };
  for (const BadDecode& bad : {BadDecode{0, "into the wrong size", 0, numel + 1},
                               BadDecode{0, "of no whole number of entries", 3, numel},
                               BadDecode{0, "of fewer than k entries (exact)", 8, numel},
                               BadDecode{1, "of a payload one byte short", 1, numel},
                               BadDecode{2, "of a payload one byte short", 1, numel},
                               BadDecode{2, "into the wrong size", 0, numel - 1}}) {
    const Subject& subject = subjects[bad.subject];
    Payload payload = subject.payload;
    payload.data = payload.data.narrow(0, 0, payload.data.numel() - bad.cutBytes).clone();
    const std::string context = subject.name + " decompressAdd " + bad.what;
    at::Tensor cpuOut = at::zeros({bad.outSize});
    at::Tensor gpuOut = at::zeros({bad.outSize});
    EXPECT_THROW(subject.cpu->decompressAdd(payload, cpuOut, 1.0f, subject.params), InvalidArgument)
        << context << " on the CPU";
    EXPECT_THROW(subject.gpu.decompressAdd(payload, gpuOut, 1.0f), InvalidArgument)
        << context << " on the GPU path";
  }

  // Compressing a residual or addend that no path takes; each side gets its own residual.
  struct BadCompress {
    std::string what;
    std::function<at::Tensor()> residual;
    at::Tensor addend;
  };
  const std::vector<BadCompress> badCompressions = {
      {"an addend of another size", [&] { return gradientLike(numel, 42); },
       gradientLike(numel - 1, 45)},
      {"a float64 residual", [&] { return gradientLike(numel, 44).to(at::kDouble); }, {}},
      {"a strided residual",
       [&] { return gradientLike(2 * numel, 43).slice(0, 0, 2 * numel, 2); },
       {}}};
  for (const Subject& subject : subjects) {
    for (const BadCompress& bad : badCompressions) {
      const std::string context = subject.name + " compress of " + bad.what;
      at::Tensor cpuResidual = bad.residual();
      at::Tensor gpuResidual = bad.residual();
      Payload cpuPayload;
      Payload gpuPayload;
      EXPECT_THROW(subject.cpu->compress(cpuResidual, bad.addend, 1.0f, cpuPayload, subject.params),
                   InvalidArgument)
          << context << " on the CPU";
      EXPECT_THROW(subject.gpu.compress(gpuResidual, bad.addend, 1.0f, gpuPayload), InvalidArgument)
          << context << " on the GPU path";
    }
  }
}

at::Tensor rows(int64_t n, int64_t d, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::randn({n, d}, generator, at::TensorOptions(at::kFloat));
}

qat::CudaRowPlan planOf(const qat::QuantizerOptions& options, bool rotateBack) {
  return {options.bits, options.hadamard, rotateBack,
          static_cast<float>(options.maskScale > 0 ? options.maskScale
                                                   : qat::defaultMaskScale(options.bits))};
}

TEST(EmulatedQuestTest, BlockHadamardMatchesTheCpu) {
  inBothOrders([](const std::string& order) {
    for (int64_t d : {128, 384, 4096}) {
      for (bool misaligned : {false, true}) {
        const at::Tensor x = rows(9, d, 1);
        at::Tensor data = placed(x, misaligned);
        qat::hadamardRowsOnCudaInPlace(data);
        expectBitEqual(data, qat::blockHadamard(x),
                       "H of d " + std::to_string(d) + (misaligned ? " misaligned" : "") + order);
      }
    }
  });
}

TEST(EmulatedQuestTest, ForwardCodesStepsMasksAndTrustBackwardMatchTheCpu) {
  struct Shape {
    int64_t n;
    int64_t d;
    bool misaligned;
  };
  // d up to 4096 in registers (one to eight rows per block), longer rows and misaligned ones
  // through shared memory; 16384 floats need cudaFuncSetAttribute (64 KiB).
  const std::vector<Shape> shapes = {{5, 128, false},  {7, 512, false},   {3, 4096, false},
                                     {2, 8192, false}, {1, 16384, false}, {4, 512, true}};
  inBothOrders([&](const std::string& order) {
    for (const Shape& shape : shapes) {
      for (int64_t bits : {1, 4, 8}) {
        for (qat::Variant variant : {qat::Variant::kFull, qat::Variant::kHalf}) {
          for (bool hadamard : {true, false}) {
            const qat::QuantizerOptions options{
                .bits = bits, .hadamard = hadamard, .variant = variant};
            const bool full = hadamard && variant == qat::Variant::kFull;
            const std::string context = "n " + std::to_string(shape.n) + " d " +
                                        std::to_string(shape.d) + " bits " + std::to_string(bits) +
                                        (full ? " full" : " half") +
                                        (hadamard ? " hadamard" : " plain") +
                                        (shape.misaligned ? " misaligned" : "") + order;
            const at::Tensor x = rows(shape.n, shape.d, 2) * 0.1f;
            const at::Tensor upstream = rows(shape.n, shape.d, 3);
            const at::Tensor input = placed(x, shape.misaligned);

            const qat::CudaRows gpu =
                qat::quantizeRowsOnCuda(input, planOf(options, full), true, false);
            at::Tensor cpuInput = x.clone().requires_grad_(true);
            const at::Tensor cpuOut = qat::fakeQuantize(cpuInput, options);
            expectBitEqual(gpu.values, cpuOut.detach(), context + " forward");
            cpuOut.backward(upstream);
            at::Tensor gradient = placed(upstream, shape.misaligned);
            qat::backwardRowsOnCudaInPlace(gradient, gpu.mask, full, hadamard);
            expectBitEqual(gradient, cpuInput.grad(), context + " backward");

            const qat::QuantizedRows cpuRows = qat::quantizeRows(x, options);
            const qat::CudaRows gpuRows =
                qat::quantizeRowsOnCuda(input, planOf(options, false), true, true);
            expectBitEqual(gpuRows.codes, cpuRows.codes, context + " codes");
            expectBitEqual(gpuRows.steps, cpuRows.step, context + " steps");
            expectBitEqual(gpuRows.mask, cpuRows.mask, context + " mask");
          }
        }
      }
    }
  });
}

TEST(EmulatedQuestTest, PlainRowsOfAnyLengthMatchTheCpu) {
  inBothOrders([](const std::string& order) {
    const qat::QuantizerOptions options{.bits = 4, .hadamard = false};
    const at::Tensor x = rows(6, 100, 4);
    const qat::CudaRows gpu = qat::quantizeRowsOnCuda(x, planOf(options, false), true, true);
    const qat::QuantizedRows cpu = qat::quantizeRows(x, options);
    expectBitEqual(gpu.values, qat::fakeQuantize(x, options), "values of d 100" + order);
    expectBitEqual(gpu.codes, cpu.codes, "codes of d 100" + order);
    expectBitEqual(gpu.steps, cpu.step, "steps of d 100" + order);
  });
}

}  // namespace
}  // namespace thinwire

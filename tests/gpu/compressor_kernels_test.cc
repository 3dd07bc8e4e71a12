// The compressors' CUDA paths (kernels/top_k, sign, quantize through TopKCompressor,
// SignCompressor and QuantizeCompressor) against their CPU implementations on the same inputs:
// payload bytes, residual and decompress-add must agree bit for bit.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "base/error.h"
#include "compressors/quantize_compressor.h"
#include "compressors/sampled_threshold.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"
#include "tests/gpu/gpu_test_support.h"

namespace thinwire::compressors {
namespace {

using testing::cuda;
using testing::expectBitEqual;
using testing::gradientLike;

// Runs `compressor` on the CPU and on the GPU from the same residual and addend and compares
// everything it produces, then decodes each payload into the same accumulator on both sides.
void expectSameOnBothDevices(Compressor& compressor,
                             int64_t numel,
                             const LayerParams& params,
                             bool withAddend,
                             const std::string& context) {
  const at::Tensor residual = gradientLike(numel, 11) * 0.25f;
  const at::Tensor addend = gradientLike(numel, 12);
  at::Tensor cpuResidual = residual.clone();
  at::Tensor gpuResidual = cuda(residual);
  const at::Tensor cpuAddend = withAddend ? addend : at::Tensor();
  const at::Tensor gpuAddend = withAddend ? cuda(addend) : at::Tensor();
  Payload cpuPayload;
  Payload gpuPayload;
  compressor.compress(cpuResidual, cpuAddend, 0.5f, cpuPayload, params);
  compressor.compress(gpuResidual, gpuAddend, 0.5f, gpuPayload, params);
  ASSERT_TRUE(gpuPayload.data.is_cuda()) << context;
  EXPECT_EQ(gpuPayload.numel, cpuPayload.numel) << context;
  expectBitEqual(gpuPayload.data, cpuPayload.data, context + " payload");
  expectBitEqual(gpuResidual, cpuResidual, context + " residual");

  const at::Tensor start = gradientLike(numel, 13);
  at::Tensor cpuOut = start.clone();
  at::Tensor gpuOut = cuda(start);
  compressor.decompressAdd(cpuPayload, cpuOut, 0.25f, params);
  compressor.decompressAdd(gpuPayload, gpuOut, 0.25f, params);
  expectBitEqual(gpuOut, cpuOut, context + " decompressAdd");
  // A payload that travelled through a CPU backend decodes the same on the GPU.
  at::Tensor fromCpuPayload = cuda(start);
  compressor.decompressAdd(cpuPayload, fromCpuPayload, 0.25f, params);
  expectBitEqual(fromCpuPayload, cpuOut, context + " decompressAdd of a CPU payload");
}

TEST(TopKCudaTest, ExactSelectionMatchesTheCpuBitForBit) {
  TW_REQUIRE_GPU();
  for (bool fp16 : {false, true}) {
    TopKCompressor topk(TopKOptions{.sampled = false, .fp16Values = fp16});
    for (int64_t numel :
         {int64_t{1}, int64_t{17}, int64_t{4096}, int64_t{100003}, int64_t{1} << 22}) {
      for (double ratio : {0.001, 0.01, 0.3, 1.0}) {
        for (bool withAddend : {true, false}) {
          expectSameOnBothDevices(
              topk, numel, LayerParams{.ratio = ratio, .rankSeed = 7}, withAddend,
              "exact top-k numel " + std::to_string(numel) + " ratio " + std::to_string(ratio) +
                  (fp16 ? " fp16" : "") + (withAddend ? " +addend" : ""));
        }
      }
    }
  }
}

TEST(TopKCudaTest, SampledSelectionMatchesTheCpuBitForBit) {
  TW_REQUIRE_GPU();
  for (bool fp16 : {false, true}) {
    TopKCompressor topk(TopKOptions{.sampled = true, .fp16Values = fp16});
    for (int64_t numel : {int64_t{100}, int64_t{65536}, int64_t{1000003}, int64_t{1} << 23}) {
      for (uint64_t seed : {uint64_t{1}, uint64_t{99}}) {
        expectSameOnBothDevices(topk, numel, LayerParams{.ratio = 0.01, .rankSeed = seed}, true,
                                "sampled top-k numel " + std::to_string(numel) + " seed " +
                                    std::to_string(seed) + (fp16 ? " fp16" : ""));
      }
    }
  }
}

TEST(TopKCudaTest, SampledAdaptationLowersTheThresholdLikeTheCpu) {
  TW_REQUIRE_GPU();
  // Large values exactly at the sampled positions put the first threshold far too high: the
  // adaptation loop lowers it several times (rescans), then the candidates exceed k and are cut.
  TopKCompressor topk(TopKOptions{.sampled = true, .sampleRatio = 0.001});
  const int64_t numel = 1 << 20;
  const LayerParams params{.ratio = 0.05, .rankSeed = 3};
  const int64_t k = topKCount(numel, params.ratio);
  const ThresholdSamplePlan plan = planThresholdSample(
      numel, ThresholdSampleOptions{.fraction = static_cast<double>(k) * 1.15 / numel,
                                    .sampleRatio = 0.001,
                                    .minSamples = 4096,
                                    .seed = params.rankSeed});
  at::Tensor residual = gradientLike(numel, 21);
  residual.index_put_({at::arange(plan.first, plan.first + plan.count * plan.stride, plan.stride)},
                      10.0f);
  at::Tensor cpuResidual = residual.clone();
  at::Tensor gpuResidual = cuda(residual);
  Payload cpuPayload;
  Payload gpuPayload;
  topk.compress(cpuResidual, at::Tensor(), 1.0f, cpuPayload, params);
  topk.compress(gpuResidual, at::Tensor(), 1.0f, gpuPayload, params);
  expectBitEqual(gpuPayload.data, cpuPayload.data, "adapted payload");
  expectBitEqual(gpuResidual, cpuResidual, "adapted residual");
  EXPECT_GT(cpuPayload.data.numel(), plan.count * 8)
      << "the adaptation did not lower the threshold";
}

TEST(TopKCudaTest, NanAndInfinityAreOrderedLikeTheCpu) {
  TW_REQUIRE_GPU();
  TopKCompressor topk(TopKOptions{});
  at::Tensor residual = gradientLike(5000, 31);
  residual[10] = std::numeric_limits<float>::quiet_NaN();
  residual[20] = std::numeric_limits<float>::infinity();
  residual[30] = -std::numeric_limits<float>::infinity();
  at::Tensor cpuResidual = residual.clone();
  at::Tensor gpuResidual = cuda(residual);
  Payload cpuPayload;
  Payload gpuPayload;
  topk.compress(cpuResidual, at::Tensor(), 1.0f, cpuPayload, {.ratio = 0.01});
  topk.compress(gpuResidual, at::Tensor(), 1.0f, gpuPayload, {.ratio = 0.01});
  expectBitEqual(gpuPayload.data, cpuPayload.data, "payload with NaN and inf");
  expectBitEqual(gpuResidual, cpuResidual, "residual with NaN and inf");
}

TEST(TopKCudaTest, DecompressAddRejectsAnIndexOutOfRange) {
  TW_REQUIRE_GPU();
  TopKCompressor topk(TopKOptions{});
  Payload payload;
  payload.numel = 100;
  at::Tensor bytes = at::zeros({8}, at::kByte);
  bytes.view(at::kInt)[0] = 100;  // one entry: index 100, value 0
  payload.data = cuda(bytes);
  at::Tensor out = cuda(at::zeros({100}));
  EXPECT_THROW(topk.decompressAdd(payload, out, 1.0f, {.ratio = 0.01}), InvalidArgument);
}

TEST(SignCudaTest, MatchesTheCpuBitForBit) {
  TW_REQUIRE_GPU();
  for (SignScale scale : {SignScale::kL1, SignScale::kL2}) {
    for (int64_t chunk : {int64_t{8}, int64_t{2048}, int64_t{4096}, int64_t{8192}, int64_t{0}}) {
      SignCompressor sign(SignOptions{.chunk = chunk, .scale = scale});
      for (int64_t numel :
           {int64_t{1}, int64_t{13}, int64_t{2048}, int64_t{100003}, int64_t{1} << 22}) {
        for (bool withAddend : {true, false}) {
          expectSameOnBothDevices(
              sign, numel, LayerParams{}, withAddend,
              "sign chunk " + std::to_string(chunk) + " numel " + std::to_string(numel) +
                  (scale == SignScale::kL2 ? " l2" : " l1") + (withAddend ? " +addend" : ""));
        }
      }
    }
  }
}

TEST(QuantizeCudaTest, MatchesTheCpuBitForBit) {
  TW_REQUIRE_GPU();
  for (bool stochastic : {false, true}) {
    for (int64_t bucket : {int64_t{512}, int64_t{100}, int64_t{5000}}) {
      QuantizeCompressor quantize(QuantizeOptions{.bucket = bucket, .stochastic = stochastic});
      for (int bits : {2, 3, 4, 8}) {
        for (int64_t numel : {int64_t{1}, int64_t{7}, int64_t{4099}, int64_t{1} << 21}) {
          expectSameOnBothDevices(
              quantize, numel, LayerParams{.bits = bits, .rankSeed = 1234}, true,
              "quantize bucket " + std::to_string(bucket) + " bits " + std::to_string(bits) +
                  " numel " + std::to_string(numel) + (stochastic ? " stochastic" : ""));
        }
      }
    }
  }
}

TEST(QuantizeCudaTest, ConstantBucketsDecodeExactly) {
  TW_REQUIRE_GPU();
  QuantizeCompressor quantize(QuantizeOptions{.bucket = 64});
  at::Tensor residual = at::full({1000}, 0.375f);
  at::Tensor cpuResidual = residual.clone();
  at::Tensor gpuResidual = cuda(residual);
  Payload cpuPayload;
  Payload gpuPayload;
  quantize.compress(cpuResidual, at::Tensor(), 1.0f, cpuPayload, {.bits = 4});
  quantize.compress(gpuResidual, at::Tensor(), 1.0f, gpuPayload, {.bits = 4});
  expectBitEqual(gpuPayload.data, cpuPayload.data, "constant payload");
  expectBitEqual(gpuResidual, cpuResidual, "constant residual");
  EXPECT_EQ(gpuResidual.abs().max().item<float>(), 0.0f);
}

}  // namespace
}  // namespace thinwire::compressors

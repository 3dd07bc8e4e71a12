// QuEST's CUDA path (kernels/quest through qat::fakeQuantize, quantizeRows and blockHadamard)
// against the CPU row kernel on the same inputs.
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <string>

#include "qat/hadamard.h"
#include "qat/quantizer.h"
#include "tests/gpu/gpu_test_support.h"

namespace thinwire::qat {
namespace {

using testing::cuda;
using testing::expectBitEqual;

at::Tensor rows(int64_t n, int64_t d, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::randn({n, d}, generator, at::TensorOptions(at::kFloat));
}

TEST(QuestCudaTest, BlockHadamardMatchesTheCpu) {
  TW_REQUIRE_GPU();
  for (int64_t d : {128, 384, 4096}) {
    const at::Tensor x = rows(33, d, 1);
    expectBitEqual(blockHadamard(cuda(x)), blockHadamard(x), "H of d " + std::to_string(d));
  }
}

TEST(QuestCudaTest, FakeQuantizeForwardAndTrustBackwardMatchTheCpu) {
  TW_REQUIRE_GPU();
  for (int64_t bits : {1, 4, 8}) {
    for (Variant variant : {Variant::kFull, Variant::kHalf}) {
      for (bool hadamard : {true, false}) {
        const QuantizerOptions options{.bits = bits, .hadamard = hadamard, .variant = variant};
        const std::string context = "bits " + std::to_string(bits) +
                                    (variant == Variant::kFull ? " full" : " half") +
                                    (hadamard ? " hadamard" : " plain");
        const at::Tensor x = rows(64, 512, 2) * 0.1f;
        const at::Tensor upstream = rows(64, 512, 3);
        at::Tensor cpuInput = x.clone().requires_grad_(true);
        at::Tensor gpuInput = cuda(x).requires_grad_(true);
        const at::Tensor cpuOut = fakeQuantize(cpuInput, options);
        const at::Tensor gpuOut = fakeQuantize(gpuInput, options);
        expectBitEqual(gpuOut.detach(), cpuOut.detach(), context + " forward");
        cpuOut.backward(upstream);
        gpuOut.backward(cuda(upstream));
        expectBitEqual(gpuInput.grad(), cpuInput.grad(), context + " backward");
      }
    }
  }
}

TEST(QuestCudaTest, QuantizeRowsCodesStepsAndMaskMatchTheCpu) {
  TW_REQUIRE_GPU();
  for (int64_t bits : {2, 4}) {
    const QuantizerOptions options{.bits = bits};
    const at::Tensor x = rows(257, 1024, 4);
    const QuantizedRows cpu = quantizeRows(x, options);
    const QuantizedRows gpu = quantizeRows(cuda(x), options);
    const std::string context = "bits " + std::to_string(bits);
    expectBitEqual(gpu.codes, cpu.codes, context + " codes");
    expectBitEqual(gpu.step, cpu.step, context + " steps");
    expectBitEqual(gpu.mask, cpu.mask, context + " mask");
  }
}

TEST(QuestCudaTest, BfloatInputsComeBackInTheirDtype) {
  TW_REQUIRE_GPU();
  const at::Tensor x = rows(8, 256, 5).to(at::kBFloat16);
  const at::Tensor cpuOut = fakeQuantize(x, QuantizerOptions{});
  const at::Tensor gpuOut = fakeQuantize(cuda(x), QuantizerOptions{});
  EXPECT_EQ(gpuOut.scalar_type(), at::kBFloat16);
  expectBitEqual(gpuOut, cpuOut, "bf16 forward");
}

}  // namespace
}  // namespace thinwire::qat

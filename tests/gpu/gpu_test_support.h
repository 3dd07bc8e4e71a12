// File: tests/gpu/gpu_test_support.h
//
// Shared by the gpu tier's tests: the skip that turns "no GPU here" into a reported SKIPPED (ctest
// shows it as skipped, never as passed), exact tensor comparison with the first differing element
// in the message, and deterministic inputs.
//
// Example:
//   TEST(TopKCudaTest, MatchesTheCpu) {
//     TW_REQUIRE_GPU();
//     expectBitEqual(gpuResult.cpu(), cpuResult, "residual");
//   }
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <string>

#include "kernels/device.h"

// Skips the calling test unless a CUDA device is usable (and libtorch can allocate on it).
#define TW_REQUIRE_GPU()                                                                 \
  do {                                                                                   \
    if (!::thinwire::kernels::cudaAvailable() || !::thinwire::testing::torchHasCuda()) { \
      GTEST_SKIP() << "no CUDA device (or libtorch without CUDA): gpu tier not run";     \
    }                                                                                    \
  } while (false)

namespace thinwire::testing {

inline bool torchHasCuda() { return at::hasCUDA(); }

inline at::Tensor cuda(const at::Tensor& t) { return t.to(at::Device(at::kCUDA, 0)); }

// Bitwise equality (NaN payloads included) of two tensors of the same dtype and size.
inline void expectBitEqual(const at::Tensor& actual,
                           const at::Tensor& expected,
                           const std::string& context) {
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << context;
  ASSERT_EQ(actual.numel(), expected.numel()) << context;
  const at::Tensor a = actual.cpu().contiguous().reshape({-1});
  const at::Tensor e = expected.cpu().contiguous().reshape({-1});
  if (a.numel() == 0) return;
  const at::Tensor aBytes = a.view(at::kByte);
  const at::Tensor eBytes = e.view(at::kByte);
  if (at::equal(aBytes, eBytes)) return;
  const int64_t firstByte = at::nonzero(aBytes != eBytes)[0][0].item<int64_t>();
  const int64_t element = firstByte / static_cast<int64_t>(a.element_size());
  ADD_FAILURE() << context << ": element " << element << " of " << a.numel()
                << " differs: " << a[element].item<double>() << " on the GPU, "
                << e[element].item<double>() << " on the CPU ("
                << at::ne(a.to(at::kDouble), e.to(at::kDouble)).sum().item<int64_t>()
                << " elements differ in value)";
}

// Standard normal float32 values from a fixed seed, with a few exact ties and zeros mixed in.
inline at::Tensor gradientLike(int64_t numel, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  at::Tensor x = at::randn({numel}, generator, at::TensorOptions(at::kFloat));
  if (numel > 16) {
    x.narrow(0, 0, 4).fill_(0.0f);
    x.narrow(0, numel / 2, 3).fill_(1.5f);  // ties at a large magnitude
  }
  return x;
}

}  // namespace thinwire::testing

// File: tests/compressors/test_tensors.h
//
// Small helpers shared by the compressor tests: seeded Gaussian inputs, a tensor's values as a
// std::vector, and substring checks for error messages.
//
// Example:
//   at::Tensor x = gaussian(1000, /*seed=*/7);       // the same values for the same seed
//   std::vector<float> values = toVector(x);
//   EXPECT_TRUE(contains(message, "ratio"));
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <string>
#include <vector>

namespace thinwire::compressors::test {

// numel float32 samples of N(0, 1) from a CPU generator seeded with `seed`.
inline at::Tensor gaussian(int64_t numel, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::randn({numel}, generator, at::TensorOptions(at::kFloat));
}

// The values of a float32 tensor in memory order of its contiguous form.
inline std::vector<float> toVector(const at::Tensor& tensor) {
  const at::Tensor flat = tensor.contiguous();
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace thinwire::compressors::test

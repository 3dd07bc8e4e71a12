// libFuzzer target: the checkpoint reader (core::readStateFile) on arbitrary bytes. A file that
// reads is then walked: every tensor's numel, dtype and a sum over its bytes, so a tensor whose
// header promises more than its storage holds is caught by AddressSanitizer.
#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (std::getenv("THINWIRE_FUZZ_WRITE_SEEDS") == nullptr) return 0;
  // Seeds written by the real writer: small tensors of several dtypes and shapes.
  const auto dir = thinwire::fuzz::scratch("checkpoint-seeds");
  std::vector<std::string> seeds;
  for (int variant = 0; variant < 3; ++variant) {
    thinwire::StateDict state;
    state["weights"] = at::arange(6 + variant, at::kFloat).reshape({-1});
    if (variant >= 1) state["steps"] = at::full({1}, 42 + variant, at::kLong);
    if (variant >= 2) state["codes"] = at::ones({2, 3}, at::kByte);
    const auto path = dir / ("seed-" + std::to_string(variant));
    thinwire::core::writeStateFile(path.string(), state);
    std::ifstream in(path, std::ios::binary);
    seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  thinwire::fuzz::maybeWriteSeeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = thinwire::fuzz::scratch("checkpoint") / "state.bin";
  thinwire::fuzz::writeFile(path, thinwire::fuzz::asText(data, size));
  thinwire::fuzz::expectOnlyThinwireErrors([&] {
    const thinwire::StateDict state = thinwire::core::readStateFile(path.string());
    uint64_t checksum = 0;
    for (const auto& [name, tensor] : state) {
      checksum += name.size() + static_cast<uint64_t>(tensor.numel());
      if (!tensor.defined() || tensor.numel() == 0) continue;
      const auto* bytes = static_cast<const uint8_t*>(tensor.data_ptr());
      const size_t n = static_cast<size_t>(tensor.numel()) * tensor.element_size();
      for (size_t i = 0; i < n; ++i) checksum += bytes[i];
    }
    if (checksum == 0xdeadbeefcafeULL) std::fprintf(stderr, " ");  // keeps the walk alive
  });
  return 0;
}

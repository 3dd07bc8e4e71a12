// thinwire_gpu_kernel_bench: GB/s of each CUDA kernel of thinwire::kernels (through the
// compressors and QuEST, as training calls them) next to a device-to-device copy measured in the
// same run, and their ratio. Bytes are what the job must move at the least (Note [GPU roofline]),
// so a ratio of 1 means the kernel runs at copy speed.
//   thinwire_gpu_kernel_bench [--mib N] [--iterations N] [--out report.md]
// Prints a markdown table; exits 0, or 2 without a GPU (nothing measured).
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "compressors/quantize_compressor.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"
#include "kernels/device.h"
#include "qat/hadamard.h"
#include "qat/quantizer.h"

namespace thinwire::bench {
namespace {

// Note [GPU roofline]
// Each kernel is charged the bytes its job must read and write per float32 element in one pass:
// a copy 8 (read, write); compress with error feedback 12 (read residual and gradient, write the
// residual; the payload is small); decompress-add 8 (read and write the output; the payload is
// small); QuEST forward 9 (read, write the values and a 1-byte trust mask, as fakeQuantize does
// in training); the Hadamard transform 8.
// GB/s = bytes / median time; ratio = kernel GB/s / copy GB/s.
struct Row {
  std::string name;
  double bytesPerElement;
  std::function<void()> run;
};

double medianSeconds(const std::function<void()>& run, int iterations) {
  run();  // warm-up (allocations, first launches)
  kernels::synchronizeDevice();
  std::vector<double> times;
  for (int i = 0; i < iterations; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    kernels::synchronizeDevice();
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

int run(int argc, char** argv) {
  int64_t mib = 256;
  int iterations = 20;
  std::string outPath;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--mib" && i + 1 < argc) {
      mib = std::atoll(argv[++i]);
    } else if (arg == "--iterations" && i + 1 < argc) {
      iterations = std::atoi(argv[++i]);
    } else if (arg == "--out" && i + 1 < argc) {
      outPath = argv[++i];
    } else {
      std::cerr << "usage: thinwire_gpu_kernel_bench [--mib N] [--iterations N] [--out PATH]\n";
      return 1;
    }
  }
  if (!kernels::cudaAvailable() || !at::hasCUDA()) {
    std::cerr << "thinwire_gpu_kernel_bench: no CUDA device (or libtorch without CUDA)\n";
    return 2;
  }
  const int64_t n = mib * 1024 * 1024 / 4;
  const at::TensorOptions gpu = at::TensorOptions(at::kFloat).device(at::kCUDA, 0);
  at::Tensor source = at::randn({n}, gpu);
  at::Tensor destination = at::empty({n}, gpu);
  at::Tensor residual = at::randn({n}, gpu);
  at::Tensor gradient = at::randn({n}, gpu);
  at::Tensor out = at::zeros({n}, gpu);
  const int64_t d = 1024;
  at::Tensor activations = at::randn({n / d, d}, gpu);

  compressors::TopKCompressor exact(compressors::TopKOptions{});
  compressors::TopKCompressor sampled(compressors::TopKOptions{.sampled = true});
  compressors::SignCompressor sign(compressors::SignOptions{.chunk = 2048});
  compressors::QuantizeCompressor quantize(compressors::QuantizeOptions{.bucket = 512});
  const compressors::LayerParams topk{.ratio = 0.01, .rankSeed = 5};
  const compressors::LayerParams fourBits{.bits = 4, .rankSeed = 5};
  compressors::Payload topkPayload;
  compressors::Payload signPayload;
  compressors::Payload quantizePayload;
  sign.compress(residual, gradient, 1.0f, signPayload, {});
  quantize.compress(residual, gradient, 1.0f, quantizePayload, fourBits);

  std::vector<Row> rows = {
      {"device-to-device copy", 8, [&] { kernels::deviceCopy(source, destination); }},
      {"top-k exact 1% + EF (compress)", 12,
       [&] { exact.compress(residual, gradient, 1.0f, topkPayload, topk); }},
      {"top-k sampled 1% + EF (compress)", 12,
       [&] { sampled.compress(residual, gradient, 1.0f, topkPayload, topk); }},
      {"1-bit chunk 2048 + EF (compress)", 12,
       [&] { sign.compress(residual, gradient, 1.0f, signPayload, {}); }},
      {"1-bit decompress-add", 8, [&] { sign.decompressAdd(signPayload, out, 0.5f, {}); }},
      {"4-bit bucket 512 + EF (compress)", 12,
       [&] { quantize.compress(residual, gradient, 1.0f, quantizePayload, fourBits); }},
      {"4-bit dequantize-add", 8,
       [&] { quantize.decompressAdd(quantizePayload, out, 0.5f, fourBits); }},
      // What training runs: fakeQuantize's forward writes the values and the trust mask. (The
      // rows of 1024 floats take the register kernel.)
      {"QuEST W4 forward, values + mask (rows of 1024)", 9,
       [&] { (void)qat::fakeQuantize(activations, qat::QuantizerOptions{.bits = 4}); }},
      {"block Hadamard 128 (rows of 1024)", 8, [&] { (void)qat::blockHadamard(activations); }},
  };
  std::ostringstream table;
  table << "| kernel | bytes/elem | median ms | GB/s | of copy |\n|---|---|---|---|---|\n";
  double copyRate = 0;
  for (const Row& row : rows) {
    const double seconds = medianSeconds(row.run, iterations);
    const double rate = row.bytesPerElement * static_cast<double>(n) / seconds / 1e9;
    if (copyRate == 0) copyRate = rate;
    // defaultfloat with 6 digits: the previous row's setprecision(0) printed 12 as "1e+01".
    table << "| " << row.name << " | " << std::defaultfloat << std::setprecision(6)
          << row.bytesPerElement << " | " << std::fixed << std::setprecision(3) << seconds * 1e3
          << " | " << std::setprecision(0) << rate << " | " << std::setprecision(0)
          << 100.0 * rate / copyRate << " % |\n";
  }
  std::cout << "input: " << mib << " MiB of float32 per kernel call, median of " << iterations
            << " runs\n\n"
            << table.str();
  if (!outPath.empty()) {
    std::ofstream file(outPath);
    file << table.str();
  }
  return 0;
}

}  // namespace
}  // namespace thinwire::bench

int main(int argc, char** argv) {
  try {
    return thinwire::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "thinwire_gpu_kernel_bench: " << e.what() << "\n";
    return 1;
  }
}

#include "kernels/sign.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "base/error.h"
#include "kernels/device.h"
#include "kernels/launch.h"

namespace thinwire::kernels {
namespace {

// The fused kernel keeps one chunk per 8-thread group; SignCompressor sums 4096-element blocks.
constexpr int64_t kFusedMaxChunk = 4096;
constexpr int64_t kSumBlock = 4096;

int64_t segmentLength(int64_t numel, const SignKernelOptions& options) {
  return options.chunk == 0 ? numel : std::min(options.chunk, numel);
}

int64_t expectedBytes(int64_t numel, const SignKernelOptions& options) {
  if (numel == 0) return 0;
  const int64_t segment = segmentLength(numel, options);
  return 4 * ((numel + segment - 1) / segment) + (numel + 7) / 8;
}

void checkPayload(const at::Tensor& payload, int64_t numel, const SignKernelOptions& options) {
  TW_CHECK(options.chunk >= 0 && options.chunk % 8 == 0,
           "sign: chunk must be 0 or a positive multiple of 8, got ", options.chunk);
  const int64_t bytes = expectedBytes(numel, options);
  TW_CHECK(payload.defined() && onKernelDevice(payload) && payload.scalar_type() == at::kByte &&
               payload.is_contiguous() && payload.numel() == bytes,
           "sign: payload must be ", bytes, " contiguous uint8 CUDA bytes for ", numel,
           " elements, got ", payload.defined() ? payload.toString() : std::string("undefined"));
}

}  // namespace

void signCompress(at::Tensor& residual,
                  const at::Tensor& addend,
                  float addendScale,
                  const SignKernelOptions& options,
                  at::Tensor& payload) {
  checkCudaFloat(residual, "sign residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkCudaFloat(addend, "sign addend");
    TW_CHECK(addend.numel() == numel, "sign: addend has ", addend.numel(), " elements, residual ",
             numel);
  }
  checkPayload(payload, numel, options);
  if (numel == 0) return;
  DeviceScope scope(residual);
  const int64_t segment = segmentLength(numel, options);
  const int64_t segments = (numel + segment - 1) / segment;
  uint8_t* scales = payload.data_ptr<uint8_t>();
  uint8_t* bits = scales + 4 * segments;
  float* r = residual.data_ptr<float>();
  const float* a = addend.defined() ? addend.data_ptr<float>() : nullptr;
  if (options.chunk > 0 && options.chunk <= kFusedMaxChunk) {
    check(detail::launchSignCompressChunked(r, a, addendScale, numel, options.chunk, options.l2,
                                            scales, bits, scope.stream()),
          "sign compress");
    return;
  }
  const int64_t blocksPerSegment = (segment + kSumBlock - 1) / kSumBlock;
  at::Tensor blockSums =
      at::empty({segments * blocksPerSegment}, residual.options().dtype(at::kDouble));
  check(detail::launchSignCompressSegmented(r, a, addendScale, numel, segment, options.l2,
                                            blockSums.data_ptr<double>(), scales, bits,
                                            scope.stream()),
        "sign compress");
}

void signDecompressAdd(const at::Tensor& payload,
                       const SignKernelOptions& options,
                       float alpha,
                       at::Tensor& out) {
  checkCudaFloat(out, "sign decompressAdd output");
  const int64_t numel = out.numel();
  checkPayload(payload, numel, options);
  if (numel == 0) return;
  DeviceScope scope(out);
  const int64_t segment = segmentLength(numel, options);
  const uint8_t* scales = payload.data_ptr<uint8_t>();
  const uint8_t* bits = scales + 4 * ((numel + segment - 1) / segment);
  check(detail::launchSignDecompressAdd(scales, bits, numel, segment, alpha, out.data_ptr<float>(),
                                        scope.stream()),
        "sign decompressAdd");
}

}  // namespace thinwire::kernels

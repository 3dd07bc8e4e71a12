#include "kernels/quantize.h"

#include <ATen/ATen.h>

#include "base/error.h"
#include "kernels/device.h"
#include "kernels/launch.h"

namespace thinwire::kernels {
namespace {

int64_t bucketsOf(int64_t numel, const QuantizeKernelOptions& options) {
  return (numel + options.bucket - 1) / options.bucket;
}

void checkPayload(const at::Tensor& payload, int64_t numel, const QuantizeKernelOptions& options) {
  TW_CHECK(options.bucket > 0, "quantize: bucket must be > 0, got ", options.bucket);
  TW_CHECK(options.bits >= 2 && options.bits <= 8, "quantize: bits must be in [2, 8], got ",
           options.bits);
  const int64_t bytes = 8 * bucketsOf(numel, options) + (numel * options.bits + 7) / 8;
  TW_CHECK(payload.defined() && onKernelDevice(payload) && payload.scalar_type() == at::kByte &&
               payload.is_contiguous() && payload.numel() == bytes,
           "quantize: payload must be ", bytes, " contiguous uint8 CUDA bytes for ", numel,
           " elements at ", options.bits, " bits, got ",
           payload.defined() ? payload.toString() : std::string("undefined"));
}

}  // namespace

void quantizeCompress(at::Tensor& residual,
                      const at::Tensor& addend,
                      float addendScale,
                      const QuantizeKernelOptions& options,
                      at::Tensor& payload) {
  checkCudaFloat(residual, "quantize residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkCudaFloat(addend, "quantize addend");
    TW_CHECK(addend.numel() == numel, "quantize: addend has ", addend.numel(),
             " elements, residual ", numel);
  }
  checkPayload(payload, numel, options);
  if (numel == 0) return;
  DeviceScope scope(residual);
  if (detail::quantizeFusedSupported(options.bucket)) {
    uint8_t* meta = payload.data_ptr<uint8_t>();
    check(detail::launchQuantizePacked(
              residual.data_ptr<float>(), addend.defined() ? addend.data_ptr<float>() : nullptr,
              addendScale, numel, options.bucket, options.bits, options.stochastic, options.seed,
              meta, meta + 8 * bucketsOf(numel, options), scope.stream()),
          "quantize");
    return;
  }
  at::Tensor levels = at::empty({numel}, residual.options().dtype(at::kByte));
  uint8_t* meta = payload.data_ptr<uint8_t>();
  check(detail::launchQuantizeBuckets(
            residual.data_ptr<float>(), addend.defined() ? addend.data_ptr<float>() : nullptr,
            addendScale, numel, options.bucket, options.bits, options.stochastic, options.seed,
            meta, levels.data_ptr<uint8_t>(), scope.stream()),
        "quantize");
  check(detail::launchPackCodes(levels.data_ptr<uint8_t>(), numel, options.bits,
                                meta + 8 * bucketsOf(numel, options), scope.stream()),
        "quantize pack");
}

void dequantizeAdd(const at::Tensor& payload,
                   const QuantizeKernelOptions& options,
                   float alpha,
                   at::Tensor& out) {
  checkCudaFloat(out, "quantize decompressAdd output");
  const int64_t numel = out.numel();
  checkPayload(payload, numel, options);
  if (numel == 0) return;
  DeviceScope scope(out);
  const uint8_t* meta = payload.data_ptr<uint8_t>();
  const int64_t metaBytes = 8 * bucketsOf(numel, options);
  check(detail::launchDequantizeAdd(meta, meta + metaBytes, payload.numel() - metaBytes, numel,
                                    options.bucket, options.bits, alpha, out.data_ptr<float>(),
                                    scope.stream()),
        "quantize decompressAdd");
}

}  // namespace thinwire::kernels

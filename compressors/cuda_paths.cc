#include "compressors/cuda_paths.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "base/error.h"
#include "compressors/sampled_threshold.h"

#if defined(THINWIRE_WITH_CUDA)
#include "kernels/device.h"
#include "kernels/quantize.h"
#include "kernels/sign.h"
#include "kernels/top_k.h"
#endif

namespace thinwire::compressors {

#if defined(THINWIRE_WITH_CUDA)
namespace {

// TopKCompressor's minimum sample (kMinSamples in top_k_compressor.cc).
constexpr int64_t kMinSamples = 4096;

// A payload of `bytes` uint8 on `like`'s device, reusing `out.data` when it already is one.
void preparePayload(Payload& out, const at::Tensor& like, int64_t bytes) {
  const bool reusable = out.data.defined() && out.data.scalar_type() == at::kByte &&
                        out.data.device() == like.device() && out.data.is_contiguous() &&
                        out.data.dim() == 1 && out.data.numel() == bytes;
  if (!reusable) out.data = at::empty({bytes}, like.options().dtype(at::kByte));
  out.numel = like.numel();
  out.parts.clear();
}

// The payload's bytes on `out`'s device.
at::Tensor bytesOn(const Payload& payload, const at::Tensor& out) {
  return payload.data.device() == out.device() ? payload.data
                                               : payload.data.to(out.device()).contiguous();
}

void checkAddend(const at::Tensor& residual, const at::Tensor& addend, const char* owner) {
  if (!addend.defined()) return;
  TW_CHECK(addend.device() == residual.device(), owner, ": addend is on ", addend.device(),
           ", residual on ", residual.device());
}

}  // namespace

void compressTopKOnCuda(const TopKOptions& options,
                        at::Tensor& residual,
                        const at::Tensor& addend,
                        float addendScale,
                        Payload& out,
                        const LayerParams& params) {
  kernels::checkCudaFloat(residual, "top-k: residual");
  checkAddend(residual, addend, "top-k");
  const int64_t numel = residual.numel();
  out.numel = numel;
  out.parts.clear();
  const int64_t k = topKCount(numel, params.ratio);
  if (numel == 0) {
    out.data = at::empty({0}, residual.options().dtype(at::kByte));
    return;
  }
  // The sample TopKCompressor's sampled mode draws (Note [Sampled top-k]); exact mode starts
  // from the same guess and refines it to the exact top-k.
  const double target = std::min(
      1.0, static_cast<double>(k) * (1.0 + options.upperBound) / 2.0 / static_cast<double>(numel));
  const ThresholdSamplePlan plan =
      planThresholdSample(numel, ThresholdSampleOptions{.fraction = target,
                                                        .sampleRatio = options.sampleRatio,
                                                        .minSamples = kMinSamples,
                                                        .seed = params.rankSeed});
  const kernels::TopKSelection selection =
      kernels::topKSelect(residual, addend, addendScale,
                          kernels::TopKSelectOptions{.k = k,
                                                     .sampled = options.sampled,
                                                     .sampleFirst = plan.first,
                                                     .sampleStride = plan.stride,
                                                     .sampleCount = plan.count,
                                                     .sampleRank = plan.rank,
                                                     .maxAdaptations = options.maxAdaptations,
                                                     .lowerBound = options.lowerBound});
  out.data = kernels::topKEmit(selection, options.fp16Values, residual);
}

void decompressAddTopKOnCuda(const TopKOptions& options,
                             const Payload& payload,
                             at::Tensor& out,
                             float alpha,
                             const LayerParams& params) {
  kernels::checkCudaFloat(out, "top-k: decompressAdd output");
  TW_CHECK(out.numel() == payload.numel, "top-k: decompressAdd output has ", out.numel(),
           " elements, the payload decodes to ", payload.numel);
  const int64_t k = topKCount(payload.numel, params.ratio);
  const int64_t bytes = payload.wireBytes();
  if (bytes == 0) {
    TW_CHECK(options.sampled || k == 0, "top-k: empty payload, expected ", k, " entries");
    return;
  }
  TW_CHECK(payload.data.scalar_type() == at::kByte && payload.data.is_contiguous(),
           "top-k: payload must be contiguous uint8 bytes, got ", payload.data.toString());
  const int64_t entryBytes = 4 + (options.fp16Values ? 2 : 4);
  TW_CHECK(bytes % entryBytes == 0, "top-k: payload of ", bytes, " bytes is not a whole number of ",
           entryBytes, "-byte entries");
  const int64_t count = bytes / entryBytes;
  TW_CHECK(options.sampled ? count <= k : count == k, "top-k: payload holds ", count,
           " entries, expected ", options.sampled ? "at most " : "", k);
  kernels::topKDecompressAdd(bytesOn(payload, out), count, options.fp16Values, alpha, out);
}

void compressSignOnCuda(const SignOptions& options,
                        at::Tensor& residual,
                        const at::Tensor& addend,
                        float addendScale,
                        Payload& out,
                        int64_t payloadBytes) {
  checkAddend(residual, addend, "sign");
  preparePayload(out, residual, payloadBytes);
  kernels::signCompress(
      residual, addend, addendScale,
      kernels::SignKernelOptions{.chunk = options.chunk, .l2 = options.scale == SignScale::kL2},
      out.data);
}

void decompressAddSignOnCuda(const SignOptions& options,
                             const Payload& payload,
                             at::Tensor& out,
                             float alpha) {
  TW_CHECK(payload.numel == out.numel(), "sign: out has ", out.numel(), " elements, payload ",
           payload.numel);
  if (out.numel() == 0) return;
  TW_CHECK(payload.data.defined(), "sign: payload is undefined");
  kernels::signDecompressAdd(
      bytesOn(payload, out),
      kernels::SignKernelOptions{.chunk = options.chunk, .l2 = options.scale == SignScale::kL2},
      alpha, out);
}

void compressQuantizeOnCuda(const QuantizeOptions& options,
                            int bits,
                            at::Tensor& residual,
                            const at::Tensor& addend,
                            float addendScale,
                            Payload& out,
                            const LayerParams& params,
                            int64_t payloadBytes) {
  checkAddend(residual, addend, "quantize");
  preparePayload(out, residual, payloadBytes);
  kernels::quantizeCompress(residual, addend, addendScale,
                            kernels::QuantizeKernelOptions{.bucket = options.bucket,
                                                           .bits = bits,
                                                           .stochastic = options.stochastic,
                                                           .seed = params.rankSeed},
                            out.data);
}

void decompressAddQuantizeOnCuda(const QuantizeOptions& options,
                                 int bits,
                                 const Payload& payload,
                                 at::Tensor& out,
                                 float alpha,
                                 const LayerParams& params) {
  TW_CHECK(payload.numel == out.numel(), "quantize: out has ", out.numel(), " elements, payload ",
           payload.numel);
  if (out.numel() == 0) return;
  TW_CHECK(payload.data.defined(), "quantize: payload is undefined");
  kernels::dequantizeAdd(bytesOn(payload, out),
                         kernels::QuantizeKernelOptions{.bucket = options.bucket,
                                                        .bits = bits,
                                                        .stochastic = options.stochastic,
                                                        .seed = params.rankSeed},
                         alpha, out);
}

#else  // built without CUDA

namespace {
[[noreturn]] void noCuda(const char* owner) {
  TW_THROW(InvalidArgument, owner,
           ": got a CUDA tensor, but thinwire was built without CUDA (THINWIRE_WITH_CUDA=OFF)");
}
}  // namespace

void compressTopKOnCuda(
    const TopKOptions&, at::Tensor&, const at::Tensor&, float, Payload&, const LayerParams&) {
  noCuda("top-k");
}
void decompressAddTopKOnCuda(
    const TopKOptions&, const Payload&, at::Tensor&, float, const LayerParams&) {
  noCuda("top-k");
}
void compressSignOnCuda(
    const SignOptions&, at::Tensor&, const at::Tensor&, float, Payload&, int64_t) {
  noCuda("sign");
}
void decompressAddSignOnCuda(const SignOptions&, const Payload&, at::Tensor&, float) {
  noCuda("sign");
}
void compressQuantizeOnCuda(const QuantizeOptions&,
                            int,
                            at::Tensor&,
                            const at::Tensor&,
                            float,
                            Payload&,
                            const LayerParams&,
                            int64_t) {
  noCuda("quantize");
}
void decompressAddQuantizeOnCuda(
    const QuantizeOptions&, int, const Payload&, at::Tensor&, float, const LayerParams&) {
  noCuda("quantize");
}

#endif

}  // namespace thinwire::compressors

#include "compressors/identity_compressor.h"

#include <ATen/ATen.h>

#include "base/error.h"

namespace thinwire::compressors {

void IdentityCompressor::compress(at::Tensor& residual,
                                  const at::Tensor& addend,
                                  float addendScale,
                                  Payload& out,
                                  const LayerParams& /*params*/) {
  checkFlatFloat(residual, "identity", "residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkFlatFloat(addend, "identity", "addend");
    TW_CHECK(addend.numel() == numel, "identity: addend has ", addend.numel(),
             " elements, residual ", numel);
  }
  const bool reusable = out.data.defined() && out.data.scalar_type() == at::kFloat &&
                        out.data.is_cpu() && out.data.is_contiguous() && out.data.dim() == 1 &&
                        out.data.numel() == numel;
  if (!reusable) out.data = at::empty({numel}, at::kFloat);
  out.numel = numel;
  out.parts.clear();

  float* r = residual.data_ptr<float>();
  float* p = out.data.data_ptr<float>();
  if (addend.defined()) {
    const float* a = addend.data_ptr<float>();
    for (int64_t i = 0; i < numel; ++i) {
      p[i] = r[i] + addendScale * a[i];
      r[i] = 0.0f;
    }
  } else {
    for (int64_t i = 0; i < numel; ++i) {
      p[i] = r[i];
      r[i] = 0.0f;
    }
  }
}

void IdentityCompressor::decompressAdd(const Payload& payload,
                                       at::Tensor& out,
                                       float alpha,
                                       const LayerParams& /*params*/) const {
  checkFlatFloat(out, "identity", "out");
  TW_CHECK(out.numel() == payload.numel, "identity: out has ", out.numel(), " elements, payload ",
           payload.numel);
  if (payload.numel == 0) return;
  TW_CHECK(payload.data.defined() && payload.data.scalar_type() == at::kFloat &&
               payload.data.is_contiguous() && payload.data.numel() == payload.numel,
           "identity: payload must hold ", payload.numel, " float32 elements, got ",
           payload.data.defined() ? payload.data.toString() : std::string("undefined"), " of ",
           payload.data.defined() ? payload.data.numel() : 0);
  const float* p = payload.data.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < payload.numel; ++i) o[i] += alpha * p[i];
}

int64_t IdentityCompressor::payloadBytes(int64_t numel, const LayerParams& /*params*/) const {
  TW_CHECK(numel >= 0, "identity: numel must be >= 0, got ", numel);
  return numel * static_cast<int64_t>(sizeof(float));
}

}  // namespace thinwire::compressors

#include "compressors/cast_compressor.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

void checkFloatTensor(const at::Tensor& tensor, const char* what) {
  TW_CHECK(tensor.defined(), "cast: ", what, " is undefined");
  TW_CHECK(tensor.scalar_type() == at::kFloat && tensor.is_contiguous() && tensor.is_cpu(),
           "cast: ", what, " must be a contiguous float32 CPU tensor, got ", tensor.toString(),
           tensor.is_contiguous() ? "" : " (non-contiguous)");
}

// p = r + s * a (a may be null), q = T(p) rounded to nearest even, r = p - float(q).
template <typename T>
void castKernel(float* r, const float* a, float s, T* q, int64_t numel) {
  if (a != nullptr) {
    for (int64_t i = 0; i < numel; ++i) {
      const float p = r[i] + s * a[i];
      const T rounded(p);
      q[i] = rounded;
      r[i] = p - static_cast<float>(rounded);
    }
  } else {
    for (int64_t i = 0; i < numel; ++i) {
      const float p = r[i];
      const T rounded(p);
      q[i] = rounded;
      r[i] = p - static_cast<float>(rounded);
    }
  }
}

template <typename T>
void addKernel(const T* q, float alpha, float* out, int64_t numel) {
  for (int64_t i = 0; i < numel; ++i) out[i] += alpha * static_cast<float>(q[i]);
}

}  // namespace

CastCompressor::CastCompressor(at::ScalarType dtype) : dtype_(dtype) {
  TW_CHECK(dtype == at::kHalf || dtype == at::kBFloat16,
           "cast compressor: dtype must be float16 or bfloat16, got ", c10::toString(dtype));
}

std::string CastCompressor::name() const { return dtype_ == at::kHalf ? "fp16" : "bf16"; }

void CastCompressor::compress(at::Tensor& residual,
                              const at::Tensor& addend,
                              float addendScale,
                              Payload& out,
                              const LayerParams& /*params*/) {
  checkFloatTensor(residual, "residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkFloatTensor(addend, "addend");
    TW_CHECK(addend.numel() == numel, "cast: addend has ", addend.numel(), " elements, residual ",
             numel);
  }
  const bool reusable = out.data.defined() && out.data.scalar_type() == dtype_ &&
                        out.data.is_cpu() && out.data.is_contiguous() && out.data.dim() == 1 &&
                        out.data.numel() == numel;
  if (!reusable) out.data = at::empty({numel}, at::TensorOptions().dtype(dtype_));
  out.numel = numel;
  out.parts.clear();

  float* r = residual.data_ptr<float>();
  const float* a = addend.defined() ? addend.data_ptr<float>() : nullptr;
  if (dtype_ == at::kHalf) {
    castKernel(r, a, addendScale, out.data.data_ptr<at::Half>(), numel);
  } else {
    castKernel(r, a, addendScale, out.data.data_ptr<at::BFloat16>(), numel);
  }
}

void CastCompressor::decompressAdd(const Payload& payload,
                                   at::Tensor& out,
                                   float alpha,
                                   const LayerParams& /*params*/) const {
  checkFloatTensor(out, "out");
  TW_CHECK(out.numel() == payload.numel, "cast: out has ", out.numel(), " elements, payload ",
           payload.numel);
  if (payload.numel == 0) return;
  TW_CHECK(payload.data.defined() && payload.data.scalar_type() == dtype_ &&
               payload.data.is_contiguous() && payload.data.numel() == payload.numel,
           "cast: payload must hold ", payload.numel, " ", c10::toString(dtype_), " elements, got ",
           payload.data.defined() ? payload.data.toString() : std::string("undefined"), " of ",
           payload.data.defined() ? payload.data.numel() : 0);
  float* o = out.data_ptr<float>();
  if (dtype_ == at::kHalf) {
    addKernel(payload.data.data_ptr<at::Half>(), alpha, o, payload.numel);
  } else {
    addKernel(payload.data.data_ptr<at::BFloat16>(), alpha, o, payload.numel);
  }
}

int64_t CastCompressor::payloadBytes(int64_t numel, const LayerParams& /*params*/) const {
  TW_CHECK(numel >= 0, "cast: numel must be >= 0, got ", numel);
  return numel * 2;
}

double CastCompressor::deltaHint(int64_t /*numel*/, const LayerParams& /*params*/) const {
  const int mantissaBits = dtype_ == at::kHalf ? 11 : 8;
  return 1.0 - std::ldexp(1.0, -2 * mantissaBits);
}

}  // namespace thinwire::compressors

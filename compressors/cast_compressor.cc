#include "compressors/cast_compressor.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>

// The float16 fast path needs GCC/Clang function targets on x86-64.
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define TW_CAST_HAS_F16C 1
#else
#define TW_CAST_HAS_F16C 0
#endif

#include "base/error.h"

namespace thinwire::compressors {
namespace {

// p = r + s * a (a may be null), q = T(p) rounded to nearest even, r = p - float(q), over
// [begin, end). The portable path: c10's conversions.
template <typename T>
void castScalar(float* r, const float* a, float s, T* q, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float p = a != nullptr ? r[i] + s * a[i] : r[i];
    const T rounded(p);
    q[i] = rounded;
    r[i] = p - static_cast<float>(rounded);
  }
}

template <typename T>
void addScalar(const T* q, float alpha, float* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) out[i] += alpha * static_cast<float>(q[i]);
}

// Bfloat16 is the top half of a float32, so round to nearest even is integer arithmetic on the
// bits (c10's round_to_nearest_even, NaN -> 0x7FC0) and the loop vectorises.
void castBFloat16(float* r, const float* a, float s, at::BFloat16* q, int64_t numel) {
  for (int64_t i = 0; i < numel; ++i) {
    const float p = a != nullptr ? r[i] + s * a[i] : r[i];
    uint32_t bits = 0;
    std::memcpy(&bits, &p, sizeof(bits));
    uint32_t rounded = (bits + 0x7FFFU + ((bits >> 16) & 1U)) >> 16;
    rounded = p != p ? 0x7FC0U : rounded;
    q[i].x = static_cast<uint16_t>(rounded);
    const uint32_t backBits = rounded << 16;
    float back = 0.0f;
    std::memcpy(&back, &backBits, sizeof(back));
    r[i] = p - back;
  }
}

void addBFloat16(const at::BFloat16* q, float alpha, float* out, int64_t numel) {
  for (int64_t i = 0; i < numel; ++i) {
    const uint32_t bits = static_cast<uint32_t>(q[i].x) << 16;
    float value = 0.0f;
    std::memcpy(&value, &bits, sizeof(value));
    out[i] += alpha * value;
  }
}

#if TW_CAST_HAS_F16C
// Float16 with the F16C conversion instructions (x86 since 2012), chosen at run time. Finite
// results are bit-identical to the c10 path (both round to nearest even, subnormals included);
// NaN payloads may differ. Returns how many leading elements it converted (a multiple of 8).
__attribute__((target("avx,f16c"))) int64_t castHalfF16c(
    float* r, const float* a, float s, at::Half* q, int64_t numel) {
  const __m256 scale = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= numel; i += 8) {
    __m256 p = _mm256_loadu_ps(r + i);
    if (a != nullptr) p = _mm256_add_ps(p, _mm256_mul_ps(scale, _mm256_loadu_ps(a + i)));
    const __m128i rounded = _mm256_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), rounded);
    _mm256_storeu_ps(r + i, _mm256_sub_ps(p, _mm256_cvtph_ps(rounded)));
  }
  return i;
}

__attribute__((target("avx,f16c"))) int64_t addHalfF16c(const at::Half* q,
                                                        float alpha,
                                                        float* out,
                                                        int64_t numel) {
  const __m256 scale = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= numel; i += 8) {
    const __m256 value = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + i)));
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_mul_ps(scale, value)));
  }
  return i;
}

bool hasF16c() { return __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c"); }
#endif

void castHalf(float* r, const float* a, float s, at::Half* q, int64_t numel) {
  int64_t done = 0;
#if TW_CAST_HAS_F16C
  if (hasF16c()) done = castHalfF16c(r, a, s, q, numel);
#endif
  castScalar(r, a, s, q, done, numel);
}

void addHalf(const at::Half* q, float alpha, float* out, int64_t numel) {
  int64_t done = 0;
#if TW_CAST_HAS_F16C
  if (hasF16c()) done = addHalfF16c(q, alpha, out, numel);
#endif
  addScalar(q, alpha, out, done, numel);
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
  checkFlatFloat(residual, "cast", "residual");
  const int64_t numel = residual.numel();
  if (addend.defined()) {
    checkFlatFloat(addend, "cast", "addend");
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
    castHalf(r, a, addendScale, out.data.data_ptr<at::Half>(), numel);
  } else {
    castBFloat16(r, a, addendScale, out.data.data_ptr<at::BFloat16>(), numel);
  }
}

void CastCompressor::decompressAdd(const Payload& payload,
                                   at::Tensor& out,
                                   float alpha,
                                   const LayerParams& /*params*/) const {
  checkFlatFloat(out, "cast", "out");
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
    addHalf(payload.data.data_ptr<at::Half>(), alpha, o, payload.numel);
  } else {
    addBFloat16(payload.data.data_ptr<at::BFloat16>(), alpha, o, payload.numel);
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

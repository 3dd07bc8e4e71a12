#include "qat/quantizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "qat/cuda_rows.h"
#include "qat/hadamard.h"

namespace thinwire::qat {
namespace {

void checkBits(int64_t bits) {
  TW_CHECK(bits >= 1 && bits <= kMaxBits, "quantizer bits must be in [1, 8], got ", bits);
}

// What the row kernel does with one [rows, d] fp32 matrix.
struct RowPlan {
  int64_t bits = 4;
  bool hadamard = true;
  bool rotateBack = false;  // Full variant: the output is rotated back by H^T (= H)
  float maskScale = 1.0f;
};

// The per-row constants of Note [Row kernel].
struct RowScale {
  float clip = 0.0f;
  float step = 0.0f;
  float keep = 0.0f;  // the mask keeps |u| <= keep
};

RowScale rowScale(
    double sumSquares, int64_t d, float alpha, float levelsMinusOne, float maskScale) {
  const float sigma = static_cast<float>(std::sqrt(sumSquares / static_cast<double>(d)));
  RowScale scale;
  scale.clip = alpha * sigma + 1e-8f;
  scale.step = 2.0f * scale.clip / levelsMinusOne;
  scale.keep = maskScale * scale.clip;
  return scale;
}

// The element loop of Note [Row kernel] over u[begin, end), in place.
void quantizeElementsScalar(
    float* u, int64_t begin, int64_t end, const RowScale& scale, bool* mask, int8_t* codes) {
  for (int64_t j = begin; j < end; ++j) {
    const float value = u[j];
    if (mask != nullptr) mask[j] = std::fabs(value) <= scale.keep;
    const float clamped = std::min(std::max(value, -scale.clip), scale.clip);
    const float level = std::rint(clamped / scale.step + 0.5f);
    if (codes != nullptr) codes[j] = static_cast<int8_t>(level - 1.0f);
    u[j] = (level - 0.5f) * scale.step;
  }
}

// Sums of squares (accumulated in double, element 0 first) of `count` rows of length d starting
// at `rows`, into sums[0..count).
void sumSquaresScalar(const float* rows, int64_t count, int64_t d, double* sums) {
  for (int64_t r = 0; r < count; ++r) {
    const float* u = rows + r * d;
    double sum = 0.0;
    for (int64_t j = 0; j < d; ++j) sum += static_cast<double>(u[j]) * u[j];
    sums[r] = sum;
  }
}

#if defined(__SSE2__)

// Note [Vector row kernel]
// The same arithmetic as Note [Row kernel], bit for bit, four floats per SSE2 instruction:
//   * sums of squares: each row's sum is one sequential chain of double additions (element 0
//     first), as in the scalar loop; four rows are summed side by side in two double lanes of
//     two registers, so the chains overlap instead of waiting on each other's latency. The
//     squares of floats are exact in double.
//   * clamp: _mm_max_ps(-c, u) then _mm_min_ps(c, .) return the same operand as std::max(u, -c)
//     and std::min(., c), NaN included.
//   * rint: |clamp(u)/step + 1/2| <= 2^(b-1) + 1 is far below 2^22, where adding and subtracting
//     1.5 * 2^23 rounds to the nearest integer with ties to even in the default rounding mode,
//     exactly as rint. It may return +0 where rint returns -0; the outputs (r - 1/2) * step and
//     r - 1 are the same for both.
//   * mask: |u| <= keep per lane, packed to one byte (0 or 1) per element.
// Codes (export only) keep the scalar loop.

// Rows [0, 4) of `rows` (length d, a multiple of 4) summed in four parallel chains.
void sumSquaresFour(const float* rows, int64_t d, double* sums) {
  const float* r0 = rows;
  const float* r1 = rows + d;
  const float* r2 = rows + 2 * d;
  const float* r3 = rows + 3 * d;
  __m128d sums01 = _mm_setzero_pd();
  __m128d sums23 = _mm_setzero_pd();
  for (int64_t j = 0; j < d; j += 4) {
    const __m128 a = _mm_loadu_ps(r0 + j);
    const __m128 b = _mm_loadu_ps(r1 + j);
    const __m128 c = _mm_loadu_ps(r2 + j);
    const __m128 e = _mm_loadu_ps(r3 + j);
    const __m128 abLow = _mm_unpacklo_ps(a, b);   // a0 b0 a1 b1
    const __m128 abHigh = _mm_unpackhi_ps(a, b);  // a2 b2 a3 b3
    const __m128 ceLow = _mm_unpacklo_ps(c, e);
    const __m128 ceHigh = _mm_unpackhi_ps(c, e);
    __m128d x = _mm_cvtps_pd(abLow);
    __m128d y = _mm_cvtps_pd(ceLow);
    sums01 = _mm_add_pd(sums01, _mm_mul_pd(x, x));
    sums23 = _mm_add_pd(sums23, _mm_mul_pd(y, y));
    x = _mm_cvtps_pd(_mm_movehl_ps(abLow, abLow));
    y = _mm_cvtps_pd(_mm_movehl_ps(ceLow, ceLow));
    sums01 = _mm_add_pd(sums01, _mm_mul_pd(x, x));
    sums23 = _mm_add_pd(sums23, _mm_mul_pd(y, y));
    x = _mm_cvtps_pd(abHigh);
    y = _mm_cvtps_pd(ceHigh);
    sums01 = _mm_add_pd(sums01, _mm_mul_pd(x, x));
    sums23 = _mm_add_pd(sums23, _mm_mul_pd(y, y));
    x = _mm_cvtps_pd(_mm_movehl_ps(abHigh, abHigh));
    y = _mm_cvtps_pd(_mm_movehl_ps(ceHigh, ceHigh));
    sums01 = _mm_add_pd(sums01, _mm_mul_pd(x, x));
    sums23 = _mm_add_pd(sums23, _mm_mul_pd(y, y));
  }
  _mm_storeu_pd(sums, sums01);
  _mm_storeu_pd(sums + 2, sums23);
}

// Elements [0, d - d % 16) of one row in place, then the rest with the scalar loop.
void quantizeElementsVector(float* u, int64_t d, const RowScale& scale, bool* mask) {
  const __m128 clip = _mm_set1_ps(scale.clip);
  const __m128 negativeClip = _mm_set1_ps(-scale.clip);
  const __m128 step = _mm_set1_ps(scale.step);
  const __m128 keep = _mm_set1_ps(scale.keep);
  const __m128 half = _mm_set1_ps(0.5f);
  const __m128 roundingShift = _mm_set1_ps(12582912.0f);  // 1.5 * 2^23
  const __m128 absolute = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  const __m128i one = _mm_set1_epi8(1);
  const int64_t vectorEnd = d - d % 16;
  for (int64_t j = 0; j < vectorEnd; j += 16) {
    __m128i keeps[4];
    for (int k = 0; k < 4; ++k) {
      float* p = u + j + 4 * k;
      const __m128 value = _mm_loadu_ps(p);
      keeps[k] = _mm_castps_si128(_mm_cmple_ps(_mm_and_ps(value, absolute), keep));
      const __m128 clamped = _mm_min_ps(clip, _mm_max_ps(negativeClip, value));
      const __m128 scaled = _mm_add_ps(_mm_div_ps(clamped, step), half);
      const __m128 level = _mm_sub_ps(_mm_add_ps(scaled, roundingShift), roundingShift);
      _mm_storeu_ps(p, _mm_mul_ps(_mm_sub_ps(level, half), step));
    }
    if (mask != nullptr) {
      const __m128i words =
          _mm_packs_epi16(_mm_packs_epi32(keeps[0], keeps[1]), _mm_packs_epi32(keeps[2], keeps[3]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(mask + j), _mm_and_si128(words, one));
    }
  }
  quantizeElementsScalar(u, vectorEnd, d, scale, mask, nullptr);
}

#endif  // __SSE2__

// Note [Row kernel]
// One pass per row over contiguous fp32: rotate (reading the input, writing `values`), RMS
// (accumulated in double so d = 4096 rows lose no digits), then clamp / round / mask element by
// element and optionally rotate back. `values` receives the fake-quantized rows; `mask`,
// `codes` and `steps` are optional outputs (nullptr to skip). The arithmetic follows
// specs/qat.md §1.2 in fp32:
//   c = alpha_b * sigma + 1e-8, step = 2c / (2^b - 1), r = rint(clamp(u, -c, c) / step + 1/2),
//   q = (r - 1/2) * step, code = r - 1; rint rounds half to even (the default FE_TONEAREST).
// Rows go in groups of four so that their sums of squares run side by side (Note [Vector row
// kernel]); the result of every row is the same whatever group it falls in.
void quantizeRowsKernel(const float* input,
                        int64_t rows,
                        int64_t d,
                        const RowPlan& plan,
                        float* values,
                        bool* mask,
                        int8_t* codes,
                        float* steps) {
  const float alpha = static_cast<float>(gaussianOptimalScale(plan.bits));
  const float levelsMinusOne = static_cast<float>((int64_t{1} << plan.bits) - 1);
  constexpr int64_t kGroup = 4;
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t first = begin; first < end; first += kGroup) {
      const int64_t count = std::min(kGroup, end - first);
      float* group = values + first * d;
      const float* source = input + first * d;
      if (plan.hadamard) {
        fwhtBlocks(source, group, count * d);
      } else {
        std::copy(source, source + count * d, group);
      }
      double sums[kGroup];
#if defined(__SSE2__)
      if (count == kGroup && d % 4 == 0) {
        sumSquaresFour(group, d, sums);
      } else {
        sumSquaresScalar(group, count, d, sums);
      }
#else
      sumSquaresScalar(group, count, d, sums);
#endif
      for (int64_t i = 0; i < count; ++i) {
        const int64_t r = first + i;
        float* u = group + i * d;
        const RowScale scale = rowScale(sums[i], d, alpha, levelsMinusOne, plan.maskScale);
        if (steps != nullptr) steps[r] = scale.step;
        bool* rowMask = mask == nullptr ? nullptr : mask + r * d;
        int8_t* rowCodes = codes == nullptr ? nullptr : codes + r * d;
#if defined(__SSE2__)
        if (rowCodes == nullptr) {
          quantizeElementsVector(u, d, scale, rowMask);
        } else {
          quantizeElementsScalar(u, 0, d, scale, rowMask, rowCodes);
        }
#else
        quantizeElementsScalar(u, 0, d, scale, rowMask, rowCodes);
#endif
        if (plan.rotateBack) fwhtBlocksInPlace(u, d);
      }
    }
  });
}

// row[j] = 0 where mask[j] is false, in place (+0.0f, as `mask ? g : 0.0f`).
void maskRow(float* row, const bool* mask, int64_t d) {
  int64_t j = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  for (; j + 4 <= d; j += 4) {
    int32_t bytes;
    std::memcpy(&bytes, mask + j, sizeof(bytes));
    const __m128i words = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(bytes), zero),
                                             zero);  // one bool per lane
    const __m128 dropped = _mm_castsi128_ps(_mm_cmpeq_epi32(words, zero));
    _mm_storeu_ps(row + j, _mm_andnot_ps(dropped, _mm_loadu_ps(row + j)));
  }
#endif
  for (; j < d; ++j) row[j] = mask[j] ? row[j] : 0.0f;
}

// The trust-estimator backward of one row, written to `target` from `source` (rows of length
// d; they may be equal): Full ((G H) . M) H^T, Half (G . M) H^T, without the rotation G . M.
void backwardRow(
    const float* source, float* target, const bool* mask, int64_t d, bool full, bool hadamard) {
  if (full) {
    fwhtBlocks(source, target, d);
  } else if (source != target) {
    std::copy(source, source + d, target);
  }
  if (mask != nullptr) maskRow(target, mask, d);
  if (hadamard) fwhtBlocksInPlace(target, d);
}

RowPlan planFor(const at::Tensor& x, const QuantizerOptions& options) {
  checkBits(options.bits);
  TW_CHECK(options.maskScale >= 0, "quantizer maskScale must be >= 0, got ", options.maskScale);
  TW_CHECK(at::isFloatingType(x.scalar_type()), "quantizers need a float tensor, got ",
           x.scalar_type());
  TW_CHECK(x.dim() >= 1 && x.size(-1) >= 1, "quantizers need rows (a last dimension), got shape ",
           x.sizes());
  if (options.hadamard) {
    TW_CHECK(x.size(-1) % kHadamardBlock == 0,
             "QuEST's Hadamard rotation needs a row length that is a multiple of 128, got shape ",
             x.sizes());
  }
  RowPlan plan;
  plan.bits = options.bits;
  plan.hadamard = options.hadamard;
  plan.rotateBack = options.hadamard && options.variant == Variant::kFull;
  plan.maskScale = static_cast<float>(options.maskScale > 0 ? options.maskScale
                                                            : defaultMaskScale(options.bits));
  return plan;
}

struct FakeQuantizeFunction : public torch::autograd::Function<FakeQuantizeFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx,
                            const at::Tensor& x,
                            const QuantizerOptions& options) {
    const RowPlan plan = planFor(x, options);
    const at::Tensor input = x.to(at::kFloat).contiguous();
    const int64_t d = input.size(-1);
    const int64_t rows = input.numel() / d;
    at::Tensor values = at::empty_like(input);
    const bool trust = options.gradient == Gradient::kTrust;
    at::Tensor mask;
    if (trust) mask = at::empty(input.sizes(), input.options().dtype(at::kBool));
    if (input.is_cuda()) {
      const CudaRows cuda = quantizeRowsOnCuda(
          input.view({rows, d}), {plan.bits, plan.hadamard, plan.rotateBack, plan.maskScale}, trust,
          false);
      values = cuda.values.view(input.sizes());
      if (trust) mask = cuda.mask.view(input.sizes());
    } else {
      quantizeRowsKernel(input.data_ptr<float>(), rows, d, plan, values.data_ptr<float>(),
                         trust ? mask.data_ptr<bool>() : nullptr, nullptr, nullptr);
    }
    ctx->saved_data["hadamard"] = plan.hadamard;
    ctx->saved_data["full"] = plan.rotateBack;
    ctx->saved_data["trust"] = trust;
    if (trust) ctx->save_for_backward({mask});
    return values.to(x.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const bool hadamard = ctx->saved_data["hadamard"].toBool();
    const bool full = ctx->saved_data["full"].toBool();
    const bool trust = ctx->saved_data["trust"].toBool();
    const at::Tensor& upstream = grads[0];
    if (!hadamard && !trust) return {upstream, at::Tensor()};
    const at::Tensor source = upstream.to(at::kFloat).contiguous();
    const int64_t d = source.size(-1);
    const int64_t rows = source.numel() / d;
    at::Tensor mask;
    if (trust) mask = ctx->get_saved_variables()[0].contiguous();
    if (source.is_cuda()) {
      at::Tensor gradient = source.clone();
      at::Tensor rowsView = gradient.view({rows, d});
      backwardRowsOnCudaInPlace(rowsView, trust ? mask.view({rows, d}) : at::Tensor(), full,
                                hadamard);
      return {gradient.to(upstream.scalar_type()), at::Tensor()};
    }
    // A fresh tensor written row by row from the upstream gradient, which autograd may still
    // hold elsewhere: no copy of the whole gradient first.
    at::Tensor gradient = at::empty_like(source);
    const float* g = source.data_ptr<float>();
    float* out = gradient.data_ptr<float>();
    const bool* m = trust ? mask.data_ptr<bool>() : nullptr;
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        backwardRow(g + r * d, out + r * d, m == nullptr ? nullptr : m + r * d, d, full, hadamard);
      }
    });
    return {gradient.to(upstream.scalar_type()), at::Tensor()};
  }
};

}  // namespace

double gaussianOptimalScale(int64_t bits) {
  checkBits(bits);
  return kGaussianOptimalScales[bits];
}

double defaultMaskScale(int64_t bits) {
  checkBits(bits);
  if (bits == 1) return 1.3;
  const double levels = static_cast<double>(int64_t{1} << bits);
  return levels / (levels - 1.0);
}

at::Tensor fakeQuantize(const at::Tensor& x, const QuantizerOptions& options) {
  planFor(x, options);  // argument checks before autograd records anything
  return FakeQuantizeFunction::apply(x, options);
}

QuantizedRows quantizeRows(const at::Tensor& x, const QuantizerOptions& options) {
  const RowPlan base = planFor(x, options);
  RowPlan plan = base;
  plan.rotateBack = false;  // codes always live in the quantized (rotated) basis
  const int64_t d = x.size(-1);
  const at::Tensor input = x.detach().to(at::kFloat).contiguous().view({-1, d});
  const int64_t rows = input.size(0);
  at::Tensor values = at::empty_like(input);
  QuantizedRows out;
  out.codes = at::empty({rows, d}, input.options().dtype(at::kChar));
  out.step = at::empty({rows}, input.options());
  out.mask = at::empty({rows, d}, input.options().dtype(at::kBool));
  if (input.is_cuda()) {
    const CudaRows cuda = quantizeRowsOnCuda(
        input, {plan.bits, plan.hadamard, plan.rotateBack, plan.maskScale}, true, true);
    return {cuda.codes, cuda.steps, cuda.mask};
  }
  quantizeRowsKernel(input.data_ptr<float>(), rows, d, plan, values.data_ptr<float>(),
                     out.mask.data_ptr<bool>(), out.codes.data_ptr<int8_t>(),
                     out.step.data_ptr<float>());
  return out;
}

at::Tensor dequantizeRows(const at::Tensor& codes, const at::Tensor& step) {
  TW_CHECK(codes.dim() == 2 && codes.scalar_type() == at::kChar,
           "dequantizeRows needs int8 codes [rows, d], got ", codes.scalar_type(), " ",
           codes.sizes());
  TW_CHECK(step.dim() == 1 && step.scalar_type() == at::kFloat && step.size(0) == codes.size(0),
           "dequantizeRows needs fp32 steps [", codes.size(0), "], got ", step.scalar_type(), " ",
           step.sizes());
  // (code + 1) is the kernel's rounded level r, exact in fp32; (r - 1/2) * step repeats the
  // kernel's last operation so the values match it bit for bit.
  const at::Tensor level = codes.to(at::kFloat) + 1.0f;
  return (level - 0.5f) * step.unsqueeze(1);
}

at::Tensor lsqQuantize(const at::Tensor& x, const at::Tensor& step, int64_t bits) {
  checkBits(bits);
  TW_CHECK(step.numel() == 1, "lsqQuantize needs a 1-element step, got shape ", step.sizes());
  const double levels = static_cast<double>(int64_t{1} << bits);
  const double qmax = std::max(1.0, levels / 2.0 - 1.0);
  const double gradScale = 1.0 / std::sqrt(static_cast<double>(x.numel()) * qmax);
  const at::Tensor input = x.to(at::kFloat);
  const at::Tensor s = step.to(at::kFloat).reshape({});
  // LSQ's gradient scaling: forward value exactly s (the added term is x - x = 0), gradient
  // scaled by gradScale.
  const at::Tensor small = s * gradScale;
  const at::Tensor scaled = s.detach() + (small - small.detach());
  const double bound = (levels - 1.0) / 2.0;  // clip in units of the step
  const at::Tensor t = at::clamp(input / scaled, -bound, bound) + 0.5;
  // Straight through the rounding; the value is exactly round(t), so exports match bit for bit.
  const at::Tensor level = at::round(t).detach() + (t - t.detach());
  return ((level - 0.5) * scaled).to(x.scalar_type());
}

double lsqInitialStep(int64_t bits, double rms) {
  checkBits(bits);
  const double levels = static_cast<double>(int64_t{1} << bits);
  return 2.0 * gaussianOptimalScale(bits) * rms / (levels - 1.0);
}

}  // namespace thinwire::qat

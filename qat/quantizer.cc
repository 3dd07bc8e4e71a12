#include "qat/quantizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>

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

// Note [Row kernel]
// One pass per row over contiguous fp32: copy, rotate in place, RMS (accumulated in double so
// d = 4096 rows lose no digits), then clamp / round / mask element by element and optionally
// rotate back. `values` receives the fake-quantized row; `mask`, `codes` and `steps` are
// optional outputs (nullptr to skip). The arithmetic follows specs/qat.md §1.2 in fp32:
//   c = alpha_b * sigma + 1e-8, step = 2c / (2^b - 1), r = rint(clamp(u, -c, c) / step + 1/2),
//   q = (r - 1/2) * step, code = r - 1; rint rounds half to even (the default FE_TONEAREST).
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
  at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* u = values + r * d;
      std::copy(input + r * d, input + (r + 1) * d, u);
      if (plan.hadamard) fwhtBlocksInPlace(u, d);
      double sumSquares = 0.0;
      for (int64_t j = 0; j < d; ++j) sumSquares += static_cast<double>(u[j]) * u[j];
      const float sigma = static_cast<float>(std::sqrt(sumSquares / static_cast<double>(d)));
      const float clip = alpha * sigma + 1e-8f;
      const float step = 2.0f * clip / levelsMinusOne;
      const float keep = plan.maskScale * clip;
      if (steps != nullptr) steps[r] = step;
      bool* rowMask = mask == nullptr ? nullptr : mask + r * d;
      int8_t* rowCodes = codes == nullptr ? nullptr : codes + r * d;
      for (int64_t j = 0; j < d; ++j) {
        const float value = u[j];
        if (rowMask != nullptr) rowMask[j] = std::fabs(value) <= keep;
        const float clamped = std::min(std::max(value, -clip), clip);
        const float level = std::rint(clamped / step + 0.5f);
        if (rowCodes != nullptr) rowCodes[j] = static_cast<int8_t>(level - 1.0f);
        u[j] = (level - 0.5f) * step;
      }
      if (plan.rotateBack) fwhtBlocksInPlace(u, d);
    }
  });
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
    at::Tensor gradient = upstream.to(at::kFloat).contiguous().clone();
    const int64_t d = gradient.size(-1);
    const int64_t rows = gradient.numel() / d;
    float* g = gradient.data_ptr<float>();
    const bool* m = nullptr;
    at::Tensor mask;
    if (trust) {
      mask = ctx->get_saved_variables()[0].contiguous();
      m = mask.data_ptr<bool>();
    }
    if (gradient.is_cuda()) {
      at::Tensor rowsView = gradient.view({rows, d});
      backwardRowsOnCudaInPlace(rowsView, trust ? mask.view({rows, d}) : at::Tensor(), full,
                                hadamard);
      return {gradient.to(upstream.scalar_type()), at::Tensor()};
    }
    // Full: ((G H) . M) H^T; Half: (G . M) H^T; without the rotation: G . M.
    at::parallel_for(0, rows, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float* row = g + r * d;
        if (full) fwhtBlocksInPlace(row, d);
        if (m != nullptr) {
          const bool* rowMask = m + r * d;
          for (int64_t j = 0; j < d; ++j) row[j] = rowMask[j] ? row[j] : 0.0f;
        }
        if (hadamard) fwhtBlocksInPlace(row, d);
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

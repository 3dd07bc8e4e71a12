#include "qat/pv_quantized.h"

#include <ATen/ATen.h>

#include "base/error.h"

namespace thinwire::qat {
namespace {

void checkGrid(const PvScalarGrid& grid, int64_t in) {
  TW_CHECK(grid.bits >= 1 && grid.bits <= 8, "PV scalar grid bits must be in 1..8, got ",
           grid.bits);
  TW_CHECK(grid.groupSize >= 1 && in % grid.groupSize == 0, "PV group size ", grid.groupSize,
           " must divide the input dimension ", in);
}

// [out, in] -> [out, groups, groupSize] view.
at::Tensor grouped(const at::Tensor& x, int64_t groupSize) {
  return x.reshape({x.size(0), x.size(1) / groupSize, groupSize});
}

}  // namespace

PvQuantizedWeight quantizeRtn(const at::Tensor& weight, const PvScalarGrid& grid) {
  TW_CHECK(weight.dim() == 2 && weight.is_floating_point(),
           "quantizeRtn needs a 2-D floating-point weight, got ", weight.sizes());
  checkGrid(grid, weight.size(1));
  at::NoGradGuard noGrad;
  const double levels = static_cast<double>((int64_t{1} << grid.bits) - 1);
  at::Tensor g = grouped(weight.detach(), grid.groupSize);
  at::Tensor low = std::get<0>(g.min(/*dim=*/2));
  at::Tensor high = std::get<0>(g.max(/*dim=*/2));
  at::Tensor scales = ((high - low) / levels).clamp_min(1e-8);
  at::Tensor zeros = -low / scales;
  PvQuantizedWeight out;
  out.grid = grid;
  out.scales = scales.contiguous();
  out.zeros = zeros.contiguous();
  out.codes = projectCodes(weight.detach(), out.scales, out.zeros, grid);
  return out;
}

at::Tensor dequantize(const at::Tensor& codes,
                      const at::Tensor& scales,
                      const at::Tensor& zeros,
                      int64_t groupSize) {
  at::NoGradGuard noGrad;
  at::Tensor q = grouped(codes.to(scales.scalar_type()), groupSize);
  return ((q - zeros.unsqueeze(2)) * scales.unsqueeze(2)).reshape(codes.sizes());
}

at::Tensor dequantize(const PvQuantizedWeight& weight) {
  return dequantize(weight.codes, weight.scales, weight.zeros, weight.grid.groupSize);
}

at::Tensor projectCodes(const at::Tensor& reference,
                        const at::Tensor& scales,
                        const at::Tensor& zeros,
                        const PvScalarGrid& grid) {
  TW_CHECK(reference.dim() == 2, "projectCodes needs a 2-D reference, got ", reference.sizes());
  checkGrid(grid, reference.size(1));
  at::NoGradGuard noGrad;
  const double levels = static_cast<double>((int64_t{1} << grid.bits) - 1);
  at::Tensor r = grouped(reference.to(scales.scalar_type()), grid.groupSize);
  at::Tensor q = at::round(r / scales.unsqueeze(2) + zeros.unsqueeze(2)).clamp_(0, levels);
  return q.reshape(reference.sizes()).to(at::kByte);
}

PvContinuousGradients continuousGradients(const PvQuantizedWeight& weight,
                                          const at::Tensor& weightGrad) {
  TW_CHECK(weightGrad.sizes() == weight.codes.sizes(), "dense gradient shape ", weightGrad.sizes(),
           " differs from the codes' ", weight.codes.sizes());
  at::NoGradGuard noGrad;
  const int64_t g = weight.grid.groupSize;
  at::Tensor grad = grouped(weightGrad, g);
  at::Tensor q = grouped(weight.codes.to(weightGrad.scalar_type()), g);
  at::Tensor zeros = weight.zeros.to(weightGrad.scalar_type());
  at::Tensor scales = weight.scales.to(weightGrad.scalar_type());
  PvContinuousGradients out;
  out.scales = (grad * (q - zeros.unsqueeze(2))).sum(/*dim=*/2);
  out.zeros = -scales * grad.sum(/*dim=*/2);
  return out;
}

}  // namespace thinwire::qat

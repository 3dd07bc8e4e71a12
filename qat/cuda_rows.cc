#include "qat/cuda_rows.h"

#include "base/error.h"
#include "qat/quantizer.h"

#if defined(THINWIRE_WITH_CUDA)
#include "kernels/quest.h"
#endif

namespace thinwire::qat {

#if defined(THINWIRE_WITH_CUDA)

CudaRows quantizeRowsOnCuda(const at::Tensor& input,
                            const CudaRowPlan& plan,
                            bool wantMask,
                            bool wantCodes) {
  const kernels::QuestRows rows = kernels::questQuantize(
      input,
      kernels::QuestKernelOptions{.bits = plan.bits,
                                  .hadamard = plan.hadamard,
                                  .rotateBack = plan.rotateBack,
                                  .alpha = static_cast<float>(gaussianOptimalScale(plan.bits)),
                                  .maskScale = plan.maskScale},
      wantMask, wantCodes);
  return {rows.values, rows.mask, rows.codes, rows.steps};
}

void backwardRowsOnCudaInPlace(at::Tensor& gradient,
                               const at::Tensor& mask,
                               bool rotateBack,
                               bool hadamard) {
  kernels::questBackwardInPlace(
      gradient, mask, kernels::QuestKernelOptions{.hadamard = hadamard, .rotateBack = rotateBack});
}

void hadamardRowsOnCudaInPlace(at::Tensor& data) { kernels::blockHadamardInPlace(data); }

#else  // built without CUDA

namespace {
[[noreturn]] void noCuda() {
  TW_THROW(InvalidArgument,
           "qat: got a CUDA tensor, but thinwire was built without CUDA (THINWIRE_WITH_CUDA=OFF)");
}
}  // namespace

CudaRows quantizeRowsOnCuda(const at::Tensor&, const CudaRowPlan&, bool, bool) { noCuda(); }
void backwardRowsOnCudaInPlace(at::Tensor&, const at::Tensor&, bool, bool) { noCuda(); }
void hadamardRowsOnCudaInPlace(at::Tensor&) { noCuda(); }

#endif

}  // namespace thinwire::qat

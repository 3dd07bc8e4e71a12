#include "kernels/quest.h"

#include <ATen/ATen.h>

#include <cmath>

#include "base/error.h"
#include "kernels/device.h"
#include "kernels/launch.h"

namespace thinwire::kernels {
namespace {

constexpr int64_t kBlock = 128;  // qat::kHadamardBlock

float hadamardScale() { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(kBlock))); }

void checkRows(const at::Tensor& x, bool hadamard, const char* what) {
  checkCudaFloat(x, what);
  TW_CHECK(x.dim() == 2, what, " must be [rows, d], got shape ", x.sizes());
  TW_CHECK(!hadamard || x.size(1) % kBlock == 0, what,
           ": the Hadamard rotation needs a row length that is a multiple of 128, got ", x.size(1));
}

detail::QuestLaunch planOf(const at::Tensor& x, const QuestKernelOptions& options) {
  TW_CHECK(options.bits >= 1 && options.bits <= 8, "quest: bits must be in [1, 8], got ",
           options.bits);
  detail::QuestLaunch plan;
  plan.rows = x.size(0);
  plan.d = x.size(1);
  plan.hadamard = options.hadamard;
  plan.rotateBack = options.hadamard && options.rotateBack;
  plan.alpha = options.alpha;
  plan.levelsMinusOne = static_cast<float>((int64_t{1} << options.bits) - 1);
  plan.maskScale = options.maskScale;
  plan.hadamardScale = hadamardScale();
  return plan;
}

}  // namespace

QuestRows questQuantize(const at::Tensor& input,
                        const QuestKernelOptions& options,
                        bool wantMask,
                        bool wantCodes) {
  checkRows(input, options.hadamard, "quest input");
  const detail::QuestLaunch plan = planOf(input, options);
  QuestRows out;
  out.values = at::empty_like(input);
  if (wantMask) out.mask = at::empty(input.sizes(), input.options().dtype(at::kBool));
  if (wantCodes) {
    out.codes = at::empty(input.sizes(), input.options().dtype(at::kChar));
    out.steps = at::empty({plan.rows}, input.options());
  }
  DeviceScope scope(input);
  check(
      detail::launchQuestForward(input.data_ptr<float>(), plan, out.values.data_ptr<float>(),
                                 wantMask ? out.mask.data_ptr<bool>() : nullptr,
                                 wantCodes ? out.codes.data_ptr<int8_t>() : nullptr,
                                 wantCodes ? out.steps.data_ptr<float>() : nullptr, scope.stream()),
      "quest forward");
  return out;
}

void questBackwardInPlace(at::Tensor& gradient,
                          const at::Tensor& mask,
                          const QuestKernelOptions& options) {
  checkRows(gradient, options.hadamard, "quest gradient");
  if (mask.defined()) {
    TW_CHECK(onKernelDevice(mask) && mask.scalar_type() == at::kBool && mask.is_contiguous() &&
                 mask.sizes() == gradient.sizes(),
             "quest: the mask must be a contiguous bool CUDA tensor of the gradient's shape ",
             gradient.sizes(), ", got ", mask.toString(), " ", mask.sizes());
  }
  const detail::QuestLaunch plan = planOf(gradient, options);
  DeviceScope scope(gradient);
  check(detail::launchQuestBackward(gradient.data_ptr<float>(),
                                    mask.defined() ? mask.data_ptr<bool>() : nullptr, plan,
                                    scope.stream()),
        "quest backward");
}

void blockHadamardInPlace(at::Tensor& data) {
  checkRows(data, /*hadamard=*/true, "block Hadamard input");
  DeviceScope scope(data);
  check(detail::launchBlockHadamard(data.data_ptr<float>(), data.size(0), data.size(1),
                                    hadamardScale(), scope.stream()),
        "block Hadamard");
}

}  // namespace thinwire::kernels

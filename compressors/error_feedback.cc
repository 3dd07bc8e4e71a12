#include "compressors/error_feedback.h"

#include <ATen/Parallel.h>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

constexpr int64_t kGrainSize = 1 << 15;

}  // namespace

ErrorFeedback::ErrorFeedback(const FeedbackOptions& options) : stepUnits_(options.stepUnits) {}

void ErrorFeedback::encode(LayerId layer,
                           at::Tensor& grad,
                           Compressor& compressor,
                           const LayerParams& params,
                           const StepInfo& step,
                           Payload& out) {
  checkFloatTensor(grad, "gradient");
  at::Tensor& residual = state_.buffers(layer, grad.numel())[0];
  const float scale = stepUnits_ ? static_cast<float>(step.lr) : 1.0f;
  compressor.compress(residual, grad, scale, out, params);
}

void ErrorFeedback::decode(LayerId /*layer*/, at::Tensor& average, const StepInfo& step) {
  if (!stepUnits_) return;
  checkFloatTensor(average, "average");
  TW_CHECK(step.lr > 0, "step-unit error feedback needs a learning rate > 0, got ", step.lr);
  // Divide (not multiply by 1/lr) so that decode exactly undoes the lr the residual was
  // scaled by whenever that product was exact.
  const float lr = static_cast<float>(step.lr);
  float* data = average.data_ptr<float>();
  at::parallel_for(0, average.numel(), kGrainSize, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) data[i] /= lr;
  });
}

}  // namespace thinwire::compressors

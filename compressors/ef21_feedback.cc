#include "compressors/ef21_feedback.h"

#include "base/error.h"

namespace thinwire::compressors {

void Ef21Feedback::encode(LayerId layer,
                          at::Tensor& grad,
                          Compressor& compressor,
                          const LayerParams& params,
                          const StepInfo& /*step*/,
                          Payload& out) {
  checkFloatTensor(grad, "gradient");
  at::Tensor& localTracker = state_.buffers(layer, grad.numel())[0];
  compressor.compress(grad, localTracker, -1.0f, out, params);
  compressor.decompressAdd(out, localTracker, 1.0f, params);
}

void Ef21Feedback::decode(LayerId layer, at::Tensor& average, const StepInfo& /*step*/) {
  checkFloatTensor(average, "average");
  at::Tensor& meanTracker = state_.buffers(layer, average.numel())[1];
  advanceTrackedMean(meanTracker, average);
}

}  // namespace thinwire::compressors

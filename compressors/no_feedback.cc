#include "compressors/no_feedback.h"

#include "base/error.h"
#include "compressors/feedback_state.h"

namespace thinwire::compressors {

void NoFeedback::encode(LayerId /*layer*/,
                        at::Tensor& grad,
                        Compressor& compressor,
                        const LayerParams& params,
                        const StepInfo& /*step*/,
                        Payload& out) {
  checkFloatTensor(grad, "gradient");
  compressor.compress(grad, at::Tensor(), 1.0f, out, params);
}

void NoFeedback::decode(LayerId /*layer*/, at::Tensor& /*average*/, const StepInfo& /*step*/) {}

void NoFeedback::loadState(const StateDict& state) {
  if (!state.empty()) {
    TW_THROW(DataError, "none feedback has no state, got '", state.begin()->first, "'");
  }
}

}  // namespace thinwire::compressors

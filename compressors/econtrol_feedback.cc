#include "compressors/econtrol_feedback.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

constexpr int64_t kGrainSize = 1 << 15;
constexpr double kDeltaToEta = 0.5;  // See Note [EControl eta]

}  // namespace

EControlFeedback::EControlFeedback(const FeedbackOptions& options)
    : eta_(options.eta),
      momentum_(options.trackingMomentum),
      state_(options.trackingMomentum > 0 ? std::vector<std::string>{"e", "h_i", "h", "v"}
                                          : std::vector<std::string>{"e", "h_i", "h"}) {
  TW_CHECK(!std::isnan(eta_) && eta_ <= 1, "EControl eta must be in [0, 1] (or < 0 for the ",
           "compressor-derived default), got ", eta_);
  TW_CHECK(momentum_ >= 0 && momentum_ < 1, "EControl tracking momentum must be in [0, 1), got ",
           momentum_);
}

double EControlFeedback::effectiveEta(const Compressor& compressor,
                                      int64_t numel,
                                      const LayerParams& params) const {
  if (eta_ >= 0) return eta_;
  const double delta = compressor.deltaHint(numel, params);
  TW_CHECK(delta > 0, "EControl cannot derive eta: compressor '", compressor.name(),
           "' is not delta-contractive (delta = ", delta, "); set the feedback eta explicitly");
  return kDeltaToEta * std::min(delta, 1.0);
}

void EControlFeedback::encode(LayerId layer,
                              at::Tensor& grad,
                              Compressor& compressor,
                              const LayerParams& params,
                              const StepInfo& /*step*/,
                              Payload& out) {
  checkFloatTensor(grad, "gradient");
  const int64_t numel = grad.numel();
  std::vector<at::Tensor>& buffers = state_.buffers(layer, numel);
  const float eta = static_cast<float>(effectiveEta(compressor, numel, params));
  float* error = buffers[0].data_ptr<float>();
  const float* localTracker = buffers[1].data_ptr<float>();
  float* message = grad.data_ptr<float>();
  if (momentum_ > 0) {
    // v <- beta v + (1 - beta) g; the message tracks v (Note [EControl on momentum]).
    float* average = buffers[3].data_ptr<float>();
    const float beta = static_cast<float>(momentum_);
    at::parallel_for(0, numel, kGrainSize, [=](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        average[i] = beta * average[i] + (1.0f - beta) * message[i];
        message[i] = eta * error[i] + average[i] - localTracker[i];
      }
    });
  } else {
    at::parallel_for(0, numel, kGrainSize, [=](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        message[i] = eta * error[i] + message[i] - localTracker[i];
    });
  }

  compressor.compress(grad, at::Tensor(), 1.0f, out, params);

  // grad now holds r = p - C(p); e + g - h_i - C(p) = (1 - eta) e + r.
  const float keep = 1.0f - eta;
  const float* residual = grad.data_ptr<float>();
  at::parallel_for(0, numel, kGrainSize, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) error[i] = keep * error[i] + residual[i];
  });
  compressor.decompressAdd(out, buffers[1], 1.0f, params);
}

void EControlFeedback::decode(LayerId layer, at::Tensor& average, const StepInfo& /*step*/) {
  checkFloatTensor(average, "average");
  advanceTrackedMean(state_.buffers(layer, average.numel())[2], average);
}

}  // namespace thinwire::compressors

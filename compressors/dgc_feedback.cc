#include "compressors/dgc_feedback.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

constexpr int64_t kGrainSize = 1 << 15;

// Squared L2 norm, summed serially in double so that it does not depend on the thread count.
double squaredNorm(const float* data, int64_t numel) {
  double sum = 0;
  for (int64_t i = 0; i < numel; ++i) sum += static_cast<double>(data[i]) * data[i];
  return sum;
}

}  // namespace

DgcFeedback::DgcFeedback(const FeedbackOptions& options) : options_(options) {
  TW_CHECK(options.momentum >= 0 && options.momentum < 1, "DGC momentum must be in [0, 1), got ",
           options.momentum);
  TW_CHECK(options.clipNorm >= 0, "DGC clip norm must be >= 0 (0 = off), got ", options.clipNorm);
}

void DgcFeedback::encode(LayerId layer,
                         at::Tensor& grad,
                         Compressor& compressor,
                         const LayerParams& params,
                         const StepInfo& step,
                         Payload& out) {
  TW_CHECK(compressor.name() == "topk", "DGC feedback needs the top-k compressor, got '",
           compressor.name(), "'");
  checkFloatTensor(grad, "gradient");
  TW_CHECK(step.worldSize >= 1, "world size must be >= 1, got ", step.worldSize);
  const int64_t numel = grad.numel();
  std::vector<at::Tensor>& buffers = state_.buffers(layer, numel);
  float* momentum = buffers[0].data_ptr<float>();
  float* velocity = buffers[1].data_ptr<float>();
  float* gradient = grad.data_ptr<float>();

  float gradScale = 1.0f;
  if (options_.clipNorm > 0) {
    const double norm = std::sqrt(squaredNorm(gradient, numel));
    const double limit = options_.clipNorm / std::sqrt(static_cast<double>(step.worldSize));
    if (norm > limit) gradScale = static_cast<float>(limit / norm);
  }

  // One pass: clip, momentum correction, accumulation. The clipped gradient is written back so
  // that `grad` holds what was accumulated.
  const float m = static_cast<float>(options_.momentum);
  const bool nesterov = options_.nesterov;
  at::parallel_for(0, numel, kGrainSize, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float g = gradScale == 1.0f ? gradient[i] : gradient[i] * gradScale;
      gradient[i] = g;
      if (nesterov) {
        momentum[i] = m * (momentum[i] + g);
        velocity[i] += momentum[i] + g;
      } else {
        momentum[i] = m * momentum[i] + g;
        velocity[i] += momentum[i];
      }
    }
  });

  // Top-k leaves v = 0 at the sent positions (the DGC accumulation reset) and v elsewhere.
  compressor.compress(buffers[1], at::Tensor(), 1.0f, out, params);

  if (options_.momentumMasking && out.numel > 0 && out.data.defined()) {
    // Payload: [count int32 indices][count values] (top_k_compressor.h). The value width
    // (float32 or float16) follows from the largest payload, k entries.
    const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::floor(params.ratio * numel)));
    const int64_t maxBytes = compressor.maxPayloadBytes(numel, params);
    TW_ASSERT(maxBytes > 0 && maxBytes % k == 0, "top-k bound of ", maxBytes, " bytes for k = ", k);
    const int64_t entryBytes = maxBytes / k;
    const int64_t bytes = out.wireBytes();
    TW_ASSERT(bytes % entryBytes == 0 && bytes <= maxBytes, "top-k payload of ", bytes,
              " bytes, entries of ", entryBytes);
    const int64_t count = bytes / entryBytes;
    const uint8_t* indices = out.data.data_ptr<uint8_t>();
    for (int64_t j = 0; j < count; ++j) {
      int32_t index = 0;
      std::memcpy(&index, indices + j * sizeof(int32_t), sizeof(int32_t));
      TW_ASSERT(index >= 0 && index < numel, "top-k index ", index, " of ", numel);
      momentum[index] = 0.0f;
    }
  }
}

void DgcFeedback::decode(LayerId /*layer*/, at::Tensor& /*average*/, const StepInfo& /*step*/) {}

}  // namespace thinwire::compressors

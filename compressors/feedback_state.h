// File: compressors/feedback_state.h
//
// `FeedbackState`: the per-layer fp32 buffers of a Feedback policy (EF's e, EF21's h_i and h,
// DGC's u and v), created as zeros on a layer's first use, and their checkpoint form: one
// StateDict entry "<layer>.<buffer>" per buffer (feedback.h, state()/loadState()).
//
// Ownership: owns every buffer; buffers() hands out references that stay valid until the next
// loadState(). state() returns clones, so a checkpoint being written is not changed by later
// steps.
// Threading: not synchronised; one thread at a time (the policy's).
//
// Example:
//   FeedbackState state({"e"});
//   at::Tensor& e = state.buffers(layer, grad.numel())[0];   // zeros on the first call
//   StateDict saved = state.state();                          // {"<layer>.e": clone of e}
//   FeedbackState restored({"e"});
//   restored.loadState(saved, "ef");
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/state_dict.h"
#include "compressors/feedback.h"

namespace thinwire::compressors {

class FeedbackState {
 public:
  // `bufferNames`: the buffers every layer holds, in the order buffers() returns them; names
  // contain no '.'.
  explicit FeedbackState(std::vector<std::string> bufferNames);

  // The buffers of `layer` (1-D contiguous float32, `numel` elements each), in the order of the
  // constructor's names. The first call for a layer allocates them as zeros. Throws
  // InvalidArgument when the layer exists with a different numel.
  std::vector<at::Tensor>& buffers(LayerId layer, int64_t numel);

  // Number of layers that hold state.
  int64_t layerCount() const { return static_cast<int64_t>(layers_.size()); }

  // Clones of every buffer, keyed "<layer>.<name>".
  StateDict state() const;

  // Replaces all layers with those in `state` (copies; `state` is not aliased). All-or-nothing:
  // throws DataError, leaving this object unchanged, when a key does not parse as
  // "<layer>.<name>" with one of this state's names, when a layer lacks one of its buffers, or
  // when a buffer is not float32 or its layer's buffers differ in numel. `policy` names the
  // policy in messages.
  void loadState(const StateDict& state, const std::string& policy);

 private:
  std::vector<std::string> bufferNames_;
  std::map<LayerId, std::vector<at::Tensor>> layers_;
};

// Throws InvalidArgument unless `tensor` is a defined, contiguous float32 CPU tensor; `what`
// names it in the message. Policies call it on the gradients and averages they touch directly.
void checkFloatTensor(const at::Tensor& tensor, const char* what);

// In place, one pass: mean <- mean + average, then average <- mean (EF21 and EControl decode).
// Both are contiguous float32 tensors of equal numel (the caller checks); element-wise, so the
// result does not depend on the thread count.
void advanceTrackedMean(at::Tensor& mean, at::Tensor& average);

}  // namespace thinwire::compressors

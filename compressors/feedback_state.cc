#include "compressors/feedback_state.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <set>
#include <utility>

#include "base/error.h"

namespace thinwire::compressors {
namespace {

constexpr int64_t kGrainSize = 1 << 15;  // elements per task of element-wise loops

}  // namespace

FeedbackState::FeedbackState(std::vector<std::string> bufferNames)
    : bufferNames_(std::move(bufferNames)) {
  for (const std::string& name : bufferNames_) {
    TW_ASSERT(!name.empty() && name.find('.') == std::string::npos, "buffer name '", name, "'");
  }
}

std::vector<at::Tensor>& FeedbackState::buffers(LayerId layer, int64_t numel) {
  auto it = layers_.find(layer);
  if (it != layers_.end()) {
    const int64_t existing = it->second.empty() ? 0 : it->second.front().numel();
    TW_CHECK(existing == numel, "feedback state of layer ", layer, " has ", existing,
             " elements, got a tensor of ", numel);
    return it->second;
  }
  std::vector<at::Tensor> fresh;
  fresh.reserve(bufferNames_.size());
  for (size_t i = 0; i < bufferNames_.size(); ++i) {
    fresh.push_back(at::zeros({numel}, at::TensorOptions().dtype(at::kFloat)));
  }
  return layers_.emplace(layer, std::move(fresh)).first->second;
}

StateDict FeedbackState::state() const {
  StateDict out;
  for (const auto& [layer, tensors] : layers_) {
    for (size_t i = 0; i < bufferNames_.size(); ++i) {
      out[std::to_string(layer) + "." + bufferNames_[i]] = tensors[i].clone();
    }
  }
  return out;
}

void FeedbackState::loadState(const StateDict& state, const std::string& policy) {
  std::set<LayerId> layers;
  for (const auto& entry : state) {
    const std::string& key = entry.first;
    const size_t dot = key.find('.');
    const std::string layerText = dot == std::string::npos ? key : key.substr(0, dot);
    const std::string name = dot == std::string::npos ? "" : key.substr(dot + 1);
    size_t parsed = 0;
    LayerId layer = 0;
    try {
      layer = std::stoll(layerText, &parsed);
    } catch (const std::exception&) {
      parsed = 0;
    }
    if (layerText.empty() || parsed != layerText.size()) {
      TW_THROW(DataError, policy, " feedback state: key '", key, "' is not '<layer>.<buffer>'");
    }
    bool known = false;
    for (const std::string& bufferName : bufferNames_) known = known || bufferName == name;
    if (!known) {
      TW_THROW(DataError, policy, " feedback state: '", key, "' is not a buffer of this policy");
    }
    layers.insert(layer);
  }

  std::map<LayerId, std::vector<at::Tensor>> loaded;
  for (LayerId layer : layers) {
    std::vector<at::Tensor> tensors;
    for (const std::string& name : bufferNames_) {
      const std::string key = std::to_string(layer) + "." + name;
      const at::Tensor& saved = requireEntry(state, key);
      if (!saved.defined() || saved.scalar_type() != at::kFloat) {
        TW_THROW(DataError, policy, " feedback state: '", key, "' is not float32");
      }
      if (!tensors.empty() && saved.numel() != tensors.front().numel()) {
        TW_THROW(DataError, policy, " feedback state: '", key, "' has ", saved.numel(),
                 " elements, its layer's other buffers ", tensors.front().numel());
      }
      tensors.push_back(saved.reshape({-1}).clone(at::MemoryFormat::Contiguous));
    }
    loaded.emplace(layer, std::move(tensors));
  }
  layers_ = std::move(loaded);
}

void checkFloatTensor(const at::Tensor& tensor, const char* what) {
  TW_CHECK(tensor.defined(), what, " is undefined");
  TW_CHECK(tensor.scalar_type() == at::kFloat, what, " must be float32, got ",
           tensor.scalar_type());
  TW_CHECK(tensor.device().is_cpu(), what, " must be a CPU tensor, got ", tensor.device());
  TW_CHECK(tensor.is_contiguous(), what, " must be contiguous");
}

void advanceTrackedMean(at::Tensor& mean, at::Tensor& average) {
  TW_ASSERT(mean.numel() == average.numel(), mean.numel(), " vs ", average.numel());
  float* tracked = mean.data_ptr<float>();
  float* out = average.data_ptr<float>();
  at::parallel_for(0, mean.numel(), kGrainSize, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      tracked[i] += out[i];
      out[i] = tracked[i];
    }
  });
}

}  // namespace thinwire::compressors

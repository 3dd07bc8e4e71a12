#include "core/models/cnn.h"

#include <ATen/ATen.h>

#include <sstream>

#include "base/error.h"

namespace thinwire::core {
namespace {

constexpr int64_t kKernel = 5;
constexpr int64_t kPool = 2;

// Spatial size after one unpadded kKernel convolution and one kPool max-pool.
int64_t afterStage(int64_t size) { return (size - kKernel + 1) / kPool; }

std::string shapeText(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

}  // namespace

Cnn::Cnn(const CnnOptions& options) : sampleShape_(options.sampleShape) {
  if (sampleShape_.size() != 3) {
    TW_THROW(ConfigError, "model.type cnn needs samples shaped [channels, height, width], got ",
             shapeText(sampleShape_), " (use model.type mlp for flat inputs)");
  }
  const int64_t height = afterStage(afterStage(sampleShape_[1]));
  const int64_t width = afterStage(afterStage(sampleShape_[2]));
  if (sampleShape_[0] < 1 || height < 1 || width < 1) {
    TW_THROW(ConfigError, "model.type cnn needs at least 1 channel and 12x12 pixels, got ",
             shapeText(sampleShape_));
  }
  if (options.channels.size() != 2 || options.channels[0] < 1 || options.channels[1] < 1) {
    TW_THROW(ConfigError, "model.channels must hold two widths >= 1, got ",
             shapeText(options.channels));
  }
  if (options.hidden < 1 || options.numClasses < 1) {
    TW_THROW(ConfigError, "model.cnn_hidden and the class count must be >= 1, got ", options.hidden,
             " and ", options.numClasses);
  }
  flatFeatures_ = options.channels[1] * height * width;
  conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(
                                        sampleShape_[0], options.channels[0], kKernel)));
  conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(
                                        options.channels[0], options.channels[1], kKernel)));
  fc1_ = register_module("fc1", torch::nn::Linear(flatFeatures_, options.hidden));
  fc2_ = register_module("fc2", torch::nn::Linear(options.hidden, options.numClasses));
}

at::Tensor Cnn::forward(const at::Tensor& inputs) {
  TW_CHECK(inputs.dim() == 4 && inputs.size(1) == sampleShape_[0] &&
               inputs.size(2) == sampleShape_[1] && inputs.size(3) == sampleShape_[2],
           "cnn expects inputs [n, ", sampleShape_[0], ", ", sampleShape_[1], ", ", sampleShape_[2],
           "], got ", inputs.sizes());
  at::Tensor x = at::max_pool2d(at::relu(conv1_->forward(inputs)), {kPool, kPool});
  x = at::max_pool2d(at::relu(conv2_->forward(x)), {kPool, kPool});
  x = at::relu(fc1_->forward(x.reshape({x.size(0), flatFeatures_})));
  return fc2_->forward(x);
}

}  // namespace thinwire::core

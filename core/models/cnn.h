// File: core/models/cnn.h
//
// Cnn: a LeNet-style convolutional classifier for small images such as Fashion-MNIST:
//   conv1 5x5 (channels[0]) -> ReLU -> maxpool 2 -> conv2 5x5 (channels[1]) -> ReLU -> maxpool 2
//   -> flatten -> fc1 (hidden) -> ReLU -> fc2 (numClasses).
// Convolutions are unpadded, so a 1x28x28 input becomes 24x24, 12x12, 8x8 and 4x4 (fc1 then sees
// channels[1] * 16 features). Parameters: "conv1.weight", "conv1.bias", "conv2.*", "fc1.*",
// "fc2.*".
//
// Ownership: a torch::nn::Module; hold it by std::shared_ptr (makeModel returns one).
// Threading: as any torch module: forward() from one thread at a time per instance.
//
// Example:
//   auto cnn = std::make_shared<Cnn>(CnnOptions{});      // 1x28x28 -> 10 classes
//   initParametersFromSeed(*cnn, /*seed=*/0);
//   at::Tensor logits = cnn->forward(images);             // [n, 1, 28, 28] -> [n, 10]
#pragma once

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <vector>

#include "core/models/model.h"

namespace thinwire::core {

struct CnnOptions {
  std::vector<int64_t> sampleShape = {1, 28, 28};  // [channels, height, width]
  std::vector<int64_t> channels = {32, 64};        // output channels of conv1 and conv2
  int64_t hidden = 128;                            // width of fc1
  int64_t numClasses = 10;
};

class Cnn : public Model {
 public:
  // Builds the layers with libtorch's default initialisation (use initParametersFromSeed for a
  // deterministic one). Throws ConfigError when sampleShape is not [channels, height, width],
  // the image is too small for two conv+pool stages (height and width >= 12), channels does not
  // hold two widths, or a width is < 1.
  explicit Cnn(const CnnOptions& options);

  // Logits [n, numClasses] for inputs [n, channels, height, width]; InvalidArgument otherwise.
  at::Tensor forward(const at::Tensor& inputs) override;

 private:
  std::vector<int64_t> sampleShape_;
  int64_t flatFeatures_;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::Conv2d conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr};
  torch::nn::Linear fc2_{nullptr};
};

}  // namespace thinwire::core

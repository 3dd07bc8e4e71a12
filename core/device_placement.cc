#include "core/device_placement.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include "base/error.h"
#include "comm/world_info.h"

namespace thinwire::core {

c10::Device trainingDevice(const TrainConfig& train) {
  if (train.device == "cpu") return c10::Device(c10::kCPU);
  TW_CHECK(train.device == "cuda", "train.device must be cpu or cuda, got '", train.device, "'");
  if (!at::hasCUDA()) {
    TW_THROW(ConfigError,
             "train.device is cuda, but this libtorch has no CUDA support or no CUDA device is "
             "visible (docs/gpu.md)");
  }
  const int devices = static_cast<int>(at::getNumGPUs());
  if (devices < 1) TW_THROW(ConfigError, "train.device is cuda, but no CUDA device is visible");
  const int localRank = comm::WorldInfo::fromEnvironment().localRank;
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(localRank % devices));
}

std::shared_ptr<Model> placeModel(std::shared_ptr<Model> model, c10::Device device) {
  if (!device.is_cpu()) model->to(device);
  return model;
}

Batch onModelDevice(const Model& model, Batch batch) {
  const std::vector<at::Tensor> parameters = model.parameters();
  if (parameters.empty()) return batch;
  const c10::Device device = parameters.front().device();
  if (batch.inputs.defined() && batch.inputs.device() != device) {
    batch.inputs = batch.inputs.to(device);
  }
  if (batch.labels.defined() && batch.labels.device() != device) {
    batch.labels = batch.labels.to(device);
  }
  return batch;
}

}  // namespace thinwire::core

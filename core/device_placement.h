// File: core/device_placement.h
//
// Where training runs (train.device): the model's parameters and buffers, every batch, and so the
// optimizer state (created like the parameters) live on that device. The trainer calls these
// three functions and nothing else changes: GradSync's buckets, the compressors and the
// communicator keep working on host copies of the gradients (see docs/gpu.md).
//
// Ownership: pure functions; placeModel() moves the model it is given and returns it.
// Threading: call on the trainer's thread.
//
// Example:
//   const c10::Device device = trainingDevice(config.train);   // cuda:<localRank> or cpu
//   std::shared_ptr<Model> model = placeModel(makeModel(...), device);
//   Batch batch = onModelDevice(*model, dataset.batch(indices));
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>

#include "core/config.h"
#include "core/data/dataset.h"
#include "core/models/model.h"

namespace thinwire::core {

// cpu, or cuda:(localRank % visible devices) for train.device = cuda, localRank from
// comm::WorldInfo::fromEnvironment(). Throws ConfigError when cuda is asked for but libtorch has
// no CUDA or no device is visible.
c10::Device trainingDevice(const TrainConfig& train);

// Moves the model's parameters and buffers to `device` (a no-op on the CPU) and returns it.
std::shared_ptr<Model> placeModel(std::shared_ptr<Model> model, c10::Device device);

// The batch with its tensors on the device of the model's first parameter (unchanged when they
// already are there, or when the model has no parameters).
Batch onModelDevice(const Model& model, Batch batch);

}  // namespace thinwire::core

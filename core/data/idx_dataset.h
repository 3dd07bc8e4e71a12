// File: core/data/idx_dataset.h
//
// IdxDataset: an image-classification dataset stored as a pair of IDX files (the MNIST format:
// big-endian magic 0x00000803 + dims for images, 0x00000801 + count for labels), gzip-compressed
// ("<name>.gz") or plain ("<name>"). Fashion-MNIST is the default layout: train-* / t10k-* files
// from the Debian package dataset-fashion-mnist, 10 classes, normalised with its pixel mean and
// standard deviation.
//
// Everything is validated at load time; any problem is a DataError naming the file, e.g.
//   fashion-mnist: cannot open '/data/train-images-idx3-ubyte.gz': No such file or directory
//     (install the Debian package dataset-fashion-mnist or set data.path)
//   fashion-mnist: '/data/train-images-idx3-ubyte.gz' is truncated: expected 47040000 payload
//     bytes, found 1000
//
// Ownership: the dataset owns its pixels (uint8, [N, 1, rows, cols]) and labels (int64, [N]);
// batch() returns fresh float32 tensors. Threading: immutable after construction, so every const
// method may be called from many threads at once.
//
// Example:
//   IdxDataset train({.directory = "/usr/share/datasets/fashion-mnist", .split = Split::kTrain});
//   Batch batch = train.batch({0, 1, 2});   // inputs [3, 1, 28, 28] float32, labels [3] int64
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/data/dataset.h"

namespace thinwire::core {

struct IdxDatasetOptions {
  std::string directory = "/usr/share/datasets/fashion-mnist";  // holds the four IDX files
  Split split = Split::kTrain;         // kTrain -> "train-*", kTest -> "t10k-*"
  std::string name = "fashion-mnist";  // prefix of messages and describe()
  int64_t numClasses = 10;             // labels must lie in [0, numClasses)
  double pixelMean = 0.2860;           // of x / 255 over the training set
  double pixelStd = 0.3530;
  // Appended to "cannot open" errors: how to get the files.
  std::string missingHint = "install the Debian package dataset-fashion-mnist or set data.path";
};

class IdxDataset : public Dataset {
 public:
  // Loads and validates both files (blocking; about half a second for Fashion-MNIST train).
  // Throws DataError for a missing directory or file, wrong magic or rank, truncated or
  // oversized payload, image/label count mismatch, or a label outside [0, numClasses).
  explicit IdxDataset(IdxDatasetOptions options);

  int64_t size() const override { return labels_.size(0); }
  // {1, rows, cols}: {1, 28, 28} for Fashion-MNIST.
  std::vector<int64_t> sampleShape() const override;
  int64_t numClasses() const override { return options_.numClasses; }
  // inputs = (pixel / 255 - pixelMean) / pixelStd as float32 [n, 1, rows, cols]; labels int64.
  // Throws InvalidArgument for an index outside [0, size()).
  Batch batch(const std::vector<int64_t>& indices) const override;
  std::string describe() const override;

  // The raw pixels, uint8 [N, 1, rows, cols], and labels, int64 [N] (shared, do not mutate).
  const at::Tensor& pixels() const { return pixels_; }
  const at::Tensor& labels() const { return labels_; }

 private:
  IdxDatasetOptions options_;
  at::Tensor pixels_;
  at::Tensor labels_;
};

}  // namespace thinwire::core

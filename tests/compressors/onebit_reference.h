// File: tests/compressors/onebit_reference.h
//
// An independent, single-process reference of the 1-bit compressed allreduce of
// specs/compressors.md §5.2, written as plain loops over every rank's input (no bit packing, no
// communicator), with the float order of Note [One-bit arithmetic] in
// compressors/onebit_allreduce.h. Used by the multirank and MPI tests of OneBitAllreduce and by
// the 1-bit Adam tests.
//
// Example:
//   OneBitReference reference(/*worldSize=*/4, /*numel=*/10);
//   std::vector<float> average = reference.step(inputsOfEveryRank, /*mask=*/{});
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace thinwire::testing {

class OneBitReference {
 public:
  OneBitReference(int worldSize, int64_t numel) : n_(worldSize), numel_(numel) {
    int64_t lcm = 8;
    while (lcm % worldSize != 0) lcm += 8;  // lcm(n, 8): the smallest multiple of 8 that n divides
    const int64_t multiple = worldSize * lcm;
    padded_ = 0;
    while (padded_ < numel) padded_ += multiple;
    chunk_ = padded_ / worldSize;
    worker_.assign(static_cast<size_t>(n_), std::vector<float>(static_cast<size_t>(padded_), 0.0f));
    server_.assign(static_cast<size_t>(n_), std::vector<float>(static_cast<size_t>(chunk_), 0.0f));
  }

  int64_t padded() const { return padded_; }
  int64_t chunk() const { return chunk_; }
  const std::vector<float>& workerError(int rank) const { return worker_[rank]; }
  const std::vector<float>& serverError(int rank) const { return server_[rank]; }
  float lastWorkerScale(int rank) const { return workerScales_[rank]; }
  float lastServerScale(int rank) const { return serverScales_[rank]; }

  // inputs[r] = rank r's tensor (numel floats); mask empty or numel entries (false = masked out).
  // Returns the output every rank must hold.
  std::vector<float> step(const std::vector<std::vector<float>>& inputs,
                          const std::vector<bool>& mask) {
    auto kept = [&](int64_t k) { return mask.empty() || k >= numel_ || mask[k]; };
    if (n_ == 1) {
      std::vector<float> out = inputs[0];
      for (int64_t k = 0; k < numel_; ++k) {
        if (!kept(k)) out[k] = 0.0f;
      }
      return out;
    }
    // Worker side, every rank: x, its scale, its signs, its new error.
    std::vector<std::vector<float>> signs(static_cast<size_t>(n_));
    workerScales_.assign(static_cast<size_t>(n_), 0.0f);
    for (int r = 0; r < n_; ++r) {
      std::vector<float> x(static_cast<size_t>(padded_));
      for (int64_t k = 0; k < padded_; ++k) {
        const float value = k < numel_ ? inputs[r][k] : 0.0f;
        x[k] = kept(k) ? value + worker_[r][k] : 0.0f;
      }
      const float scale = rmsOf(x);
      workerScales_[r] = scale;
      signs[r].resize(static_cast<size_t>(padded_));
      for (int64_t k = 0; k < padded_; ++k) {
        signs[r][k] = signPlus(x[k]);
        worker_[r][k] = kept(k) ? x[k] - scale * signs[r][k] : 0.0f;
      }
    }
    // Server side: rank j averages the decompressed chunk j and re-compresses it.
    std::vector<float> out(static_cast<size_t>(padded_));
    serverScales_.assign(static_cast<size_t>(n_), 0.0f);
    for (int j = 0; j < n_; ++j) {
      std::vector<float> y(static_cast<size_t>(chunk_));
      for (int64_t k = 0; k < chunk_; ++k) {
        const int64_t index = j * chunk_ + k;
        float sum = 0.0f;
        for (int r = 0; r < n_; ++r) sum += workerScales_[r] * signs[r][index];
        y[k] = kept(index) ? sum / static_cast<float>(n_) + server_[j][k] : 0.0f;
      }
      const float scale = rmsOf(y);
      serverScales_[j] = scale;
      for (int64_t k = 0; k < chunk_; ++k) {
        const int64_t index = j * chunk_ + k;
        server_[j][k] = kept(index) ? y[k] - scale * signPlus(y[k]) : 0.0f;
        out[index] = kept(index) ? scale * signPlus(y[k]) : 0.0f;
      }
    }
    out.resize(static_cast<size_t>(numel_));
    return out;
  }

  static float signPlus(float value) { return value >= 0.0f ? 1.0f : -1.0f; }

 private:
  static float rmsOf(const std::vector<float>& x) {
    double sum = 0;
    for (float value : x) sum += static_cast<double>(value) * static_cast<double>(value);
    return static_cast<float>(std::sqrt(sum / static_cast<double>(x.size())));
  }

  int n_;
  int64_t numel_;
  int64_t padded_ = 0;
  int64_t chunk_ = 0;
  std::vector<std::vector<float>> worker_;  // [rank][padded]
  std::vector<std::vector<float>> server_;  // [rank][chunk]
  std::vector<float> workerScales_;
  std::vector<float> serverScales_;
};

}  // namespace thinwire::testing

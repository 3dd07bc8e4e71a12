#include "compressors/onebit_allreduce.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <string>

#include "base/error.h"

namespace thinwire::compressors {

namespace {

// Sum of squares in double, index order (Note [One-bit arithmetic]).
double sumOfSquares(const float* x, int64_t length) {
  double sum = 0;
  for (int64_t k = 0; k < length; ++k) {
    const double value = x[k];
    sum += value * value;
  }
  return sum;
}

float scaleOf(const float* x, int64_t length) {
  if (length == 0) return 0.0f;
  return static_cast<float>(std::sqrt(sumOfSquares(x, length) / static_cast<double>(length)));
}

// Packs sign+(x) LSB-first into `bytes` (length / 8 bytes; length is a multiple of 8) and leaves
// x - scale * sign+(x) in `error` (which may alias x).
void packAndResidual(const float* x, float scale, int64_t length, uint8_t* bytes, float* error) {
  for (int64_t k = 0; k < length; k += 8) {
    uint8_t byte = 0;
    for (int b = 0; b < 8; ++b) {
      const float value = x[k + b];
      const bool positive = value >= 0.0f;
      byte |= static_cast<uint8_t>(positive) << b;
      error[k + b] = positive ? value - scale : value + scale;
    }
    bytes[k / 8] = byte;
  }
}

bool bitAt(const uint8_t* bytes, int64_t k) { return ((bytes[k >> 3] >> (k & 7)) & 1) != 0; }

void writeFloat(uint8_t* at, float value) { std::memcpy(at, &value, sizeof(float)); }

float readFloat(const uint8_t* at) {
  float value;
  std::memcpy(&value, at, sizeof(float));
  return value;
}

}  // namespace

OneBitAllreduce::OneBitAllreduce(OneBitAllreduceOptions options) : options_(options) {}

int64_t OneBitAllreduce::paddedNumel(int64_t numel, int worldSize) {
  TW_CHECK(worldSize >= 1, "paddedNumel needs worldSize >= 1, got ", worldSize);
  TW_CHECK(numel >= 0, "paddedNumel needs numel >= 0, got ", numel);
  const int64_t multiple = static_cast<int64_t>(worldSize) * std::lcm(int64_t{worldSize}, 8);
  return (numel + multiple - 1) / multiple * multiple;
}

void OneBitAllreduce::ensureBuffers(const std::vector<at::Tensor>& tensors, int worldSize) {
  if (workerErrors_.empty() && serverErrors_.empty()) {
    for (const at::Tensor& t : tensors) {
      const int64_t padded = paddedNumel(t.numel(), worldSize);
      workerErrors_.push_back(at::zeros({padded}, at::kFloat));
      serverErrors_.push_back(at::zeros({padded / worldSize}, at::kFloat));
    }
    return;
  }
  TW_CHECK(workerErrors_.size() == tensors.size() && serverErrors_.size() == tensors.size(),
           "1-bit allreduce: error buffers were built for ", workerErrors_.size(),
           " tensors, this call has ", tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t padded = paddedNumel(tensors[i].numel(), worldSize);
    TW_CHECK(workerErrors_[i].numel() == padded && serverErrors_[i].numel() == padded / worldSize,
             "1-bit allreduce: tensor ", i, " has ", tensors[i].numel(), " elements (", padded,
             " padded for ", worldSize, " ranks) but its error buffers hold ",
             workerErrors_[i].numel(), " and ", serverErrors_[i].numel(),
             " (another model or world size?)");
  }
}

void OneBitAllreduce::run(std::vector<at::Tensor>& tensors,
                          comm::Communicator& comm,
                          const std::vector<at::Tensor>& masks) {
  TW_CHECK(masks.empty() || masks.size() == tensors.size(), "1-bit allreduce: ", masks.size(),
           " masks for ", tensors.size(), " tensors");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TW_CHECK(t.defined() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.is_cpu(),
             "1-bit allreduce: tensor ", i, " must be a contiguous float32 CPU tensor");
    if (!masks.empty() && masks[i].defined()) {
      TW_CHECK(masks[i].scalar_type() == at::kBool && masks[i].is_contiguous() &&
                   masks[i].numel() == t.numel(),
               "1-bit allreduce: mask ", i, " must be a contiguous bool tensor of ", t.numel(),
               " elements");
    }
  }
  const int n = comm.worldSize();
  auto maskOf = [&](size_t i) -> const bool* {
    return (masks.empty() || !masks[i].defined()) ? nullptr : masks[i].data_ptr<bool>();
  };
  if (n == 1) {
    // No compression at world size 1 (as DeepSpeed); only the mask applies.
    for (size_t i = 0; i < tensors.size(); ++i) {
      const bool* mask = maskOf(i);
      if (mask == nullptr) continue;
      float* data = tensors[i].data_ptr<float>();
      for (int64_t k = 0; k < tensors[i].numel(); ++k) {
        if (!mask[k]) data[k] = 0.0f;
      }
    }
    return;
  }
  ensureBuffers(tensors, n);
  const int rank = comm.rank();
  const int64_t count = static_cast<int64_t>(tensors.size());

  // Block layout (identical on every rank): [count float32 scales][tensor 0 chunk bytes]...
  std::vector<int64_t> chunkBytes(tensors.size()), byteOffset(tensors.size());
  int64_t blockBytes = 4 * count;
  for (size_t i = 0; i < tensors.size(); ++i) {
    chunkBytes[i] = serverErrors_[i].numel() / 8;
    byteOffset[i] = blockBytes;
    blockBytes += chunkBytes[i];
  }
  auto sizeTo = [](at::Tensor& buffer, int64_t bytes) {
    if (!buffer.defined() || buffer.numel() != bytes) buffer = at::empty({bytes}, at::kByte);
  };
  sizeTo(sendBuffer_, n * blockBytes);
  sizeTo(receiveBuffer_, n * blockBytes);
  sizeTo(serverBlock_, blockBytes);
  sizeTo(gathered_, n * blockBytes);

  // Worker side (steps 1-4): x = pad(m) + worker_err, in the worker error buffer itself.
  uint8_t* send = sendBuffer_.data_ptr<uint8_t>();
  std::vector<uint8_t> bits;
  for (size_t i = 0; i < tensors.size(); ++i) {
    float* x = workerErrors_[i].data_ptr<float>();
    const float* input = tensors[i].data_ptr<float>();
    const bool* mask = maskOf(i);
    const int64_t numel = tensors[i].numel();
    const int64_t padded = workerErrors_[i].numel();
    for (int64_t k = 0; k < numel; ++k) {
      x[k] = (mask != nullptr && !mask[k]) ? 0.0f : input[k] + x[k];
    }
    const float scale = scaleOf(x, padded);
    bits.resize(static_cast<size_t>(padded / 8));
    packAndResidual(x, scale, padded, bits.data(), x);
    if (mask != nullptr) {
      for (int64_t k = 0; k < numel; ++k) {
        if (!mask[k]) x[k] = 0.0f;
      }
    }
    for (int j = 0; j < n; ++j) {
      uint8_t* block = send + j * blockBytes;
      writeFloat(block + 4 * static_cast<int64_t>(i), scale);
      std::memcpy(block + byteOffset[i], bits.data() + j * chunkBytes[i],
                  static_cast<size_t>(chunkBytes[i]));
    }
  }

  // Phase 1: rank j receives chunk j of every tensor (and every sender's scales) from every rank.
  const std::vector<int64_t> counts(static_cast<size_t>(n), blockBytes);
  comm.allToAll(sendBuffer_, receiveBuffer_, counts, counts)->wait(options_.timeout);
  bytesSent_ += (n - 1) * blockBytes;

  // Server side (steps 6-7) for chunk `rank` of every tensor.
  const uint8_t* received = receiveBuffer_.data_ptr<uint8_t>();
  uint8_t* serverBlock = serverBlock_.data_ptr<uint8_t>();
  std::vector<float> y;
  const float ranks = static_cast<float>(n);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t chunk = serverErrors_[i].numel();
    const int64_t first = rank * chunk;  // index of the chunk's first element in the tensor
    float* serverError = serverErrors_[i].data_ptr<float>();
    const bool* mask = maskOf(i);
    const int64_t numel = tensors[i].numel();
    y.assign(static_cast<size_t>(chunk), 0.0f);
    for (int64_t k = 0; k < chunk; ++k) {
      float sum = 0.0f;
      for (int s = 0; s < n; ++s) {
        const uint8_t* block = received + s * blockBytes;
        const float scale = readFloat(block + 4 * static_cast<int64_t>(i));
        sum += bitAt(block + byteOffset[i], k) ? scale : -scale;
      }
      const int64_t index = first + k;
      const bool masked = mask != nullptr && index < numel && !mask[index];
      y[static_cast<size_t>(k)] = masked ? 0.0f : sum / ranks + serverError[k];
    }
    const float scale = scaleOf(y.data(), chunk);
    writeFloat(serverBlock + 4 * static_cast<int64_t>(i), scale);
    packAndResidual(y.data(), scale, chunk, serverBlock + byteOffset[i], serverError);
    if (mask != nullptr) {
      for (int64_t k = 0; k < chunk && first + k < numel; ++k) {
        if (!mask[first + k]) serverError[k] = 0.0f;
      }
    }
  }

  // Phase 2: every rank gets every server's re-compressed chunk.
  comm.allgather(serverBlock_, gathered_)->wait(options_.timeout);
  bytesSent_ += (n - 1) * blockBytes;

  // Step 9: decode, drop padding, apply the mask, write back in place.
  const uint8_t* all = gathered_.data_ptr<uint8_t>();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t chunk = serverErrors_[i].numel();
    const int64_t numel = tensors[i].numel();
    float* out = tensors[i].data_ptr<float>();
    const bool* mask = maskOf(i);
    for (int s = 0; s < n; ++s) {
      const uint8_t* block = all + s * blockBytes;
      const float scale = readFloat(block + 4 * static_cast<int64_t>(i));
      const int64_t first = s * chunk;
      const int64_t last = std::min(numel, first + chunk);
      for (int64_t index = first; index < last; ++index) {
        out[index] = bitAt(block + byteOffset[i], index - first) ? scale : -scale;
      }
    }
    if (mask != nullptr) {
      for (int64_t k = 0; k < numel; ++k) {
        if (!mask[k]) out[k] = 0.0f;
      }
    }
  }
}

StateDict OneBitAllreduce::state() const {
  StateDict state;
  for (size_t i = 0; i < workerErrors_.size(); ++i) {
    state[std::to_string(i) + ".worker_error"] = workerErrors_[i].clone();
    state[std::to_string(i) + ".server_error"] = serverErrors_[i].clone();
  }
  return state;
}

void OneBitAllreduce::loadState(const StateDict& state) {
  std::vector<at::Tensor> worker(state.size() / 2), server(state.size() / 2);
  for (const auto& [key, tensor] : state) {
    const size_t dot = key.find('.');
    const std::string suffix = dot == std::string::npos ? "" : key.substr(dot + 1);
    size_t index = 0;
    bool numeric = dot != std::string::npos && dot > 0;
    for (size_t c = 0; numeric && c < dot; ++c) {
      numeric = key[c] >= '0' && key[c] <= '9';
      index = index * 10 + static_cast<size_t>(key[c] - '0');
    }
    if (!numeric || (suffix != "worker_error" && suffix != "server_error") ||
        index >= worker.size() || tensor.scalar_type() != at::kFloat) {
      TW_THROW(DataError, "1-bit allreduce state: unexpected entry '", key,
               "' (expected '<i>.worker_error' or '<i>.server_error', float32, i < ", worker.size(),
               ")");
    }
    (suffix == "worker_error" ? worker : server)[index] = tensor.contiguous().clone();
  }
  for (size_t i = 0; i < worker.size(); ++i) {
    if (!worker[i].defined() || !server[i].defined()) {
      TW_THROW(DataError, "1-bit allreduce state: tensor ", i, " lacks its worker or server error");
    }
  }
  workerErrors_ = std::move(worker);
  serverErrors_ = std::move(server);
}

}  // namespace thinwire::compressors

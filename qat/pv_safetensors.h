// File: qat/pv_safetensors.h
//
// The PV-Tuning export: a safetensors file (the Hugging Face format: an 8-byte little-endian
// header length N, N bytes of JSON, then the raw little-endian tensor bytes) holding, layout
// "thinwire-pv-scalar" version 1 (docs/pv_tuning.md):
//   <layer>.codes    U8  [out, in]           integer codes in [0, 2^bits)
//   <layer>.scales   F32 [out, in / group]   per-group scale s
//   <layer>.zeros    F32 [out, in / group]   per-group zero point z (code units)
//   <name>           F32                     every other parameter of the model, full precision
// with W[o, i] = s[o, i / group] * (codes[o, i] - z[o, i / group]), and __metadata__ strings
// format = "thinwire-pv-scalar", version = "1", bits, group_size, method. Any reader of the
// format (Python's safetensors, or json + struct) can load it.
//
// Ownership: functions return new tensors; nothing is kept. Threading: thread-safe (distinct
// files).
//
// Example:
//   writePvSafetensors("runs/x/pv.safetensors", tuner.exportState(), metadata);
//   PvSafetensors file = readPvSafetensors("runs/x/pv.safetensors");
//   loadPvQuantized(*model, file);     // dense W = D(codes, s, z), the rest copied
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <map>
#include <string>

#include "base/state_dict.h"

namespace thinwire::qat {

inline constexpr const char* kPvFormatName = "thinwire-pv-scalar";
inline constexpr int64_t kPvFormatVersion = 1;

struct PvSafetensors {
  StateDict tensors;
  std::map<std::string, std::string> metadata;
};

// Writes `tensors` (contiguous CPU uint8, int64 or fp32, any shape) and `metadata` to `path`
// through a temporary file renamed into place. Blocking. InvalidArgument for another dtype;
// Error when the file cannot be written.
void writePvSafetensors(const std::string& path,
                        const StateDict& tensors,
                        const std::map<std::string, std::string>& metadata);

// Reads a safetensors file written by writePvSafetensors (U8, I64, F32 entries). Blocking.
// DataError for a missing, truncated or malformed file or an unsupported dtype.
PvSafetensors readPvSafetensors(const std::string& path);

// Fills `model` from an export: each parameter <name> with <name>.codes gets D(codes, s, z)
// (group size from the metadata), every other parameter is copied. In place, no autograd.
// DataError when the format is not kPvFormatName version 1, an entry is missing, or a shape
// differs from the model's.
void loadPvQuantized(torch::nn::Module& model, const PvSafetensors& file);

}  // namespace thinwire::qat

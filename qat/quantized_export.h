// File: qat/quantized_export.h
//
// Export of a model trained with QuantLinear layers to its integer form, and the way back for
// evaluation. The export is a StateDict (written by the caller, e.g. as a .twc file with
// core::writeStateFile) holding, format version 1 (docs/qat.md):
//   qat.format_version          int64 [1]  = 1
//   qat.method                  int64 [1]  1 quest, 2 ste, 3 lsq
//   qat.weight_bits / qat.activation_bits   int64 [1]
//   qat.variant                 int64 [1]  0 full, 1 half
//   <layer>.weight.codes        uint8 [out, in] c = k + 2^(b-1) in [0, 2^b), k the signed level
//   <layer>.weight.step         fp32 [out]      per output row; the value is (k + 1/2) * step
//   <layer>.weight.rotated      int64 [1]       1: the codes quantize W . blockdiag(H128), so
//                                               W ~ dequantized . blockdiag(H128)
//   <name>                      fp32, every other parameter and buffer (embedding, norms, head,
//                               LSQ steps) in full precision.
// Loading replaces each quantized layer's Qw(W) by the dequantized codes (bit-identical to the
// training-time fake quantization) and fills the rest, so evaluating the loaded model gives the
// fake-quantized model's loss.
//
// Ownership: functions read or write the caller's module in place; returned tensors are new.
// Threading: not thread-safe with respect to the module (as any module mutation).
//
// Example:
//   StateDict exported = qat::exportQuantized(*model);       // after training
//   core::writeStateFile("runs/x/quantized.twc", exported);
//   qat::loadQuantized(*freshModel, core::readStateFile("runs/x/quantized.twc"));
#pragma once

#include <torch/nn/module.h>

#include "base/state_dict.h"

namespace thinwire::qat {

inline constexpr int64_t kExportFormatVersion = 1;

// The integer form of every QuantLinear below `model` (its submodules; `model` itself is not
// inspected) (whose weights are quantized) plus the
// other parameters and buffers. InvalidArgument when the model has no quantized QuantLinear or
// its layers disagree on the QAT settings. Blocking, no autograd.
StateDict exportQuantized(torch::nn::Module& model);

// Loads an exportQuantized() StateDict into `model` (built with the same architecture and QAT
// settings): frozen dequantized weights for the quantized layers, everything else copied.
// DataError when an entry is missing, has the wrong shape, or the export's format version or
// QAT settings differ from the model's. In place.
void loadQuantized(torch::nn::Module& model, const StateDict& state);

}  // namespace thinwire::qat

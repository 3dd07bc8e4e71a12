// File: launch/pv_quantize.h
//
// `thinwire quantize CONFIG --checkpoint FP_CKPT --method pv|p_only|ste|rtn`: PV-Tuning of a
// trained llama checkpoint (docs/pv_tuning.md). Every attention and MLP linear becomes scalar
// group-wise codes + scales (qat/pv_quantized.h, initialised by round-to-nearest); the student
// is fine-tuned by qat::PvTuner on the training split against the full-precision teacher (the
// same checkpoint, forward under no-grad), data-parallel over the communicator's ranks with the
// trainer's machinery (DistributedSampler shards, GradSync averaging); rank 0 writes
// <run dir>/pv_metrics.jsonl (per-step loss and changed-code fraction, validation KL,
// perplexity) and the safetensors export (qat/pv_safetensors.h).
//
// Ownership: runPvQuantize borrows the communicator and the logger for the call.
// Threading: one thread per rank; collective over the communicator.
//
// Example:
//   PvQuantizeRequest request{.checkpoint = "runs/text_llama/checkpoints/step-00001100"};
//   PvQuantizeResult result = runPvQuantize(config, request, comm, log);
//   std::printf("validation KL %.4f\n", result.final.kl);
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/logging.h"
#include "comm/communicator.h"
#include "core/config.h"

namespace thinwire::core {
class Dataset;
class Model;
}  // namespace thinwire::core

namespace thinwire::launch {

struct PvQuantizeRequest {
  std::string checkpoint;  // the full-precision checkpoint directory (teacher and init)
  std::string method;      // overrides pv.method when not empty
  std::string out;         // export path; "" = <run dir>/pv_<method>.safetensors
};

struct PvEval {
  int64_t step = 0;
  double kl = 0;          // token-mean KL(teacher || student), nats
  double loss = 0;        // token-mean next-byte cross-entropy, nats
  double perplexity = 0;  // exp(loss)
};

struct PvQuantizeResult {
  std::vector<PvEval> evals;  // step 0 (RTN) first, the final one last
  PvEval final;
  double maxChangedFraction = 0;  // over steps, the largest per-layer fraction of changed codes
  std::string exportPath;         // rank 0
};

// Runs the fine-tuning (pv.steps steps, none for rtn) and the evaluations; rank 0 writes the
// metrics and the export. Collective. ConfigError unless model.type is llama with
// qat.method none; DataError for an unreadable checkpoint; CommError/TimeoutError when a peer
// fails.
PvQuantizeResult runPvQuantize(const core::Config& config,
                               const PvQuantizeRequest& request,
                               comm::Communicator& comm,
                               Logger& log);

// The `thinwire quantize CONFIG --checkpoint DIR --method M [--out FILE] [--set k=v]...` command:
// one rank of an mpirun job when started under mpirun (thinwire launch-style), else a single
// process. Prints the final validation numbers on rank 0; returns the exit code. UsageError-like
// problems throw InvalidArgument; others as runPvQuantize.
int runPvQuantizeCommand(const std::vector<std::string>& args);

// Whether `path` names a PV export (a .safetensors file) rather than a QAT .twc export.
bool isPvExport(const std::string& path);

// The config's llama with the PV export's weights: each quantized linear holds D(codes, s, z),
// the rest the export's full-precision values. DataError for a malformed or mismatched export.
std::shared_ptr<core::Model> loadPvExport(const core::Config& config,
                                          const core::Dataset& data,
                                          const std::string& path);

// Whether a parameter of the llama is quantized: the 2-D weights of the attention and MLP
// linears (embedding, norms and head stay full precision).
bool isPvQuantizedParameter(const std::string& name, int64_t dims);

}  // namespace thinwire::launch

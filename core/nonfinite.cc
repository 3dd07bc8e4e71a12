#include "core/nonfinite.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

namespace thinwire::core {

NonFinitePolicy parseNonFinitePolicy(const std::string& name) {
  if (name == "stop") return NonFinitePolicy::kStop;
  if (name == "skip") return NonFinitePolicy::kSkip;
  if (name == "off") return NonFinitePolicy::kOff;
  TW_THROW(InvalidArgument, "train.nonfinite must be one of stop|skip|off, got '", name, "'");
}

std::string toString(NonFinitePolicy policy) {
  switch (policy) {
    case NonFinitePolicy::kStop:
      return "stop";
    case NonFinitePolicy::kSkip:
      return "skip";
    case NonFinitePolicy::kOff:
      return "off";
  }
  TW_THROW(InvalidArgument, "unknown NonFinitePolicy value ", static_cast<int>(policy));
}

bool allFinite(const std::vector<at::Tensor>& tensors) {
  for (const at::Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    // One reduction instead of isfinite().all(): a sum of finite float32 values can overflow to
    // Inf only past 3.4e38, and a false alarm there is harmless next to the NaN it would become.
    if (!std::isfinite(t.sum().item<double>())) {
      if (!at::isfinite(t).all().item<bool>()) return false;
    }
  }
  return true;
}

std::vector<int> agreeOnNonFinite(comm::Communicator& comm,
                                  bool localNonFinite,
                                  std::chrono::milliseconds timeout) {
  at::Tensor flags = at::zeros({comm.worldSize()}, at::kFloat);
  if (localNonFinite) flags[comm.rank()] = 1.0f;
  if (comm.worldSize() > 1) comm.allreduce(flags, {.op = comm::ReduceOp::kMax})->wait(timeout);
  std::vector<int> ranks;
  const float* data = flags.data_ptr<float>();
  for (int r = 0; r < comm.worldSize(); ++r) {
    if (data[r] > 0.5f) ranks.push_back(r);
  }
  return ranks;
}

std::string nonFiniteMessage(int64_t step, const std::vector<int>& ranks, NonFinitePolicy policy) {
  std::ostringstream out;
  out << "non-finite gradient (NaN or Inf) at step " << step << " on rank"
      << (ranks.size() > 1 ? "s " : " ");
  for (size_t i = 0; i < ranks.size(); ++i) out << (i ? ", " : "") << ranks[i];
  out << " (train.nonfinite: " << toString(policy) << ")";
  return out.str();
}

}  // namespace thinwire::core

#include "base/state_dict.h"

#include <ATen/ATen.h>

#include "base/error.h"

namespace thinwire {

void mergeWithPrefix(StateDict& into, const StateDict& from, const std::string& prefix) {
  for (const auto& [key, value] : from) into[prefix + "." + key] = value;
}

StateDict extractPrefix(const StateDict& from, const std::string& prefix) {
  StateDict out;
  const std::string head = prefix + ".";
  for (const auto& [key, value] : from) {
    if (key.compare(0, head.size(), head) == 0) out[key.substr(head.size())] = value;
  }
  return out;
}

at::Tensor scalarTensor(int64_t value) {
  return at::full({1}, value, at::TensorOptions().dtype(at::kLong));
}

at::Tensor scalarTensor(double value) {
  return at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
}

const at::Tensor& requireEntry(const StateDict& state, const std::string& key) {
  auto it = state.find(key);
  if (it == state.end()) TW_THROW(DataError, "checkpoint lacks '", key, "'");
  return it->second;
}

}  // namespace thinwire

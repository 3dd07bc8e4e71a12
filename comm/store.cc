#include "comm/store.h"

#include <utility>

#include "base/error.h"

namespace thinwire::comm {

PrefixStore::PrefixStore(std::string prefix, Store& base)
    : prefix_(std::move(prefix)), base_(base) {
  TW_CHECK(!prefix_.empty(), "PrefixStore needs a non-empty prefix");
}

std::vector<std::string> PrefixStore::full(const std::vector<std::string>& keys) const {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const std::string& key : keys) out.push_back(full(key));
  return out;
}

void PrefixStore::set(const std::string& key, const std::string& value) {
  base_.set(full(key), value);
}

std::string PrefixStore::get(const std::string& key, std::chrono::milliseconds timeout) {
  return base_.get(full(key), timeout);
}

int64_t PrefixStore::add(const std::string& key, int64_t delta) {
  return base_.add(full(key), delta);
}

void PrefixStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  base_.wait(full(keys), timeout);
}

bool PrefixStore::check(const std::vector<std::string>& keys) { return base_.check(full(keys)); }

}  // namespace thinwire::comm

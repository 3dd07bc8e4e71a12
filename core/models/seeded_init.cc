#include "core/models/seeded_init.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/data/seeded_random.h"

namespace thinwire::core {
namespace {

// Splits "layers.0.weight" into ("layers.0", "weight").
std::pair<std::string, std::string> splitName(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}

void fillUniform(at::Tensor& parameter, double bound, uint64_t seed, const std::string& name) {
  TW_ASSERT(parameter.scalar_type() == at::kFloat, "parameter ", name, " is not float32");
  std::vector<float> values(static_cast<size_t>(parameter.numel()));
  SeededRandom rng(mixSeed(seed, hashName(name)));
  for (float& value : values) {
    value = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
  }
  const at::Tensor source =
      at::from_blob(values.data(), parameter.sizes(), at::TensorOptions().dtype(at::kFloat));
  parameter.copy_(source);
}

}  // namespace

void initParametersFromSeed(torch::nn::Module& module, uint64_t seed) {
  const auto parameters = module.named_parameters(/*recurse=*/true);
  std::map<std::string, int64_t> fanIn;
  for (const auto& item : parameters) {
    const auto [prefix, leaf] = splitName(item.key());
    if (leaf == "weight" && item.value().dim() >= 2) {
      fanIn[prefix] = item.value().numel() / item.value().size(0);
    }
  }
  torch::NoGradGuard noGrad;
  for (const auto& item : parameters) {
    const auto [prefix, leaf] = splitName(item.key());
    const auto found = fanIn.find(prefix);
    TW_CHECK((leaf == "weight" || leaf == "bias") && found != fanIn.end(),
             "cannot initialise parameter '", item.key(),
             "': expected <prefix>.weight (>= 2-D) or <prefix>.bias next to one");
    at::Tensor parameter = item.value();
    fillUniform(parameter, 1.0 / std::sqrt(static_cast<double>(found->second)), seed, item.key());
  }
}

}  // namespace thinwire::core

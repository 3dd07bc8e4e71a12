#include "optim/optimizer.h"

#include "base/error.h"
#include "optim/adam_optimizer.h"
#include "optim/one_bit_adam.h"
#include "optim/sgd_optimizer.h"

namespace thinwire::optim {

OptimizerKind parseOptimizerKind(const std::string& name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adam") return OptimizerKind::kAdam;
  if (name == "adamw") return OptimizerKind::kAdamW;
  if (name == "onebit_adam") return OptimizerKind::kOneBitAdam;
  TW_THROW(InvalidArgument, "optimizer must be one of sgd|adam|adamw|onebit_adam, got '", name,
           "'");
}

std::unique_ptr<Optimizer> makeOptimizer(std::vector<NamedParameter> parameters,
                                         const OptimizerOptions& options) {
  switch (options.kind) {
    case OptimizerKind::kSgd:
      return std::make_unique<SgdOptimizer>(std::move(parameters), options);
    case OptimizerKind::kAdam:
    case OptimizerKind::kAdamW:
      return std::make_unique<AdamOptimizer>(std::move(parameters), options);
    case OptimizerKind::kOneBitAdam:
      return std::make_unique<OneBitAdam>(std::move(parameters), options);
  }
  TW_ASSERT(false, "unhandled optimizer kind");
}

}  // namespace thinwire::optim

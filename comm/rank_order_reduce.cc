#include "comm/rank_order_reduce.h"

#include <ATen/ATen.h>

namespace thinwire::comm {

at::ScalarType accumulateType(at::ScalarType dtype) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) ? at::kFloat : dtype;
}

at::Tensor reduceInRankOrder(const std::vector<at::Tensor>& parts, ReduceOp op) {
  const at::ScalarType accType = accumulateType(parts.front().scalar_type());
  at::Tensor result = parts.front().to(accType, /*non_blocking=*/false, /*copy=*/true);
  for (size_t r = 1; r < parts.size(); ++r) {
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAverage:
        result.add_(parts[r]);
        break;
      case ReduceOp::kMax:
        result = at::maximum(result, parts[r].to(accType));
        break;
      case ReduceOp::kMin:
        result = at::minimum(result, parts[r].to(accType));
        break;
    }
  }
  return result;
}

void writeReduced(at::Tensor output, const at::Tensor& reduced, ReduceOp op, int worldSize) {
  at::Tensor flat = output.view({-1});
  flat.copy_(reduced.reshape({-1}));
  if (op == ReduceOp::kAverage) flat.div_(worldSize);
}

}  // namespace thinwire::comm

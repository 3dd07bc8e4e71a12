#include "comm/communicator.h"

#include "base/error.h"

namespace thinwire::comm {

std::string toString(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAverage:
      return "average";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  TW_THROW(InvalidArgument, "unknown ReduceOp value ", static_cast<int>(op));
}

bool isSupportedDtype(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
    case at::kHalf:
    case at::kBFloat16:
    case at::kInt:
    case at::kLong:
    case at::kByte:
      return true;
    default:
      return false;
  }
}

}  // namespace thinwire::comm

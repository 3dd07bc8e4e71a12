#include "comm/collective_checks.h"

#include <c10/core/ScalarType.h>

#include <sstream>

#include "base/error.h"

namespace thinwire::comm {

void checkTensor(const char* op, const char* name, const at::Tensor& tensor, bool allowCuda) {
  TW_CHECK(tensor.defined(), op, ": ", name, " is an undefined tensor, expected a CPU tensor");
  TW_CHECK(tensor.device().is_cpu() || (allowCuda && tensor.device().is_cuda()), op, ": ", name,
           " is on device ", tensor.device(),
           allowCuda ? ", expected a CPU or CUDA tensor" : ", expected a CPU tensor");
  TW_CHECK(isSupportedDtype(tensor.scalar_type()), op, ": ", name, " has dtype ",
           tensor.scalar_type(), ", expected one of Float, Half, BFloat16, Int, Long, Byte");
  TW_CHECK(tensor.is_contiguous(), op, ": ", name, " of sizes ", tensor.sizes(), " and strides ",
           tensor.strides(), " is not contiguous; pass tensor.contiguous()");
}

void checkReduceOp(const char* op, ReduceOp reduceOp, at::ScalarType dtype) {
  TW_CHECK(reduceOp != ReduceOp::kAverage || at::isFloatingType(dtype), op,
           ": ReduceOp average needs a floating-point dtype, got ", dtype,
           "; use sum and divide, or convert to float");
}

int64_t checkCounts(const char* op,
                    const char* name,
                    const std::vector<int64_t>& counts,
                    int worldSize) {
  TW_CHECK(static_cast<int64_t>(counts.size()) == worldSize, op, ": ", name, " has ", counts.size(),
           " entries, expected worldSize = ", worldSize);
  int64_t total = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    TW_CHECK(counts[r] >= 0, op, ": ", name, "[", r, "] = ", counts[r], ", expected >= 0");
    total += counts[r];
  }
  return total;
}

bool overlaps(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  auto begin = [](const at::Tensor& t) { return static_cast<const char*>(t.data_ptr()); };
  auto end = [&](const at::Tensor& t) { return begin(t) + t.numel() * t.element_size(); };
  return begin(a) < end(b) && begin(b) < end(a);
}

void checkAllreduceArgs(const at::Tensor& inout, ReduceOp op, bool allowCuda) {
  checkTensor("allreduce", "inout", inout, allowCuda);
  checkReduceOp("allreduce", op, inout.scalar_type());
}

namespace {

void checkSameDtype(const char* op, const at::Tensor& input, const at::Tensor& output) {
  TW_CHECK(input.scalar_type() == output.scalar_type(), op, ": output has dtype ",
           output.scalar_type(), ", expected the input's dtype ", input.scalar_type());
}

}  // namespace

void checkAllgatherArgs(const at::Tensor& input,
                        const at::Tensor& output,
                        int worldSize,
                        bool allowCuda) {
  checkTensor("allgather", "input", input, allowCuda);
  checkTensor("allgather", "output", output, allowCuda);
  checkSameDtype("allgather", input, output);
  TW_CHECK(output.numel() == worldSize * input.numel(), "allgather: output has ", output.numel(),
           " elements, expected worldSize (", worldSize, ") * input.numel() (", input.numel(),
           ") = ", worldSize * input.numel());
  TW_CHECK(!overlaps(input, output),
           "allgather: input and output overlap, expected distinct "
           "memory");
}

void checkAllgathervArgs(const at::Tensor& input,
                         const at::Tensor& output,
                         const std::vector<int64_t>& counts,
                         int rank,
                         int worldSize,
                         bool allowCuda) {
  checkTensor("allgatherv", "input", input, allowCuda);
  checkTensor("allgatherv", "output", output, allowCuda);
  checkSameDtype("allgatherv", input, output);
  int64_t total = checkCounts("allgatherv", "counts", counts, worldSize);
  TW_CHECK(counts[rank] == input.numel(), "allgatherv: counts[", rank, "] = ", counts[rank],
           ", expected input.numel() = ", input.numel());
  TW_CHECK(output.numel() == total, "allgatherv: output has ", output.numel(),
           " elements, expected sum(counts) = ", total);
  TW_CHECK(!overlaps(input, output),
           "allgatherv: input and output overlap, expected distinct "
           "memory");
}

void checkAllToAllArgs(const at::Tensor& input,
                       const at::Tensor& output,
                       const std::vector<int64_t>& sendCounts,
                       const std::vector<int64_t>& recvCounts,
                       int worldSize,
                       bool allowCuda) {
  checkTensor("allToAll", "input", input, allowCuda);
  checkTensor("allToAll", "output", output, allowCuda);
  checkSameDtype("allToAll", input, output);
  int64_t sendTotal = checkCounts("allToAll", "sendCounts", sendCounts, worldSize);
  int64_t recvTotal = checkCounts("allToAll", "recvCounts", recvCounts, worldSize);
  TW_CHECK(input.numel() == sendTotal, "allToAll: input has ", input.numel(),
           " elements, expected sum(sendCounts) = ", sendTotal);
  TW_CHECK(output.numel() == recvTotal, "allToAll: output has ", output.numel(),
           " elements, expected sum(recvCounts) = ", recvTotal);
}

void checkReduceScatterArgs(const at::Tensor& input,
                            const at::Tensor& output,
                            const std::vector<int64_t>& counts,
                            ReduceOp op,
                            int rank,
                            int worldSize,
                            bool allowCuda) {
  checkTensor("reduceScatter", "input", input, allowCuda);
  checkTensor("reduceScatter", "output", output, allowCuda);
  checkSameDtype("reduceScatter", input, output);
  checkReduceOp("reduceScatter", op, input.scalar_type());
  int64_t total = checkCounts("reduceScatter", "counts", counts, worldSize);
  TW_CHECK(input.numel() == total, "reduceScatter: input has ", input.numel(),
           " elements, expected sum(counts) = ", total);
  TW_CHECK(output.numel() == counts[rank], "reduceScatter: output has ", output.numel(),
           " elements, expected counts[", rank, "] = ", counts[rank]);
}

void checkBroadcastArgs(const at::Tensor& inout, int root, int worldSize, bool allowCuda) {
  checkTensor("broadcast", "inout", inout, allowCuda);
  TW_CHECK(root >= 0 && root < worldSize, "broadcast: root = ", root, ", expected a rank in [0, ",
           worldSize, ")");
}

std::string describeCollective(const std::string& op, int64_t sequence, const at::Tensor& tensor) {
  std::ostringstream out;
  out << op << " #" << sequence;
  if (tensor.defined())
    out << " of " << tensor.numel() << " " << tensor.scalar_type() << " elements";
  return out.str();
}

std::vector<int64_t> offsetsOf(const std::vector<int64_t>& counts) {
  std::vector<int64_t> offsets(counts.size(), 0);
  for (size_t r = 1; r < counts.size(); ++r) offsets[r] = offsets[r - 1] + counts[r - 1];
  return offsets;
}

}  // namespace thinwire::comm

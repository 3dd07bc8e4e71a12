#include "comm/communicator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "comm/collective_checks.h"
#include "comm/make_communicator.h"

namespace thinwire::comm {
namespace {

TEST(CommunicatorTest, NamesEveryReduceOp) {
  EXPECT_EQ(toString(ReduceOp::kSum), "sum");
  EXPECT_EQ(toString(ReduceOp::kAverage), "average");
  EXPECT_EQ(toString(ReduceOp::kMax), "max");
  EXPECT_EQ(toString(ReduceOp::kMin), "min");
}

TEST(CommunicatorTest, SupportsExactlyTheDocumentedDtypes) {
  for (at::ScalarType dtype :
       {at::kFloat, at::kHalf, at::kBFloat16, at::kInt, at::kLong, at::kByte}) {
    EXPECT_TRUE(isSupportedDtype(dtype)) << dtype;
  }
  for (at::ScalarType dtype : {at::kDouble, at::kChar, at::kShort, at::kBool, at::kComplexFloat}) {
    EXPECT_FALSE(isSupportedDtype(dtype)) << dtype;
  }
}

TEST(CollectiveChecksTest, DetectsOverlappingMemory) {
  at::Tensor base = at::zeros({10});
  EXPECT_TRUE(overlaps(base, base.narrow(0, 9, 1)));
  EXPECT_FALSE(overlaps(base.narrow(0, 5, 5), base.narrow(0, 0, 5)));
  EXPECT_FALSE(overlaps(base.narrow(0, 3, 0), base));
  EXPECT_FALSE(overlaps(base, at::zeros({10})));
}

TEST(CollectiveChecksTest, OffsetsArePrefixSums) {
  EXPECT_EQ(offsetsOf({3, 0, 2, 5}), (std::vector<int64_t>{0, 3, 3, 5}));
  EXPECT_TRUE(offsetsOf({}).empty());
}

TEST(CollectiveChecksTest, MessagesNameTheOpTheValueAndTheExpectation) {
  try {
    checkAllgatherArgs(at::zeros({2}), at::zeros({7}), 4);
    ADD_FAILURE() << "wrong output size accepted";
  } catch (const InvalidArgument& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("allgather"), std::string::npos) << message;
    EXPECT_NE(message.find("7"), std::string::npos) << message;
    EXPECT_NE(message.find("8"), std::string::npos) << message;
  }
  EXPECT_THROW(checkCounts("allgatherv", "counts", {1, -2}, 2), InvalidArgument);
  EXPECT_EQ(checkCounts("allgatherv", "counts", {1, 2}, 2), 3);
}

TEST(MakeCommunicatorTest, ParsesBackendNames) {
  EXPECT_EQ(parseBackend("mpi"), CommunicatorOptions::Backend::kMpi);
  EXPECT_EQ(parseBackend("local"), CommunicatorOptions::Backend::kLocal);
  EXPECT_EQ(toString(CommunicatorOptions::Backend::kLocal), "local");
  EXPECT_THROW(parseBackend("nccl2"), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::comm

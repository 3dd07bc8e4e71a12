#include "bench/comm_bench.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/error.h"
#include "tests/testing/error_message.h"

namespace thinwire::bench {
namespace {

using testing::errorMessageOf;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(CommBenchArgsTest, DefaultsAreAllreduceOverFourKilobytesToQuarterGigabyte) {
  const CommBenchOptions options = parseCommBenchArgs({});
  EXPECT_EQ(options.collectives, std::vector<Collective>{Collective::kAllreduce});
  ASSERT_EQ(options.sizesBytes.size(), 9u);
  EXPECT_EQ(options.sizesBytes.front(), 4096);
  EXPECT_EQ(options.sizesBytes.back(), 256LL * 1024 * 1024);
  EXPECT_EQ(options.iterations, 20);
  EXPECT_EQ(options.warmup, 3);
}

TEST(CommBenchArgsTest, ParsesSizesCollectivesAndCounts) {
  const CommBenchOptions options = parseCommBenchArgs(
      {"--sizes", "4K,1M,16m,4096,1G", "--collectives=reduce_scatter,allreduce,broadcast,allgather",
       "--iterations", "5", "--warmup=0", "--json", "out.jsonl"});
  EXPECT_EQ(options.sizesBytes, (std::vector<int64_t>{4096, 1048576, 16777216, 4096, 1073741824}));
  EXPECT_EQ(options.collectives,
            (std::vector<Collective>{Collective::kReduceScatter, Collective::kAllreduce,
                                     Collective::kBroadcast, Collective::kAllgather}));
  EXPECT_EQ(options.iterations, 5);
  EXPECT_EQ(options.warmup, 0);
  EXPECT_EQ(options.jsonPath, "out.jsonl");
}

TEST(CommBenchArgsTest, RejectsBadSizes) {
  for (const std::string bad : {"0", "-4K", "4X", "K", "", "4K,", ",4K", "4K,,8K", "1.5M", " 4K",
                                "+4K", "99999999999999999G"}) {
    const std::string what = errorMessageOf<InvalidArgument>([&] {
      parseCommBenchArgs({"--sizes", bad});
    });
    EXPECT_TRUE(contains(what, "--sizes")) << bad << ": " << what;
  }
}

TEST(CommBenchArgsTest, RejectsUnknownAndRepeatedCollectives) {
  std::string what = errorMessageOf<InvalidArgument>([] {
    parseCommBenchArgs({"--collectives", "alltoall"});
  });
  EXPECT_TRUE(contains(what, "'alltoall'")) << what;
  EXPECT_TRUE(contains(what, "reduce_scatter")) << what;
  what = errorMessageOf<InvalidArgument>([] {
    parseCommBenchArgs({"--collectives", "allreduce,allgather,allreduce"});
  });
  EXPECT_TRUE(contains(what, "twice")) << what;
  what = errorMessageOf<InvalidArgument>([] { parseCommBenchArgs({"--collectives", ""}); });
  EXPECT_TRUE(contains(what, "--collectives")) << what;
  what = errorMessageOf<InvalidArgument>([] {
    parseCommBenchArgs({"--collectives", "Allreduce"});
  });
  EXPECT_TRUE(contains(what, "'Allreduce'")) << what;
}

TEST(CommBenchArgsTest, RejectsOutOfRangeCountsMissingValuesAndUnknownFlags) {
  std::string what = errorMessageOf<InvalidArgument>([] {
    parseCommBenchArgs({"--iterations", "0"});
  });
  EXPECT_TRUE(contains(what, "--iterations '0'")) << what;
  what = errorMessageOf<InvalidArgument>([] { parseCommBenchArgs({"--warmup", "-1"}); });
  EXPECT_TRUE(contains(what, "--warmup '-1'")) << what;
  what = errorMessageOf<InvalidArgument>([] { parseCommBenchArgs({"--iterations", "3x"}); });
  EXPECT_TRUE(contains(what, "--iterations")) << what;
  what = errorMessageOf<InvalidArgument>([] {
    parseCommBenchArgs({"--iterations", "99999999999999999999"});
  });
  EXPECT_TRUE(contains(what, "--iterations")) << what;
  what = errorMessageOf<InvalidArgument>([] { parseCommBenchArgs({"--collectives"}); });
  EXPECT_TRUE(contains(what, "--collectives needs a value")) << what;
  what = errorMessageOf<InvalidArgument>([] { parseCommBenchArgs({"--threads", "2"}); });
  EXPECT_TRUE(contains(what, "unknown argument '--threads'")) << what;
}

TEST(CommBenchArgsTest, CollectiveNamesRoundTrip) {
  for (Collective collective : {Collective::kAllreduce, Collective::kAllgather,
                                Collective::kReduceScatter, Collective::kBroadcast}) {
    EXPECT_EQ(parseCollective(toString(collective)), collective);
  }
  EXPECT_EQ(toString(Collective::kReduceScatter), "reduce_scatter");
}

// nccl-tests conventions, written out independently of the code under test: allreduce moves
// 2(n-1)/n of the buffer through each rank's link, allgather and reduce_scatter (n-1)/n, a
// broadcast the whole buffer once.
TEST(BusBandwidthFactorTest, MatchesTheNcclTestsFormulas) {
  for (int n = 1; n <= 64; ++n) {
    const double ranks = n;
    EXPECT_DOUBLE_EQ(busBandwidthFactor(Collective::kAllreduce, n), 2.0 * (ranks - 1) / ranks);
    EXPECT_DOUBLE_EQ(busBandwidthFactor(Collective::kAllgather, n), (ranks - 1) / ranks);
    EXPECT_DOUBLE_EQ(busBandwidthFactor(Collective::kReduceScatter, n), (ranks - 1) / ranks);
    EXPECT_DOUBLE_EQ(busBandwidthFactor(Collective::kBroadcast, n), 1.0);
  }
  // Spot values worked out by hand.
  EXPECT_DOUBLE_EQ(busBandwidthFactor(Collective::kAllreduce, 4), 1.5);
  EXPECT_DOUBLE_EQ(busBandwidthFactor(Collective::kAllreduce, 8), 1.75);
  EXPECT_DOUBLE_EQ(busBandwidthFactor(Collective::kAllgather, 4), 0.75);
  EXPECT_DOUBLE_EQ(busBandwidthFactor(Collective::kAllreduce, 1), 0.0);
}

TEST(BusBandwidthFactorTest, RejectsEmptyWorlds) {
  const std::string what =
      errorMessageOf<InvalidArgument>([] { (void)busBandwidthFactor(Collective::kAllreduce, 0); });
  EXPECT_TRUE(contains(what, "worldSize = 0")) << what;
}

}  // namespace
}  // namespace thinwire::bench

#include "base/error.h"

#include <gtest/gtest.h>

#include "base/checksum.h"

namespace thinwire {
namespace {

TEST(ErrorTest, CheckThrowsInvalidArgumentWithValueAndLocation) {
  const double ratio = 1.5;
  try {
    TW_CHECK(ratio <= 1.0, "ratio must be in (0, 1], got ", ratio);
    FAIL() << "TW_CHECK did not throw";
  } catch (const InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("ratio must be in (0, 1], got 1.5"), std::string::npos) << what;
    EXPECT_NE(what.find("error_test.cc:"), std::string::npos) << what;
  }
}

TEST(ErrorTest, MessagesNameTheRankWhenSet) {
  setErrorRank(3);
  try {
    TW_THROW(CommError, "peer vanished");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 3"), std::string::npos) << e.what();
  }
  setErrorRank(-1);
}

TEST(ErrorTest, TimeoutIsACommError) { EXPECT_THROW(TW_THROW(TimeoutError, "slow"), CommError); }

TEST(ChecksumTest, Crc32MatchesTheStandardCheckValue) {
  // The CRC-32 check value of "123456789" is 0xCBF43926 for every conforming implementation.
  const std::string text = "123456789";
  EXPECT_EQ(crc32(text.data(), text.size()), 0xCBF43926U);
  // Continuing over two spans equals one pass.
  const uint32_t first = crc32(text.data(), 4);
  EXPECT_EQ(crc32(text.data() + 4, text.size() - 4, first), 0xCBF43926U);
}

}  // namespace
}  // namespace thinwire

#include "base/text.h"

#include <gtest/gtest.h>

namespace thinwire {
namespace {

TEST(TextTest, JsonQuoteEscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(jsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(jsonQuote(std::string("a\"b\\c\nd\te") + '\x01'), R"("a\"b\\c\nd\te\u0001")");
  EXPECT_EQ(jsonQuote(""), "\"\"");
}

}  // namespace
}  // namespace thinwire

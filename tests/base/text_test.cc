#include "base/text.h"

#include <gtest/gtest.h>

#include "base/error.h"

namespace thinwire {
namespace {

TEST(TextTest, JsonQuoteEscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(jsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(jsonQuote(std::string("a\"b\\c\nd\te") + '\x01'), R"("a\"b\\c\nd\te\u0001")");
  EXPECT_EQ(jsonQuote(""), "\"\"");
}

TEST(TextTest, ParseHostPortSplitsAtTheLastColon) {
  EXPECT_EQ(parseHostPort("127.0.0.1:8080", "x"),
            std::make_pair(std::string("127.0.0.1"), uint16_t{8080}));
  EXPECT_EQ(parseHostPort("node-3:0", "x"), std::make_pair(std::string("node-3"), uint16_t{0}));
  EXPECT_EQ(parseHostPort("node-3:65535", "x").second, 65535);
  EXPECT_EQ(parseHostPort("a:b:29500", "x"), std::make_pair(std::string("a:b"), uint16_t{29500}));
}

TEST(TextTest, ParseHostPortRejectsWhatIsNotHostColonPort) {
  for (const char* bad : {"node-3", ":80", "node-3:", "node-3:65536", "node-3:8x", "node-3:-1",
                          "node-3:000080", ""}) {
    try {
      parseHostPort(bad, "THINWIRE_STORE");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InvalidArgument& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("THINWIRE_STORE must be HOST:PORT"), std::string::npos) << what;
      EXPECT_NE(what.find(std::string("'") + bad + "'"), std::string::npos) << what;
    }
  }
}

}  // namespace
}  // namespace thinwire

#include "core/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

TEST(JsonRecordTest, WritesAFlatObjectWithTypedValues) {
  const std::string text = JsonRecord()
                               .add("kind", "train")
                               .add("step", int64_t{120})
                               .add("loss", 0.25)
                               .add("ok", true)
                               .str();
  EXPECT_EQ(text, R"({"kind":"train","step":120,"loss":0.25,"ok":true})");
}

TEST(JsonRecordTest, NonFiniteNumbersBecomeNull) {
  const std::string text = JsonRecord()
                               .add("a", std::numeric_limits<double>::quiet_NaN())
                               .add("b", std::numeric_limits<double>::infinity())
                               .str();
  EXPECT_EQ(text, R"({"a":null,"b":null})");
}

TEST(MetricsWriterTest, AppendsOneLinePerRecordAndKeepsEarlierOnesWhenResuming) {
  ::thinwire::testing::TempDir dir("thinwire-metrics");
  const std::string path = dir.file("run/metrics.jsonl");
  {
    MetricsWriter writer({.path = path});
    writer.write(JsonRecord().add("step", int64_t{1}));
  }
  {
    MetricsWriter writer({.path = path, .append = true});
    writer.write(JsonRecord().add("step", int64_t{2}));
  }
  std::ifstream in(path);
  std::string first, second, extra;
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_EQ(first, R"({"step":1})");
  EXPECT_EQ(second, R"({"step":2})");
  EXPECT_FALSE(std::getline(in, extra));
}

TEST(ProgressLineTest, PrintsStepTextAndEtaOneLinePerUpdate) {
  std::ostringstream out;
  ProgressLine progress({.total = 100, .out = &out, .interactive = false});
  progress.update(10, "loss 1.0");
  progress.update(20, "loss 0.5");
  const std::string text = out.str();
  EXPECT_NE(text.find("step 10/100 | loss 1.0 | ETA ?\n"), std::string::npos) << text;
  EXPECT_NE(text.find("step 20/100 | loss 0.5 | ETA "), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
}

TEST(FormatDurationTest, UsesTheLargestSensibleUnits) {
  EXPECT_EQ(formatDuration(45), "45s");
  EXPECT_EQ(formatDuration(192), "3m12s");
  EXPECT_EQ(formatDuration(3720), "1h02m");
  EXPECT_EQ(formatDuration(-1), "?");
}

}  // namespace
}  // namespace thinwire::core

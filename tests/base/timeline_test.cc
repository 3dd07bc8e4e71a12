// Timeline: spans land in a Chrome trace that a JSON parser accepts, with the right names,
// tracks, durations and ranks; merging keeps every rank's events; bad inputs are DataErrors.
#include "base/timeline.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "base/error.h"

namespace thinwire {
namespace {

namespace fs = std::filesystem;

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class TimelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tw-timeline-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Independent check with Python's json module: the file parses, and `check` (Python
  // expressions over `d`, the parsed document) all hold.
  void expectPython(const std::string& file, const std::string& check) {
    if (std::system("/usr/bin/python3 -c 'import json' 2>/dev/null") != 0) {
      GTEST_SKIP() << "/usr/bin/python3 missing: the independent JSON check cannot run";
    }
    const std::string script = path("check.py");
    std::ofstream(script) << "import json, sys\nd = json.load(open(sys.argv[1]))\n"
                          << "ev = [e for e in d['traceEvents'] if e['ph'] == 'X']\n"
                          << "assert " << check << ", 'check failed'\n";
    const std::string command = "/usr/bin/python3 " + script + " " + file;
    EXPECT_EQ(std::system(command.c_str()), 0) << "python check failed: " << check;
  }

  fs::path dir_;
};

TEST_F(TimelineTest, SpansBecomeCompleteEventsWithDurations) {
  Timeline timeline({.rank = 3});
  {
    Timeline::Span span(timeline, "forward", "compute");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  { Timeline::Span span(timeline, "allreduce \"bucket\" 1", "comm"); }
  Timeline::Span none(static_cast<Timeline*>(nullptr), "ignored", "compute");
  EXPECT_EQ(timeline.size(), 2u);
  timeline.write(path("r3.json"));
  const std::string text = readAll(path("r3.json"));
  EXPECT_EQ(count(text, "\"ph\":\"X\""), 2u);
  EXPECT_NE(text.find("\"name\":\"allreduce \\\"bucket\\\" 1\""), std::string::npos) << text;
  expectPython(path("r3.json"),
               "len(ev) == 2 and ev[0]['name'] == 'forward' and ev[0]['cat'] == 'compute' and "
               "ev[0]['dur'] >= 19000 and ev[1]['ts'] >= ev[0]['ts'] + ev[0]['dur'] and "
               "all(e['pid'] == 3 for e in d['traceEvents']) and "
               "ev[1]['name'] == 'allreduce \"bucket\" 1'");
}

TEST_F(TimelineTest, EachThreadGetsItsOwnTrack) {
  Timeline timeline({.rank = 0});
  { Timeline::Span span(timeline, "main work", "compute"); }
  std::thread other([&] { Timeline::Span span(timeline, "encode", "codec"); });
  other.join();
  timeline.write(path("t.json"));
  expectPython(path("t.json"),
               "sorted(e['tid'] for e in ev) == [0, 1] and "
               "{e['name']: e['tid'] for e in ev} == {'main work': 0, 'encode': 1}");
}

TEST_F(TimelineTest, PastTheCapEventsAreDroppedAndCounted) {
  Timeline timeline({.rank = 0, .maxEvents = 3});
  for (int i = 0; i < 5; ++i) Timeline::Span span(timeline, "s" + std::to_string(i), "compute");
  EXPECT_EQ(timeline.size(), 3u);
  EXPECT_EQ(timeline.dropped(), 2u);
  timeline.write(path("cap.json"));
  expectPython(path("cap.json"),
               "[e['name'] for e in ev] == ['s0', 's1', 's2'] and "
               "d['otherData']['dropped_events'] == 2");
}

TEST_F(TimelineTest, MergeKeepsEveryRanksEvents) {
  for (int rank = 0; rank < 3; ++rank) {
    Timeline timeline({.rank = rank});
    for (int i = 0; i <= rank; ++i) Timeline::Span span(timeline, "step", "compute");
    timeline.write(path("rank" + std::to_string(rank) + ".json"));
  }
  mergeTraces({path("rank0.json"), path("rank1.json"), path("rank2.json")}, path("all.json"));
  expectPython(path("all.json"),
               "[sum(1 for e in ev if e['pid'] == r) for r in range(3)] == [1, 2, 3] and "
               "d['otherData']['ranks'] == 3 and "
               "sorted(e['args']['name'] for e in d['traceEvents'] if e['name'] == "
               "'process_name') == ['rank 0', 'rank 1', 'rank 2']");
}

TEST_F(TimelineTest, MergeRefusesMissingForeignAndTruncatedFiles) {
  Timeline timeline({.rank = 0});
  { Timeline::Span span(timeline, "x", "compute"); }
  timeline.write(path("good.json"));
  EXPECT_THROW(mergeTraces({path("missing.json")}, path("out.json")), DataError);
  std::ofstream(path("foreign.json")) << "{\"something\": 1}\n";
  EXPECT_THROW(mergeTraces({path("good.json"), path("foreign.json")}, path("out.json")), DataError);
  const std::string text = readAll(path("good.json"));
  std::ofstream(path("cut.json")) << text.substr(0, text.rfind("]"));
  EXPECT_THROW(mergeTraces({path("cut.json")}, path("out.json")), DataError);
  EXPECT_FALSE(fs::exists(path("out.json"))) << "a failed merge must not leave an output";
}

}  // namespace
}  // namespace thinwire

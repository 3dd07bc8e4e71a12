#include "base/crash_report.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <string>

namespace thinwire {
namespace {

// Death tests fork: the handler is installed only in the child.
// The null write is the point of the test: UBSan's null check (the asan preset) would report it
// and exit before the store faults, so that one check is off here (noinline: GCC applies the
// attribute only to an out-of-line copy, not where the function is inlined into the test).
[[noreturn]] [[gnu::noinline]] [[gnu::no_sanitize("null")]] void crashWithNullWrite() {
  installCrashReport("crashtest");
  setCrashContext("rank 2, step 7 backward");
  volatile int* nowhere = nullptr;
  *nowhere = 1;
  std::abort();  // not reached: the write above faults
}

TEST(CrashReportDeathTest, InvalidAccessIsReportedWithContextAndStackAndStillKillsBySignal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(crashWithNullWrite(), testing::KilledBySignal(SIGSEGV),
              "crashtest: killed by SIGSEGV \\(invalid memory access\\) while rank 2, step 7 "
              "backward; native stack:\n.*\\[0x[0-9a-f]+\\]");
}

TEST(CrashReportDeathTest, AbortIsReportedAndTheContextIsTruncatedNotOverrun) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string longContext(500, 'x');
  EXPECT_EXIT(
      {
        installCrashReport("crashtest");
        setCrashContext(longContext);
        std::abort();
      },
      testing::KilledBySignal(SIGABRT),
      "crashtest: killed by SIGABRT \\(abort\\) while x{200}; native stack:");
}

TEST(CrashReportDeathTest, WithoutContextTheLineSaysOnlyTheSignal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        installCrashReport("crashtest");
        setCrashContext("");
        ::raise(SIGFPE);
      },
      testing::KilledBySignal(SIGFPE),
      "crashtest: killed by SIGFPE \\(arithmetic exception\\); native stack:");
}

}  // namespace
}  // namespace thinwire

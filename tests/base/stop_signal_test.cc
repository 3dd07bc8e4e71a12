#include "base/stop_signal.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>

namespace thinwire {
namespace {

// Death tests fork: the handlers live only in the child. The child exits with a code that says
// how far it got, or is killed by the second signal.

// The first signal is recorded and announced, and the process lives on; the second one, of any
// of the three, kills it.
TEST(StopSignalDeathTest, TheFirstSignalIsRecordedAndTheSecondKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        installStopSignals("stoptest");
        if (stopSignal() != 0) std::_Exit(3);
        ::raise(SIGUSR1);
        if (stopSignal() != SIGUSR1) std::_Exit(4);
        ::raise(SIGTERM);
        std::_Exit(5);  // not reached: the second signal kills
      },
      testing::KilledBySignal(SIGTERM),
      "stoptest: SIGUSR1: stopping with a checkpoint at the next stop check");
}

TEST(StopSignalDeathTest, SigtermAndSigintAreRecordedToo) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (const int signal : {SIGTERM, SIGINT}) {
    EXPECT_EXIT(
        {
          installStopSignals("stoptest");
          ::raise(signal);
          std::_Exit(stopSignal() == signal ? 0 : 4);
        },
        testing::ExitedWithCode(0), signal == SIGTERM ? "stoptest: SIGTERM" : "stoptest: SIGINT");
  }
}

// Without installStopSignals() nothing is caught (and this process is not touched).
TEST(StopSignalDeathTest, WithoutTheHandlerASignalKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ::raise(SIGTERM);
        std::_Exit(stopSignal() == 0 ? 6 : 7);
      },
      testing::KilledBySignal(SIGTERM), "");
}

}  // namespace
}  // namespace thinwire

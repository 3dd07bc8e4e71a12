#include "base/stop_signal.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>

namespace thinwire {
namespace {

std::atomic<int> received{0};
std::atomic<bool> installed{false};
char prefix[64] = "";
static_assert(std::atomic<int>::is_always_lock_free, "the handler stores into this atomic");

constexpr int kSignals[] = {SIGTERM, SIGUSR1, SIGINT};

void say(const char* text) {
  const ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

// Async-signal-safe: an atomic store and write(2). SA_RESETHAND has already restored the default
// action for this signal; the others are reset here, so that any second signal ends the process.
void onStopSignal(int signal) {
  for (int other : kSignals) {
    if (other != signal) std::signal(other, SIG_DFL);
  }
  int expected = 0;
  received.compare_exchange_strong(expected, signal);
  say(prefix);
  say(signal == SIGTERM ? ": SIGTERM" : signal == SIGUSR1 ? ": SIGUSR1" : ": SIGINT");
  say(": stopping with a checkpoint at the next stop check (train.stop_check_every); "
      "a second signal ends the process now\n");
}

}  // namespace

void installStopSignals(std::string_view program) {
  if (installed.exchange(true)) return;
  const size_t length = std::min(program.size(), sizeof(prefix) - 1);
  std::memcpy(prefix, program.data(), length);
  prefix[length] = '\0';
  struct sigaction action {};
  action.sa_handler = onStopSignal;
  action.sa_flags = SA_RESETHAND | SA_RESTART;
  sigemptyset(&action.sa_mask);
  for (int signal : kSignals) sigaddset(&action.sa_mask, signal);
  for (int signal : kSignals) ::sigaction(signal, &action, nullptr);
}

int stopSignal() { return received.load(std::memory_order_relaxed); }

}  // namespace thinwire

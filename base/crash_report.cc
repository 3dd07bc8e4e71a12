#include "base/crash_report.h"

#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

namespace thinwire {
namespace {

// Note [Crash report state]
// A signal handler can reach only process-wide state, so these few fixed buffers are the one
// place thinwire keeps any: written before the crash by installCrashReport/setCrashContext, read
// by the handler. No allocation happens in the handler.
constexpr size_t kTextBytes = 200;
std::array<char, kTextBytes + 1> gProgram{};  // written once, by installCrashReport
// Written by setCrashContext from any thread (with ranks as threads, from several at once):
// relaxed atomic characters, so concurrent writers and the handler never race; two writers at
// once can only interleave their text.
std::array<std::atomic<char>, kTextBytes + 1> gContext{};
static_assert(std::atomic<char>::is_always_lock_free, "the signal handler reads gContext");
constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

void copyText(std::array<char, kTextBytes + 1>& into, std::string_view text) {
  const size_t n = std::min(text.size(), kTextBytes);
  std::memcpy(into.data(), text.data(), n);
  into[n] = '\0';
}

void writeText(const char* text) {
  size_t left = std::strlen(text);
  while (left > 0) {
    const ssize_t written = ::write(STDERR_FILENO, text, left);
    if (written <= 0) return;
    text += written;
    left -= static_cast<size_t>(written);
  }
}

const char* signalName(int signal) {
  switch (signal) {
    case SIGSEGV:
      return "SIGSEGV (invalid memory access)";
    case SIGBUS:
      return "SIGBUS (bus error)";
    case SIGFPE:
      return "SIGFPE (arithmetic exception)";
    case SIGILL:
      return "SIGILL (illegal instruction)";
    case SIGABRT:
      return "SIGABRT (abort)";
    default:
      return "fatal signal";
  }
}

void onFatalSignal(int signal) {
  writeText("\n");
  writeText(gProgram.data());
  writeText(": killed by ");
  writeText(signalName(signal));
  char context[kTextBytes + 1];
  size_t length = 0;
  while (length < kTextBytes &&
         (context[length] = gContext[length].load(std::memory_order_relaxed)) != '\0') {
    ++length;
  }
  context[length] = '\0';
  if (length > 0) {
    writeText(" while ");
    writeText(context);
  }
  writeText("; native stack:\n");
  void* frames[64];
  const int count = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, count, STDERR_FILENO);
  // SA_RESETHAND restored the default action: re-raising ends the process by this signal.
  ::raise(signal);
}

}  // namespace

void installCrashReport(std::string_view program) {
  copyText(gProgram, program);
  // The first backtrace() loads libgcc_s (which allocates): do it now, not inside the handler.
  void* warmUp[2];
  (void)::backtrace(warmUp, 2);
  static std::array<char, 64 * 1024> alternateStack;
  stack_t stack{};
  stack.ss_sp = alternateStack.data();
  stack.ss_size = alternateStack.size();
  ::sigaltstack(&stack, nullptr);
  struct sigaction action {};
  action.sa_handler = onFatalSignal;
  action.sa_flags = SA_RESETHAND | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  for (int signal : kSignals) ::sigaction(signal, &action, nullptr);
}

void setCrashContext(std::string_view context) {
  const size_t n = std::min(context.size(), kTextBytes);
  for (size_t i = 0; i < n; ++i) gContext[i].store(context[i], std::memory_order_relaxed);
  gContext[n].store('\0', std::memory_order_relaxed);
}

}  // namespace thinwire

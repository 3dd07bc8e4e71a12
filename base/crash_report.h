// File: base/crash_report.h
//
// A last word from a process killed by a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT):
// one line naming the signal, the rank and what the process was doing, then the native stack
// (glibc backtrace_symbols_fd; names resolve for code linked with -rdynamic, as the thinwire
// executable is). The handler then restores the default action and re-raises, so the exit
// status still says "killed by signal" (139 for SIGSEGV) and core dumps work as before.
//
// Without it a crashed rank leaves only "rc 139" and the launcher's "exited on signal 11".
//
// Threading: installCrashReport() once, early in main (not thread-safe against itself);
// setCrashContext() from any thread at any time: it stores into a fixed buffer of relaxed atomic
// characters that the handler reads, so there is no data race; two threads setting it at once
// (ranks as threads) can only garble that one line. The handler itself uses only
// async-signal-safe calls, plus backtrace(), whose first (allocating) call is made at install.
//
// Example:
//   int main(int argc, char** argv) {
//     thinwire::installCrashReport("thinwire");
//     thinwire::setCrashContext("rank 3, step 120 backward");
//     ...
//   }
#pragma once

#include <string_view>

namespace thinwire {

// Installs the handler for the fatal signals on an alternate signal stack (so a stack overflow
// is reported too). `program` prefixes the report line; it is copied.
void installCrashReport(std::string_view program);

// What the report line says the process was doing; truncated to 200 bytes. Cheap: no allocation.
void setCrashContext(std::string_view context);

}  // namespace thinwire

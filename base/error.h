// File: base/error.h
//
// The one exception hierarchy of thinwire and the checking macros that throw it.
//
//   Error                 base of everything thinwire throws
//   ├── InvalidArgument   a caller passed a value outside the documented contract
//   ├── ConfigError       a YAML config or --set override is malformed or out of range
//   ├── CommError         a collective failed; the communicator is in an unknown state, recreate it
//   ├── TimeoutError      a wait exceeded its timeout (a CommError: the communicator is unusable)
//   └── DataError         a data file or checkpoint is missing, truncated or corrupt
//
// Every message carries the source location (file:line) and, where known, the rank. Messages are
// one line: what failed, the offending value, and what was expected.
//
// Threading: all functions are thread-safe; setErrorRank() is meant to be called once per process
// (or per thread-rank in tests) before work starts.
//
// Example:
//   TW_CHECK(ratio > 0 && ratio <= 1, "top-k ratio must be in (0, 1], got ", ratio);
//   TW_ASSERT(offset == total, "bucket layout covers ", offset, " of ", total, " elements");
//   try { run(); } catch (const thinwire::Error& e) { std::cerr << e.what() << "\n"; return 1; }
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace thinwire {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

class InvalidArgument : public Error {
 public:
  using Error::Error;
};

class ConfigError : public Error {
 public:
  using Error::Error;
};

class CommError : public Error {
 public:
  using Error::Error;
};

class TimeoutError : public CommError {
 public:
  using CommError::CommError;
};

class DataError : public Error {
 public:
  using Error::Error;
};

// Sets the rank that error messages from this thread name ("rank 3: ..."). -1 means unknown.
void setErrorRank(int rank);
int errorRank();

namespace detail {

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

// Formats "<message> [at file:line, rank r]".
std::string withLocation(const std::string& message, const char* file, int line);

template <typename E, typename... Args>
[[noreturn]] void throwError(const char* file, int line, const Args&... args) {
  throw E(withLocation(concat(args...), file, line));
}

}  // namespace detail
}  // namespace thinwire

// Throws thinwire::E with the concatenated message and the source location.
#define TW_THROW(E, ...) \
  ::thinwire::detail::throwError<::thinwire::E>(__FILE__, __LINE__, __VA_ARGS__)

// Caller error: throws InvalidArgument when `cond` is false.
#define TW_CHECK(cond, ...)                   \
  do {                                        \
    if (!(cond)) {                            \
      TW_THROW(InvalidArgument, __VA_ARGS__); \
    }                                         \
  } while (false)

// Internal invariant: throws Error ("internal error: ...") when `cond` is false.
#define TW_ASSERT(cond, ...)                                                     \
  do {                                                                           \
    if (!(cond)) {                                                               \
      TW_THROW(Error, "internal error: " #cond " does not hold: ", __VA_ARGS__); \
    }                                                                            \
  } while (false)

// File: tests/testing/error_message.h
//
// Runs an action that must throw a given exception type and returns its message, so a test can
// check what the message names.
//
// Example:
//   std::string what = errorMessageOf<DataError>([&] { readStateFile(path); });
//   EXPECT_NE(what.find("checksum"), std::string::npos) << what;
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace thinwire::testing {

// The message of the `E` that `action` throws; records a test failure and returns "" when it
// throws nothing. Other exception types propagate.
template <typename E>
std::string errorMessageOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception, none was thrown";
  return "";
}

}  // namespace thinwire::testing

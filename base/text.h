// File: base/text.h
//
// Small text helpers shared by modules that write machine-readable output.
//
// Threading: pure functions, thread-safe.
//
// Example:
//   std::string quoted = jsonQuote("say \"hi\"\n");   // "\"say \\\"hi\\\"\\n\""
#pragma once

#include <string>

namespace thinwire {

// `text` as a JSON string literal, quotes included, with control characters escaped. The result
// is also a valid YAML double-quoted scalar (JSON's escapes are a subset of YAML's).
std::string jsonQuote(const std::string& text);

}  // namespace thinwire

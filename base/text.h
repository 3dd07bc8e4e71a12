// File: base/text.h
//
// Small text helpers shared by modules that write machine-readable output or read addresses.
//
// Threading: pure functions, thread-safe.
//
// Example:
//   std::string quoted = jsonQuote("say \"hi\"\n");   // "\"say \\\"hi\\\"\\n\""
//   auto [host, port] = parseHostPort("node-3:29500", "THINWIRE_STORE");   // "node-3", 29500
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace thinwire {

// `text` as a JSON string literal, quotes included, with control characters escaped. The result
// is also a valid YAML double-quoted scalar (JSON's escapes are a subset of YAML's).
std::string jsonQuote(const std::string& text);

// Splits "HOST:PORT" at the last ':' (IPv6 in brackets is not supported). Throws InvalidArgument
// naming `what` and quoting `address` for a missing host, or a port that is not a number in
// 0..65535. Every HOST:PORT the project reads (stores, peers, status endpoints) goes through here.
std::pair<std::string, uint16_t> parseHostPort(const std::string& address, const std::string& what);

}  // namespace thinwire

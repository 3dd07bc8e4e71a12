// File: bench/bench_common.h
//
// Small helpers shared by the `thinwire bench` programs: argument parsing with messages that name
// the flag, the median of timings, and byte sizes printed the way the tables show them.
//
// Ownership: values only. Threading: pure functions, thread-safe.
//
// Example:
//   std::vector<int64_t> sizes = parseSizeList("--sizes", "4K,64M");   // {4096, 67108864}
//   double seconds = median({0.3, 0.1, 0.2});                          // 0.2
//   std::cout << formatBytes(sizes[1]);                                // "64 MB"
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace thinwire::bench {

// Parses one size in bytes: digits with an optional K/M/G suffix (powers of 1024), > 0. Throws
// InvalidArgument naming `flag` and `text`.
int64_t parseByteSize(const std::string& flag, const std::string& text);

// Parses a comma-separated list of parseByteSize() values; empty lists and empty items throw
// InvalidArgument.
std::vector<int64_t> parseSizeList(const std::string& flag, const std::string& text);

// Parses a decimal integer in [minimum, maximum]. Throws InvalidArgument naming `flag` and `text`.
int parseCount(const std::string& flag, const std::string& text, int minimum, int maximum);

// Splits a comma-separated list ("a,b,c"). Throws InvalidArgument naming `flag` for an empty
// list or a trailing comma; empty items are returned as "" for the caller to reject by name.
std::vector<std::string> splitNames(const std::string& flag, const std::string& text);

// The median of `values` (the mean of the two middle ones for an even count). Throws
// InvalidArgument when `values` is empty.
double median(std::vector<double> values);

// "64 MB", "16 KB" or "1000 B": the largest unit (powers of 1024) that divides `bytes` exactly.
std::string formatBytes(int64_t bytes);

}  // namespace thinwire::bench

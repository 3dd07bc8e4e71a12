#include "bench/bench_common.h"

#include <algorithm>
#include <sstream>

#include "base/error.h"

namespace thinwire::bench {

int64_t parseByteSize(const std::string& flag, const std::string& text) {
  TW_CHECK(!text.empty(), flag, ": empty size, expected e.g. 4K or 64M");
  int64_t multiplier = 1;
  std::string digits = text;
  switch (text.back()) {
    case 'K':
    case 'k':
      multiplier = int64_t{1} << 10;
      break;
    case 'M':
    case 'm':
      multiplier = int64_t{1} << 20;
      break;
    case 'G':
    case 'g':
      multiplier = int64_t{1} << 30;
      break;
    default:
      break;
  }
  if (multiplier != 1) digits.pop_back();
  size_t used = 0;
  int64_t value = -1;
  // std::stoll accepts leading blanks and signs; a size is digits only.
  const bool allDigits = !digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  if (allDigits) {
    try {
      value = std::stoll(digits, &used);
    } catch (const std::exception&) {
      used = 0;
    }
  }
  TW_CHECK(allDigits && used == digits.size() && value > 0 &&
               value <= std::numeric_limits<int64_t>::max() / multiplier,
           flag, ": '", text, "' is not a positive size, expected e.g. 4096, 4K or 64M");
  return value * multiplier;
}

std::vector<int64_t> parseSizeList(const std::string& flag, const std::string& text) {
  TW_CHECK(!text.empty(), flag, ": empty list");
  std::vector<int64_t> sizes;
  std::stringstream list(text);
  std::string item;
  while (std::getline(list, item, ',')) sizes.push_back(parseByteSize(flag, item));
  // getline drops a trailing empty item ("4K,"), which is as malformed as an inner one.
  TW_CHECK(text.back() != ',', flag, ": '", text, "' ends with a comma");
  return sizes;
}

int parseCount(const std::string& flag, const std::string& text, int minimum, int maximum) {
  size_t used = 0;
  long long value = static_cast<long long>(minimum) - 1;
  const bool allDigits = !text.empty() && std::all_of(text.begin(), text.end(),
                                                      [](char c) { return c >= '0' && c <= '9'; });
  if (allDigits) {
    try {
      value = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
  }
  TW_CHECK(allDigits && used == text.size() && value >= minimum && value <= maximum, flag, " '",
           text, "' is not an integer in [", minimum, ", ", maximum, "]");
  return static_cast<int>(value);
}

std::vector<std::string> splitNames(const std::string& flag, const std::string& text) {
  TW_CHECK(!text.empty() && text.back() != ',', flag, ": '", text,
           "' is not a comma-separated list of names");
  std::vector<std::string> names;
  std::stringstream list(text);
  std::string item;
  while (std::getline(list, item, ',')) names.push_back(item);
  return names;
}

double median(std::vector<double> values) {
  TW_CHECK(!values.empty(), "median of no values");
  std::sort(values.begin(), values.end());
  size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : 0.5 * (values[middle - 1] + values[middle]);
}

std::string formatBytes(int64_t bytes) {
  std::ostringstream out;
  if (bytes >= (int64_t{1} << 20) && bytes % (int64_t{1} << 20) == 0) {
    out << (bytes >> 20) << " MB";
  } else if (bytes >= 1024 && bytes % 1024 == 0) {
    out << (bytes >> 10) << " KB";
  } else {
    out << bytes << " B";
  }
  return out.str();
}

}  // namespace thinwire::bench

#include "base/text.h"

#include <cstdio>

#include "base/error.h"

namespace thinwire {

std::string jsonQuote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::pair<std::string, uint16_t> parseHostPort(const std::string& address,
                                               const std::string& what) {
  const size_t colon = address.rfind(':');
  TW_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < address.size(), what,
           " must be HOST:PORT, got '", address, "'");
  const std::string portText = address.substr(colon + 1);
  const bool digits = portText.find_first_not_of("0123456789") == std::string::npos;
  TW_CHECK(digits && portText.size() <= 5 && std::stol(portText) <= 65535, what,
           " must be HOST:PORT with a port in 0..65535, got '", address, "'");
  return {address.substr(0, colon), static_cast<uint16_t>(std::stol(portText))};
}

}  // namespace thinwire

#include "base/checksum.h"

#include <array>

namespace thinwire {
namespace {

std::array<uint32_t, 256> makeTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1U) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t previous) {
  static const std::array<uint32_t, 256> kTable = makeTable();
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint32_t c = previous ^ 0xFFFFFFFFU;
  for (size_t i = 0; i < size; ++i) c = kTable[(c ^ bytes[i]) & 0xFFU] ^ (c >> 8);
  return c ^ 0xFFFFFFFFU;
}

}  // namespace thinwire

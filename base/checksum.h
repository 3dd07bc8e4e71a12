// File: base/checksum.h
//
// CRC-32 (IEEE 802.3 polynomial, the one zlib and gzip use) for checkpoint integrity.
//
// Threading: pure functions, thread-safe.
//
// Example:
//   uint32_t crc = crc32(data.data(), data.size());
//   crc = crc32(more.data(), more.size(), crc);   // continue over a second span
#pragma once

#include <cstddef>
#include <cstdint>

namespace thinwire {

// Returns the CRC-32 of `size` bytes at `data`, continuing from `previous` (0 to start).
uint32_t crc32(const void* data, size_t size, uint32_t previous = 0);

}  // namespace thinwire

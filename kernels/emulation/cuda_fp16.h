// File: kernels/emulation/cuda_fp16.h
//
// Stands in for the CUDA toolkit's cuda_fp16.h in the emulated build (see emulator.h): the half
// type as its 16 bits, and the two conversions kernels/*.cu use, IEEE binary16 with round to
// nearest even, as the device computes them.
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
  uint16_t bits;
};

inline __half __float2half_rn(float value) {
  uint32_t f;
  std::memcpy(&f, &value, sizeof f);
  const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
  const uint32_t magnitude = f & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return {static_cast<uint16_t>(sign | 0x7e00u)};   // NaN
  if (magnitude >= 0x477ff000u) return {static_cast<uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): a subnormal, in units of 2^-24.
    if (magnitude < 0x33000000u) return {sign};  // at most 2^-25: rounds to zero
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exponent;  // value = mantissa * 2^(exponent - 150); units 2^-24
    const uint32_t kept = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    const uint32_t rounded = kept + (rest > halfway || (rest == halfway && (kept & 1u)) ? 1u : 0u);
    return {static_cast<uint16_t>(sign | rounded)};
  }
  const uint32_t exponent = (magnitude >> 23) - 112;  // rebias 127 -> 15
  const uint32_t mantissa = magnitude & 0x7fffffu;
  uint32_t half = (exponent << 10) | (mantissa >> 13);
  const uint32_t rest = mantissa & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent
  return {static_cast<uint16_t>(sign | half)};
}

inline float __half2float(__half value) {
  const uint32_t sign = static_cast<uint32_t>(value.bits & 0x8000u) << 16;
  const uint32_t exponent = (value.bits >> 10) & 0x1fu;
  const uint32_t mantissa = value.bits & 0x3ffu;
  uint32_t f;
  if (exponent == 0x1fu) {
    f = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {
    f = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else {
    float magnitude = static_cast<float>(mantissa) * 0x1p-24f;  // exact
    std::memcpy(&f, &magnitude, sizeof f);
    f |= sign;
  }
  float result;
  std::memcpy(&result, &f, sizeof result);
  return result;
}

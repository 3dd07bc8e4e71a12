// File: core/data/seeded_random.h
//
// SeededRandom: a small, explicitly seeded random stream whose output is identical on every
// standard library and libtorch version, for everything in thinwire that must be reproducible
// from a seed (data order, synthetic data, model initialisation). It wraps std::mt19937_64,
// whose raw output the C++ standard fixes, and derives bounded integers, uniforms and normals
// itself, because std::uniform_int_distribution, std::shuffle and std::normal_distribution are
// implementation-defined and differ between libstdc++ and libc++.
//
// mixSeed() derives independent stream seeds from (seed, purpose) pairs, so that e.g. epoch 3's
// permutation and the synthetic test set never share a stream with anything else.
//
// Ownership: a value type. Threading: not thread-safe; give each thread its own stream.
//
// Example:
//   SeededRandom rng(mixSeed(seed, epoch));
//   uint64_t j = rng.below(n);          // uniform in [0, n)
//   double x = rng.normal();            // standard normal
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string_view>

namespace thinwire::core {

// SplitMix64 finaliser: a bijective, well-mixing 64-bit hash.
inline uint64_t mixBits(uint64_t value) {
  value += 0x9e3779b97f4a7c15ULL;
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ULL;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebULL;
  return value ^ (value >> 31);
}

// A seed for the stream identified by (seed, purpose); distinct purposes give unrelated streams.
inline uint64_t mixSeed(uint64_t seed, uint64_t purpose) {
  return mixBits(mixBits(seed) ^ (purpose * 0xd6e8feb86659fd93ULL + 0x632be59bd9b4e019ULL));
}

// FNV-1a of `text`, for naming streams by a string (e.g. a parameter name).
inline uint64_t hashName(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

class SeededRandom {
 public:
  explicit SeededRandom(uint64_t seed) : engine_(seed) {}

  // Uniform 64-bit value.
  uint64_t next() { return engine_(); }

  // Uniform integer in [0, bound); bound must be >= 1. Rejection sampling removes the modulo
  // bias, so the result depends only on the engine's (standard-defined) output.
  uint64_t below(uint64_t bound) {
    // 2^64 mod bound: values below it would make low residues more likely.
    const uint64_t threshold = (0 - bound) % bound;
    for (;;) {
      const uint64_t value = engine_();
      if (value >= threshold) return value % bound;
    }
  }

  // Uniform double in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  // Standard normal via Box-Muller; the second value of each pair is kept for the next call.
  double normal() {
    if (hasSpare_) {
      hasSpare_ = false;
      return spare_;
    }
    // 1 - uniform() lies in (0, 1], so the logarithm is finite.
    const double radius = std::sqrt(-2.0 * std::log(1.0 - uniform()));
    const double angle = 2.0 * kPi * uniform();
    spare_ = radius * std::sin(angle);
    hasSpare_ = true;
    return radius * std::cos(angle);
  }

 private:
  static constexpr double kPi = 3.14159265358979323846;
  std::mt19937_64 engine_;
  double spare_ = 0.0;
  bool hasSpare_ = false;
};

}  // namespace thinwire::core

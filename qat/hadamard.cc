#include "qat/hadamard.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "base/error.h"
#include "qat/cuda_rows.h"

namespace thinwire::qat {

namespace {

// 1/sqrt(128) in fp32, applied once at the end of each block: the butterflies are exact
// integer-coefficient sums, so one rounding of the scale keeps H orthogonal to fp32 precision.
float blockScale() {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(kHadamardBlock)));
}

#if !defined(__SSE2__)

// The reference loop: stage by stage over one block of 128 floats, in place.
void fwhtBlockScalar(float* block) {
  for (int64_t half = 1; half < kHadamardBlock; half *= 2) {
    for (int64_t start = 0; start < kHadamardBlock; start += 2 * half) {
      float* a = block + start;
      float* b = a + half;
      for (int64_t j = 0; j < half; ++j) {
        const float x = a[j];
        const float y = b[j];
        a[j] = x + y;
        b[j] = x - y;
      }
    }
  }
  const float scale = blockScale();
  for (int64_t j = 0; j < kHadamardBlock; ++j) block[j] *= scale;
}

#else

// Note [Vector butterflies]
// A block of 128 floats is 32 SSE vectors v[0..31] (v[k] = floats 4k..4k+3). Stage `half`
// pairs element i with i + half; for half = 1 and 2 both partners sit in one vector, for
// half = 4 .. 64 they sit in vectors k and k + half/4. Two passes over the block:
//   A: per group of 8 consecutive vectors (32 floats, loaded from the source): stages 1 and 2
//      inside each vector, then stages 4, 8, 16 across the 8 vectors;
//   B: per i in 0..7 the vectors i, i+8, i+16, i+24: stages 32 and 64, then the scale.
// Inside a vector, stage 1 computes [a0+a1, -a1+a0, a2+a3, -a3+a2] as v with its odd lanes'
// sign flipped plus v with neighbouring lanes swapped; stage 2 likewise with the upper pair.
// IEEE addition is commutative and x - y is defined as x + (-y), so every output is the same
// fp32 value as the scalar loop's a + b or a - b: the transform is bit for bit the reference.

inline __m128 stageOne(__m128 v, __m128 oddSigns) {
  const __m128 swapped = _mm_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1));
  return _mm_add_ps(_mm_xor_ps(v, oddSigns), swapped);
}

inline __m128 stageTwo(__m128 v, __m128 upperSigns) {
  const __m128 swapped = _mm_shuffle_ps(v, v, _MM_SHUFFLE(1, 0, 3, 2));
  return _mm_add_ps(_mm_xor_ps(v, upperSigns), swapped);
}

inline void butterfly(__m128& a, __m128& b) {
  const __m128 sum = _mm_add_ps(a, b);
  b = _mm_sub_ps(a, b);
  a = sum;
}

void fwhtBlockVector(const float* source, float* target) {
  const __m128 oddSigns = _mm_castsi128_ps(_mm_set_epi32(INT32_MIN, 0, INT32_MIN, 0));
  const __m128 upperSigns = _mm_castsi128_ps(_mm_set_epi32(INT32_MIN, INT32_MIN, 0, 0));
  for (int64_t group = 0; group < kHadamardBlock; group += 32) {
    __m128 v[8];
    for (int k = 0; k < 8; ++k) {
      v[k] = stageTwo(stageOne(_mm_loadu_ps(source + group + 4 * k), oddSigns), upperSigns);
    }
    for (int k = 0; k < 8; k += 2) butterfly(v[k], v[k + 1]);  // half = 4
    for (int k : {0, 1, 4, 5}) butterfly(v[k], v[k + 2]);      // half = 8
    for (int k = 0; k < 4; ++k) butterfly(v[k], v[k + 4]);     // half = 16
    for (int k = 0; k < 8; ++k) _mm_storeu_ps(target + group + 4 * k, v[k]);
  }
  const __m128 scale = _mm_set1_ps(blockScale());
  for (int64_t i = 0; i < 8; ++i) {
    float* p = target + 4 * i;
    __m128 w0 = _mm_loadu_ps(p);
    __m128 w1 = _mm_loadu_ps(p + 32);
    __m128 w2 = _mm_loadu_ps(p + 64);
    __m128 w3 = _mm_loadu_ps(p + 96);
    butterfly(w0, w1);  // half = 32
    butterfly(w2, w3);
    butterfly(w0, w2);  // half = 64
    butterfly(w1, w3);
    _mm_storeu_ps(p, _mm_mul_ps(w0, scale));
    _mm_storeu_ps(p + 32, _mm_mul_ps(w1, scale));
    _mm_storeu_ps(p + 64, _mm_mul_ps(w2, scale));
    _mm_storeu_ps(p + 96, _mm_mul_ps(w3, scale));
  }
}

#endif  // __SSE2__

}  // namespace

void fwhtBlocks(const float* source, float* target, int64_t length) {
  for (int64_t offset = 0; offset < length; offset += kHadamardBlock) {
#if defined(__SSE2__)
    fwhtBlockVector(source + offset, target + offset);
#else
    if (source != target)
      std::copy(source + offset, source + offset + kHadamardBlock, target + offset);
    fwhtBlockScalar(target + offset);
#endif
  }
}

void fwhtBlocksInPlace(float* data, int64_t length) { fwhtBlocks(data, data, length); }

namespace {

// Rotates a contiguous fp32 copy of `x`; returns it in x's dtype.
at::Tensor rotate(const at::Tensor& x) {
  const at::Tensor input = x.to(at::kFloat).contiguous();
  const int64_t d = input.size(-1);
  const int64_t rows = d == 0 ? 0 : input.numel() / d;
  if (input.is_cuda()) {
    at::Tensor work = input.clone();
    at::Tensor rowsView = work.view({rows, d});
    if (rows > 0) hadamardRowsOnCudaInPlace(rowsView);
    return work.to(x.scalar_type());
  }
  // The transform reads the input and writes a fresh tensor in one pass (no copy first).
  at::Tensor work = at::empty_like(input);
  const float* source = input.data_ptr<float>();
  float* target = work.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fwhtBlocks(source + r * d, target + r * d, d);
  });
  return work.to(x.scalar_type());
}

struct BlockHadamardFunction : public torch::autograd::Function<BlockHadamardFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* /*ctx*/, const at::Tensor& x) {
    return rotate(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* /*ctx*/,
                                                 torch::autograd::variable_list grads) {
    return {rotate(grads[0])};
  }
};

}  // namespace

at::Tensor blockHadamard(const at::Tensor& x) {
  TW_CHECK(x.dim() >= 1 && x.size(-1) % kHadamardBlock == 0,
           "the block Hadamard transform needs a last dimension that is a multiple of 128, got "
           "shape ",
           x.sizes());
  TW_CHECK(at::isFloatingType(x.scalar_type()), "blockHadamard needs a float tensor, got ",
           x.scalar_type());
  return BlockHadamardFunction::apply(x);
}

}  // namespace thinwire::qat

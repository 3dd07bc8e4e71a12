#include "compressors/chunked_compressor.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "base/error.h"
#include "compressors/cast_compressor.h"
#include "compressors/identity_compressor.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"

namespace thinwire::compressors {
namespace {

at::Tensor randomInput(int64_t numel, uint64_t seed) {
  at::Tensor values = at::empty({numel}, at::kFloat);
  uint64_t state = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (int64_t i = 0; i < numel; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    // Distinct magnitudes with probability ~1: 24 random mantissa bits, sign from another bit.
    const float magnitude = static_cast<float>((state >> 40) & 0xFFFFFF) / 16777216.0f + 0.001f;
    values.data_ptr<float>()[i] = ((state >> 20) & 1) ? magnitude : -magnitude;
  }
  return values;
}

TEST(ChunkedCompressorTest, ChunkRangesOfSmallCases) {
  auto range = [](int64_t numel, int parts, int64_t alignment, int index) {
    const ChunkRange r = ChunkedCompressor::chunkRange(numel, parts, alignment, index);
    return std::pair<int64_t, int64_t>(r.offset, r.length);
  };
  using P = std::pair<int64_t, int64_t>;
  // 10 elements in 4 parts: 3, 3, 2, 2.
  EXPECT_EQ(range(10, 4, 1, 0), P(0, 3));
  EXPECT_EQ(range(10, 4, 1, 1), P(3, 3));
  EXPECT_EQ(range(10, 4, 1, 2), P(6, 2));
  EXPECT_EQ(range(10, 4, 1, 3), P(8, 2));
  // 20 elements, alignment 8: blocks [0,8) [8,16) [16,20), the fourth part empty.
  EXPECT_EQ(range(20, 4, 8, 0), P(0, 8));
  EXPECT_EQ(range(20, 4, 8, 1), P(8, 8));
  EXPECT_EQ(range(20, 4, 8, 2), P(16, 4));
  EXPECT_EQ(range(20, 4, 8, 3), P(20, 0));
  // numel < parts: trailing parts empty.
  EXPECT_EQ(range(2, 4, 1, 0), P(0, 1));
  EXPECT_EQ(range(2, 4, 1, 1), P(1, 1));
  EXPECT_EQ(range(2, 4, 1, 2), P(2, 0));
  EXPECT_EQ(range(2, 4, 1, 3), P(2, 0));
  // numel 0 and a single part.
  EXPECT_EQ(range(0, 3, 64, 1), P(0, 0));
  EXPECT_EQ(range(7, 1, 64, 0), P(0, 7));
}

TEST(ChunkedCompressorTest, ChunkRangesTileAlignedAndBalanced) {
  for (int64_t numel : {0, 1, 7, 8, 63, 64, 65, 100, 4101}) {
    for (int parts : {1, 2, 3, 4, 7}) {
      for (int64_t alignment : {1, 8, 64}) {
        int64_t expectedOffset = 0;
        std::vector<int64_t> blockCounts;
        for (int index = 0; index < parts; ++index) {
          const ChunkRange r = ChunkedCompressor::chunkRange(numel, parts, alignment, index);
          SCOPED_TRACE(::testing::Message() << "numel " << numel << " parts " << parts
                                            << " alignment " << alignment << " index " << index);
          EXPECT_EQ(r.offset, expectedOffset);  // contiguous, in order
          EXPECT_GE(r.length, 0);
          if (r.length > 0) {
            EXPECT_EQ(r.offset % alignment, 0);
          }
          if (r.offset + r.length < numel) {
            EXPECT_EQ(r.length % alignment, 0);
          }
          blockCounts.push_back((r.length + alignment - 1) / alignment);
          expectedOffset = r.offset + r.length;
        }
        EXPECT_EQ(expectedOffset, numel);  // covers everything
        const auto [fewest, most] = std::minmax_element(blockCounts.begin(), blockCounts.end());
        EXPECT_LE(*most - *fewest, 1);  // as equal as the alignment allows
        EXPECT_TRUE(std::is_sorted(blockCounts.rbegin(), blockCounts.rend()));  // empties trail
      }
    }
  }
}

TEST(ChunkedCompressorTest, RejectsInvalidArguments) {
  IdentityCompressor identity;
  EXPECT_THROW(ChunkedCompressor(identity, 0), InvalidArgument);
  EXPECT_THROW(ChunkedCompressor::chunkRange(10, 0, 1, 0), InvalidArgument);
  EXPECT_THROW(ChunkedCompressor::chunkRange(10, 2, 0, 0), InvalidArgument);
  EXPECT_THROW(ChunkedCompressor::chunkRange(10, 2, 1, 2), InvalidArgument);
  EXPECT_THROW(ChunkedCompressor::chunkRange(-1, 2, 1, 0), InvalidArgument);
}

// Sign with one scale per 64 elements has alignment 64, so chunks hold whole scale blocks and
// chunked compression equals whole-tensor compression: same decode, same residual, bit for bit.
TEST(ChunkedCompressorTest, ChunkedSignEqualsWholeSign) {
  SignCompressor sign(SignOptions{.chunk = 64});
  LayerParams params;
  ASSERT_EQ(sign.alignment(params), 64);
  for (int64_t numel : {0, 1, 7, 64, 100, 1000, 4101}) {
    for (int parts : {1, 2, 3, 4, 7}) {
      SCOPED_TRACE(::testing::Message() << "numel " << numel << " parts " << parts);
      ChunkedCompressor chunked(sign, parts);
      const at::Tensor start = randomInput(numel, 3);
      const at::Tensor addend = randomInput(numel, 4);
      at::Tensor wholeResidual = start.clone();
      at::Tensor chunkedResidual = start.clone();
      Payload whole;
      Payload split;
      sign.compress(wholeResidual, addend, 0.5f, whole, params);
      chunked.compress(chunkedResidual, addend, 0.5f, split, params);
      EXPECT_TRUE(at::equal(wholeResidual, chunkedResidual));
      ASSERT_EQ(static_cast<int>(split.parts.size()), parts);
      EXPECT_EQ(split.numel, numel);
      EXPECT_EQ(split.wireBytes(), chunked.payloadBytes(numel, params));
      at::Tensor wholeOut = at::zeros({numel}, at::kFloat);
      at::Tensor chunkedOut = at::zeros({numel}, at::kFloat);
      sign.decompressAdd(whole, wholeOut, 0.25f, params);
      chunked.decompressAdd(split, chunkedOut, 0.25f, params);
      EXPECT_TRUE(at::equal(wholeOut, chunkedOut));
    }
  }
}

// Top-k applies its ratio per chunk: each part keeps max(1, floor(ratio * length)) of its own
// range, which this test selects independently by sorting.
TEST(ChunkedCompressorTest, ChunkedTopKKeepsTheLargestOfEachChunk) {
  TopKCompressor topk;
  LayerParams params;
  params.ratio = 0.1;
  for (int64_t numel : {1, 7, 13, 100, 4101}) {
    for (int parts : {1, 3, 4, 7}) {
      SCOPED_TRACE(::testing::Message() << "numel " << numel << " parts " << parts);
      ChunkedCompressor chunked(topk, parts);
      const at::Tensor input = randomInput(numel, 11);
      at::Tensor residual = input.clone();
      Payload payload;
      chunked.compress(residual, at::Tensor(), 1.0f, payload, params);
      at::Tensor decoded = at::zeros({numel}, at::kFloat);
      chunked.decompressAdd(payload, decoded, 1.0f, params);

      at::Tensor expected = at::zeros({numel}, at::kFloat);
      int64_t expectedBytes = 0;
      for (int part = 0; part < parts; ++part) {
        const ChunkRange r = ChunkedCompressor::chunkRange(numel, parts, 1, part);
        if (r.length == 0) {
          EXPECT_EQ(payload.parts[part], 0);
          continue;
        }
        const int64_t k = std::max<int64_t>(1, static_cast<int64_t>(std::floor(0.1 * r.length)));
        std::vector<int64_t> order(r.length);
        std::iota(order.begin(), order.end(), 0);
        const float* x = input.data_ptr<float>() + r.offset;
        std::sort(order.begin(), order.end(),
                  [x](int64_t a, int64_t b) { return std::abs(x[a]) > std::abs(x[b]); });
        for (int64_t j = 0; j < k; ++j) {
          expected.data_ptr<float>()[r.offset + order[j]] = x[order[j]];
        }
        EXPECT_EQ(payload.parts[part], k * 8);  // int32 index + float32 value
        expectedBytes += k * 8;
      }
      EXPECT_EQ(payload.wireBytes(), expectedBytes);
      EXPECT_TRUE(at::equal(decoded, expected));
      EXPECT_TRUE(at::equal(residual + decoded, input));  // exact residual
    }
  }
}

// Summable payloads keep their element dtype (Note [Chunked payload dtype]); parts are bytes.
TEST(ChunkedCompressorTest, SummablePayloadsKeepTheirDtype) {
  IdentityCompressor identity;
  CastCompressor fp16(at::kHalf);
  LayerParams params;
  const at::Tensor input = randomInput(13, 5);
  for (Compressor* inner : {static_cast<Compressor*>(&identity), static_cast<Compressor*>(&fp16)}) {
    ChunkedCompressor chunked(*inner, 4);
    EXPECT_TRUE(chunked.isSummable());
    at::Tensor residual = input.clone();
    Payload payload;
    chunked.compress(residual, at::Tensor(), 1.0f, payload, params);
    const at::ScalarType dtype = inner == &identity ? at::kFloat : at::kHalf;
    EXPECT_EQ(payload.data.scalar_type(), dtype);
    EXPECT_EQ(payload.data.numel(), 13);
    const int64_t elementSize = inner == &identity ? 4 : 2;
    EXPECT_EQ(payload.parts, (std::vector<int64_t>{4 * elementSize, 3 * elementSize,
                                                   3 * elementSize, 3 * elementSize}));
    EXPECT_TRUE(at::equal(payload.data.to(at::kFloat), input.to(dtype).to(at::kFloat)));
    at::Tensor out = at::zeros({13}, at::kFloat);
    chunked.decompressAdd(payload, out, 2.0f, params);
    EXPECT_TRUE(at::equal(out, input.to(dtype).to(at::kFloat) * 2));
  }
}

TEST(ChunkedCompressorTest, SizesAndDeltaComeFromTheChunks) {
  TopKCompressor topk;
  TopKCompressor sampled(TopKOptions{.sampled = true});
  LayerParams params;
  params.ratio = 0.1;
  ChunkedCompressor chunked(topk, 3);
  // 100 elements: chunks 34, 33, 33 -> k = 3, 3, 3.
  EXPECT_EQ(chunked.payloadBytes(100, params), 9 * 8);
  EXPECT_EQ(chunked.maxPayloadBytes(100, params), 9 * 8);
  EXPECT_DOUBLE_EQ(chunked.deltaHint(100, params), 3.0 / 34.0);
  EXPECT_EQ(chunked.payloadBytes(0, params), 0);
  ChunkedCompressor chunkedSampled(sampled, 3);
  EXPECT_EQ(chunkedSampled.payloadBytes(100, params), -1);
  EXPECT_EQ(chunkedSampled.maxPayloadBytes(100, params), 3 * sampled.maxPayloadBytes(34, params));
  EXPECT_EQ(chunked.name(), "chunked_topk");
}

TEST(ChunkedCompressorTest, DecodeRejectsMismatchedParts) {
  IdentityCompressor identity;
  ChunkedCompressor chunked(identity, 2);
  LayerParams params;
  at::Tensor residual = randomInput(10, 1);
  Payload payload;
  chunked.compress(residual, at::Tensor(), 1.0f, payload, params);
  at::Tensor out = at::zeros({10}, at::kFloat);
  Payload wrongCount = payload;
  wrongCount.parts = {40};
  EXPECT_THROW(chunked.decompressAdd(wrongCount, out, 1.0f, params), InvalidArgument);
  Payload wrongBytes = payload;
  wrongBytes.parts = {20, 16};
  EXPECT_THROW(chunked.decompressAdd(wrongBytes, out, 1.0f, params), InvalidArgument);
  at::Tensor shortOut = at::zeros({9}, at::kFloat);
  EXPECT_THROW(chunked.decompressAdd(payload, shortOut, 1.0f, params), InvalidArgument);
}

TEST(ChunkedCompressorTest, PayloadBytesRoundTripAtAnyOffset) {
  Payload payload;
  payload.data = at::arange(6, at::kFloat);
  payload.numel = 6;
  at::Tensor bytes = bytesOf(payload);
  EXPECT_EQ(bytes.scalar_type(), at::kByte);
  EXPECT_EQ(bytes.numel(), 24);
  EXPECT_EQ(bytesOf(Payload{}).numel(), 0);
  // A float payload starting at an odd byte offset of a larger buffer reads back exactly.
  at::Tensor buffer = at::zeros({27}, at::kByte);
  buffer.narrow(0, 3, 24).copy_(bytes);
  Payload back = payloadFromBytes(buffer, 3, 24, at::kFloat, 6);
  EXPECT_EQ(back.numel, 6);
  EXPECT_TRUE(at::equal(back.data, payload.data));
  Payload aligned = payloadFromBytes(bytes, 8, 16, at::kFloat, 4);
  EXPECT_TRUE(at::equal(aligned.data, at::arange(2, 6, at::kFloat)));
  EXPECT_THROW(payloadFromBytes(buffer, 3, 23, at::kFloat, 6), InvalidArgument);
  EXPECT_THROW(payloadFromBytes(buffer, 20, 8, at::kByte, 6), InvalidArgument);
}

}  // namespace
}  // namespace thinwire::compressors

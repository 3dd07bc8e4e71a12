// File: kernels/launch.h
//
// The raw launchers behind thinwire::kernels (see kernels/kernels.h for the tensor API): plain C++
// declarations, no CUDA or ATen types, so that the .cu files compile with nvcc alone (fast, and
// independent of the libtorch version) and the .cc wrappers with the host compiler alone.
// Pointers are device pointers; `stream` is a cudaStream_t passed as void* (nullptr = the legacy
// default stream). Every launcher is asynchronous on `stream` unless it says otherwise and returns
// the CUDA error code of its launch (0 = cudaSuccess), which the wrappers turn into exceptions.
//
// Ownership: launchers own nothing; callers keep every buffer alive until the stream has run.
// Threading: thread-safe (no state).
//
// Example:
//   int error = detail::launchMagnitudeKeys(values, count, keys, stream);
//   if (error != 0) TW_THROW(Error, "magnitude keys: ", detail::errorString(error));
#pragma once

#include <cstdint>
#include <string>

namespace thinwire::kernels::detail {

// ---- runtime (kernels/runtime.cu) ----
int deviceCount();                   // 0 when no driver or no device; never throws
std::string errorString(int error);  // cudaGetErrorString
int lastError();                     // cudaGetLastError (and clears it)
int synchronizeDevice();             // cudaDeviceSynchronize
// Blocking until the copy is done: device -> host `bytes` bytes, ordered after `stream`.
int copyToHost(void* host, const void* device, int64_t bytes, void* stream);
// Asynchronous device -> device copy on `stream`.
int copyDeviceToDevice(void* destination, const void* source, int64_t bytes, void* stream);

// ---- top-k (kernels/top_k.cu) ----
// Elements per tile of the threshold pass: candidates of tile t go to slots [t * kTile, ...).
inline constexpr int64_t kTopKTile = 4096;
// keys[s] = magnitudeKey(residual[j] + scale * addend[j]) (addend may be null: residual[j]) for
// j = first + s * stride, s < count. Read only.
int launchSampleKeys(const float* residual,
                     const float* addend,
                     float scale,
                     int64_t first,
                     int64_t stride,
                     int64_t count,
                     int32_t* keys,
                     void* stream);
// p = residual + scale * addend (addend null: p = residual); an element whose magnitude key is
// >= thresholdKey is a candidate: its (index, p) goes to the next slot of its tile (ascending),
// and the residual becomes 0 there when zeroCandidates, else p; other elements get residual = p.
// tileCounts[t] receives the candidates of tile t. Slots hold numel entries.
int launchThresholdPass(float* residual,
                        const float* addend,
                        float scale,
                        int64_t numel,
                        uint32_t thresholdKey,
                        bool zeroCandidates,
                        int32_t* slotIndices,
                        float* slotValues,
                        int32_t* tileCounts,
                        void* stream);
// Exclusive prefix sums of tileCounts into tileOffsets[0, tiles], tileOffsets[tiles] = total.
int launchScanTiles(const int32_t* tileCounts, int64_t tiles, int64_t* tileOffsets, void* stream);
// Moves every tile's candidates next to each other, in tile order (so indices stay ascending).
int launchGatherTiles(const int32_t* slotIndices,
                      const float* slotValues,
                      const int32_t* tileCounts,
                      const int64_t* tileOffsets,
                      int64_t tiles,
                      int32_t* indices,
                      float* values,
                      void* stream);
// int32 counters launchRadixSelect needs in `histograms`.
inline constexpr int64_t kRadixSelectHistogramInts = 3 * 2048;
// state[0] = the rank-th largest (1 <= rank <= count) of `count` non-negative int32 keys, as a
// sort would give it (see Note [Radix select] in top_k.cu); state[1] = its rank among the keys
// equal to it (so rank - state[1] keys are larger). state: 2 int64; histograms:
// kRadixSelectHistogramInts int32 of scratch. Returns cudaErrorInvalidValue for a rank outside
// [1, count].
int launchRadixSelect(const int32_t* keys,
                      int64_t count,
                      int64_t rank,
                      int64_t* state,
                      int32_t* histograms,
                      void* stream);
// keys[j] = magnitudeKey(values[j]).
int launchMagnitudeKeys(const float* values, int64_t count, int32_t* keys, void* stream);
// residual[indices[j]] = values[j].
int launchScatter(
    float* residual, const int32_t* indices, const float* values, int64_t count, void* stream);
// Payload [count int32 indices][count values as float32 or float16 (saturated)]; with fp16 the
// residual at indices[j] becomes values[j] - float(half(values[j])), else 0.
int launchTopKEmit(const int32_t* indices,
                   const float* values,
                   int64_t count,
                   bool fp16Values,
                   float* residual,
                   uint8_t* payload,
                   void* stream);
// out[index_j] += alpha * value_j for the payload's entries; an index outside [0, numel) is
// skipped and sets *badIndex = 1.
int launchTopKDecompressAdd(const uint8_t* payload,
                            int64_t count,
                            bool fp16Values,
                            float alpha,
                            float* out,
                            int64_t numel,
                            int32_t* badIndex,
                            void* stream);

// ---- 1-bit (kernels/sign.cu) ----
// Chunks of chunkLength elements (0 < chunkLength <= 4096, a multiple of 8), fused: p, the chunk
// scale (l2 ? ||p||_2 / sqrt(len) : ||p||_1 / len, summed exactly as SignCompressor does), the
// sign bits and residual = p - C(p). `scales` (float32, one per chunk) and `bits` may lie in the
// payload's bytes.
int launchSignCompressChunked(float* residual,
                              const float* addend,
                              float scale,
                              int64_t numel,
                              int64_t chunkLength,
                              bool l2,
                              uint8_t* scales,
                              uint8_t* bits,
                              void* stream);
// Any segment length (> 4096 or the whole tensor): residual = p, then blockSums[b] per 4096-block
// of every segment (blocksPerSegment per segment), then the segment scales, then the bits.
int launchSignCompressSegmented(float* residual,
                                const float* addend,
                                float scale,
                                int64_t numel,
                                int64_t segmentLength,
                                bool l2,
                                double* blockSums,
                                uint8_t* scales,
                                uint8_t* bits,
                                void* stream);
// out[i] += (bit i ? +1 : -1) * (alpha * scale of segment i / segmentLength).
int launchSignDecompressAdd(const uint8_t* scales,
                            const uint8_t* bits,
                            int64_t numel,
                            int64_t segmentLength,
                            float alpha,
                            float* out,
                            void* stream);

// ---- b-bit quantization (kernels/quantize.cu) ----
// Buckets of `bucket` elements: (unit, min) per bucket into meta (8 bytes each), the level of
// every element into levels (one byte each), residual = p - C(p). Nearest level, or with
// stochastic the splitmix64 stream of `seed` (QuantizeCompressor's).
int launchQuantizeBuckets(float* residual,
                          const float* addend,
                          float scale,
                          int64_t numel,
                          int64_t bucket,
                          int bits,
                          bool stochastic,
                          uint64_t seed,
                          uint8_t* meta,
                          uint8_t* levels,
                          void* stream);
// Whether launchQuantizePacked takes buckets of this length (a multiple of 8, at most 12288).
bool quantizeFusedSupported(int64_t bucket);
// launchQuantizeBuckets and launchPackCodes in one pass, without the level bytes: (unit, min) per
// bucket into meta, the codes straight into `codes` ((numel * bits + 7) / 8 bytes, the payload's
// stream), residual = p - C(p). Read once from global memory (see Note [Quantize warps]).
// Returns cudaErrorInvalidValue for a bucket that quantizeFusedSupported refuses.
int launchQuantizePacked(float* residual,
                         const float* addend,
                         float scale,
                         int64_t numel,
                         int64_t bucket,
                         int bits,
                         bool stochastic,
                         uint64_t seed,
                         uint8_t* meta,
                         uint8_t* codes,
                         void* stream);
// levels (one byte each) -> LSB-first bit stream of `bits` bits per element.
int launchPackCodes(const uint8_t* levels, int64_t numel, int bits, uint8_t* codes, void* stream);
// out[j] += alpha * (min + level_j * unit) of j's bucket.
int launchDequantizeAdd(const uint8_t* meta,
                        const uint8_t* codes,
                        int64_t codeBytes,
                        int64_t numel,
                        int64_t bucket,
                        int bits,
                        float alpha,
                        float* out,
                        void* stream);

// ---- QuEST (kernels/quest.cu) ----
struct QuestLaunch {
  int64_t rows = 0;
  int64_t d = 0;             // row length, a multiple of 128 when hadamard
  bool hadamard = true;      // rotate rows by the block Hadamard transform first
  bool rotateBack = false;   // rotate the quantized row back (Full variant)
  float alpha = 0;           // Gaussian-optimal clip multiplier of `bits`
  float levelsMinusOne = 0;  // 2^bits - 1
  float maskScale = 1;       // trust mask |u| <= maskScale * clip
  float hadamardScale = 0;   // float(1 / sqrt(128))
};
// values, and optionally mask (bool), codes (int8), steps (float, per row); nullptr skips one.
int launchQuestForward(const float* input,
                       const QuestLaunch& plan,
                       float* values,
                       bool* mask,
                       int8_t* codes,
                       float* steps,
                       void* stream);
// In place on gradient rows: Full ((G H) . M) H, Half (G . M) H, no rotation G . M.
int launchQuestBackward(float* gradient, const bool* mask, const QuestLaunch& plan, void* stream);
// In place: each row's 128-blocks multiplied by H128 (normalised).
int launchBlockHadamard(float* data, int64_t rows, int64_t d, float hadamardScale, void* stream);

}  // namespace thinwire::kernels::detail

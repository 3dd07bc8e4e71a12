#include "compressors/chunked_compressor.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "base/error.h"

namespace thinwire::compressors {

ChunkedCompressor::ChunkedCompressor(Compressor& inner, int parts) : inner_(&inner), parts_(parts) {
  TW_CHECK(parts >= 1, "ChunkedCompressor needs at least one part, got ", parts);
}

ChunkRange ChunkedCompressor::chunkRange(int64_t numel, int parts, int64_t alignment, int index) {
  TW_CHECK(numel >= 0, "chunkRange: numel must be >= 0, got ", numel);
  TW_CHECK(parts >= 1, "chunkRange: parts must be >= 1, got ", parts);
  TW_CHECK(alignment >= 1, "chunkRange: alignment must be >= 1, got ", alignment);
  TW_CHECK(index >= 0 && index < parts, "chunkRange: index ", index, " outside [0, ", parts, ")");
  const int64_t blocks = (numel + alignment - 1) / alignment;
  const int64_t base = blocks / parts;
  const int64_t extra = blocks % parts;
  const int64_t firstBlock = index * base + std::min<int64_t>(index, extra);
  const int64_t blockCount = base + (index < extra ? 1 : 0);
  const int64_t begin = std::min(numel, firstBlock * alignment);
  const int64_t end = std::min(numel, (firstBlock + blockCount) * alignment);
  return {begin, end - begin};
}

std::string ChunkedCompressor::name() const { return "chunked_" + inner_->name(); }

void ChunkedCompressor::compress(at::Tensor& residual,
                                 const at::Tensor& addend,
                                 float addendScale,
                                 Payload& out,
                                 const LayerParams& params) {
  TW_CHECK(residual.defined() && residual.scalar_type() == at::kFloat && residual.is_contiguous() &&
               residual.device().is_cpu(),
           "ChunkedCompressor: residual must be a contiguous float32 CPU tensor");
  const int64_t numel = residual.numel();
  TW_CHECK(!addend.defined() || addend.numel() == numel, "ChunkedCompressor: addend has ",
           addend.defined() ? addend.numel() : 0, " elements, residual ", numel);
  at::Tensor flatResidual = residual.view({-1});
  at::Tensor flatAddend = addend.defined() ? addend.reshape({-1}) : at::Tensor();
  const int64_t alignment = inner_->alignment(params);

  partPayloads_.resize(parts_);
  out.parts.assign(parts_, 0);
  std::optional<at::ScalarType> dtype;
  int64_t totalBytes = 0;
  for (int part = 0; part < parts_; ++part) {
    const ChunkRange range = chunkRange(numel, parts_, alignment, part);
    Payload& partPayload = partPayloads_[part];
    if (range.length == 0) {
      partPayload.data = at::Tensor();
      partPayload.numel = 0;
      continue;
    }
    at::Tensor partResidual = flatResidual.narrow(0, range.offset, range.length);
    at::Tensor partAddend =
        flatAddend.defined() ? flatAddend.narrow(0, range.offset, range.length) : at::Tensor();
    inner_->compress(partResidual, partAddend, addendScale, partPayload, params);
    const int64_t bytes = partPayload.wireBytes();
    out.parts[part] = bytes;
    totalBytes += bytes;
    if (bytes == 0) continue;
    if (!dtype) dtype = partPayload.data.scalar_type();
    TW_ASSERT(*dtype == partPayload.data.scalar_type(), "compressor '", inner_->name(),
              "' wrote parts of different dtypes, ", *dtype, " and ",
              partPayload.data.scalar_type());
  }

  const at::ScalarType outDtype = dtype.value_or(at::kByte);
  const int64_t elementSize = static_cast<int64_t>(c10::elementSize(outDtype));
  TW_ASSERT(totalBytes % elementSize == 0, totalBytes, " bytes of ", outDtype);
  const int64_t outElements = totalBytes / elementSize;
  if (!out.data.defined() || out.data.scalar_type() != outDtype ||
      out.data.numel() != outElements || !out.data.is_contiguous() || out.data.dim() != 1) {
    out.data = at::empty({outElements}, at::TensorOptions().dtype(outDtype));
  }
  auto* destination = static_cast<uint8_t*>(out.data.data_ptr());
  for (int part = 0; part < parts_; ++part) {
    if (out.parts[part] == 0) continue;
    std::memcpy(destination, partPayloads_[part].data.data_ptr(),
                static_cast<size_t>(out.parts[part]));
    destination += out.parts[part];
  }
  out.numel = numel;
}

void ChunkedCompressor::decompressAdd(const Payload& payload,
                                      at::Tensor& out,
                                      float alpha,
                                      const LayerParams& params) const {
  TW_CHECK(static_cast<int>(payload.parts.size()) == parts_, "ChunkedCompressor: payload has ",
           payload.parts.size(), " parts, expected ", parts_);
  TW_CHECK(out.defined() && out.scalar_type() == at::kFloat && out.is_contiguous() &&
               out.numel() == payload.numel,
           "ChunkedCompressor: out must be a contiguous float32 tensor of ", payload.numel,
           " elements");
  at::Tensor bytes = bytesOf(payload);
  int64_t totalBytes = 0;
  for (int64_t partBytes : payload.parts) totalBytes += partBytes;
  TW_CHECK(totalBytes == bytes.numel(), "ChunkedCompressor: parts add up to ", totalBytes,
           " bytes, payload has ", bytes.numel());
  const at::ScalarType dtype = payload.data.defined() ? payload.data.scalar_type() : at::kByte;
  at::Tensor flatOut = out.view({-1});
  const int64_t alignment = inner_->alignment(params);
  int64_t offset = 0;
  for (int part = 0; part < parts_; ++part) {
    const ChunkRange range = chunkRange(payload.numel, parts_, alignment, part);
    const int64_t partBytes = payload.parts[part];
    if (range.length == 0) {
      TW_CHECK(partBytes == 0, "ChunkedCompressor: part ", part, " is empty but has ", partBytes,
               " bytes");
      continue;
    }
    Payload partPayload = payloadFromBytes(bytes, offset, partBytes, dtype, range.length);
    at::Tensor partOut = flatOut.narrow(0, range.offset, range.length);
    inner_->decompressAdd(partPayload, partOut, alpha, params);
    offset += partBytes;
  }
}

int64_t ChunkedCompressor::payloadBytes(int64_t numel, const LayerParams& params) const {
  const int64_t alignment = inner_->alignment(params);
  int64_t total = 0;
  for (int part = 0; part < parts_; ++part) {
    const ChunkRange range = chunkRange(numel, parts_, alignment, part);
    if (range.length == 0) continue;
    const int64_t bytes = inner_->payloadBytes(range.length, params);
    if (bytes < 0) return -1;
    total += bytes;
  }
  return total;
}

int64_t ChunkedCompressor::maxPayloadBytes(int64_t numel, const LayerParams& params) const {
  const int64_t alignment = inner_->alignment(params);
  int64_t total = 0;
  for (int part = 0; part < parts_; ++part) {
    const ChunkRange range = chunkRange(numel, parts_, alignment, part);
    if (range.length > 0) total += inner_->maxPayloadBytes(range.length, params);
  }
  return total;
}

double ChunkedCompressor::deltaHint(int64_t numel, const LayerParams& params) const {
  const int64_t alignment = inner_->alignment(params);
  double delta = 1.0;
  bool anyRange = false;
  for (int part = 0; part < parts_; ++part) {
    const ChunkRange range = chunkRange(numel, parts_, alignment, part);
    if (range.length == 0) continue;
    delta = std::min(delta, inner_->deltaHint(range.length, params));
    anyRange = true;
  }
  return anyRange ? delta : inner_->deltaHint(numel, params);
}

at::Tensor bytesOf(const Payload& payload) {
  if (!payload.data.defined()) return at::empty({0}, at::TensorOptions().dtype(at::kByte));
  TW_CHECK(payload.data.is_contiguous() && payload.data.device().is_cpu(),
           "payload data must be a contiguous CPU tensor");
  at::Tensor flat = payload.data.reshape({-1});
  return flat.scalar_type() == at::kByte ? flat : flat.view(at::kByte);
}

Payload payloadFromBytes(
    const at::Tensor& bytes, int64_t offset, int64_t length, at::ScalarType dtype, int64_t numel) {
  TW_CHECK(bytes.scalar_type() == at::kByte && bytes.dim() == 1,
           "payloadFromBytes needs 1-D uint8");
  TW_CHECK(offset >= 0 && length >= 0 && offset + length <= bytes.numel(), "payloadFromBytes: [",
           offset, ", ", offset + length, ") outside ", bytes.numel(), " bytes");
  const int64_t elementSize = static_cast<int64_t>(c10::elementSize(dtype));
  TW_CHECK(length % elementSize == 0, "payloadFromBytes: ", length, " bytes are not whole ", dtype,
           " elements");
  Payload payload;
  payload.numel = numel;
  at::Tensor slice = bytes.narrow(0, offset, length);
  if (dtype == at::kByte) {
    payload.data = slice;
    return payload;
  }
  // view(dtype) needs the byte offset into the storage to be a multiple of the element size.
  if ((slice.storage_offset() % elementSize) != 0) slice = slice.clone();
  payload.data = slice.view(dtype);
  return payload;
}

}  // namespace thinwire::compressors

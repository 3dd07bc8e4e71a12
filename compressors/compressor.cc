#include "compressors/compressor.h"

#include "base/error.h"

namespace thinwire::compressors {

CompressorKind parseCompressorKind(const std::string& name) {
  if (name == "identity") return CompressorKind::kIdentity;
  if (name == "fp16") return CompressorKind::kFp16;
  if (name == "bf16") return CompressorKind::kBf16;
  if (name == "topk") return CompressorKind::kTopK;
  if (name == "randomk") return CompressorKind::kRandomK;
  if (name == "sign") return CompressorKind::kSign;
  if (name == "quantize") return CompressorKind::kQuantize;
  TW_THROW(InvalidArgument, "unknown compressor '", name,
           "', expected one of identity|fp16|bf16|topk|randomk|sign|quantize");
}

}  // namespace thinwire::compressors

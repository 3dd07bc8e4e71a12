#include "compressors/compressor.h"

#include "base/error.h"
#include "compressors/cast_compressor.h"
#include "compressors/identity_compressor.h"
#include "compressors/quantize_compressor.h"
#include "compressors/random_k_compressor.h"
#include "compressors/sign_compressor.h"
#include "compressors/top_k_compressor.h"

namespace thinwire::compressors {

void checkFlatFloat(const at::Tensor& tensor, const char* owner, const char* what) {
  TW_CHECK(tensor.defined(), owner, ": ", what, " is undefined");
  TW_CHECK(tensor.scalar_type() == at::kFloat && tensor.is_contiguous() && tensor.is_cpu(), owner,
           ": ", what, " must be a contiguous float32 CPU tensor, got ", tensor.toString(),
           tensor.is_contiguous() ? "" : " (non-contiguous)");
}

std::unique_ptr<Compressor> makeCompressor(const CompressorOptions& options) {
  switch (options.kind) {
    case CompressorKind::kIdentity:
      return std::make_unique<IdentityCompressor>();
    case CompressorKind::kFp16:
      return std::make_unique<CastCompressor>(at::kHalf);
    case CompressorKind::kBf16:
      return std::make_unique<CastCompressor>(at::kBFloat16);
    case CompressorKind::kTopK: {
      TopKOptions topk;
      topk.sampled = options.sampledThreshold;
      topk.sampleRatio = options.sampleRatio;
      topk.fp16Values = options.fp16Values;
      return std::make_unique<TopKCompressor>(topk);
    }
    case CompressorKind::kRandomK: {
      RandomKOptions randomk;
      randomk.scale = options.scaleRandomK;
      randomk.fp16Values = options.fp16Values;
      return std::make_unique<RandomKCompressor>(randomk);
    }
    case CompressorKind::kSign: {
      SignOptions sign;
      sign.chunk = options.signChunk;
      return std::make_unique<SignCompressor>(sign);
    }
    case CompressorKind::kQuantize: {
      QuantizeOptions quantize;
      quantize.bucket = options.quantizeBucket;
      quantize.stochastic = options.stochasticRounding;
      return std::make_unique<QuantizeCompressor>(quantize);
    }
  }
  TW_THROW(InvalidArgument, "unknown compressor kind ", static_cast<int>(options.kind));
}

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

#include "core/models/llama.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>
#include <limits>
#include <string>

#include "base/error.h"
#include "core/data/seeded_random.h"
#include "core/models/seeded_init.h"

namespace thinwire::core {

int64_t swigluHidden(int64_t dModel, int64_t multiple) {
  TW_CHECK(dModel >= 1 && multiple >= 1, "swigluHidden needs dModel and multiple >= 1, got ",
           dModel, " and ", multiple);
  const int64_t raw = (8 * dModel + 2) / 3;  // ceil(8 d / 3)
  return (raw + multiple - 1) / multiple * multiple;
}

at::Tensor applyRope(const at::Tensor& x, double base, int64_t offset) {
  TW_CHECK(x.dim() >= 2 && x.size(-1) % 2 == 0,
           "applyRope expects [..., T, headDim] with an even headDim, got ", x.sizes());
  const int64_t length = x.size(-2);
  const int64_t half = x.size(-1) / 2;
  // Angles in float64: positions times frequencies lose digits in float32 for long sequences.
  const at::TensorOptions angleOptions = at::TensorOptions().dtype(at::kDouble).device(x.device());
  const at::Tensor exponents =
      at::arange(half, angleOptions) * (-2.0 / static_cast<double>(2 * half));
  const at::Tensor frequencies = at::pow(base, exponents);
  const at::Tensor positions = at::arange(offset, offset + length, angleOptions);
  const at::Tensor angles = at::outer(positions, frequencies);  // [T, half]
  const at::Tensor cos = at::cos(angles).to(x.scalar_type());
  const at::Tensor sin = at::sin(angles).to(x.scalar_type());
  const at::Tensor x1 = x.narrow(-1, 0, half);
  const at::Tensor x2 = x.narrow(-1, half, half);
  return at::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

RmsNormImpl::RmsNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RmsNormImpl::forward(const at::Tensor& x) {
  return x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps_) * weight;
}

namespace {

torch::nn::Linear linear(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}

qat::QuantLinear quantLinear(int64_t in, int64_t out, const qat::QatOptions& qat) {
  return qat::QuantLinear(qat::QuantLinearOptions{in, out, qat});
}

}  // namespace

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaOptions& options)
    : heads_(options.heads), ropeBase_(options.ropeBase) {
  const int64_t d = options.dModel;
  q_ = register_module("q", quantLinear(d, d, options.qat));
  k_ = register_module("k", quantLinear(d, d, options.qat));
  v_ = register_module("v", quantLinear(d, d, options.qat));
  o_ = register_module("o", quantLinear(d, d, options.qat));
}

at::Tensor LlamaAttentionImpl::forward(const at::Tensor& x) {
  const int64_t n = x.size(0), length = x.size(1), d = x.size(2);
  const int64_t headDim = d / heads_;
  auto split = [&](const at::Tensor& t) {  // [n, T, d] -> [n, heads, T, headDim]
    return t.view({n, length, heads_, headDim}).transpose(1, 2);
  };
  const at::Tensor q = applyRope(split(q_->forward(x)), ropeBase_);
  const at::Tensor k = applyRope(split(k_->forward(x)), ropeBase_);
  const at::Tensor v = split(v_->forward(x));
  at::Tensor scores = at::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(headDim));
  const at::Tensor future =
      at::ones({length, length}, at::TensorOptions().dtype(at::kBool).device(scores.device()))
          .triu(/*diagonal=*/1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  const at::Tensor mixed = at::matmul(at::softmax(scores, -1), v);  // [n, heads, T, headDim]
  return o_->forward(mixed.transpose(1, 2).reshape({n, length, d}));
}

SwiGluImpl::SwiGluImpl(int64_t dModel, int64_t hidden, const qat::QatOptions& qat)
    : hidden_(hidden) {
  gate_ = register_module("gate", quantLinear(dModel, hidden, qat));
  up_ = register_module("up", quantLinear(dModel, hidden, qat));
  down_ = register_module("down", quantLinear(hidden, dModel, qat));
}

at::Tensor SwiGluImpl::forward(const at::Tensor& x) {
  return down_->forward(at::silu(gate_->forward(x)) * up_->forward(x));
}

LlamaBlockImpl::LlamaBlockImpl(const LlamaOptions& options) {
  attnNorm_ = register_module("attn_norm", RmsNorm(options.dModel, options.normEps));
  attention_ = register_module("attention", LlamaAttention(options));
  mlpNorm_ = register_module("mlp_norm", RmsNorm(options.dModel, options.normEps));
  mlp_ = register_module(
      "mlp",
      SwiGlu(options.dModel, swigluHidden(options.dModel, options.mlpMultiple), options.qat));
}

at::Tensor LlamaBlockImpl::forward(const at::Tensor& x) {
  const at::Tensor h = x + attention_->forward(attnNorm_->forward(x));
  return h + mlp_->forward(mlpNorm_->forward(h));
}

Llama::Llama(const LlamaOptions& options) : options_(options) {
  if (options.vocabulary < 1 || options.dModel < 1 || options.layers < 1 || options.heads < 1 ||
      options.maxSeqLen < 1 || options.mlpMultiple < 1) {
    TW_THROW(ConfigError,
             "llama needs vocabulary, d_model, layers, heads, seq_len and "
             "mlp_multiple >= 1");
  }
  if (options.dModel % options.heads != 0 || (options.dModel / options.heads) % 2 != 0) {
    TW_THROW(ConfigError,
             "llama needs d_model a multiple of heads with an even head dimension, "
             "got d_model ",
             options.dModel, " and heads ", options.heads);
  }
  embed_ = register_module("embed", torch::nn::Embedding(options.vocabulary, options.dModel));
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < options.layers; ++i) {
    LlamaBlock block(options);
    layers_->push_back(block);
    blocks_.push_back(block);
  }
  norm_ = register_module("norm", RmsNorm(options.dModel, options.normEps));
  head_ = register_module("head", linear(options.dModel, options.vocabulary));
}

at::Tensor Llama::forward(const at::Tensor& inputs) {
  TW_CHECK(inputs.dim() == 2 && inputs.scalar_type() == at::kLong && inputs.size(1) >= 1 &&
               inputs.size(1) <= options_.maxSeqLen,
           "llama expects int64 tokens [n, T] with 1 <= T <= ", options_.maxSeqLen, ", got ",
           inputs.sizes(), " ", inputs.scalar_type());
  at::Tensor x = embed_->forward(inputs);
  for (auto& block : blocks_) x = block->forward(x);
  return head_->forward(norm_->forward(x));
}

void Llama::initFromSeed(uint64_t seed) {
  torch::NoGradGuard noGrad;
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    torch::nn::Module& module = *item.value();
    const auto own = module.named_parameters(/*recurse=*/false);
    const at::Tensor* weight = own.find("weight");
    if (weight == nullptr) continue;
    if (weight->dim() >= 2) {
      // One stream per module path: inside the module every weight is just "weight". Only the
      // weight is drawn: a QuantLinear's LSQ steps keep their own initial values.
      torch::nn::Module weightOnly;
      weightOnly.register_parameter("weight", *weight);
      initParametersFromSeed(weightOnly, mixSeed(seed, hashName(item.key())));
    } else {
      at::Tensor gain = *weight;
      gain.fill_(1.0);
    }
  }
}

std::string generate(Llama& model, const std::string& prompt, const GenerateOptions& options) {
  TW_CHECK(!prompt.empty(), "generate needs a non-empty prompt");
  TW_CHECK(options.bytes >= 0 && options.temperature >= 0,
           "generate needs bytes >= 0 and temperature >= 0, got ", options.bytes, " and ",
           options.temperature);
  torch::NoGradGuard noGrad;
  model.eval();
  SeededRandom rng(options.seed);
  std::string text = prompt;
  const auto window = static_cast<size_t>(model.options().maxSeqLen);
  const std::vector<at::Tensor> parameters = model.parameters();
  const c10::Device device =
      parameters.empty() ? c10::Device(c10::kCPU) : parameters.front().device();
  for (int64_t i = 0; i < options.bytes; ++i) {
    const size_t start = text.size() > window ? text.size() - window : 0;
    at::Tensor tokens = at::empty({1, static_cast<int64_t>(text.size() - start)}, at::kLong);
    int64_t* data = tokens.data_ptr<int64_t>();
    for (size_t t = start; t < text.size(); ++t) {
      data[t - start] = static_cast<unsigned char>(text[t]);
    }
    // Tokens go to the model's device; the sampling loop below reads host memory.
    const at::Tensor logits = model.forward(tokens.to(device))[0][-1].to(at::kCPU).to(at::kDouble);
    int64_t next = 0;
    if (options.temperature == 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      const at::Tensor probabilities = at::softmax(logits / options.temperature, 0).contiguous();
      const double* p = probabilities.data_ptr<double>();
      double u = rng.uniform();
      const int64_t vocabulary = probabilities.size(0);
      next = vocabulary - 1;  // if rounding leaves u above the last cumulative sum
      for (int64_t b = 0; b < vocabulary; ++b) {
        u -= p[b];
        if (u < 0) {
          next = b;
          break;
        }
      }
    }
    text.push_back(static_cast<char>(next));
  }
  model.train();
  return text.substr(prompt.size());
}

}  // namespace thinwire::core

// File: core/models/llama.h
//
// Llama: a Llama-style decoder-only language model over byte tokens.
//   tokens [n, T] int64 -> embedding -> layers x (x += Attention(RMSNorm(x));
//                                                   x += SwiGLU(RMSNorm(x))) -> RMSNorm -> head
// Attention is causal multi-head self-attention with rotary position embeddings (RoPE, base
// 10000, rotating pairs (i, i + headDim/2) of each head), no biases anywhere; the MLP is
// SwiGLU, down(silu(gate(x)) * up(x)), with its hidden size 8/3 d rounded up to a multiple of
// `mlpMultiple`; the LM head is untied from the embedding. The seven attention and MLP linears of
// each block are qat::QuantLinear layers: plain linears unless options.qat enables
// quantization-aware training (docs/qat.md); embedding, norms and head always stay full
// precision. Parameter names:
//   embed.weight, layers.<i>.attn_norm.weight, layers.<i>.attention.{q,k,v,o}.weight,
//   layers.<i>.mlp_norm.weight, layers.<i>.mlp.{gate,up,down}.weight, norm.weight, head.weight
//
// Initialisation: initFromSeed() draws every matrix through initParametersFromSeed
// (core/models/seeded_init.h) with a stream per parameter name, and sets every RMSNorm gain to 1.
//
// Ownership: a torch::nn::Module; hold it by std::shared_ptr (makeModel returns one).
// Threading: as any torch module: forward() from one thread at a time per instance.
//
// Example:
//   LlamaOptions options;                       // d 256, 4 layers, 4 heads, vocabulary 256
//   auto model = std::make_shared<Llama>(options);
//   model->initFromSeed(/*seed=*/0);
//   at::Tensor logits = model->forward(tokens);   // tokens [n, T] int64 -> logits [n, T, 256]
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/models/model.h"
#include "qat/quant_linear.h"

namespace thinwire::core {

struct LlamaOptions {
  int64_t vocabulary = 256;  // byte tokens
  int64_t dModel = 256;      // residual width; a multiple of heads
  int64_t layers = 4;
  int64_t heads = 4;          // head dimension dModel / heads must be even (RoPE pairs)
  int64_t maxSeqLen = 128;    // longest sequence forward() accepts
  int64_t mlpMultiple = 256;  // SwiGLU hidden size is rounded up to a multiple of this
  double ropeBase = 10000.0;
  double normEps = 1e-5;
  qat::QatOptions qat;  // attention and MLP linears; method none = full precision
};

// SwiGLU hidden size: ceil(8 d / 3) rounded up to a multiple of `multiple` (>= 1).
int64_t swigluHidden(int64_t dModel, int64_t multiple);

// Rotates x [..., T, headDim] by position: pair (i, i + headDim/2) of the vector at position p
// turns by the angle p * base^(-2i / headDim), positions starting at `offset`. Pure function;
// InvalidArgument for an odd headDim.
at::Tensor applyRope(const at::Tensor& x, double base, int64_t offset = 0);

// x / sqrt(mean(x^2 over the last dimension) + eps) * gain.
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const LlamaOptions& options);
  // x [n, T, d] -> [n, T, d]; position t attends to positions <= t only.
  at::Tensor forward(const at::Tensor& x);

 private:
  int64_t heads_;
  double ropeBase_;
  qat::QuantLinear q_{nullptr}, k_{nullptr}, v_{nullptr}, o_{nullptr};
};
TORCH_MODULE(LlamaAttention);

class SwiGluImpl : public torch::nn::Module {
 public:
  SwiGluImpl(int64_t dModel, int64_t hidden, const qat::QatOptions& qat = {});
  at::Tensor forward(const at::Tensor& x);
  int64_t hidden() const { return hidden_; }

 private:
  int64_t hidden_;
  qat::QuantLinear gate_{nullptr}, up_{nullptr}, down_{nullptr};
};
TORCH_MODULE(SwiGlu);

class LlamaBlockImpl : public torch::nn::Module {
 public:
  LlamaBlockImpl(const LlamaOptions& options);
  at::Tensor forward(const at::Tensor& x);

 private:
  RmsNorm attnNorm_{nullptr}, mlpNorm_{nullptr};
  LlamaAttention attention_{nullptr};
  SwiGlu mlp_{nullptr};
};
TORCH_MODULE(LlamaBlock);

class Llama : public Model {
 public:
  // Throws ConfigError when a size is < 1, dModel is not a multiple of heads, or the head
  // dimension is odd.
  explicit Llama(const LlamaOptions& options);

  // Logits [n, T, vocabulary] (float32) for tokens [n, T] int64 in [0, vocabulary) with
  // 1 <= T <= maxSeqLen; InvalidArgument otherwise. Causal: logits at t depend on tokens <= t.
  at::Tensor forward(const at::Tensor& inputs) override;

  // Deterministic weights from `seed` (see the banner). Blocking; in place.
  void initFromSeed(uint64_t seed);

  const LlamaOptions& options() const { return options_; }

 private:
  LlamaOptions options_;
  torch::nn::Embedding embed_{nullptr};
  torch::nn::ModuleList layers_;
  std::vector<LlamaBlock> blocks_;
  RmsNorm norm_{nullptr};
  torch::nn::Linear head_{nullptr};
};

struct GenerateOptions {
  int64_t bytes = 200;       // bytes to append to the prompt
  double temperature = 0.8;  // softmax temperature; 0 = always the most likely byte
  uint64_t seed = 0;         // sampling stream (SeededRandom): same seed, same text
};

// Continues `prompt` byte by byte: each new byte is drawn from softmax(logits / temperature) at
// the last position, the context being the last maxSeqLen bytes. Returns only the continuation.
// Blocking (one forward per byte); no autograd. InvalidArgument for an empty prompt, a negative
// byte count or temperature.
std::string generate(Llama& model, const std::string& prompt, const GenerateOptions& options);

}  // namespace thinwire::core

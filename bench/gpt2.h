// A GPT-2-small-architecture causal language model, compact, for timing
// optimizer steps (random initialisation; no checkpoint is loaded): token and
// position embeddings, pre-LayerNorm blocks of causal self-attention
// (scaled_dot_product_attention) and a GELU MLP, final LayerNorm, LM head
// tied to the token embedding. bench/python_baseline.py builds the same
// model in PyTorch.
#pragma once

#include <torch/torch.h>

namespace tram::bench {

struct Gpt2Config {
  int64_t vocab = 50257;
  int64_t positions = 1024;
  int64_t hidden = 768;
  int64_t layers = 12;
  int64_t heads = 12;
  double dropout = 0.1;
};

class Gpt2BlockImpl : public torch::nn::Module {
 public:
  explicit Gpt2BlockImpl(const Gpt2Config& c)
      : heads_(c.heads),
        dropout_(c.dropout),
        ln_1(register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden})))),
        c_attn(register_module("c_attn", torch::nn::Linear(c.hidden, 3 * c.hidden))),
        attn_proj(register_module("attn_proj", torch::nn::Linear(c.hidden, c.hidden))),
        ln_2(register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden})))),
        c_fc(register_module("c_fc", torch::nn::Linear(c.hidden, 4 * c.hidden))),
        mlp_proj(register_module("mlp_proj", torch::nn::Linear(4 * c.hidden, c.hidden))) {}

  torch::Tensor forward(torch::Tensor x) {
    const int64_t batch = x.size(0), tokens = x.size(1), hidden = x.size(2);
    const double p = is_training() ? dropout_ : 0.0;
    // [B, T, 3, H, D] -> [3, B, H, T, D]
    const auto qkv =
        c_attn(ln_1(x)).view({batch, tokens, 3, heads_, hidden / heads_}).permute({2, 0, 3, 1, 4});
    const auto attention = torch::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], {}, p,
                                                               /*is_causal=*/true);
    x = x + torch::dropout(attn_proj(attention.transpose(1, 2).reshape({batch, tokens, hidden})), p,
                           is_training());
    x = x + torch::dropout(mlp_proj(torch::gelu(c_fc(ln_2(x)), "tanh")), p, is_training());
    return x;
  }

 private:
  int64_t heads_;
  double dropout_;

 public:
  torch::nn::LayerNorm ln_1;
  torch::nn::Linear c_attn, attn_proj;
  torch::nn::LayerNorm ln_2;
  torch::nn::Linear c_fc, mlp_proj;
};
TORCH_MODULE(Gpt2Block);

class Gpt2Impl : public torch::nn::Module {
 public:
  explicit Gpt2Impl(const Gpt2Config& c)
      : config(c),
        wte(register_module("wte", torch::nn::Embedding(c.vocab, c.hidden))),
        wpe(register_module("wpe", torch::nn::Embedding(c.positions, c.hidden))),
        blocks(register_module("blocks", torch::nn::ModuleList())),
        ln_f(register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden})))) {
    for (int64_t l = 0; l < c.layers; ++l) blocks->push_back(Gpt2Block(c));
    // GPT-2's initialisation: N(0, 0.02) weights, zero biases.
    torch::NoGradGuard no_grad;
    for (auto& p : named_parameters()) {
      if (p.key().find("ln_") != std::string::npos) continue;
      if (p.key().find("bias") != std::string::npos) {
        p.value().zero_();
      } else {
        p.value().normal_(0.0, 0.02);
      }
    }
  }

  // Token embeddings: where trust-region noise is added (docs/ALGORITHMS.md §4).
  torch::Tensor embed(const torch::Tensor& ids) { return wte(ids); }

  // Logits [B, T, vocab] from token embeddings [B, T, hidden].
  torch::Tensor logits_from_embeddings(const torch::Tensor& token_embeddings) {
    const int64_t tokens = token_embeddings.size(1);
    const auto positions = torch::arange(tokens, token_embeddings.options().dtype(torch::kLong));
    auto x = torch::dropout(token_embeddings + wpe(positions), config.dropout, is_training());
    for (const auto& block : *blocks) x = block->as<Gpt2Block>()->forward(x);
    return torch::linear(ln_f(x), wte->weight);
  }

  Gpt2Config config;
  torch::nn::Embedding wte, wpe;
  torch::nn::ModuleList blocks;
  torch::nn::LayerNorm ln_f;
};
TORCH_MODULE(Gpt2);

}  // namespace tram::bench

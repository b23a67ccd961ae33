// Pieces shared by the example models (ViT, GPT-2, BERT/RoBERTa/XLM-R):
// the embedding hook through which TRAM-ε / R3F / TRAM-Fisher noise enters,
// activations, attention, Hugging Face's initialisation, and the options and
// result of loading a pretrained model.
#pragma once

#include <tram/hf/checkpoint.h>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace tram {
class Pass;
}

namespace tram::hf::models {

// Applied to the token (or patch) embeddings right after the lookup (or patch
// projection), before position embeddings, token types and normalisation:
// where the trust-region noise goes (docs/ALGORITHMS.md §4). An empty hook
// is the identity.
using EmbeddingHook = std::function<torch::Tensor(const torch::Tensor&)>;

// The hook of one forward-closure pass: `pass.perturb`, which adds noise on
// the passes that need it and returns the embeddings unchanged otherwise.
// `pass` must outlive the forward call.
EmbeddingHook perturb_hook(const tram::Pass& pass);

inline torch::Tensor apply_hook(const EmbeddingHook& hook, const torch::Tensor& embeddings) {
  return hook ? hook(embeddings) : embeddings;
}

// Hugging Face activation names ("hidden_act", "activation_function").
enum class Activation {
  kGelu,      // "gelu": exact, with erf
  kGeluTanh,  // "gelu_new", "gelu_pytorch_tanh", "gelu_fast": the tanh approximation
  kRelu,      // "relu"
  kSilu,      // "silu", "swish"
};
// Throws for other names, naming `origin` (the config file) and the field.
Activation parse_activation(const std::string& name, const std::string& origin, const std::string& field);
torch::Tensor activate(const torch::Tensor& input, Activation activation);

// [B, T, H*D] -> [B, H, T, D] and back.
torch::Tensor split_heads(const torch::Tensor& hidden, int64_t num_heads);
torch::Tensor merge_heads(const torch::Tensor& heads);

// Additive attention masks in the dtype of the scores: 0 where attention is
// allowed, the dtype's lowest finite value where it is not (finite, so that a
// row with every key masked stays finite, as in Hugging Face).
// From a [B, T] 0/1 padding mask: [B, 1, 1, T] (keys only).
torch::Tensor padding_attention_mask(const torch::Tensor& attention_mask, torch::ScalarType dtype);
// Causal, combined with an optional [B, T] padding mask: [B or 1, 1, T, T].
torch::Tensor causal_attention_mask(int64_t length, const torch::Tensor& attention_mask, torch::ScalarType dtype,
                                    torch::Device device);

// softmax(q k^T * scale + mask) v over [B, H, T, D] tensors, with dropout on
// the attention probabilities when `training`. Uses LibTorch's fused
// scaled_dot_product_attention (flash / memory-efficient kernels on GPU).
torch::Tensor attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                        const torch::Tensor& additive_mask, double dropout, bool training, double scale,
                        bool causal = false);

// Hugging Face's PreTrainedModel._init_weights for the standard modules of
// `module` and its children: Linear and Conv2d weights normal(0, std), biases
// 0; Embedding normal(0, std) with the padding row 0; LayerNorm weight 1,
// bias 0. Models add their own special cases (ViT's tokens, GPT-2's Conv1D).
void init_weights_like_hf(torch::nn::Module& module, double std);

// Registers an empty module under `name` and returns it: a naming scope, so
// parameter names follow Hugging Face's nesting ("attention.self.query.weight")
// without a C++ class for every level.
std::shared_ptr<torch::nn::Module> add_scope(torch::nn::Module& parent, const std::string& name);

// How to load a pretrained model.
struct PretrainedOptions {
  // Replaces the config's label count (--num-labels); a checkpoint head of
  // another size is then replaced by a fresh one, and the report says so.
  std::optional<int64_t> num_labels;
  torch::ScalarType dtype = torch::kFloat32;  // the checkpoint is converted to it
  torch::Device device = torch::kCPU;
};

// A loaded model, the config it was built from (num_labels updated: save it
// with the fine-tuned weights), and what the load did.
template <class Model>
struct Pretrained {
  Model model;
  HfConfig config;
  LoadReport report;
};

}  // namespace tram::hf::models

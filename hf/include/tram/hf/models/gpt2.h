// GPT-2 causal language model with Hugging Face's parameter names
// (GPT2LMHeadModel): named_parameters() are exactly the keys of a GPT-2
// checkpoint (with the "transformer." prefix; the bare GPT2Model checkpoints
// on the Hub, without it, load too).
//
//   wte(input_ids) -> [hook] -> + wpe(positions) -> dropout -> pre-LN blocks
//   (causal attention) -> ln_f -> logits = hidden @ wte^T (tied head)
//
// c_attn, c_proj and c_fc are GPT-2's "Conv1D": a linear layer whose weight is
// stored transposed, [in, out].
#pragma once

#include <tram/hf/models/common.h>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

namespace tram::hf::models {

// The fields of a GPT-2 config.json this model uses; defaults are
// GPT2Config's (GPT-2 small).
struct GPT2Config {
  int64_t vocab_size = 50257;
  int64_t n_positions = 1024;
  int64_t n_embd = 768;
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_inner = 0;                                     // "n_inner": null means 4 * n_embd, resolved by from()
  Activation activation_function = Activation::kGeluTanh;  // "gelu_new"
  double resid_pdrop = 0.1;
  double embd_pdrop = 0.1;
  double attn_pdrop = 0.1;
  double layer_norm_epsilon = 1e-5;
  double initializer_range = 0.02;
  bool scale_attn_weights = true;
  bool scale_attn_by_inverse_layer_idx = false;
  bool tie_word_embeddings = true;

  static GPT2Config from(const HfConfig& config);
};

// GPT-2's Conv1D: y = x W + b with W of shape [in, out].
class Conv1DImpl : public torch::nn::Module {
 public:
  Conv1DImpl(int64_t in_features, int64_t out_features);
  torch::Tensor forward(const torch::Tensor& input);
  torch::Tensor weight, bias;
};
TORCH_MODULE(Conv1D);

// One block: ln_1, attn.{c_attn, c_proj}, ln_2, mlp.{c_fc, c_proj}.
class GPT2BlockImpl : public torch::nn::Module {
 public:
  GPT2BlockImpl(const GPT2Config& config, int64_t layer_index);
  // `additive_mask` [B or 1, 1, T, T], or undefined for plain causal attention.
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& additive_mask);

  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Conv1D c_attn{nullptr}, attn_c_proj{nullptr}, c_fc{nullptr}, mlp_c_proj{nullptr};
  torch::nn::Dropout resid_dropout{nullptr}, mlp_dropout{nullptr};

 private:
  int64_t num_heads_;
  double attention_dropout_;
  double scale_;
  Activation activation_;
};
TORCH_MODULE(GPT2Block);

class GPT2LMHeadModelImpl : public torch::nn::Module {
 public:
  explicit GPT2LMHeadModelImpl(const GPT2Config& config);

  // input_ids [B, T] (T <= n_positions); attention_mask [B, T] with 1 for real
  // tokens and 0 for padding, or undefined when nothing is padded (then the
  // fused causal kernel runs) -> logits [B, T, vocab_size]. Positions are
  // 0..T-1 in every row, as in Hugging Face: pad on the right.
  // `perturb_token_embeddings` sees wte(input_ids) [B, T, n_embd].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        const EmbeddingHook& perturb_token_embeddings = {});

  // The two halves of forward, for code that handles the embeddings itself.
  torch::Tensor embed_tokens(const torch::Tensor& input_ids);
  torch::Tensor forward_embeddings(const torch::Tensor& token_embeddings, const torch::Tensor& attention_mask = {});

  // The output projection [vocab, n_embd]: wte's weight when tied.
  torch::Tensor output_weight() const;

  const GPT2Config& config() const { return config_; }
  static KeyScheme key_scheme(const GPT2Config& config);

  // transformer.{wte, wpe, h.*, ln_f}; lm_head only when not tied.
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::Dropout drop{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
  torch::nn::Linear lm_head{nullptr};

 private:
  GPT2Config config_;
};
TORCH_MODULE(GPT2LMHeadModel);

// Builds the model from <directory>/config.json and loads its weights.
// options.num_labels does not apply to a language model and is rejected.
Pretrained<GPT2LMHeadModel> load_gpt2(const std::filesystem::path& directory, const PretrainedOptions& options = {});

// ---------------------------------------------------------------------------
// Causal language modelling: the loss and its evaluation (tram-gpt2 and the
// study's language-model experiment)
// ---------------------------------------------------------------------------

// The logits that predict a next token: every position but the last,
// logits[:, :-1] ([B, T-1, V], a view of `logits` [B, T, V]).
torch::Tensor next_token_logits(const torch::Tensor& logits);

// The mean cross-entropy of next_token_logits(...) `predicting` [B, T-1, V]
// against the tokens they predict, input_ids[:, 1:] ([B, T]).
torch::Tensor causal_lm_loss(const torch::Tensor& predicting, const torch::Tensor& input_ids);

struct CausalLmEvaluation {
  double loss = 0.0;        // mean next-token cross-entropy over the set's predictions
  double perplexity = 0.0;  // exp(loss)
};

// Evaluates `model` on the rows of `blocks` [N, T] (token ids, full blocks),
// in eval mode (tram::EvalModeGuard: every submodule's own flag comes back)
// and without gradients, `batch_size` rows at a time, each batch moved to the
// model's device: every batch's mean loss is weighted by its N_b (T - 1)
// predictions and summed in double.
CausalLmEvaluation evaluate_causal_lm(GPT2LMHeadModel& model, const torch::Tensor& blocks, int64_t batch_size);

}  // namespace tram::hf::models

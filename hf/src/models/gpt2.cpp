#include <tram/hf/models/gpt2.h>

#include <tram/eval_mode.h>

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

namespace tram::hf::models {

GPT2Config GPT2Config::from(const HfConfig& config) {
  GPT2Config c;
  // GPT2Config serialises its own names; newer generic names are accepted too.
  auto integer = [&](const char* name, const char* alias, int64_t fallback) {
    return config.has(name) ? config.integer(name) : config.integer(alias, fallback);
  };
  c.vocab_size = config.integer("vocab_size", c.vocab_size);
  c.n_positions = integer("n_positions", "max_position_embeddings", c.n_positions);
  c.n_embd = integer("n_embd", "hidden_size", c.n_embd);
  c.n_layer = integer("n_layer", "num_hidden_layers", c.n_layer);
  c.n_head = integer("n_head", "num_attention_heads", c.n_head);
  constexpr int64_t kDefaultInnerFactor = 4;
  c.n_inner = config.integer("n_inner", kDefaultInnerFactor * c.n_embd);
  c.activation_function =
      parse_activation(config.string("activation_function", "gelu_new"), config.origin(), "activation_function");
  c.resid_pdrop = config.number("resid_pdrop", c.resid_pdrop);
  c.embd_pdrop = config.number("embd_pdrop", c.embd_pdrop);
  c.attn_pdrop = config.number("attn_pdrop", c.attn_pdrop);
  c.layer_norm_epsilon = config.number("layer_norm_epsilon", c.layer_norm_epsilon);
  c.initializer_range = config.number("initializer_range", c.initializer_range);
  c.scale_attn_weights = config.boolean("scale_attn_weights", c.scale_attn_weights);
  c.scale_attn_by_inverse_layer_idx =
      config.boolean("scale_attn_by_inverse_layer_idx", c.scale_attn_by_inverse_layer_idx);
  c.tie_word_embeddings = config.boolean("tie_word_embeddings", c.tie_word_embeddings);
  // reorder_and_upcast_attn only changes the precision of fp16 attention in
  // HF's eager path; the fused attention here accumulates in fp32 anyway.
  if (config.boolean("add_cross_attention", false)) {
    throw std::runtime_error("model config '" + config.origin() +
                             "': add_cross_attention is true; this GPT-2 is a decoder-only language model");
  }
  if (c.n_head <= 0 || c.n_embd % c.n_head != 0) {
    throw std::runtime_error("model config '" + config.origin() + "': n_embd " + std::to_string(c.n_embd) +
                             " is not a multiple of n_head " + std::to_string(c.n_head));
  }
  return c;
}

Conv1DImpl::Conv1DImpl(int64_t in_features, int64_t out_features) : torch::nn::Module("Conv1D") {
  // transformers' Conv1D initialises itself with this std; GPT2LMHeadModel
  // then re-initialises with the config's initializer_range.
  constexpr double kConv1DInitStd = 0.02;
  weight = register_parameter("weight", torch::randn({in_features, out_features}) * kConv1DInitStd);
  bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor Conv1DImpl::forward(const torch::Tensor& input) {
  auto shape = input.sizes().vec();
  shape.back() = weight.size(1);
  return torch::addmm(bias, input.reshape({-1, input.size(-1)}), weight).view(shape);
}

GPT2BlockImpl::GPT2BlockImpl(const GPT2Config& config, int64_t layer_index)
    : torch::nn::Module("GPT2Block"),
      num_heads_(config.n_head),
      attention_dropout_(config.attn_pdrop),
      activation_(config.activation_function) {
  const int64_t hidden = config.n_embd;
  const int64_t head_dim = hidden / config.n_head;
  scale_ = config.scale_attn_weights ? 1.0 / std::sqrt(double(head_dim)) : 1.0;
  if (config.scale_attn_by_inverse_layer_idx) scale_ /= double(layer_index + 1);

  const auto norm = torch::nn::LayerNormOptions({hidden}).eps(config.layer_norm_epsilon);
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(norm));
  auto attn = add_scope(*this, "attn");
  c_attn = attn->register_module("c_attn", Conv1D(hidden, 3 * hidden));
  attn_c_proj = attn->register_module("c_proj", Conv1D(hidden, hidden));
  resid_dropout = attn->register_module("resid_dropout", torch::nn::Dropout(config.resid_pdrop));
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(norm));
  auto mlp = add_scope(*this, "mlp");
  c_fc = mlp->register_module("c_fc", Conv1D(hidden, config.n_inner));
  mlp_c_proj = mlp->register_module("c_proj", Conv1D(config.n_inner, hidden));
  mlp_dropout = mlp->register_module("dropout", torch::nn::Dropout(config.resid_pdrop));
}

torch::Tensor GPT2BlockImpl::forward(const torch::Tensor& hidden, const torch::Tensor& additive_mask) {
  const auto qkv = c_attn(ln_1(hidden)).chunk(3, -1);
  const torch::Tensor context =
      attention(split_heads(qkv[0], num_heads_), split_heads(qkv[1], num_heads_), split_heads(qkv[2], num_heads_),
                additive_mask, attention_dropout_, is_training(), scale_, /*causal=*/true);
  const torch::Tensor attended = resid_dropout(attn_c_proj(merge_heads(context))) + hidden;
  return mlp_dropout(mlp_c_proj(activate(c_fc(ln_2(attended)), activation_))) + attended;
}

GPT2LMHeadModelImpl::GPT2LMHeadModelImpl(const GPT2Config& config)
    : torch::nn::Module("GPT2LMHeadModel"), config_(config) {
  auto transformer = add_scope(*this, "transformer");
  wte = transformer->register_module("wte", torch::nn::Embedding(config.vocab_size, config.n_embd));
  wpe = transformer->register_module("wpe", torch::nn::Embedding(config.n_positions, config.n_embd));
  drop = transformer->register_module("drop", torch::nn::Dropout(config.embd_pdrop));
  h = transformer->register_module("h", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.n_layer; ++i) h->push_back(GPT2Block(config, i));
  ln_f = transformer->register_module(
      "ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.n_embd}).eps(config.layer_norm_epsilon)));
  if (!config.tie_word_embeddings) {
    lm_head = register_module(
        "lm_head", torch::nn::Linear(torch::nn::LinearOptions(config.n_embd, config.vocab_size).bias(false)));
  }

  init_weights_like_hf(*this, config.initializer_range);
  // HF's GPT-2 init: Conv1D weights normal(0, std), and the projections into
  // the residual stream scaled by 1/sqrt(2 n_layer) (GPT-2 paper, section 2.3).
  torch::NoGradGuard no_grad;
  const double residual_std = config.initializer_range / std::sqrt(2.0 * double(config.n_layer));
  for (const auto& module : h->children()) {
    auto* block = module->as<GPT2Block>();
    block->c_attn->weight.normal_(0.0, config.initializer_range);
    block->c_fc->weight.normal_(0.0, config.initializer_range);
    block->attn_c_proj->weight.normal_(0.0, residual_std);
    block->mlp_c_proj->weight.normal_(0.0, residual_std);
  }
}

torch::Tensor GPT2LMHeadModelImpl::embed_tokens(const torch::Tensor& input_ids) { return wte(input_ids); }

torch::Tensor GPT2LMHeadModelImpl::output_weight() const {
  return config_.tie_word_embeddings ? wte->weight : lm_head->weight;
}

torch::Tensor GPT2LMHeadModelImpl::forward_embeddings(const torch::Tensor& token_embeddings,
                                                      const torch::Tensor& attention_mask) {
  TORCH_CHECK(token_embeddings.dim() == 3, "GPT-2: token embeddings must be [batch, length, n_embd], got ",
              token_embeddings.sizes());
  const int64_t length = token_embeddings.size(1);
  TORCH_CHECK(length <= config_.n_positions, "GPT-2: sequence length ", length,
              " exceeds n_positions = ", config_.n_positions, " of config.json; use shorter blocks");
  const torch::Tensor positions =
      torch::arange(length, torch::TensorOptions().dtype(torch::kLong).device(token_embeddings.device()));
  torch::Tensor hidden = drop(token_embeddings + wpe(positions));
  const torch::Tensor mask = attention_mask.defined()
                                 ? causal_attention_mask(length, attention_mask, hidden.scalar_type(), hidden.device())
                                 : torch::Tensor();
  for (const auto& block : *h) hidden = block->as<GPT2Block>()->forward(hidden, mask);
  return torch::nn::functional::linear(ln_f(hidden), output_weight());
}

torch::Tensor GPT2LMHeadModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                           const EmbeddingHook& perturb_token_embeddings) {
  TORCH_CHECK(input_ids.dim() == 2, "GPT-2: input_ids must be [batch, length], got ", input_ids.sizes());
  return forward_embeddings(apply_hook(perturb_token_embeddings, embed_tokens(input_ids)), attention_mask);
}

KeyScheme GPT2LMHeadModelImpl::key_scheme(const GPT2Config& config) {
  KeyScheme scheme;
  scheme.base_prefix = "transformer.";
  scheme.initializer_range = config.initializer_range;
  if (config.tie_word_embeddings) {
    scheme.tied = {{"lm_head.weight", "transformer.wte.weight"}};
  } else {
    scheme.head_prefixes = {"lm_head."};
  }
  scheme.unused = {
      {R"((^|\.)h\.\d+\.(attn|crossattention)\.(masked_)?bias$)",
       "causal-mask buffer that older transformers versions saved; the mask is built on the fly"},
  };
  return scheme;
}

Pretrained<GPT2LMHeadModel> load_gpt2(const std::filesystem::path& directory, const PretrainedOptions& options) {
  HfConfig config = HfConfig::load(directory);
  config.expect_model_type({"gpt2"});
  if (options.num_labels) {
    throw std::invalid_argument("load_gpt2: num_labels does not apply to GPT2LMHeadModel (its head is the vocabulary)");
  }
  const GPT2Config parsed = GPT2Config::from(config);
  GPT2LMHeadModel model(parsed);
  LoadReport report = load_checkpoint(*model, directory, GPT2LMHeadModelImpl::key_scheme(parsed));
  model->to(options.device, options.dtype);
  return {model, config, report};
}

torch::Tensor next_token_logits(const torch::Tensor& logits) { return logits.slice(1, 0, logits.size(1) - 1); }

torch::Tensor causal_lm_loss(const torch::Tensor& predicting, const torch::Tensor& input_ids) {
  return torch::nn::functional::cross_entropy(predicting.reshape({-1, predicting.size(-1)}),
                                              input_ids.slice(1, 1).reshape({-1}));
}

CausalLmEvaluation evaluate_causal_lm(GPT2LMHeadModel& model, const torch::Tensor& blocks, int64_t batch_size) {
  if (batch_size < 1) throw std::invalid_argument("evaluate_causal_lm: batch_size must be >= 1");
  if (blocks.dim() != 2 || blocks.size(0) == 0 || blocks.size(1) < 2) {
    throw std::invalid_argument("evaluate_causal_lm: blocks must be [N >= 1, T >= 2] token ids");
  }
  const torch::Device device = model->output_weight().device();
  tram::EvalModeGuard eval_mode(*model);
  torch::NoGradGuard no_grad;
  double total = 0.0;
  int64_t count = 0;
  for (int64_t start = 0; start < blocks.size(0); start += batch_size) {
    const auto ids = blocks.slice(0, start, start + batch_size).to(device);
    const auto loss = causal_lm_loss(next_token_logits(model->forward(ids)), ids);
    const int64_t predictions = ids.size(0) * (ids.size(1) - 1);
    total += loss.item<double>() * static_cast<double>(predictions);
    count += predictions;
  }
  CausalLmEvaluation result;
  result.loss = total / static_cast<double>(count);
  result.perplexity = std::exp(result.loss);
  return result;
}

}  // namespace tram::hf::models

#include <tram/hf/models/bert.h>

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

namespace tram::hf::models {

EncoderConfig EncoderConfig::from(const HfConfig& config) {
  EncoderConfig c;
  c.model_type = config.string("model_type", c.model_type);
  constexpr int64_t kRobertaPadTokenId = 1;
  if (c.roberta_positions()) c.pad_token_id = kRobertaPadTokenId;
  c.vocab_size = config.integer("vocab_size", c.vocab_size);
  c.hidden_size = config.integer("hidden_size", c.hidden_size);
  c.num_hidden_layers = config.integer("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = config.integer("num_attention_heads", c.num_attention_heads);
  c.intermediate_size = config.integer("intermediate_size", c.intermediate_size);
  c.hidden_act = parse_activation(config.string("hidden_act", "gelu"), config.origin(), "hidden_act");
  c.hidden_dropout_prob = config.number("hidden_dropout_prob", c.hidden_dropout_prob);
  c.attention_probs_dropout_prob = config.number("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
  c.classifier_dropout = config.number("classifier_dropout", c.hidden_dropout_prob);
  c.max_position_embeddings = config.integer("max_position_embeddings", c.max_position_embeddings);
  c.type_vocab_size = config.integer("type_vocab_size", c.type_vocab_size);
  c.pad_token_id = config.integer("pad_token_id", c.pad_token_id);
  c.initializer_range = config.number("initializer_range", c.initializer_range);
  c.layer_norm_eps = config.number("layer_norm_eps", c.layer_norm_eps);
  c.num_labels = config.num_labels();

  const std::string position_type = config.string("position_embedding_type", "absolute");
  if (position_type != "absolute") {
    throw std::runtime_error("model config '" + config.origin() + "': position_embedding_type '" + position_type +
                             "' is not supported (only \"absolute\", as in BERT, RoBERTa and XLM-R)");
  }
  if (config.boolean("is_decoder", false)) {
    throw std::runtime_error("model config '" + config.origin() +
                             "': is_decoder is true; these models are bidirectional encoders");
  }
  if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0) {
    throw std::runtime_error("model config '" + config.origin() + "': hidden_size " + std::to_string(c.hidden_size) +
                             " is not a multiple of num_attention_heads " + std::to_string(c.num_attention_heads));
  }
  if (c.pad_token_id < 0 || c.pad_token_id >= c.vocab_size) {
    throw std::runtime_error("model config '" + config.origin() + "': pad_token_id " + std::to_string(c.pad_token_id) +
                             " is outside the vocabulary (vocab_size " + std::to_string(c.vocab_size) + ")");
  }
  return c;
}

// ---------------------------------------------------------------------------
// Embeddings and layers
// ---------------------------------------------------------------------------

EncoderEmbeddingsImpl::EncoderEmbeddingsImpl(const EncoderConfig& config)
    : torch::nn::Module("EncoderEmbeddings"), config_(config) {
  const int64_t hidden = config.hidden_size;
  word_embeddings = register_module(
      "word_embeddings",
      torch::nn::Embedding(torch::nn::EmbeddingOptions(config.vocab_size, hidden).padding_idx(config.pad_token_id)));
  auto position_options = torch::nn::EmbeddingOptions(config.max_position_embeddings, hidden);
  // RoBERTa's pad positions all read row padding_idx, which gets no gradient.
  if (config.roberta_positions()) position_options.padding_idx(config.pad_token_id);
  position_embeddings = register_module("position_embeddings", torch::nn::Embedding(position_options));
  token_type_embeddings =
      register_module("token_type_embeddings", torch::nn::Embedding(config.type_vocab_size, hidden));
  LayerNorm = register_module("LayerNorm",
                              torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(config.layer_norm_eps)));
  dropout = register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
}

torch::Tensor EncoderEmbeddingsImpl::position_ids(const torch::Tensor& input_ids) const {
  const int64_t length = input_ids.size(1);
  // The largest position: T-1 for BERT, padding_idx + T for RoBERTa.
  const int64_t largest = config_.roberta_positions() ? config_.pad_token_id + length : length - 1;
  TORCH_CHECK(largest < config_.max_position_embeddings, config_.model_type, ": sequence length ", length,
              " needs position ", largest, ", but max_position_embeddings is ", config_.max_position_embeddings,
              "; truncate the inputs to ", config_.max_position_embeddings - (largest - length + 1), " tokens");
  if (!config_.roberta_positions()) {
    return torch::arange(length, input_ids.options().dtype(torch::kLong)).unsqueeze(0).expand_as(input_ids);
  }
  // fairseq's make_positions: padding_idx + 1, +2, ... over real tokens; pads get padding_idx.
  const torch::Tensor real = input_ids.ne(config_.pad_token_id).to(torch::kLong);
  return real.cumsum(1) * real + config_.pad_token_id;
}

torch::Tensor EncoderEmbeddingsImpl::forward(const torch::Tensor& token_embeddings, const torch::Tensor& input_ids,
                                             const torch::Tensor& token_type_ids) {
  const torch::Tensor types = token_type_ids.defined() ? token_type_ids : torch::zeros_like(input_ids);
  // The order of the sums is Hugging Face's, so fp32 results match bit for bit.
  const torch::Tensor summed =
      token_embeddings + token_type_embeddings(types) + position_embeddings(position_ids(input_ids));
  return dropout(LayerNorm(summed));
}

EncoderLayerImpl::EncoderLayerImpl(const EncoderConfig& config)
    : torch::nn::Module("EncoderLayer"),
      num_heads_(config.num_attention_heads),
      attention_dropout_(config.attention_probs_dropout_prob),
      activation_(config.hidden_act) {
  const int64_t hidden = config.hidden_size;
  const auto norm = torch::nn::LayerNormOptions({hidden}).eps(config.layer_norm_eps);
  auto attention_scope = add_scope(*this, "attention");
  auto self_scope = add_scope(*attention_scope, "self");
  query = self_scope->register_module("query", torch::nn::Linear(hidden, hidden));
  key = self_scope->register_module("key", torch::nn::Linear(hidden, hidden));
  value = self_scope->register_module("value", torch::nn::Linear(hidden, hidden));
  auto attention_output_scope = add_scope(*attention_scope, "output");
  attention_output = attention_output_scope->register_module("dense", torch::nn::Linear(hidden, hidden));
  attention_norm = attention_output_scope->register_module("LayerNorm", torch::nn::LayerNorm(norm));
  attention_output_dropout =
      attention_output_scope->register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
  intermediate =
      add_scope(*this, "intermediate")->register_module("dense", torch::nn::Linear(hidden, config.intermediate_size));
  auto output_scope = add_scope(*this, "output");
  output = output_scope->register_module("dense", torch::nn::Linear(config.intermediate_size, hidden));
  output_norm = output_scope->register_module("LayerNorm", torch::nn::LayerNorm(norm));
  output_dropout = output_scope->register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
}

torch::Tensor EncoderLayerImpl::forward(const torch::Tensor& hidden, const torch::Tensor& additive_mask) {
  const torch::Tensor q = split_heads(query(hidden), num_heads_);
  const torch::Tensor k = split_heads(key(hidden), num_heads_);
  const torch::Tensor v = split_heads(value(hidden), num_heads_);
  const double scale = 1.0 / std::sqrt(double(q.size(-1)));
  const torch::Tensor context =
      merge_heads(attention(q, k, v, additive_mask, attention_dropout_, is_training(), scale));
  const torch::Tensor attended = attention_norm(attention_output_dropout(attention_output(context)) + hidden);
  const torch::Tensor inner = activate(intermediate(attended), activation_);
  return output_norm(output_dropout(output(inner)) + attended);
}

// ---------------------------------------------------------------------------
// Classifiers
// ---------------------------------------------------------------------------

SequenceClassifierImpl::SequenceClassifierImpl(const EncoderConfig& config, const std::string& class_name,
                                               const std::string& base_name, bool with_pooler)
    : torch::nn::Module(class_name), config_(config), base_name_(base_name) {
  auto base = add_scope(*this, base_name);
  embeddings = base->register_module("embeddings", EncoderEmbeddings(config));
  layers = add_scope(*base, "encoder")->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(EncoderLayer(config));
  if (with_pooler) {
    pooler =
        add_scope(*base, "pooler")->register_module("dense", torch::nn::Linear(config.hidden_size, config.hidden_size));
  }
}

torch::Tensor SequenceClassifierImpl::embed_tokens(const torch::Tensor& input_ids) {
  TORCH_CHECK(input_ids.dim() == 2, config_.model_type, ": input_ids must be [batch, length], got ", input_ids.sizes());
  return embeddings->word_embeddings(input_ids);
}

torch::Tensor SequenceClassifierImpl::forward_embeddings(const torch::Tensor& token_embeddings,
                                                         const torch::Tensor& input_ids,
                                                         const torch::Tensor& attention_mask,
                                                         const torch::Tensor& token_type_ids) {
  return classify(encode(token_embeddings, input_ids, attention_mask, token_type_ids));
}

torch::Tensor SequenceClassifierImpl::encode(const torch::Tensor& token_embeddings, const torch::Tensor& input_ids,
                                             const torch::Tensor& attention_mask,
                                             const torch::Tensor& token_type_ids) {
  torch::Tensor hidden = embeddings(token_embeddings, input_ids, token_type_ids);
  const torch::Tensor mask =
      attention_mask.defined() ? padding_attention_mask(attention_mask, hidden.scalar_type()) : torch::Tensor();
  for (const auto& layer : *layers) hidden = layer->as<EncoderLayer>()->forward(hidden, mask);
  return hidden;
}

torch::Tensor SequenceClassifierImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                              const EmbeddingHook& perturb_token_embeddings,
                                              const torch::Tensor& token_type_ids) {
  return forward_embeddings(apply_hook(perturb_token_embeddings, embed_tokens(input_ids)), input_ids, attention_mask,
                            token_type_ids);
}

KeyScheme SequenceClassifierImpl::base_key_scheme() const {
  KeyScheme scheme;
  scheme.base_prefix = base_name_ + ".";
  scheme.head_prefixes = {"classifier."};
  scheme.initializer_range = config_.initializer_range;
  scheme.unused = {
      {R"(embeddings\.(position_ids|token_type_ids)$)", "index buffer that older transformers versions saved"},
  };
  return scheme;
}

BertForSequenceClassificationImpl::BertForSequenceClassificationImpl(const EncoderConfig& config)
    : SequenceClassifierImpl(config, "BertForSequenceClassification", "bert", /*with_pooler=*/true) {
  dropout = register_module("dropout", torch::nn::Dropout(config.classifier_dropout));
  classifier = register_module("classifier", torch::nn::Linear(config.hidden_size, config.num_labels));
  init_weights_like_hf(*this, config.initializer_range);
}

torch::Tensor BertForSequenceClassificationImpl::classify(const torch::Tensor& sequence_output) {
  const torch::Tensor pooled = torch::tanh(pooler(sequence_output.select(1, 0)));
  return classifier(dropout(pooled));
}

KeyScheme BertForSequenceClassificationImpl::key_scheme() const {
  KeyScheme scheme = base_key_scheme();
  scheme.unused.emplace_back(R"(^cls\.)", "pre-training head (masked LM / next sentence), unused for classification");
  return scheme;
}

RobertaForSequenceClassificationImpl::RobertaForSequenceClassificationImpl(const EncoderConfig& config)
    : SequenceClassifierImpl(config,
                             config.model_type == "xlm-roberta" ? "XLMRobertaForSequenceClassification"
                                                                : "RobertaForSequenceClassification",
                             "roberta", /*with_pooler=*/false) {
  auto head = add_scope(*this, "classifier");
  dense = head->register_module("dense", torch::nn::Linear(config.hidden_size, config.hidden_size));
  dropout = head->register_module("dropout", torch::nn::Dropout(config.classifier_dropout));
  out_proj = head->register_module("out_proj", torch::nn::Linear(config.hidden_size, config.num_labels));
  init_weights_like_hf(*this, config.initializer_range);
}

torch::Tensor RobertaForSequenceClassificationImpl::classify(const torch::Tensor& sequence_output) {
  // The <s> token, RoBERTa's [CLS].
  const torch::Tensor first = dropout(sequence_output.select(1, 0));
  return out_proj(dropout(torch::tanh(dense(first))));
}

KeyScheme RobertaForSequenceClassificationImpl::key_scheme() const {
  KeyScheme scheme = base_key_scheme();
  scheme.unused.emplace_back(R"(^lm_head\.)", "masked-LM pre-training head, unused for classification");
  scheme.unused.emplace_back(R"(^(roberta\.)?pooler\.)", "pooler, unused by the RoBERTa classification head");
  return scheme;
}

SequenceClassifier make_sequence_classifier(const EncoderConfig& config) {
  if (config.model_type == "bert") return std::make_shared<BertForSequenceClassificationImpl>(config);
  if (config.model_type == "roberta" || config.model_type == "xlm-roberta") {
    return std::make_shared<RobertaForSequenceClassificationImpl>(config);
  }
  throw std::invalid_argument("make_sequence_classifier: model_type '" + config.model_type +
                              "' is not one of 'bert', 'roberta', 'xlm-roberta'");
}

Pretrained<SequenceClassifier> load_sequence_classifier(const std::filesystem::path& directory,
                                                        const PretrainedOptions& options) {
  HfConfig config = HfConfig::load(directory);
  config.expect_model_type({"bert", "roberta", "xlm-roberta"});
  if (options.num_labels) config = config.with_num_labels(*options.num_labels);
  const EncoderConfig parsed = EncoderConfig::from(config);
  SequenceClassifier model = make_sequence_classifier(parsed);
  LoadReport report = load_checkpoint(*model, directory, model->key_scheme());
  model->to(options.device, options.dtype);
  return {model, config, report};
}

}  // namespace tram::hf::models

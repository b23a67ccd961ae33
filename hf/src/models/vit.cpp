#include <tram/hf/models/vit.h>

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

namespace tram::hf::models {

ViTConfig ViTConfig::from(const HfConfig& config) {
  ViTConfig c;
  c.hidden_size = config.integer("hidden_size", c.hidden_size);
  c.num_hidden_layers = config.integer("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = config.integer("num_attention_heads", c.num_attention_heads);
  c.intermediate_size = config.integer("intermediate_size", c.intermediate_size);
  c.hidden_act = parse_activation(config.string("hidden_act", "gelu"), config.origin(), "hidden_act");
  c.hidden_dropout_prob = config.number("hidden_dropout_prob", c.hidden_dropout_prob);
  c.attention_probs_dropout_prob = config.number("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
  c.initializer_range = config.number("initializer_range", c.initializer_range);
  c.layer_norm_eps = config.number("layer_norm_eps", c.layer_norm_eps);
  std::tie(c.image_height, c.image_width) = config.size_pair("image_size", c.image_height);
  std::tie(c.patch_height, c.patch_width) = config.size_pair("patch_size", c.patch_height);
  c.num_channels = config.integer("num_channels", c.num_channels);
  c.qkv_bias = config.boolean("qkv_bias", c.qkv_bias);
  c.num_labels = config.num_labels();
  if (c.num_attention_heads <= 0 || c.hidden_size % c.num_attention_heads != 0) {
    throw std::runtime_error("model config '" + config.origin() + "': hidden_size " + std::to_string(c.hidden_size) +
                             " is not a multiple of num_attention_heads " + std::to_string(c.num_attention_heads));
  }
  if (c.patch_height <= 0 || c.patch_width <= 0 || c.image_height < c.patch_height || c.image_width < c.patch_width) {
    throw std::runtime_error("model config '" + config.origin() + "': image_size " + std::to_string(c.image_height) +
                             "x" + std::to_string(c.image_width) + " holds no patch of patch_size " +
                             std::to_string(c.patch_height) + "x" + std::to_string(c.patch_width));
  }
  return c;
}

ViTLayerImpl::ViTLayerImpl(const ViTConfig& config)
    : torch::nn::Module("ViTLayer"),
      num_heads_(config.num_attention_heads),
      attention_dropout_(config.attention_probs_dropout_prob),
      activation_(config.hidden_act) {
  const int64_t hidden = config.hidden_size;
  auto attention_scope = add_scope(*this, "attention");
  auto self_scope = add_scope(*attention_scope, "attention");
  const auto projection = torch::nn::LinearOptions(hidden, hidden).bias(config.qkv_bias);
  query = self_scope->register_module("query", torch::nn::Linear(projection));
  key = self_scope->register_module("key", torch::nn::Linear(projection));
  value = self_scope->register_module("value", torch::nn::Linear(projection));
  auto attention_output_scope = add_scope(*attention_scope, "output");
  attention_output = attention_output_scope->register_module("dense", torch::nn::Linear(hidden, hidden));
  attention_output_dropout =
      attention_output_scope->register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
  intermediate =
      add_scope(*this, "intermediate")->register_module("dense", torch::nn::Linear(hidden, config.intermediate_size));
  auto output_scope = add_scope(*this, "output");
  output = output_scope->register_module("dense", torch::nn::Linear(config.intermediate_size, hidden));
  output_dropout = output_scope->register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
  const auto norm = torch::nn::LayerNormOptions({hidden}).eps(config.layer_norm_eps);
  layernorm_before = register_module("layernorm_before", torch::nn::LayerNorm(norm));
  layernorm_after = register_module("layernorm_after", torch::nn::LayerNorm(norm));
}

torch::Tensor ViTLayerImpl::forward(const torch::Tensor& hidden) {
  const torch::Tensor normed = layernorm_before(hidden);
  const torch::Tensor q = split_heads(query(normed), num_heads_);
  const torch::Tensor k = split_heads(key(normed), num_heads_);
  const torch::Tensor v = split_heads(value(normed), num_heads_);
  const double scale = 1.0 / std::sqrt(double(q.size(-1)));
  const torch::Tensor context = merge_heads(attention(q, k, v, {}, attention_dropout_, is_training(), scale));
  const torch::Tensor attended = attention_output_dropout(attention_output(context)) + hidden;
  const torch::Tensor inner = activate(intermediate(layernorm_after(attended)), activation_);
  return output_dropout(output(inner)) + attended;
}

ViTForImageClassificationImpl::ViTForImageClassificationImpl(const ViTConfig& config)
    : torch::nn::Module("ViTForImageClassification"), config_(config) {
  const int64_t hidden = config.hidden_size;
  auto vit = add_scope(*this, "vit");
  auto embeddings = add_scope(*vit, "embeddings");
  cls_token = embeddings->register_parameter("cls_token", torch::zeros({1, 1, hidden}));
  auto patch_scope = add_scope(*embeddings, "patch_embeddings");
  patch_projection = patch_scope->register_module(
      "projection",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(config.num_channels, hidden, {config.patch_height, config.patch_width})
                            .stride({config.patch_height, config.patch_width})));
  position_embeddings =
      embeddings->register_parameter("position_embeddings", torch::zeros({1, config.num_patches() + 1, hidden}));
  embedding_dropout = embeddings->register_module("dropout", torch::nn::Dropout(config.hidden_dropout_prob));
  layers = add_scope(*vit, "encoder")->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(ViTLayer(config));
  layernorm = vit->register_module(
      "layernorm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(config.layer_norm_eps)));
  classifier = register_module("classifier", torch::nn::Linear(hidden, config.num_labels));

  init_weights_like_hf(*this, config.initializer_range);
  // HF draws these two from trunc_normal_(std) with the default cut at +-2
  // (absolute, not in std units): with std = initializer_range (0.02) the cut
  // is never reached, so a normal draw is the same distribution.
  torch::NoGradGuard no_grad;
  cls_token.normal_(0.0, config.initializer_range);
  position_embeddings.normal_(0.0, config.initializer_range);
}

torch::Tensor ViTForImageClassificationImpl::embed_patches(const torch::Tensor& pixel_values) {
  TORCH_CHECK(pixel_values.dim() == 4 && pixel_values.size(1) == config_.num_channels &&
                  pixel_values.size(2) == config_.image_height && pixel_values.size(3) == config_.image_width,
              "ViT: pixel_values must be [batch, ", config_.num_channels, ", ", config_.image_height, ", ",
              config_.image_width, "] as in config.json (num_channels, image_size), got ", pixel_values.sizes());
  // [B, hidden, H/ph, W/pw] -> [B, num_patches, hidden]
  return patch_projection(pixel_values.to(patch_projection->weight.scalar_type())).flatten(2).transpose(1, 2);
}

torch::Tensor ViTForImageClassificationImpl::forward_patch_embeddings(const torch::Tensor& patch_embeddings) {
  const torch::Tensor cls = cls_token.expand({patch_embeddings.size(0), -1, -1});
  torch::Tensor hidden = embedding_dropout(torch::cat({cls, patch_embeddings}, 1) + position_embeddings);
  for (const auto& layer : *layers) hidden = layer->as<ViTLayer>()->forward(hidden);
  return classifier(layernorm(hidden).select(1, 0));
}

torch::Tensor ViTForImageClassificationImpl::forward(const torch::Tensor& pixel_values,
                                                     const EmbeddingHook& perturb_patch_embeddings) {
  return forward_patch_embeddings(apply_hook(perturb_patch_embeddings, embed_patches(pixel_values)));
}

KeyScheme ViTForImageClassificationImpl::key_scheme(const ViTConfig& config) {
  KeyScheme scheme;
  scheme.base_prefix = "vit.";
  scheme.head_prefixes = {"classifier."};
  scheme.initializer_range = config.initializer_range;
  scheme.unused = {
      {R"(^(vit\.)?pooler\.)", "pooler of ViTModel, unused by ViTForImageClassification"},
      {R"(embeddings\.mask_token$)", "mask token of masked-image pre-training"},
  };
  return scheme;
}

Pretrained<ViTForImageClassification> load_vit(const std::filesystem::path& directory,
                                               const PretrainedOptions& options) {
  HfConfig config = HfConfig::load(directory);
  config.expect_model_type({"vit"});
  if (options.num_labels) config = config.with_num_labels(*options.num_labels);
  const ViTConfig parsed = ViTConfig::from(config);
  ViTForImageClassification model(parsed);
  LoadReport report = load_checkpoint(*model, directory, ViTForImageClassificationImpl::key_scheme(parsed));
  model->to(options.device, options.dtype);
  return {model, config, report};
}

}  // namespace tram::hf::models

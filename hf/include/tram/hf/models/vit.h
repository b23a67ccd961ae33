// Vision Transformer for image classification with Hugging Face's parameter
// names (ViTForImageClassification): named_parameters() are exactly the keys
// of a ViT checkpoint such as google/vit-base-patch16-224.
//
//   patch projection (Conv2d, kernel = stride = patch) -> [hook] -> prepend CLS
//   -> + position embeddings -> dropout -> pre-LN encoder layers -> LayerNorm
//   -> classifier on the CLS token (no pooler)
#pragma once

#include <tram/hf/models/common.h>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

namespace tram::hf::models {

// The fields of a ViT config.json this model uses; defaults are
// ViTConfig's (ViT-B/16 at 224x224).
struct ViTConfig {
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  Activation hidden_act = Activation::kGelu;
  double hidden_dropout_prob = 0.0;
  double attention_probs_dropout_prob = 0.0;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  int64_t image_height = 224, image_width = 224;  // "image_size": an int or [h, w]
  int64_t patch_height = 16, patch_width = 16;    // "patch_size": an int or [h, w]
  int64_t num_channels = 3;
  bool qkv_bias = true;
  int64_t num_labels = 2;

  static ViTConfig from(const HfConfig& config);
  int64_t num_patches() const { return (image_height / patch_height) * (image_width / patch_width); }
};

// One pre-LN encoder layer: names attention.attention.{query,key,value},
// attention.output.dense, intermediate.dense, output.dense, layernorm_before,
// layernorm_after.
class ViTLayerImpl : public torch::nn::Module {
 public:
  explicit ViTLayerImpl(const ViTConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden);

  torch::nn::LayerNorm layernorm_before{nullptr}, layernorm_after{nullptr};
  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  torch::nn::Linear attention_output{nullptr}, intermediate{nullptr}, output{nullptr};
  torch::nn::Dropout attention_output_dropout{nullptr}, output_dropout{nullptr};

 private:
  int64_t num_heads_;
  double attention_dropout_;
  Activation activation_;
};
TORCH_MODULE(ViTLayer);

class ViTForImageClassificationImpl : public torch::nn::Module {
 public:
  explicit ViTForImageClassificationImpl(const ViTConfig& config);

  // pixel_values [B, num_channels, image_height, image_width], normalised as
  // the checkpoint's image processor does -> logits [B, num_labels].
  // `perturb_patch_embeddings` sees the patch embeddings [B, num_patches,
  // hidden] (not the CLS token), before position embeddings are added.
  torch::Tensor forward(const torch::Tensor& pixel_values, const EmbeddingHook& perturb_patch_embeddings = {});

  // The two halves of forward, for code that handles the embeddings itself.
  torch::Tensor embed_patches(const torch::Tensor& pixel_values);
  torch::Tensor forward_patch_embeddings(const torch::Tensor& patch_embeddings);

  const ViTConfig& config() const { return config_; }
  // How checkpoint keys map onto this model (see checkpoint.h).
  static KeyScheme key_scheme(const ViTConfig& config);

  // vit.embeddings.*
  torch::Tensor cls_token, position_embeddings;
  torch::nn::Conv2d patch_projection{nullptr};
  torch::nn::Dropout embedding_dropout{nullptr};
  // vit.encoder.layer.*, vit.layernorm, classifier
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm layernorm{nullptr};
  torch::nn::Linear classifier{nullptr};

 private:
  ViTConfig config_;
};
TORCH_MODULE(ViTForImageClassification);

// Builds the model from <directory>/config.json and loads
// <directory>/model.safetensors (or its sharded index).
Pretrained<ViTForImageClassification> load_vit(const std::filesystem::path& directory,
                                               const PretrainedOptions& options = {});

}  // namespace tram::hf::models

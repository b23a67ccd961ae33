// BERT, RoBERTa and XLM-R encoders for sequence classification with Hugging
// Face's parameter names (BertForSequenceClassification,
// RobertaForSequenceClassification, XLMRobertaForSequenceClassification):
// named_parameters() are exactly the checkpoint keys.
//
//   word_embeddings(input_ids) -> [hook] -> + token_type_embeddings
//   + position_embeddings -> LayerNorm -> dropout -> post-LN encoder layers
//   -> head on the first token:
//        BERT:    pooler.dense + tanh -> dropout -> classifier
//        RoBERTa: dropout -> classifier.dense + tanh -> dropout -> classifier.out_proj
//
// RoBERTa and XLM-R number positions from padding_idx + 1 over the non-pad
// tokens (fairseq's make_positions); BERT from 0.
#pragma once

#include <tram/hf/models/common.h>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

namespace tram::hf::models {

// The fields of a BERT / RoBERTa / XLM-R config.json these models use;
// defaults are BertConfig's, with RobertaConfig's pad_token_id (1) when
// model_type is "roberta" or "xlm-roberta".
struct EncoderConfig {
  std::string model_type = "bert";  // "bert", "roberta" or "xlm-roberta"
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  Activation hidden_act = Activation::kGelu;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  double classifier_dropout = 0.1;  // "classifier_dropout": null means hidden_dropout_prob
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  int64_t num_labels = 2;

  static EncoderConfig from(const HfConfig& config);
  bool roberta_positions() const { return model_type != "bert"; }
};

// Embeddings: word_embeddings, position_embeddings, token_type_embeddings,
// LayerNorm.
class EncoderEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit EncoderEmbeddingsImpl(const EncoderConfig& config);
  // `token_embeddings` = word_embeddings(input_ids), possibly perturbed;
  // input_ids give RoBERTa its positions; token_type_ids may be undefined (0).
  torch::Tensor forward(const torch::Tensor& token_embeddings, const torch::Tensor& input_ids,
                        const torch::Tensor& token_type_ids);
  torch::Tensor position_ids(const torch::Tensor& input_ids) const;

  torch::nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
  torch::nn::LayerNorm LayerNorm{nullptr};  // NOLINT: Hugging Face's name
  torch::nn::Dropout dropout{nullptr};

 private:
  EncoderConfig config_;
};
TORCH_MODULE(EncoderEmbeddings);

// One post-LN layer: attention.self.{query,key,value},
// attention.output.{dense,LayerNorm}, intermediate.dense, output.{dense,LayerNorm}.
class EncoderLayerImpl : public torch::nn::Module {
 public:
  explicit EncoderLayerImpl(const EncoderConfig& config);
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& additive_mask);

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  torch::nn::Linear attention_output{nullptr}, intermediate{nullptr}, output{nullptr};
  torch::nn::LayerNorm attention_norm{nullptr}, output_norm{nullptr};
  torch::nn::Dropout attention_output_dropout{nullptr}, output_dropout{nullptr};

 private:
  int64_t num_heads_;
  double attention_dropout_;
  Activation activation_;
};
TORCH_MODULE(EncoderLayer);

// What BERT, RoBERTa and XLM-R classifiers share: the encoder under
// `base_name` ("bert" or "roberta"), with the pooler only for BERT. The head
// is the subclass's.
class SequenceClassifierImpl : public torch::nn::Module {
 public:
  // input_ids [B, T]; attention_mask [B, T] with 1 for real tokens and 0 for
  // padding (undefined: nothing padded); token_type_ids [B, T] (BERT sentence
  // pairs; undefined: all 0) -> logits [B, num_labels].
  // `perturb_token_embeddings` sees word_embeddings(input_ids) [B, T, hidden].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        const EmbeddingHook& perturb_token_embeddings = {}, const torch::Tensor& token_type_ids = {});

  // The two halves of forward, for code that handles the embeddings itself.
  torch::Tensor embed_tokens(const torch::Tensor& input_ids);
  torch::Tensor forward_embeddings(const torch::Tensor& token_embeddings, const torch::Tensor& input_ids,
                                   const torch::Tensor& attention_mask = {}, const torch::Tensor& token_type_ids = {});

  // The encoder's last hidden states [B, T, hidden] (what the head reads):
  // for a masked-LM head during pre-training, or representation analyses.
  torch::Tensor encode(const torch::Tensor& token_embeddings, const torch::Tensor& input_ids,
                       const torch::Tensor& attention_mask = {}, const torch::Tensor& token_type_ids = {});
  const EncoderConfig& config() const { return config_; }
  virtual KeyScheme key_scheme() const = 0;

  EncoderEmbeddings embeddings{nullptr};
  torch::nn::ModuleList layers{nullptr};  // <base>.encoder.layer
  torch::nn::Linear pooler{nullptr};      // bert.pooler.dense (BERT only)

 protected:
  SequenceClassifierImpl(const EncoderConfig& config, const std::string& class_name, const std::string& base_name,
                         bool with_pooler);
  // Logits from the last hidden states [B, T, hidden].
  virtual torch::Tensor classify(const torch::Tensor& sequence_output) = 0;
  KeyScheme base_key_scheme() const;

  EncoderConfig config_;
  std::string base_name_;
};
using SequenceClassifier = std::shared_ptr<SequenceClassifierImpl>;

class BertForSequenceClassificationImpl : public SequenceClassifierImpl {
 public:
  explicit BertForSequenceClassificationImpl(const EncoderConfig& config);
  KeyScheme key_scheme() const override;

  torch::nn::Dropout dropout{nullptr};
  torch::nn::Linear classifier{nullptr};

 protected:
  torch::Tensor classify(const torch::Tensor& sequence_output) override;
};
TORCH_MODULE(BertForSequenceClassification);

// Also XLMRobertaForSequenceClassification: the same architecture.
class RobertaForSequenceClassificationImpl : public SequenceClassifierImpl {
 public:
  explicit RobertaForSequenceClassificationImpl(const EncoderConfig& config);
  KeyScheme key_scheme() const override;

  torch::nn::Linear dense{nullptr}, out_proj{nullptr};  // classifier.dense, classifier.out_proj
  torch::nn::Dropout dropout{nullptr};

 protected:
  torch::Tensor classify(const torch::Tensor& sequence_output) override;
};
TORCH_MODULE(RobertaForSequenceClassification);
using XLMRobertaForSequenceClassification = RobertaForSequenceClassification;

// Builds the classifier config.json's model_type names ("bert": BERT;
// "roberta", "xlm-roberta": RoBERTa/XLM-R) and loads its weights.
SequenceClassifier make_sequence_classifier(const EncoderConfig& config);
Pretrained<SequenceClassifier> load_sequence_classifier(const std::filesystem::path& directory,
                                                        const PretrainedOptions& options = {});

}  // namespace tram::hf::models

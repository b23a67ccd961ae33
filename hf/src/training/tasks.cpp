#include <tram/hf/training/tasks.h>

#include <tram/hf/checkpoint.h>
#include <tram/hf/data/image_datasets.h>
#include <tram/hf/data/lm_text.h>
#include <tram/hf/data/nli.h>
#include <tram/hf/data/text_labels.h>
#include <tram/hf/models/bert.h>
#include <tram/hf/models/gpt2.h>
#include <tram/hf/models/vit.h>
#include <tram/hf/tokenizers/batch.h>
#include <tram/hf/tokenizers/tokenizer.h>

#include <tram/tram.h>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

namespace tram::hf::training {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

void seed_run(const Options& options) { torch::manual_seed(options.seed + static_cast<uint64_t>(options.rank)); }

void copy_tokenizer_files(const fs::path& from, const fs::path& to) {
  static const char* const kFiles[] = {"vocab.json",     "merges.txt",           "vocab.txt",
                                       "sentencepiece.bpe.model", "spiece.model", "tokenizer.json",
                                       "tokenizer_config.json",   "special_tokens_map.json"};
  fs::create_directories(to);
  for (const char* name : kFiles) {
    if (!fs::is_regular_file(from / name) || fs::equivalent(from, to)) continue;
    // Streams, not fs::copy_file: the LibTorch wheel shadows some std::filesystem functions.
    std::ifstream in(from / name, std::ios::binary);
    std::ofstream out(to / name, std::ios::binary | std::ios::trunc);
    out << in.rdbuf();
    if (!out.flush()) throw std::runtime_error("cannot write " + (to / name).string());
  }
}

namespace {

models::PretrainedOptions load_options(const Options& options, std::optional<int64_t> num_labels) {
  models::PretrainedOptions o;
  o.num_labels = num_labels;
  o.dtype = options.dtype == "float64" ? torch::kFloat64 : torch::kFloat32;
  o.device = options.device == "cuda" ? torch::Device(torch::kCUDA, options.local_rank) : torch::Device(torch::kCPU);
  return o;
}

void report_load(const Options& options, const LoadReport& report) {
  if (options.rank == 0 && !options.quiet) std::cerr << report.summary() << "\n";
}

// Runs `body` on consecutive slices [begin, end) of n examples, in eval mode
// and without gradients; every submodule's own mode comes back afterwards,
// also when `body` throws.
template <class Body>
void for_each_eval_batch(torch::nn::Module& module, int64_t n, int64_t batch_size, Body&& body) {
  tram::EvalModeGuard eval_mode(module);
  torch::NoGradGuard no_grad;
  for (int64_t begin = 0; begin < n; begin += batch_size) body(begin, std::min(n, begin + batch_size));
}

std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> indices(static_cast<size_t>(end - begin));
  for (int64_t i = begin; i < end; ++i) indices[static_cast<size_t>(i - begin)] = i;
  return indices;
}

torch::Tensor index_tensor(const std::vector<int64_t>& indices) {
  return torch::tensor(indices, torch::kLong);
}

// ----------------------------------------------------------------------------- ViT

data::ImageClassification read_images(const std::string& path, bool train, int64_t limit) {
  data::ImageClassification set;
  if (fs::is_directory(path)) {
    set = data::read_mnist_split(path, train);
  } else {
    auto cifar = data::read_cifar100(path);
    set = {cifar.images, cifar.fine_labels};
  }
  if (limit > 0 && limit < set.images.size(0)) {
    set.images = set.images.slice(0, 0, limit);
    set.labels = set.labels.slice(0, 0, limit);
  }
  return set;
}

class ImageClassificationTask : public Task {
 public:
  explicit ImageClassificationTask(const Options& options) : options_(options) {
    seed_run(options);
    train_ = read_images(options.train, true, options.limit);
    for (const auto& [name, path] : options.eval) {
      names_.push_back(name);
      eval_.push_back(read_images(path, false, options.limit));
    }
    int64_t labels = options.num_labels.value_or(0);
    if (!options.num_labels) {
      labels = train_.labels.max().item<int64_t>() + 1;
      for (const auto& set : eval_) labels = std::max(labels, set.labels.max().item<int64_t>() + 1);
    }
    auto loaded = models::load_vit(options.model, load_options(options, labels));
    report_load(options, loaded.report);
    model_ = loaded.model;
    config_ = std::make_unique<HfConfig>(loaded.config);
    dtype_ = load_options(options, labels).dtype;
    device_ = load_options(options, labels).device;
  }

  std::shared_ptr<torch::nn::Module> module() override { return model_.ptr(); }
  int64_t train_size() const override { return train_.images.size(0); }

  tram::PassOutput forward(const std::vector<int64_t>& indices, const tram::Pass& pass) override {
    const auto index = index_tensor(indices);
    const auto logits = model_->forward(pixels(train_.images.index_select(0, index)), models::perturb_hook(pass));
    const auto labels = train_.labels.index_select(0, index).to(device_);
    return {F::cross_entropy(logits, labels), logits, {}};
  }

  std::vector<std::string> eval_names() const override { return names_; }

  Metrics evaluate(size_t set, int64_t batch_size) override {
    const auto& data = eval_.at(set);
    double loss = 0.0;
    int64_t correct = 0;
    const int64_t n = data.images.size(0);
    for_each_eval_batch(*model_, n, batch_size, [&](int64_t begin, int64_t end) {
      const auto logits = model_->forward(pixels(data.images.slice(0, begin, end)));
      const auto labels = data.labels.slice(0, begin, end).to(device_);
      loss += F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
      correct += logits.argmax(-1).eq(labels).sum().item<int64_t>();
    });
    return {{"loss", loss / static_cast<double>(n)}, {"accuracy", static_cast<double>(correct) / static_cast<double>(n)}};
  }

  void save_pretrained(const fs::path& directory) const override {
    hf::save_pretrained(*model_, *config_, directory);
  }

 private:
  // [B, C, H, W] in [0, 1] -> the model's channels and size, normalised
  // (ViTImageProcessor: mean 0.5, std 0.5).
  torch::Tensor pixels(torch::Tensor images) const {
    const auto& config = model_->config();
    images = images.to(device_, dtype_);
    if (images.size(1) != config.num_channels) {
      if (images.size(1) == 1) {
        images = images.expand({-1, config.num_channels, -1, -1});
      } else if (config.num_channels == 1) {
        images = images.mean(1, true);
      } else {
        throw std::runtime_error("images have " + std::to_string(images.size(1)) + " channels, the model " +
                                 std::to_string(config.num_channels));
      }
    }
    if (images.size(2) != config.image_height || images.size(3) != config.image_width) {
      images = F::interpolate(images, F::InterpolateFuncOptions()
                                          .size(std::vector<int64_t>{config.image_height, config.image_width})
                                          .mode(torch::kBilinear)
                                          .align_corners(false));
    }
    return (images - 0.5) / 0.5;
  }

  Options options_;
  data::ImageClassification train_;
  std::vector<data::ImageClassification> eval_;
  std::vector<std::string> names_;
  models::ViTForImageClassification model_{nullptr};
  std::unique_ptr<HfConfig> config_;
  torch::ScalarType dtype_ = torch::kFloat32;
  torch::Device device_ = torch::kCPU;
};

// ----------------------------------------------------------------------------- GPT-2

class CausalLmTask : public Task {
 public:
  explicit CausalLmTask(const Options& options) : options_(options) {
    seed_run(options);
    auto loaded = models::load_gpt2(options.model, load_options(options, std::nullopt));
    report_load(options, loaded.report);
    model_ = loaded.model;
    config_ = std::make_unique<HfConfig>(loaded.config);
    device_ = load_options(options, std::nullopt).device;
    tokenizer_ = tokenizers::load_tokenizer(options.tokenizer);
    block_ = std::min(options.max_length, model_->config().n_positions);
    train_ = read_blocks(options.train);
    for (const auto& [name, path] : options.eval) {
      names_.push_back(name);
      eval_.push_back(read_blocks(path));
    }
  }

  std::shared_ptr<torch::nn::Module> module() override { return model_.ptr(); }
  int64_t train_size() const override { return train_.size(0); }
  std::pair<std::string, int64_t> unit() const override { return {"tokens", block_}; }

  tram::PassOutput forward(const std::vector<int64_t>& indices, const tram::Pass& pass) override {
    const auto ids = train_.index_select(0, index_tensor(indices)).to(device_);
    const auto logits = model_->forward(ids, {}, models::perturb_hook(pass));
    return {models::causal_lm_loss(models::next_token_logits(logits), ids), logits, {}};
  }

  std::vector<std::string> eval_names() const override { return names_; }

  Metrics evaluate(size_t set, int64_t batch_size) override {
    const auto result = models::evaluate_causal_lm(model_, eval_.at(set), batch_size);
    return {{"loss", result.loss}, {"perplexity", result.perplexity}};
  }

  void save_pretrained(const fs::path& directory) const override {
    hf::save_pretrained(*model_, *config_, directory);
    copy_tokenizer_files(options_.tokenizer, directory);
  }

 private:
  torch::Tensor read_blocks(const std::string& path) const {
    const auto tokens = data::tokenize_documents(*tokenizer_, data::read_documents(path));
    torch::Tensor blocks = data::pack_blocks(tokens, block_);
    if (blocks.size(0) == 0) {
      throw std::runtime_error(path + ": " + std::to_string(tokens.size()) + " tokens, fewer than one block of " +
                               std::to_string(block_) + " (--max-length)");
    }
    const int64_t vocab = model_->config().vocab_size;
    const int64_t top = *std::max_element(tokens.begin(), tokens.end());
    if (top >= vocab) {
      throw std::runtime_error(path + ": the tokenizer in " + options_.tokenizer.string() + " gives id " +
                               std::to_string(top) + ", beyond the model's vocab_size " + std::to_string(vocab) +
                               " (use the model's own tokenizer)");
    }
    if (options_.limit > 0 && options_.limit < blocks.size(0)) blocks = blocks.slice(0, 0, options_.limit);
    return blocks;
  }

  Options options_;
  models::GPT2LMHeadModel model_{nullptr};
  std::unique_ptr<HfConfig> config_;
  std::unique_ptr<tokenizers::Tokenizer> tokenizer_;
  torch::Device device_ = torch::kCPU;
  int64_t block_ = 0;
  torch::Tensor train_;
  std::vector<torch::Tensor> eval_;
  std::vector<std::string> names_;
};

// ----------------------------------------------------------------------------- XLM-R / BERT

struct TextExamples {
  std::vector<tokenizers::Encoding> encodings;
  torch::Tensor labels;  // [N] int64
};

class TextClassificationTask : public Task {
 public:
  explicit TextClassificationTask(const Options& options) : options_(options) {
    seed_run(options);
    tokenizer_ = tokenizers::load_tokenizer(options.tokenizer);
    const HfConfig config = HfConfig::load(options.model);
    const int64_t positions = config.integer("max_position_embeddings", 512) -
                              (config.string("model_type", "bert") == "bert" ? 0 : 2);
    max_length_ = std::min(options.max_length, positions);
    text_labels_ = data::is_text_label_file(options.train);
    train_ = read(options.train, /*training=*/true);
    for (const auto& [name, path] : options.eval) {
      names_.push_back(name);
      eval_.push_back(read(path, false));
    }
    int64_t labels = options.num_labels.value_or(0);
    if (!options.num_labels) {
      labels = text_labels_ ? (label_ids_.empty() ? train_.labels.max().item<int64_t>() + 1
                                                  : static_cast<int64_t>(label_ids_.size()))
                            : data::kNumNliLabels;
      for (const auto& set : eval_) labels = std::max(labels, set.labels.max().item<int64_t>() + 1);
    }
    auto loaded = models::load_sequence_classifier(options.model, load_options(options, labels));
    report_load(options, loaded.report);
    model_ = loaded.model;
    config_ = std::make_unique<HfConfig>(loaded.config);
    device_ = load_options(options, labels).device;
    if (const int64_t top = std::max(train_.labels.max().item<int64_t>(), int64_t{0}); top >= labels) {
      throw UsageError("--num-labels " + std::to_string(labels) + ": the training data has label id " +
                       std::to_string(top));
    }
    const int64_t vocab = model_->config().vocab_size;
    for (const auto& set : eval_) check_vocabulary(set, vocab);
    check_vocabulary(train_, vocab);
  }

  std::shared_ptr<torch::nn::Module> module() override { return model_; }
  int64_t train_size() const override { return static_cast<int64_t>(train_.encodings.size()); }

  tram::PassOutput forward(const std::vector<int64_t>& indices, const tram::Pass& pass) override {
    const auto batch = collate(train_, indices);
    const auto logits = model_->forward(batch.input_ids, batch.attention_mask, models::perturb_hook(pass),
                                        batch.token_type_ids);
    const auto labels = train_.labels.index_select(0, index_tensor(indices)).to(device_);
    return {F::cross_entropy(logits, labels), logits, {}};
  }

  std::vector<std::string> eval_names() const override { return names_; }

  Metrics evaluate(size_t set, int64_t batch_size) override {
    const auto& data = eval_.at(set);
    double loss = 0.0;
    int64_t correct = 0;
    const auto n = static_cast<int64_t>(data.encodings.size());
    for_each_eval_batch(*model_, n, batch_size, [&](int64_t begin, int64_t end) {
      const auto batch = collate(data, range(begin, end));
      const auto logits = model_->forward(batch.input_ids, batch.attention_mask, {}, batch.token_type_ids);
      const auto labels = data.labels.slice(0, begin, end).to(device_);
      loss += F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().reduction(torch::kSum)).item<double>();
      correct += logits.argmax(-1).eq(labels).sum().item<int64_t>();
    });
    return {{"loss", loss / static_cast<double>(n)}, {"accuracy", static_cast<double>(correct) / static_cast<double>(n)}};
  }

  void save_pretrained(const fs::path& directory) const override {
    hf::save_pretrained(*model_, *config_, directory);
    copy_tokenizer_files(options_.tokenizer, directory);
  }

 private:
  tokenizers::BatchEncoding collate(const TextExamples& set, const std::vector<int64_t>& indices) const {
    std::vector<tokenizers::Encoding> encodings;
    encodings.reserve(indices.size());
    for (const int64_t i : indices) encodings.push_back(set.encodings.at(static_cast<size_t>(i)));
    tokenizers::BatchOptions batch_options;
    batch_options.max_length = max_length_;
    auto batch = tokenizers::collate(*tokenizer_, encodings, batch_options);
    batch.input_ids = batch.input_ids.to(device_);
    batch.attention_mask = batch.attention_mask.to(device_);
    if (batch.token_type_ids.defined()) batch.token_type_ids = batch.token_type_ids.to(device_);
    return batch;
  }

  void check_vocabulary(const TextExamples& set, int64_t vocab) const {
    for (const auto& encoding : set.encodings) {
      for (const int64_t id : encoding.ids) {
        if (id >= vocab) {
          throw std::runtime_error("the tokenizer in " + options_.tokenizer.string() + " gives id " +
                                   std::to_string(id) + ", beyond the model's vocab_size " + std::to_string(vocab) +
                                   " (use the model's own tokenizer)");
        }
      }
    }
  }

  TextExamples read(const std::string& path, bool training) {
    TextExamples set;
    std::vector<int64_t> labels;
    if (!text_labels_) {
      for (const auto& example : data::read_nli(path)) {
        set.encodings.push_back(tokenizer_->encode_for_model(example.premise, example.hypothesis, max_length_));
        labels.push_back(example.label);
        if (options_.limit > 0 && static_cast<int64_t>(labels.size()) >= options_.limit) break;
      }
    } else {
      if (!data::is_text_label_file(path)) {
        throw std::runtime_error(path + ": expected text<TAB>label rows like the --train file");
      }
      const auto rows = data::read_text_labels(path, options_.limit);
      if (training) label_ids_ = data::label_names(rows);
      labels = data::label_ids(rows, label_ids_);
      for (const auto& row : rows) set.encodings.push_back(tokenizer_->encode_for_model(row.text, max_length_));
    }
    if (labels.empty()) throw std::runtime_error(path + ": no examples");
    set.labels = torch::tensor(labels, torch::kLong);
    return set;
  }

  Options options_;
  std::unique_ptr<tokenizers::Tokenizer> tokenizer_;
  int64_t max_length_ = 128;
  bool text_labels_ = false;
  std::map<std::string, int64_t> label_ids_;  // label name -> id (sorted names), text<TAB>label files
  TextExamples train_;
  std::vector<TextExamples> eval_;
  std::vector<std::string> names_;
  models::SequenceClassifier model_;
  std::unique_ptr<HfConfig> config_;
  torch::Device device_ = torch::kCPU;
};

}  // namespace

std::unique_ptr<Task> make_image_classification_task(const Options& options) {
  return std::make_unique<ImageClassificationTask>(options);
}
std::unique_ptr<Task> make_causal_lm_task(const Options& options) { return std::make_unique<CausalLmTask>(options); }
std::unique_ptr<Task> make_text_classification_task(const Options& options) {
  return std::make_unique<TextClassificationTask>(options);
}

std::unique_ptr<Task> make_task(const Options& options) {
  switch (options.program) {
    case Program::kVit: return make_image_classification_task(options);
    case Program::kGpt2: return make_causal_lm_task(options);
    case Program::kXlmr: return make_text_classification_task(options);
  }
  throw std::logic_error("unknown program");
}

}  // namespace tram::hf::training

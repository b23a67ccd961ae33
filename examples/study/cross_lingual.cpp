// Zero-shot cross-lingual transfer: fortunes in twelve languages.
#include "corpora.h"
#include "experiments.h"

#include <tram/hf/checkpoint.h>
#include <tram/hf/data/split.h>
#include <tram/hf/models/bert.h>
#include <tram/metrics.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <sstream>

namespace tram::study {

namespace fs = std::filesystem;
namespace models = hf::models;

constexpr double kEvaluationFraction = 0.2;

std::vector<SpanPair> make_span_pairs(const std::vector<std::string>& texts, int64_t count, size_t span_bytes,
                                      uint64_t seed) {
  std::vector<const std::string*> usable;
  for (const auto& text : texts) {
    if (text.size() >= span_bytes) usable.push_back(&text);
  }
  if (usable.empty()) throw std::runtime_error("no text of at least " + std::to_string(span_bytes) + " bytes");
  hf::data::SplitMix64 random(seed);
  auto on_boundary = [](const std::string& text, size_t i) {
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
    return i;
  };
  std::vector<SpanPair> pairs;
  pairs.reserve(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) {
    const std::string& text = *usable[random.below(usable.size())];
    // A window of at most two spans, from a random character of the text...
    const size_t room = text.size() > 2 * span_bytes ? text.size() - 2 * span_bytes : 0;
    const size_t begin = on_boundary(text, random.below(room + 1));
    const std::string window = utf8_prefix(text.substr(begin), 2 * span_bytes);
    // ... cut at a character in its middle third.
    const size_t cut = on_boundary(window, window.size() / 3 + random.below(window.size() / 3 + 1));
    std::string head = window.substr(0, cut), tail = window.substr(cut);
    const int64_t label = k % 2 == 0 ? 1 : 0;
    pairs.push_back(label == 1 ? SpanPair{std::move(head), std::move(tail), 1}
                               : SpanPair{std::move(tail), std::move(head), 0});
  }
  return pairs;
}

namespace {

struct EncodedPairs {
  torch::Tensor ids;     // [N, T] int64
  torch::Tensor mask;    // [N, T] int64 (1: token, 0: padding)
  torch::Tensor labels;  // [N] int64
  EncodedPairs rows(const torch::Tensor& index) const {
    return {ids.index_select(0, index), mask.index_select(0, index), labels.index_select(0, index)};
  }
  EncodedPairs slice(int64_t begin, int64_t end) const {
    return {ids.slice(0, begin, end), mask.slice(0, begin, end), labels.slice(0, begin, end)};
  }
};

// One sequence <s> first second </s> (no separator: where the parts meet is
// for the model to find), right-padded to 2 * span + 2.
EncodedPairs encode_pairs(const std::vector<SpanPair>& pairs, int64_t span) {
  const int64_t length = 2 * span + 2;
  auto ids = torch::full({static_cast<int64_t>(pairs.size()), length}, kPadToken, torch::kInt64);
  auto mask = torch::zeros({static_cast<int64_t>(pairs.size()), length}, torch::kInt64);
  auto labels = torch::empty({static_cast<int64_t>(pairs.size())}, torch::kInt64);
  auto id = ids.accessor<int64_t, 2>();
  auto on = mask.accessor<int64_t, 2>();
  for (size_t n = 0; n < pairs.size(); ++n) {
    std::vector<int64_t> tokens = {kClsToken};
    for (auto t : encoder_byte_ids(pairs[n].first)) tokens.push_back(t);
    for (auto t : encoder_byte_ids(pairs[n].second)) tokens.push_back(t);
    tokens.push_back(kSepToken);
    for (size_t t = 0; t < tokens.size() && t < static_cast<size_t>(length); ++t) {
      id[n][t] = tokens[t];
      on[n][t] = 1;
    }
    labels[static_cast<int64_t>(n)] = pairs[n].label;
  }
  return {ids, mask, labels};
}

// RoBERTa's masked-LM head (dense, GELU, LayerNorm, output tied to the word
// embeddings, bias), registered as "lm_head" so the pre-trained checkpoint
// has Hugging Face's keys; classification loads skip it.
struct MaskedLmHeadImpl : torch::nn::Module {
  MaskedLmHeadImpl(int64_t hidden, int64_t vocabulary, double eps) {
    dense = register_module("dense", torch::nn::Linear(hidden, hidden));
    layer_norm = register_module("layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({hidden}).eps(eps)));
    bias = register_parameter("bias", torch::zeros({vocabulary}));
  }
  torch::Tensor forward(const torch::Tensor& hidden, const torch::Tensor& word_embeddings) {
    auto x = layer_norm(torch::gelu(dense(hidden)));
    return torch::nn::functional::linear(x, word_embeddings, bias);
  }
  torch::nn::Linear dense{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  torch::Tensor bias;
};
TORCH_MODULE(MaskedLmHead);

// Every run starts from its own random head (the checkpoint's head was never
// trained: pre-training used the masked-LM head), as Hugging Face initialises one.
void reinitialise_head(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    if (item.key().rfind("classifier.", 0) != 0) continue;
    auto& parameter = item.value();
    if (parameter.dim() > 1) parameter.normal_(0.0, 0.02);
    else parameter.zero_();
  }
}

class CrossLingualExperiment : public Experiment {
 public:
  explicit CrossLingualExperiment(const CrossLingualSettings& settings) : s_(settings) {}

  std::string name() const override { return "crosslingual"; }

  TableSpec table() const override {
    std::vector<std::string> others;
    for (const auto& language : languages()) {
      if (language.name != "en") others.push_back(language.name);
    }
    return {"Zero-shot cross-lingual: byte-level XLM-R-style encoder, text-order task fine-tuned on English "
            "(accuracy %)",
            "accuracy (%)",
            true,
            "en",
            others,
            {"radius", "d", "sharpness", "cka-en", "cka-zs"}};
  }

  // What the pre-trained checkpoint depends on: a cached one with
  // another stamp is made again.
  std::string pretraining_stamp() const {
    std::ostringstream text;
    text << "crosslingual/v1 hidden=" << s_.hidden << " layers=" << s_.layers << " heads=" << s_.heads
         << " span=" << s_.span << " pre=" << s_.pretrain_steps << "x" << s_.pretrain_batch << "@" << s_.pretrain_lr;
    return text.str();
  }

  std::string fingerprint() const override {
    std::ostringstream text;
    text << pretraining_stamp() << " ft=" << s_.finetune_examples << "/" << s_.finetune_steps << "x" << s_.finetune_batch << "@"
         << s_.finetune_lr << " eval=" << s_.eval_examples << " sharp=" << s_.sharpness_batches << " cka=mean";
    return text.str();
  }

  void prepare(const fs::path& cache_dir) override {
    std::vector<std::vector<std::string>> pretraining;
    for (const auto& language : languages()) {
      auto split = split_texts(read_corpus(language), kEvaluationFraction);
      const uint64_t language_seed = text_hash(language.name);
      eval_sets_.emplace_back(language.name,
                              encode_pairs(make_span_pairs(split.evaluation, s_.eval_examples,
                                                           static_cast<size_t>(s_.span), language_seed),
                                           s_.span));
      if (language.name == "en") {
        finetune_ = encode_pairs(
            make_span_pairs(split.train, s_.finetune_examples, static_cast<size_t>(s_.span), /*seed=*/1), s_.span);
      }
      pretraining.push_back(std::move(split.train));
    }
    checkpoint_ = cache_dir / "pretrained";
    const std::string stamp = pretraining_stamp();
    if (!cached_checkpoint_matches(checkpoint_, stamp)) {
      pretrain_model(pretraining);
      stamp_checkpoint(checkpoint_, stamp);
    }
    // The pre-trained representations, once, for CKA.
    auto pretrained = models::load_sequence_classifier(checkpoint_).model;
    for (const auto& [language, pairs] : eval_sets_) pretrained_features_.push_back(features(pretrained, pairs));
  }

  RunRecord run(const std::string& method, int64_t seed) override {
    seed_everything(static_cast<uint64_t>(seed));
    models::PretrainedOptions options;
    options.num_labels = 2;
    auto model = models::load_sequence_classifier(checkpoint_, options).model;
    reinitialise_head(*model);
    model->train();
    auto optimizer = make_study_optimizer(method, *model, s_.finetune_lr);
    hf::training::Schedule schedule{hf::training::ScheduleKind::kPolynomial, s_.finetune_lr,
                                          s_.finetune_steps / 10, s_.finetune_steps};
    schedule.end_lr = 0.0;
    EpochBatches batches(finetune_.ids.size(0), s_.finetune_batch);
    const auto started = std::chrono::steady_clock::now();
    auto summary = train(
        *optimizer, schedule,
        [&](int64_t step) -> ForwardClosure {
          auto batch = finetune_.rows(batches.rows_of(step));
          return [model, batch](const Pass& pass) -> PassOutput {
            namespace F = torch::nn::functional;
            // pass.select: the rows ESAM keeps for pass 2 (every row otherwise).
            const auto labels = pass.select(batch.labels);
            auto logits = model->forward(pass.select(batch.ids), pass.select(batch.mask), models::perturb_hook(pass));
            auto rows = F::cross_entropy(logits.detach(), labels, F::CrossEntropyFuncOptions().reduction(torch::kNone));
            return {F::cross_entropy(logits, labels), logits, {}, rows};
          };
        },
        s_.finetune_batch, "crosslingual " + method + " seed " + std::to_string(seed), "pairs");
    RunRecord record = new_record(name(), method, seed, summary);
    double cka_others = 0.0;
    for (size_t k = 0; k < eval_sets_.size(); ++k) {
      const auto& [language, pairs] = eval_sets_[k];
      record.metrics.emplace_back(language, 100.0 * accuracy(model, pairs));
      const double cka = tram::metrics::linear_cka(pretrained_features_[k], features(model, pairs));
      if (language == "en") record.analysis["cka-en"] = cka;
      else cka_others += cka / static_cast<double>(eval_sets_.size() - 1);
    }
    record.analysis["cka-zs"] = cka_others;
    record.analysis["sharpness"] = sharpness(model);
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    record.fingerprint = fingerprint();
    return record;
  }

 private:
  void pretrain_model(const std::vector<std::vector<std::string>>& texts_by_language) {
    seed_everything(0);
    const int64_t length = 2 * s_.span + 2;
    nlohmann::json json = {{"model_type", "xlm-roberta"},
                           {"architectures", {"XLMRobertaForSequenceClassification"}},
                           {"vocab_size", kEncoderVocabulary},
                           {"hidden_size", s_.hidden},
                           {"num_hidden_layers", s_.layers},
                           {"num_attention_heads", s_.heads},
                           {"intermediate_size", 4 * s_.hidden},
                           {"hidden_act", "gelu"},
                           {"hidden_dropout_prob", 0.0},
                           {"attention_probs_dropout_prob", 0.0},
                           {"max_position_embeddings", length + kPadToken + 1},
                           {"type_vocab_size", 1},
                           {"pad_token_id", kPadToken},
                           {"bos_token_id", kClsToken},
                           {"eos_token_id", kSepToken},
                           {"layer_norm_eps", 1e-5},
                           {"num_labels", 2}};
    hf::HfConfig config(json, "study crosslingual config");
    auto model = models::make_sequence_classifier(models::EncoderConfig::from(config));
    auto head = MaskedLmHead(s_.hidden, kEncoderVocabulary, 1e-5);
    model->register_module("lm_head", head.ptr());
    model->train();
    auto optimizer = make_study_optimizer("adam", *model, s_.pretrain_lr);
    hf::training::Schedule schedule{hf::training::ScheduleKind::kCosine, s_.pretrain_lr,
                                          s_.pretrain_steps / 10, s_.pretrain_steps};
    const int64_t languages_count = static_cast<int64_t>(texts_by_language.size());
    train(
        *optimizer, schedule,
        [&](int64_t) -> ForwardClosure {
          // Languages sampled uniformly (XLM-R smooths its language
          // distribution the same way), then a text and a window of it.
          auto ids = torch::full({s_.pretrain_batch, length}, kPadToken, torch::kInt64);
          auto id = ids.accessor<int64_t, 2>();
          for (int64_t b = 0; b < s_.pretrain_batch; ++b) {
            const auto& texts = texts_by_language[torch::randint(languages_count, {1}).item<int64_t>()];
            const auto& text = texts[torch::randint(static_cast<int64_t>(texts.size()), {1}).item<int64_t>()];
            const int64_t room = length - 2;
            int64_t begin = 0;
            if (static_cast<int64_t>(text.size()) > room) {
              begin = torch::randint(static_cast<int64_t>(text.size()) - room + 1, {1}).item<int64_t>();
            }
            const std::string window = utf8_prefix(utf8_suffix(text, text.size() - begin), room);
            id[b][0] = kClsToken;
            int64_t t = 1;
            for (auto token : encoder_byte_ids(window)) id[b][t++] = token;
            id[b][t] = kSepToken;
          }
          auto mask = ids.ne(kPadToken).to(torch::kInt64);
          // BERT's masking: 15% of the byte tokens are predicted; of those 80%
          // become <mask>, 10% a random byte, 10% stay.
          auto is_byte = ids.ge(kByteOffset);
          auto predicted = torch::rand(ids.sizes()).lt(0.15).logical_and(is_byte);
          auto draw = torch::rand(ids.sizes());
          auto inputs = torch::where(predicted.logical_and(draw.lt(0.8)), torch::full_like(ids, kMaskToken), ids);
          auto random_bytes = torch::randint(kByteOffset, kEncoderVocabulary, ids.sizes(), torch::kInt64);
          inputs = torch::where(predicted.logical_and(draw.ge(0.8)).logical_and(draw.lt(0.9)), random_bytes, inputs);
          auto targets = ids.masked_select(predicted);
          return [model, head, inputs, mask, predicted, targets](const Pass&) mutable -> PassOutput {
            auto hidden = model->encode(model->embed_tokens(inputs), inputs, mask);
            auto rows = hidden.index({predicted});
            auto logits = head->forward(rows, model->embeddings->word_embeddings->weight);
            return {torch::nn::functional::cross_entropy(logits, targets), logits, {}};
          };
        },
        s_.pretrain_batch, "crosslingual masked-LM pre-training (" + std::to_string(languages_count) + " languages)",
        "sequences");
    fs::create_directories(checkpoint_);
    hf::save_pretrained(*model, config, checkpoint_);
  }

  static double accuracy(const models::SequenceClassifier& model, const EncodedPairs& pairs) {
    torch::NoGradGuard no_grad;
    EvalModeGuard eval_mode(*model);
    int64_t correct = 0;
    for (int64_t start = 0; start < pairs.ids.size(0); start += 256) {
      auto batch = pairs.slice(start, start + 256);
      correct += model->forward(batch.ids, batch.mask).argmax(1).eq(batch.labels).sum().item<int64_t>();
    }
    return static_cast<double>(correct) / static_cast<double>(pairs.ids.size(0));
  }

  // The encoder's output averaged over the tokens of each example. (The
  // paper's CKA analysis, B.8, takes the representation the head reads, the
  // first token's; masked-LM pre-training never trains the first token's
  // output here, so its pre-trained representation carries little, and the
  // token average is compared instead.)
  static torch::Tensor features(const models::SequenceClassifier& model, const EncodedPairs& pairs) {
    torch::NoGradGuard no_grad;
    EvalModeGuard eval_mode(*model);
    std::vector<torch::Tensor> rows;
    for (int64_t start = 0; start < pairs.ids.size(0); start += 256) {
      auto batch = pairs.slice(start, start + 256);
      auto hidden = model->encode(model->embed_tokens(batch.ids), batch.ids, batch.mask);
      auto weights = batch.mask.to(hidden.scalar_type()).unsqueeze(-1);
      rows.push_back((hidden * weights).sum(1) / weights.sum(1));
    }
    return torch::cat(rows);
  }

  // Epsilon-sharpness (docs/ALGORITHMS.md §9, default options) on English
  // evaluation pairs, batches of 32.
  double sharpness(const models::SequenceClassifier& model) const {
    const auto& english = eval_sets_.front().second;
    const int64_t batches = std::min<int64_t>(s_.sharpness_batches, english.ids.size(0) / 32);
    auto result = tram::metrics::epsilon_sharpness(
        *model,
        [&](int64_t i) {
          auto batch = english.slice(32 * i, 32 * (i + 1));
          return torch::nn::functional::cross_entropy(model->forward(batch.ids, batch.mask), batch.labels);
        },
        batches);
    return result.sharpness;
  }

  CrossLingualSettings s_;
  EncodedPairs finetune_;
  std::vector<std::pair<std::string, EncodedPairs>> eval_sets_;  // languages() order; "en" first
  std::vector<torch::Tensor> pretrained_features_;
  fs::path checkpoint_;
};

}  // namespace

std::unique_ptr<Experiment> make_cross_lingual_experiment(const CrossLingualSettings& settings) {
  return std::make_unique<CrossLingualExperiment>(settings);
}

}  // namespace tram::study

// Cross-domain language modelling: English fortune domains (Debian `fortunes`).
#include "corpora.h"
#include "experiments.h"

#include <tram/hf/checkpoint.h>
#include <tram/hf/data/lm_text.h>
#include <tram/hf/data/split.h>
#include <tram/hf/models/gpt2.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <sstream>

namespace tram::study {

namespace fs = std::filesystem;
namespace models = hf::models;

// Evaluation text is the hash-selected 20% of each domain (corpora.h).
constexpr double kEvaluationFraction = 0.2;

const std::vector<std::string>& lm_pretraining_domains() {
  // General-interest domains: quotations, jokes, sayings.
  static const std::vector<std::string> domains = {"people",     "wisdom",    "miscellaneous", "humorists",
                                                   "men-women",  "work",      "platitudes",    "definitions",
                                                   "songs-poems", "education", "riddles",       "zippy"};
  return domains;
}

const std::vector<std::string>& lm_evaluation_domains() {
  // The fine-tuning domain first, then domains held out of all training:
  // near it (linux, perl, science) and far from it.
  static const std::vector<std::string> domains = {"computers", "linux", "perl",   "science", "medicine",
                                                   "law",       "politics", "food", "sports",  "love",
                                                   "literature", "art",   "kids"};
  return domains;
}

namespace {

torch::Tensor blocks_of(const std::vector<std::string>& texts, int64_t block) {
  return hf::data::pack_blocks(lm_token_ids(texts), block);
}

// At most `limit` rows of `blocks`, a fixed random subset (data seed 0).
torch::Tensor subset_rows(const torch::Tensor& blocks, int64_t limit) {
  if (blocks.size(0) <= limit) return blocks;
  auto order = hf::data::permutation(blocks.size(0), 0);
  order.resize(static_cast<size_t>(limit));
  std::sort(order.begin(), order.end());
  return blocks.index_select(0, torch::tensor(order));
}

// The pass's output keeps only the logits that predict a token (the last
// position predicts nothing): the trust-region distances compare those.
// Each block's mean token loss is its row loss (ESAM's data selection keeps
// whole blocks; pass->select gives the kept ones).
PassOutput causal_lm_pass(models::GPT2LMHeadModel& model, const torch::Tensor& all_ids, const Pass* pass) {
  const auto ids = pass ? pass->select(all_ids) : all_ids;
  auto logits = pass ? model->forward(ids, {}, models::perturb_hook(*pass)) : model->forward(ids);
  auto predicting = models::next_token_logits(logits);
  namespace F = torch::nn::functional;
  auto tokens = F::cross_entropy(predicting.detach().reshape({-1, predicting.size(-1)}),
                                 ids.slice(1, 1).reshape({-1}), F::CrossEntropyFuncOptions().reduction(torch::kNone));
  return {models::causal_lm_loss(predicting, ids), predicting, {}, tokens.view({ids.size(0), -1}).mean(1)};
}

// Rows per evaluation batch.
constexpr int64_t kEvaluationBatch = 64;

class LanguageModelExperiment : public Experiment {
 public:
  explicit LanguageModelExperiment(const LanguageModelSettings& settings) : s_(settings) {}

  std::string name() const override { return "lm"; }

  TableSpec table() const override {
    std::vector<std::string> held_out(lm_evaluation_domains().begin() + 1, lm_evaluation_domains().end());
    return {"Cross-domain LM: GPT-2 pre-trained on general fortunes, fine-tuned on '" + s_.finetune_domain +
                "' (byte perplexity, lower is better)",
            "perplexity", false, s_.finetune_domain, held_out, {"radius", "d"}};
  }

  // What the pre-trained checkpoint depends on: a cached one with
  // another stamp is made again.
  std::string pretraining_stamp() const {
    std::ostringstream text;
    text << "lm/v1 embd=" << s_.embedding << " layers=" << s_.layers << " heads=" << s_.heads << " block=" << s_.block
         << " pre=" << s_.pretrain_steps << "x" << s_.pretrain_batch << "@" << s_.pretrain_lr;
    return text.str();
  }

  std::string fingerprint() const override {
    std::ostringstream text;
    text << pretraining_stamp() << " ft=" << s_.finetune_domain << "/" << s_.finetune_steps << "x" << s_.finetune_batch << "@"
         << s_.finetune_lr << " eval=" << s_.eval_blocks;
    return text.str();
  }

  void prepare(const fs::path& cache_dir) override {
    if (s_.finetune_domain != lm_evaluation_domains().front()) {
      throw std::invalid_argument("lm experiment: the fine-tuning domain must be '" + lm_evaluation_domains().front() +
                                  "' (the evaluation domains are chosen around it)");
    }
    for (const auto& domain : lm_evaluation_domains()) {
      const auto split = split_texts(read_corpus(find_corpus(english_domains(), domain)), kEvaluationFraction);
      if (domain == s_.finetune_domain) finetune_blocks_ = blocks_of(split.train, s_.block);
      eval_sets_.emplace_back(domain, subset_rows(blocks_of(split.evaluation, s_.block), s_.eval_blocks));
    }
    checkpoint_ = cache_dir / "pretrained";
    const std::string stamp = pretraining_stamp();
    if (cached_checkpoint_matches(checkpoint_, stamp)) return;
    std::vector<std::string> pretraining;
    for (const auto& domain : lm_pretraining_domains()) {
      auto split = split_texts(read_corpus(find_corpus(english_domains(), domain)), kEvaluationFraction);
      pretraining.insert(pretraining.end(), split.train.begin(), split.train.end());
    }
    pretrain_model(blocks_of(pretraining, s_.block));
    stamp_checkpoint(checkpoint_, stamp);
  }

  std::vector<RunRecord> reference_rows() override {
    auto loaded = models::load_gpt2(checkpoint_);
    RunRecord record;
    record.experiment = name();
    record.method = "pre-trained";
    record.fingerprint = fingerprint();
    for (const auto& [domain, blocks] : eval_sets_) record.metrics.emplace_back(domain, perplexity(loaded.model, blocks));
    return {record};
  }

  RunRecord run(const std::string& method, int64_t seed) override {
    seed_everything(static_cast<uint64_t>(seed));
    auto model = models::load_gpt2(checkpoint_).model;
    model->train();
    auto optimizer = make_study_optimizer(method, *model, s_.finetune_lr);
    hf::training::Schedule schedule{hf::training::ScheduleKind::kPolynomial, s_.finetune_lr,
                                          s_.finetune_steps / 10, s_.finetune_steps};
    schedule.end_lr = 0.0;
    EpochBatches batches(finetune_blocks_.size(0), s_.finetune_batch);
    const auto started = std::chrono::steady_clock::now();
    auto summary = train(
        *optimizer, schedule,
        [&](int64_t step) -> ForwardClosure {
          auto ids = finetune_blocks_.index_select(0, batches.rows_of(step));
          return [model, ids](const Pass& pass) mutable { return causal_lm_pass(model, ids, &pass); };
        },
        s_.finetune_batch * s_.block, "lm " + method + " seed " + std::to_string(seed), "tokens");
    RunRecord record = new_record(name(), method, seed, summary);
    for (const auto& [domain, blocks] : eval_sets_) record.metrics.emplace_back(domain, perplexity(model, blocks));
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    record.fingerprint = fingerprint();
    return record;
  }

 private:
  void pretrain_model(const torch::Tensor& blocks) {
    seed_everything(0);
    nlohmann::json json = {{"model_type", "gpt2"},
                           {"architectures", {"GPT2LMHeadModel"}},
                           {"vocab_size", kLmVocabulary},
                           {"n_positions", s_.block},
                           {"n_embd", s_.embedding},
                           {"n_layer", s_.layers},
                           {"n_head", s_.heads},
                           {"activation_function", "gelu_new"},
                           {"resid_pdrop", 0.0},
                           {"embd_pdrop", 0.0},
                           {"attn_pdrop", 0.0},
                           {"bos_token_id", kLmEndOfText},
                           {"eos_token_id", kLmEndOfText},
                           {"tie_word_embeddings", true}};
    hf::HfConfig config(json, "study lm config");
    models::GPT2LMHeadModel model(models::GPT2Config::from(config));
    model->train();
    auto optimizer = make_study_optimizer("adam", *model, s_.pretrain_lr);
    hf::training::Schedule schedule{hf::training::ScheduleKind::kCosine, s_.pretrain_lr,
                                          s_.pretrain_steps / 10, s_.pretrain_steps};
    const int64_t n = blocks.size(0);
    train(
        *optimizer, schedule,
        [&](int64_t) -> ForwardClosure {
          auto ids = blocks.index_select(0, torch::randint(n, {s_.pretrain_batch}, torch::kInt64));
          return [model, ids](const Pass&) mutable { return causal_lm_pass(model, ids, nullptr); };
        },
        s_.pretrain_batch * s_.block, "lm pre-training (" + std::to_string(lm_pretraining_domains().size()) + " domains)",
        "tokens");
    fs::create_directories(checkpoint_);
    hf::save_pretrained(*model, config, checkpoint_);
  }

  // exp(mean next-byte cross-entropy) over the blocks.
  static double perplexity(models::GPT2LMHeadModel& model, const torch::Tensor& blocks) {
    return models::evaluate_causal_lm(model, blocks, kEvaluationBatch).perplexity;
  }

  LanguageModelSettings s_;
  torch::Tensor finetune_blocks_;
  std::vector<std::pair<std::string, torch::Tensor>> eval_sets_;
  fs::path checkpoint_;
};

}  // namespace

std::unique_ptr<Experiment> make_language_model_experiment(const LanguageModelSettings& settings) {
  return std::make_unique<LanguageModelExperiment>(settings);
}

}  // namespace tram::study

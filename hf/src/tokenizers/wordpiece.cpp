#include <tram/hf/tokenizers/wordpiece.h>

#include <tram/hf/tokenizers/unicode.h>

#include <fstream>
#include <stdexcept>

namespace tram::hf::tokenizers {

WordPieceTokenizer::WordPieceTokenizer(const std::filesystem::path& vocab_txt, WordPieceOptions options)
    : options_(std::move(options)) {
  const std::string where = vocab_txt.string();
  std::ifstream in(vocab_txt, std::ios::binary);
  if (!in) throw std::runtime_error(where + ": cannot open the vocabulary");
  std::string line;
  while (std::getline(in, line)) {
    // Trailing whitespace is not part of a token (the reference trims it too);
    // a repeated token keeps its last id, as the reference's map does.
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    token_to_id_[line] = static_cast<int64_t>(id_to_token_.size());
    id_to_token_.push_back(line);
  }
  if (id_to_token_.empty()) throw std::runtime_error(where + ": the vocabulary is empty");
  const auto required = [&](const std::string& token) {
    auto id = token_to_id(token);
    if (!id) throw std::runtime_error(where + ": the special token \"" + token + "\" is not in the vocabulary");
    return *id;
  };
  specials_.unk = required(options_.unk_token);
  specials_.cls = required(options_.cls_token);
  specials_.sep = required(options_.sep_token);
  specials_.pad = token_to_id(options_.pad_token).value_or(-1);
  specials_.mask = token_to_id(options_.mask_token).value_or(-1);
  if (options_.max_input_chars_per_word <= 0)
    throw std::invalid_argument("WordPieceTokenizer: max_input_chars_per_word must be positive, got " +
                                std::to_string(options_.max_input_chars_per_word));
}

std::vector<std::string> WordPieceTokenizer::basic_tokenize(std::string_view text) const {
  using namespace unicode;
  const bool strip = options_.strip_accents.value_or(options_.lowercase);

  // Normalization is a per-character map, so one pass applies all four steps
  // in the reference's order: clean, CJK spacing, accents, case.
  std::u32string normalized, stripped;
  normalized.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const DecodedChar decoded = decode_utf8(text, i);
    i += decoded.length;
    char32_t cp = decoded.code_point;
    const uint16_t cls = char_class(cp);
    if (options_.clean_text) {
      if (cls & kBertControl) continue;
      if (cls & kBertSpace) cp = ' ';
    }
    const bool cjk = options_.handle_chinese_chars && (cls & kCjk);
    if (cjk) normalized += ' ';
    stripped.clear();
    if (strip) append_strip_accents(cp, stripped);
    else stripped += cp;
    for (char32_t c : stripped) {
      if (options_.lowercase) append_lowercase(c, normalized);
      else normalized += c;
    }
    if (cjk) normalized += ' ';
  }

  std::vector<std::string> words;
  std::string word;
  const auto flush = [&] {
    if (!word.empty()) words.push_back(std::move(word));
    word.clear();
  };
  for (char32_t cp : normalized) {
    const uint16_t cls = char_class(cp);
    if (cls & kBertWhitespace) {
      flush();
    } else if (cls & kBertPunctuation) {
      flush();
      append_utf8(word, cp);
      flush();
    } else {
      append_utf8(word, cp);
    }
  }
  flush();
  return words;
}

void WordPieceTokenizer::append_word_pieces(const std::string& word, std::vector<int64_t>& ids) const {
  // Character boundaries of the word, in bytes.
  std::vector<size_t> bounds;
  for (size_t i = 0; i < word.size(); i += unicode::decode_utf8(word, i).length) bounds.push_back(i);
  const size_t chars = bounds.size();
  bounds.push_back(word.size());
  if (static_cast<int64_t>(chars) > options_.max_input_chars_per_word) {
    ids.push_back(specials_.unk);
    return;
  }
  const size_t first_piece = ids.size();
  std::string candidate;
  for (size_t start = 0; start < chars;) {
    // The longest vocabulary entry starting at `start`.
    size_t end = chars;
    int64_t found = -1;
    for (; end > start; --end) {
      candidate.assign(start > 0 ? options_.continuing_subword_prefix : std::string());
      candidate.append(word, bounds[start], bounds[end] - bounds[start]);
      auto it = token_to_id_.find(candidate);
      if (it != token_to_id_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {  // no segmentation: the whole word is unknown
      ids.resize(first_piece);
      ids.push_back(specials_.unk);
      return;
    }
    ids.push_back(found);
    start = end;
  }
}

std::vector<int64_t> WordPieceTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  for (const std::string& word : basic_tokenize(text)) append_word_pieces(word, ids);
  return ids;
}

std::string WordPieceTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const std::string& prefix = options_.continuing_subword_prefix;
  std::string text;
  for (int64_t id : ids) {
    if (skip_special_tokens && specials_.contains(id)) continue;
    const std::string token = id_to_token(id);
    if (!text.empty() && token.rfind(prefix, 0) == 0) {
      text.append(token, prefix.size(), std::string::npos);
    } else {
      if (!text.empty()) text += ' ';
      text += token;
    }
  }
  return text;
}

std::optional<int64_t> WordPieceTokenizer::token_to_id(std::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string WordPieceTokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::out_of_range(name() + ": id " + std::to_string(id) + " is outside the vocabulary [0, " +
                            std::to_string(vocab_size()) + ")");
  return id_to_token_[static_cast<size_t>(id)];
}

Encoding WordPieceTokenizer::add_special_tokens(const std::vector<int64_t>& first,
                                                const std::vector<int64_t>* second) const {
  Encoding encoding;
  encoding.ids.reserve(first.size() + (second ? second->size() : 0) + 3);
  encoding.ids.push_back(specials_.cls);
  encoding.ids.insert(encoding.ids.end(), first.begin(), first.end());
  encoding.ids.push_back(specials_.sep);
  encoding.type_ids.assign(encoding.ids.size(), 0);
  if (second) {
    encoding.ids.insert(encoding.ids.end(), second->begin(), second->end());
    encoding.ids.push_back(specials_.sep);
    encoding.type_ids.resize(encoding.ids.size(), 1);
  }
  return encoding;
}

}  // namespace tram::hf::tokenizers

#include <tram/hf/tokenizers/gpt2_bpe.h>

#include <tram/hf/tokenizers/unicode.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace tram::hf::tokenizers {
namespace {

using unicode::char_class;

// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for
// themselves; the other 68 (controls, space, soft hyphen, ...) are given the
// code points 256, 257, ... in byte order, so that no token contains a space
// or a control character.
const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

// The inverse, indexed by code point (all of them are below 256 + 68).
const std::array<int16_t, 324>& unicode_to_byte() {
  static const std::array<int16_t, 324> table = [] {
    std::array<int16_t, 324> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_to_unicode()[b]] = static_cast<int16_t>(b);
    return t;
  }();
  return table;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

enum class Kind { kLetter, kNumber, kSpace, kOther };

Kind kind_of(char32_t cp) {
  const uint16_t c = char_class(cp);
  if (c & unicode::kLetter) return Kind::kLetter;
  if (c & unicode::kNumber) return Kind::kNumber;
  if (c & unicode::kSpace) return Kind::kSpace;
  return Kind::kOther;
}

}  // namespace

Gpt2Tokenizer::Gpt2Tokenizer(const std::filesystem::path& vocab_json,
                             const std::filesystem::path& merges_txt, const std::string& eos_token) {
  const std::string where = vocab_json.string();
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(read_file(vocab_json));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(where + ": not valid JSON (" + e.what() + ")");
  }
  if (!vocab.is_object() || vocab.empty())
    throw std::runtime_error(where + ": expected a non-empty object {\"token\": id, ...}");
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw std::runtime_error(where + ": token \"" + token + "\" has no non-negative integer id");
    max_id = std::max(max_id, id.get<int64_t>());
  }
  // The ids number the tokens 0..n-1 (each once: checked below). A larger
  // one is a corrupt file, and must not size the id table: {"a": 1e11}
  // asked for terabytes.
  if (max_id >= static_cast<int64_t>(vocab.size()))
    throw std::runtime_error(where + ": id " + std::to_string(max_id) + " is beyond the " +
                             std::to_string(vocab.size()) + " tokens of the vocabulary; ids must be 0.." +
                             std::to_string(vocab.size() - 1));
  id_to_token_.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [token, id] : vocab.items()) {
    const auto index = id.get<int64_t>();
    if (!id_to_token_[index].empty())
      throw std::runtime_error(where + ": id " + std::to_string(index) + " is given to both \"" +
                               id_to_token_[index] + "\" and \"" + token + "\"");
    id_to_token_[index] = token;
    token_to_id_.emplace(token, index);
  }

  std::string byte_token;
  for (int b = 0; b < 256; ++b) {
    byte_token.clear();
    unicode::append_utf8(byte_token, byte_to_unicode()[b]);
    auto it = token_to_id_.find(byte_token);
    if (it == token_to_id_.end())
      throw std::runtime_error(where + ": no token for byte " + std::to_string(b) + " (\"" + byte_token +
                               "\"); a byte-level BPE vocabulary has all 256");
    byte_token_id_[b] = it->second;
  }

  auto eos = token_to_id_.find(eos_token);
  if (eos == token_to_id_.end())
    throw std::runtime_error(where + ": the end-of-text token \"" + eos_token + "\" is not in the vocabulary");
  specials_.eos = specials_.bos = eos->second;

  // merges.txt: an optional "#version" header, then "left right" per line in
  // rank order.
  const std::string merges_where = merges_txt.string();
  std::istringstream merges(read_file(merges_txt));
  std::string line;
  int64_t rank = 0;
  for (int64_t line_number = 1; std::getline(merges, line); ++line_number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
    const auto at = [&] { return merges_where + ":" + std::to_string(line_number) + ": "; };
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos)
      throw std::runtime_error(at() + "expected two tokens separated by one space, got \"" + line + "\"");
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    const auto id_of = [&](const std::string& token) {
      auto it = token_to_id_.find(token);
      if (it == token_to_id_.end())
        throw std::runtime_error(at() + "\"" + token + "\" is not in " + where);
      return it->second;
    };
    const uint64_t key = (static_cast<uint64_t>(id_of(left)) << 32) | static_cast<uint64_t>(id_of(right));
    // A repeated pair keeps its first (best) rank, as the reference does.
    merges_.emplace(key, Merge{rank++, id_of(left + right)});
  }
}

std::unique_ptr<Gpt2Tokenizer> Gpt2Tokenizer::from_directory(const std::filesystem::path& directory) {
  return std::make_unique<Gpt2Tokenizer>(directory / "vocab.json", directory / "merges.txt");
}

size_t Gpt2Tokenizer::next_piece(std::string_view text, size_t begin) {
  // Scans code points in place (no decoded copy of the text: LM documents can
  // be hundreds of MB). Invalid bytes read as U+FFFD, an "other" character.
  const size_t n = text.size();
  const auto at = [&](size_t position) { return unicode::decode_utf8(text, position); };

  // 's 't 're 've 'm 'll 'd (case-sensitive, tried first; all ASCII).
  if (text[begin] == '\'' && begin + 1 < n) {
    const char a = text[begin + 1], b = begin + 2 < n ? text[begin + 2] : '\0';
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return begin + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return begin + 3;
  }
  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional ASCII space,
  // then a run of one class.
  const size_t first = (text[begin] == ' ' && begin + 1 < n) ? begin + 1 : begin;
  const auto first_char = at(first);
  const Kind kind = kind_of(first_char.code_point);
  if (kind != Kind::kSpace) {
    size_t end = first + first_char.length;
    for (unicode::DecodedChar c; end < n && kind_of((c = at(end)).code_point) == kind;) end += c.length;
    return end;
  }
  // Whitespace. `\s+(?!\S)`: the run, less its last character when a
  // non-space follows (that one goes with the next word as its ` ?` prefix,
  // or alone); `\s+`: a single whitespace character before a non-space.
  size_t end = begin, last = begin, count = 0;
  for (unicode::DecodedChar c; end < n && kind_of((c = at(end)).code_point) == Kind::kSpace; ++count) {
    last = end;
    end += c.length;
  }
  return (end < n && count >= 2) ? last : end;
}

std::vector<std::string_view> Gpt2Tokenizer::pre_tokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  for (size_t begin = 0, end; begin < text.size(); begin = end) {
    end = next_piece(text, begin);
    pieces.push_back(text.substr(begin, end - begin));
  }
  return pieces;
}

std::vector<int64_t> Gpt2Tokenizer::merge(std::vector<int64_t> symbols) const {
  std::vector<int64_t> merged;
  while (symbols.size() > 1) {
    // The lowest-ranked pair present...
    int64_t best_rank = std::numeric_limits<int64_t>::max();
    uint64_t best_key = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const uint64_t key = (static_cast<uint64_t>(symbols[i]) << 32) | static_cast<uint64_t>(symbols[i + 1]);
      auto it = merges_.find(key);
      if (it != merges_.end() && it->second.rank < best_rank) {
        best_rank = it->second.rank;
        best_key = key;
      }
    }
    if (best_rank == std::numeric_limits<int64_t>::max()) break;
    // ... merged at every occurrence, left to right, without overlaps.
    const int64_t left = static_cast<int64_t>(best_key >> 32);
    const int64_t right = static_cast<int64_t>(best_key & 0xFFFFFFFFu);
    const int64_t result = merges_.at(best_key).result;
    merged.clear();
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        merged.push_back(result);
        ++i;
      } else {
        merged.push_back(symbols[i]);
      }
    }
    symbols.swap(merged);
  }
  return symbols;
}

std::vector<int64_t> Gpt2Tokenizer::encode_piece(std::string_view piece) const {
  const std::string key(piece);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  std::vector<int64_t> symbols;
  symbols.reserve(piece.size());
  for (unsigned char byte : piece) symbols.push_back(byte_token_id_[byte]);
  std::vector<int64_t> ids = merge(std::move(symbols));
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kCacheCapacity) cache_.clear();
  cache_.emplace(key, ids);
  return ids;
}

std::vector<int64_t> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids;
  for (size_t begin = 0, end; begin < text.size(); begin = end) {
    end = next_piece(text, begin);
    const std::vector<int64_t> piece_ids = encode_piece(text.substr(begin, end - begin));
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }
  return ids;
}

std::string Gpt2Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int64_t id : ids) {
    if (skip_special_tokens && specials_.contains(id)) continue;
    if (id < 0 || id >= vocab_size()) id_to_token(id);  // throws, naming the id
    const std::string& token = id_to_token_[static_cast<size_t>(id)];
    for (size_t i = 0; i < token.size();) {
      const auto c = unicode::decode_utf8(token, i);
      const int16_t byte = c.code_point < unicode_to_byte().size() ? unicode_to_byte()[c.code_point] : -1;
      if (byte >= 0 && !specials_.contains(id)) bytes += static_cast<char>(byte);
      else bytes.append(token, i, c.length);  // special tokens keep their text
      i += c.length;
    }
  }
  // A slice of ids may end inside a multi-byte character: repair as the reference does.
  return unicode::repair_utf8(bytes);
}

std::optional<int64_t> Gpt2Tokenizer::token_to_id(std::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::string Gpt2Tokenizer::id_to_token(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::out_of_range(name() + ": id " + std::to_string(id) + " is outside the vocabulary [0, " +
                            std::to_string(vocab_size()) + ")");
  return id_to_token_[static_cast<size_t>(id)];
}

Encoding Gpt2Tokenizer::add_special_tokens(const std::vector<int64_t>& first,
                                           const std::vector<int64_t>* second) const {
  Encoding encoding;
  encoding.ids = first;
  if (second) encoding.ids.insert(encoding.ids.end(), second->begin(), second->end());
  // GPT-2 has no segments; a type id of 1 would add token 1's embedding.
  encoding.type_ids.assign(encoding.ids.size(), 0);
  return encoding;
}

}  // namespace tram::hf::tokenizers

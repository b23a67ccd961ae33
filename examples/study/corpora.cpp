#include "corpora.h"

#include <tram/checksum.h>
#include <tram/hf/data/split.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

namespace tram::study {

namespace fs = std::filesystem;

const std::vector<CorpusSpec>& english_domains() {
  // The topical English files of `fortunes` (the mixed "fortunes" file and
  // the ASCII-art, offensive and meta files are left out).
  static const std::vector<CorpusSpec> domains = [] {
    std::vector<CorpusSpec> list;
    for (const char* name : {"art", "computers", "cookie", "definitions", "drugs", "education", "ethnic", "food",
                             "humorists", "kids", "law", "linux", "literature", "love", "medicine", "men-women",
                             "miscellaneous", "news", "people", "perl", "pets", "platitudes", "politics", "riddles",
                             "science", "songs-poems", "sports", "startrek", "wisdom", "work", "zippy"}) {
      list.push_back({name, {name}, "fortunes"});
    }
    return list;
  }();
  return domains;
}

const std::vector<CorpusSpec>& languages() {
  static const std::vector<CorpusSpec> list = {
      {"en", {"fortunes", "wisdom", "people", "literature", "science", "work", "love"}, "fortunes"},
      {"de", {"de"}, "fortunes-de"},
      {"es", {"es"}, "fortunes-es"},
      {"it", {"it"}, "fortunes-it"},
      {"pt", {"brasil"}, "fortunes-br"},
      {"eo", {"eo"}, "fortunes-eo"},
      {"ga", {"ga"}, "fortunes-ga"},
      {"pl", {"pl"}, "fortunes-pl"},
      {"cs", {"cs"}, "fortunes-cs"},
      {"ru", {"ru"}, "fortunes-ru"},
      {"bg", {"bg"}, "fortunes-bg"},
      {"zh", {"chinese"}, "fortunes-zh"},
  };
  return list;
}

const CorpusSpec& find_corpus(const std::vector<CorpusSpec>& catalog, const std::string& name) {
  for (const auto& spec : catalog) {
    if (spec.name == name) return spec;
  }
  std::string valid;
  for (const auto& spec : catalog) valid += (valid.empty() ? "" : ", ") + spec.name;
  throw std::invalid_argument("unknown corpus '" + name + "'; valid: " + valid);
}

namespace {

// Length of the valid UTF-8 sequence starting at text[i], or 0.
size_t utf8_sequence_length(const std::string& text, size_t i) {
  const auto byte = static_cast<unsigned char>(text[i]);
  size_t length = byte < 0x80 ? 1 : (byte >> 5) == 0x6 ? 2 : (byte >> 4) == 0xE ? 3 : (byte >> 3) == 0x1E ? 4 : 0;
  if (length == 0 || i + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return 0;
  }
  return length;
}

// Whitespace runs -> one space; ESC [ ... letter sequences and other control
// characters removed; invalid UTF-8 dropped; trimmed.
std::string normalise(const std::string& raw) {
  std::string out;
  out.reserve(raw.size());
  bool pending_space = false;
  for (size_t i = 0; i < raw.size();) {
    const auto byte = static_cast<unsigned char>(raw[i]);
    if (byte == 0x1B) {  // terminal escape: ESC [ params final-byte
      ++i;
      if (i < raw.size() && raw[i] == '[') {
        ++i;
        while (i < raw.size() && !(raw[i] >= '@' && raw[i] <= '~')) ++i;
      }
      ++i;
      continue;
    }
    if (byte == ' ' || byte == '\n' || byte == '\t' || byte == '\r' || byte == '\f' || byte == '\v') {
      pending_space = !out.empty();
      ++i;
      continue;
    }
    if (byte < 0x20 || byte == 0x7F) {  // backspace overstrikes and other controls
      ++i;
      continue;
    }
    const size_t length = utf8_sequence_length(raw, i);
    if (length == 0) {
      ++i;
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    out.append(raw, i, length);
    i += length;
  }
  return out;
}

bool is_source_file(const fs::path& path) {
  const auto name = path.filename().string();
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return !name.empty() && name[0] != '.' && !ends_with(".dat") && !ends_with(".u8") && !ends_with("-pre");
}

}  // namespace

std::vector<std::string> read_fortune_file(const fs::path& file, size_t min_bytes) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read fortune file " + file.string());
  std::vector<std::string> texts;
  std::string current, line;
  auto flush = [&] {
    std::string text = normalise(current);
    if (text.size() >= min_bytes) texts.push_back(std::move(text));
    current.clear();
  };
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "%") flush();
    else current += line + "\n";
  }
  flush();
  return texts;
}

std::vector<std::string> read_corpus(const CorpusSpec& spec, const fs::path& root) {
  std::vector<fs::path> files;
  for (const auto& entry : spec.files) {
    const fs::path path = root / entry;
    std::error_code error;
    if (fs::is_directory(path, error)) {
      std::vector<fs::path> inside;
      for (const auto& item : fs::directory_iterator(path)) {
        if (item.is_regular_file() && is_source_file(item.path())) inside.push_back(item.path());
      }
      std::sort(inside.begin(), inside.end());  // byte-wise order: independent of the filesystem
      files.insert(files.end(), inside.begin(), inside.end());
    } else if (fs::is_regular_file(path, error)) {
      files.push_back(path);
    } else {
      throw std::runtime_error("corpus '" + spec.name + "': " + path.string() +
                               " is missing; install the Debian package " + spec.package +
                               " (scripts/setup.sh does)");
    }
  }
  std::vector<std::string> texts;
  std::unordered_set<std::string> seen;
  for (const auto& file : files) {
    for (auto& text : read_fortune_file(file)) {
      if (seen.insert(text).second) texts.push_back(std::move(text));
    }
  }
  if (texts.empty()) throw std::runtime_error("corpus '" + spec.name + "' has no text under " + root.string());
  return texts;
}

uint64_t text_hash(const std::string& text) { return tram::fnv1a_64(text); }

bool is_evaluation_text(const std::string& text, double evaluation_fraction) {
  // The top 53 bits of a re-mixed hash as a uniform number in [0, 1).
  hf::data::SplitMix64 mix(text_hash(text));
  const double u = static_cast<double>(mix.next() >> 11) * 0x1.0p-53;
  return u < evaluation_fraction;
}

TextSplit split_texts(const std::vector<std::string>& texts, double evaluation_fraction) {
  if (!(evaluation_fraction >= 0.0 && evaluation_fraction < 1.0)) {
    throw std::invalid_argument("evaluation fraction must be in [0, 1), got " + std::to_string(evaluation_fraction));
  }
  TextSplit split;
  for (const auto& text : texts) {
    (is_evaluation_text(text, evaluation_fraction) ? split.evaluation : split.train).push_back(text);
  }
  return split;
}

std::vector<std::string> sample_texts(const std::vector<std::string>& texts, size_t limit, uint64_t seed) {
  if (limit >= texts.size()) return texts;
  auto order = hf::data::permutation(static_cast<int64_t>(texts.size()), seed);
  order.resize(limit);
  std::sort(order.begin(), order.end());
  std::vector<std::string> out;
  out.reserve(limit);
  for (auto index : order) out.push_back(texts[static_cast<size_t>(index)]);
  return out;
}

std::vector<int64_t> lm_token_ids(const std::vector<std::string>& texts) {
  std::vector<int64_t> ids;
  for (const auto& text : texts) {
    for (unsigned char c : text) ids.push_back(c);
    ids.push_back(kLmEndOfText);
  }
  return ids;
}

std::vector<int64_t> encoder_byte_ids(const std::string& text) {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(kByteOffset + c);
  return ids;
}

std::string utf8_prefix(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;  // text[end] starts a character
  return text.substr(0, end);
}

std::string utf8_suffix(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t begin = text.size() - max_bytes;
  while (begin < text.size() && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) ++begin;
  return text.substr(begin);
}

}  // namespace tram::study

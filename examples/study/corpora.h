// The study's text corpora: Debian's fortune-cookie files, English by domain
// (package `fortunes`) and in eleven other languages (`fortunes-de`, `-es`,
// ...), split deterministically into training and evaluation text.
//
// The split is decided by the text itself: a fortune goes to the evaluation
// side when a hash of its normalised text falls below the evaluation
// fraction. Identical fortunes therefore land on the same side in every
// domain and language that contains them (the corpora do repeat each other),
// so no evaluation text is ever seen in pre-training or fine-tuning, by
// construction, and the split does not depend on file order or the machine.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace tram::study {

constexpr const char* kDebianFortunesDirectory = "/usr/share/games/fortunes";

// One named corpus: an English domain or a language.
struct CorpusSpec {
  std::string name;                // "computers", "de", ...
  std::vector<std::string> files;  // relative to the fortunes directory: files, or directories (every file in them)
  std::string package;             // the Debian package that installs it, for the error message
};

// English domains (package `fortunes`) and languages (en is a mix of English
// domains), in report order.
const std::vector<CorpusSpec>& english_domains();
const std::vector<CorpusSpec>& languages();
const CorpusSpec& find_corpus(const std::vector<CorpusSpec>& catalog, const std::string& name);

// The fortunes of a strfile source file: texts separated by lines holding
// only "%". Whitespace is normalised (runs of blanks and newlines become one
// space: the texts are short quotations and their line breaks carry no
// meaning), terminal control sequences and other control characters are
// removed, invalid UTF-8 is dropped, and texts shorter than min_bytes are
// skipped. Throws naming the file when it cannot be read.
std::vector<std::string> read_fortune_file(const std::filesystem::path& file, size_t min_bytes = 20);

// Every fortune of a corpus, in file order, duplicates within it removed.
// Throws naming the package to install when a file is missing.
std::vector<std::string> read_corpus(const CorpusSpec& spec,
                                     const std::filesystem::path& root = kDebianFortunesDirectory);

// 64-bit FNV-1a of the text (tram::fnv1a_64): the split's hash (fixed, so the split is the
// same everywhere).
uint64_t text_hash(const std::string& text);
// Whether `text` belongs to the evaluation side for this fraction in [0, 1).
bool is_evaluation_text(const std::string& text, double evaluation_fraction);

struct TextSplit {
  std::vector<std::string> train;
  std::vector<std::string> evaluation;
};
TextSplit split_texts(const std::vector<std::string>& texts, double evaluation_fraction);

// At most `limit` texts, chosen by a seeded deterministic shuffle (all of
// them, in order, when limit >= size).
std::vector<std::string> sample_texts(const std::vector<std::string>& texts, size_t limit, uint64_t seed);

// Byte-level vocabulary (as ByT5): every UTF-8 byte is a token, so one model
// covers every script of the study without a trained tokenizer.
// Causal LM ids: bytes 0..255, end-of-text 256.
constexpr int64_t kLmEndOfText = 256;
constexpr int64_t kLmVocabulary = 257;
std::vector<int64_t> lm_token_ids(const std::vector<std::string>& texts);

// Encoder ids (RoBERTa's special-token layout): <s> 0, <pad> 1, </s> 2,
// <mask> 3, bytes at 4..259.
constexpr int64_t kClsToken = 0, kPadToken = 1, kSepToken = 2, kMaskToken = 3, kByteOffset = 4;
constexpr int64_t kEncoderVocabulary = 260;
std::vector<int64_t> encoder_byte_ids(const std::string& text);

// The longest prefix of `text` of at most max_bytes that ends on a UTF-8
// character boundary (and the same for a suffix).
std::string utf8_prefix(const std::string& text, size_t max_bytes);
std::string utf8_suffix(const std::string& text, size_t max_bytes);

}  // namespace tram::study

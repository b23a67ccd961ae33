// BERT's WordPiece tokenizer from a vocab.txt (one token per line; id = line
// index), as Hugging Face's BertWordPieceTokenizer:
//
//   1. normalize: clean_text (drop control characters, whitespace -> ' '),
//      spaces around CJK ideographs, strip_accents (NFD, drop combining
//      marks), lowercase -- in that order; strip_accents follows lowercase
//      unless set;
//   2. split on whitespace, and make every punctuation character a word;
//   3. per word: greedy longest-match-first against the vocabulary, pieces
//      after the first carry the "##" prefix; a word with no complete
//      segmentation, or longer than max_input_chars_per_word characters, is
//      one [UNK].
//
// Model inputs: [CLS] a [SEP] (type ids 0) and [CLS] a [SEP] b [SEP] (type
// ids 0 up to the first [SEP], 1 after).
#pragma once

#include <tram/hf/tokenizers/tokenizer.h>

#include <unordered_map>

namespace tram::hf::tokenizers {

struct WordPieceOptions {
  bool lowercase = true;                    // do_lower_case: true for "uncased" models
  std::optional<bool> strip_accents;        // unset: same as lowercase
  bool clean_text = true;
  bool handle_chinese_chars = true;
  int64_t max_input_chars_per_word = 100;
  std::string continuing_subword_prefix = "##";
  std::string unk_token = "[UNK]";
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  std::string pad_token = "[PAD]";
  std::string mask_token = "[MASK]";
};

class WordPieceTokenizer final : public Tokenizer {
 public:
  // Throws naming the file when it cannot be read or lacks [UNK], [CLS] or [SEP].
  explicit WordPieceTokenizer(const std::filesystem::path& vocab_txt, WordPieceOptions options = {});

  std::string name() const override { return "bert-wordpiece"; }
  std::vector<int64_t> encode(std::string_view text) const override;
  // Pieces joined by spaces, "##" pieces glued to the one before.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  std::optional<int64_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int64_t id) const override;
  int64_t num_special_tokens(bool pair) const override { return pair ? 3 : 2; }
  Encoding add_special_tokens(const std::vector<int64_t>& first,
                              const std::vector<int64_t>* second) const override;

  // Steps 1 and 2: the words WordPiece sees (exposed for tests).
  std::vector<std::string> basic_tokenize(std::string_view text) const;
  const WordPieceOptions& options() const { return options_; }

 private:
  void append_word_pieces(const std::string& word, std::vector<int64_t>& ids) const;

  WordPieceOptions options_;
  std::unordered_map<std::string, int64_t> token_to_id_;
  std::vector<std::string> id_to_token_;
};

}  // namespace tram::hf::tokenizers

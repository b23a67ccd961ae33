// The tokenizer interface the examples program against, and what all three
// tokenizers share: special-token ids, model inputs with their special tokens,
// truncation, and loading a Hugging Face tokenizer directory.
//
//   GPT-2   byte-level BPE    vocab.json + merges.txt      gpt2_bpe.h
//   BERT    WordPiece         vocab.txt                    wordpiece.h
//   XLM-R   SentencePiece     sentencepiece.bpe.model      xlmr_sentencepiece.h
//
// Each reproduces the ids of its Hugging Face reference exactly
// (examples/tests/test_tokenizers.cpp checks it against fixtures written by
// tools/make_tokenizer_fixtures.py). Special tokens are never parsed out of the
// text: "<|endoftext|>" or "[SEP]" inside user data is tokenized as text, so
// data cannot inject control tokens; the model's specials are added by
// encode_for_model / add_special_tokens only.
//
// No torch here: tensors are made in batch.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tram::hf::tokenizers {

// Ids of the special tokens a tokenizer has; -1 where it has none (GPT-2 has
// no padding token, BERT has no bos/eos).
struct SpecialTokens {
  int64_t pad = -1;
  int64_t unk = -1;
  int64_t bos = -1;
  int64_t eos = -1;
  int64_t cls = -1;
  int64_t sep = -1;
  int64_t mask = -1;

  bool contains(int64_t id) const {
    return id >= 0 && (id == pad || id == unk || id == bos || id == eos || id == cls || id == sep ||
                       id == mask);
  }
};

// One model input: ids with the special tokens, and the segment of each
// position (0 for the first text, 1 for the second; all 0 for models without
// segment embeddings).
struct Encoding {
  std::vector<int64_t> ids;
  std::vector<int64_t> type_ids;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Short name for messages: "gpt2-bpe", "bert-wordpiece", "xlmr-sentencepiece".
  virtual std::string name() const = 0;

  // The ids of `text` without any special token.
  virtual std::vector<int64_t> encode(std::string_view text) const = 0;
  // Text of `ids`; special tokens are written as their text unless skipped.
  // Ids outside [0, vocab_size()) are rejected.
  virtual std::string decode(const std::vector<int64_t>& ids,
                             bool skip_special_tokens = false) const = 0;

  // Number of ids (the size of the model's embedding table it needs).
  virtual int64_t vocab_size() const = 0;
  virtual std::optional<int64_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int64_t id) const = 0;  // throws outside the vocabulary
  const SpecialTokens& special_tokens() const { return specials_; }

  // How many special tokens add_special_tokens puts around one text or a pair.
  virtual int64_t num_special_tokens(bool pair) const = 0;
  // The model's input template around already-encoded texts: GPT-2 `a` / `a b`
  // (nothing added), BERT `[CLS] a [SEP]` / `[CLS] a [SEP] b [SEP]`, XLM-R
  // `<s> a </s>` / `<s> a </s></s> b </s>`. `second` may be null.
  virtual Encoding add_special_tokens(const std::vector<int64_t>& first,
                                      const std::vector<int64_t>* second) const = 0;

  // encode + add_special_tokens, truncated so that the result has at most
  // `max_length` ids (0: no limit); a pair is truncated longest-first.
  Encoding encode_for_model(std::string_view text, int64_t max_length = 0) const;
  Encoding encode_for_model(std::string_view first, std::string_view second,
                            int64_t max_length = 0) const;

 protected:
  SpecialTokens specials_;
};

// Shortens a pair to at most `budget` ids together, one id at a time from the
// end of the longer (the second on a tie), as Hugging Face's "longest_first".
void truncate_longest_first(std::vector<int64_t>& first, std::vector<int64_t>& second,
                            size_t budget);

// Loads the tokenizer a Hugging Face model directory holds, recognised by its
// files: vocab.json + merges.txt (GPT-2), sentencepiece.bpe.model (XLM-R),
// vocab.txt (BERT; lower-casing as tokenizer_config.json's do_lower_case, true
// when absent). Throws naming the directory and the files looked for.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& directory);

}  // namespace tram::hf::tokenizers

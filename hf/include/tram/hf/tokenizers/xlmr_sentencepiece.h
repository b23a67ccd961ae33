// XLM-R's tokenizer: a SentencePiece model (sentencepiece.bpe.model, run by
// Debian's libsentencepiece) under fairseq's dictionary layout, which puts
// four specials first and shifts every SentencePiece id by one:
//
//   <s> = 0   <pad> = 1   </s> = 2   <unk> = 3
//   SentencePiece id i (i >= 1)  ->  i + 1;  its <unk> (0)  ->  3
//   <mask> = piece count + 1 (the last id)
//
// so vocab_size() = piece count + 2 (250002 for XLM-R's 250000 pieces).
// Model inputs: <s> a </s> and <s> a </s></s> b </s>; all type ids 0 (XLM-R
// has a single segment embedding). Normalization (XLM-R: nmt_nfkc) is the
// model file's and runs inside libsentencepiece.
//
// Parity: the ids equal Python sentencepiece 0.2's except where two
// segmentations have exactly the same score, e.g. "...." as "." "..." or
// "..." "." with a unigram model: Debian's libsentencepiece (0.1.97) breaks
// such ties the other way (4 of 34,000 fortunes differ, all long texts).
// Hugging Face's XLM-R tokenizer follows Python sentencepiece there, and
// differs from both around characters the model does not know.
#pragma once

#include <tram/hf/tokenizers/tokenizer.h>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace tram::hf::tokenizers {

class XlmrTokenizer final : public Tokenizer {
 public:
  // Throws naming the file when libsentencepiece cannot load it.
  explicit XlmrTokenizer(const std::filesystem::path& sentencepiece_model);
  ~XlmrTokenizer() override;

  std::string name() const override { return "xlmr-sentencepiece"; }
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  int64_t vocab_size() const override { return piece_count_ + 2; }
  std::optional<int64_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int64_t id) const override;
  int64_t num_special_tokens(bool pair) const override { return pair ? 4 : 2; }
  Encoding add_special_tokens(const std::vector<int64_t>& first,
                              const std::vector<int64_t>* second) const override;

  // The fairseq offset between SentencePiece ids and XLM-R ids.
  static constexpr int64_t kFairseqOffset = 1;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  int64_t piece_count_ = 0;
};

}  // namespace tram::hf::tokenizers

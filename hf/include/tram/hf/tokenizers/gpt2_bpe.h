// GPT-2's byte-level BPE from a Hugging Face vocab.json + merges.txt.
//
//   1. Pre-tokenization by the GPT-2 regex
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      implemented as a scanner over code points (std::regex has no \p{L});
//      the classes come from unicode.h.
//   2. Each piece's UTF-8 bytes become the printable characters of GPT-2's
//      byte-to-unicode table (so every byte string has a spelling in the vocab).
//   3. Byte-pair merges, lowest merges.txt rank first, every occurrence of the
//      chosen pair at once; results are cached per piece.
//
// Decoding maps the characters back to bytes, so decode(encode(text)) == text
// for any UTF-8 text. No prefix space is added (add_prefix_space=false, as
// GPT-2's own tokenizer). The one special token is <|endoftext|>: bos = eos.
#pragma once

#include <tram/hf/tokenizers/tokenizer.h>

#include <array>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace tram::hf::tokenizers {

class Gpt2Tokenizer final : public Tokenizer {
 public:
  // Throws naming the file (and line of merges.txt) for a malformed or
  // inconsistent vocabulary: a merge whose parts or result are not in
  // vocab.json, a byte with no single-character token, a missing eos token.
  Gpt2Tokenizer(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt,
                const std::string& eos_token = "<|endoftext|>");
  // vocab.json + merges.txt of a directory.
  static std::unique_ptr<Gpt2Tokenizer> from_directory(const std::filesystem::path& directory);

  std::string name() const override { return "gpt2-bpe"; }
  std::vector<int64_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  std::optional<int64_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int64_t id) const override;
  int64_t num_special_tokens(bool) const override { return 0; }
  Encoding add_special_tokens(const std::vector<int64_t>& first,
                              const std::vector<int64_t>* second) const override;

  // The GPT-2 regex matches of `text`, as views into it (exposed for tests).
  static std::vector<std::string_view> pre_tokenize(std::string_view text);

 private:
  // End (byte offset) of the regex match that starts at `begin` < text.size().
  static size_t next_piece(std::string_view text, size_t begin);
  std::vector<int64_t> encode_piece(std::string_view piece) const;
  std::vector<int64_t> merge(std::vector<int64_t> symbols) const;

  std::unordered_map<std::string, int64_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::array<int64_t, 256> byte_token_id_{};  // id of each byte's one-character token
  struct Merge {
    int64_t rank;
    int64_t result;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // key: (left id << 32) | right id

  // Pieces repeat (" the", " and"): cache their ids. Bounded, and guarded so
  // that data-loading threads can share one tokenizer.
  static constexpr size_t kCacheCapacity = 1 << 16;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

}  // namespace tram::hf::tokenizers

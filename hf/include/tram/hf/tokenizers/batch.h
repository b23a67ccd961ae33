// Batches of model inputs as tensors: encode, truncate, pad (on the right).
#pragma once

#include <tram/hf/tokenizers/tokenizer.h>

#include <torch/types.h>

namespace tram::hf::tokenizers {

// [batch, length] int64 tensors; attention_mask is 1 on real tokens, 0 on padding.
struct BatchEncoding {
  torch::Tensor input_ids;
  torch::Tensor attention_mask;
  torch::Tensor token_type_ids;
};

struct BatchOptions {
  int64_t max_length = 512;        // longer inputs are truncated (special tokens included)
  bool pad_to_max_length = false;  // false: pad to the longest input of the batch
  // Padding id; -1 takes the tokenizer's pad token, or its eos where it has
  // none (GPT-2); padded positions are masked either way.
  int64_t pad_id = -1;
};

BatchEncoding encode_batch(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                           const BatchOptions& options = {});
// Pairs (premise, hypothesis): first[i] with second[i], truncated longest-first.
BatchEncoding encode_batch(const Tokenizer& tokenizer, const std::vector<std::string>& first,
                           const std::vector<std::string>& second, const BatchOptions& options = {});
// Already-encoded inputs (e.g. from encode_for_model), padded as above.
BatchEncoding collate(const Tokenizer& tokenizer, const std::vector<Encoding>& encodings,
                      const BatchOptions& options = {});

}  // namespace tram::hf::tokenizers

#include <tram/hf/tokenizers/batch.h>

#include <algorithm>
#include <stdexcept>

namespace tram::hf::tokenizers {

BatchEncoding collate(const Tokenizer& tokenizer, const std::vector<Encoding>& encodings,
                      const BatchOptions& options) {
  if (options.max_length <= 0)
    throw std::invalid_argument("collate: max_length must be positive, got " +
                                std::to_string(options.max_length));
  int64_t pad = options.pad_id;
  if (pad < 0) pad = tokenizer.special_tokens().pad >= 0 ? tokenizer.special_tokens().pad
                                                         : tokenizer.special_tokens().eos;
  if (pad < 0)
    throw std::invalid_argument(tokenizer.name() + " has neither a pad nor an eos token: set BatchOptions::pad_id");

  int64_t length = 0;
  for (const Encoding& e : encodings) length = std::max<int64_t>(length, static_cast<int64_t>(e.ids.size()));
  length = options.pad_to_max_length ? options.max_length : std::min(length, options.max_length);

  const auto batch = static_cast<int64_t>(encodings.size());
  auto input_ids = torch::full({batch, length}, pad, torch::kInt64);
  auto attention_mask = torch::zeros({batch, length}, torch::kInt64);
  auto token_type_ids = torch::zeros({batch, length}, torch::kInt64);
  auto ids_a = input_ids.accessor<int64_t, 2>();
  auto mask_a = attention_mask.accessor<int64_t, 2>();
  auto types_a = token_type_ids.accessor<int64_t, 2>();
  for (int64_t row = 0; row < batch; ++row) {
    const Encoding& e = encodings[static_cast<size_t>(row)];
    if (e.type_ids.size() != e.ids.size())
      throw std::invalid_argument("collate: encoding " + std::to_string(row) + " has " +
                                  std::to_string(e.ids.size()) + " ids but " +
                                  std::to_string(e.type_ids.size()) + " type ids");
    const int64_t kept = std::min<int64_t>(length, static_cast<int64_t>(e.ids.size()));
    for (int64_t t = 0; t < kept; ++t) {
      ids_a[row][t] = e.ids[static_cast<size_t>(t)];
      types_a[row][t] = e.type_ids[static_cast<size_t>(t)];
      mask_a[row][t] = 1;
    }
  }
  return {input_ids, attention_mask, token_type_ids};
}

BatchEncoding encode_batch(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                           const BatchOptions& options) {
  std::vector<Encoding> encodings;
  encodings.reserve(texts.size());
  for (const std::string& text : texts) encodings.push_back(tokenizer.encode_for_model(text, options.max_length));
  return collate(tokenizer, encodings, options);
}

BatchEncoding encode_batch(const Tokenizer& tokenizer, const std::vector<std::string>& first,
                           const std::vector<std::string>& second, const BatchOptions& options) {
  if (first.size() != second.size())
    throw std::invalid_argument("encode_batch: " + std::to_string(first.size()) + " first texts but " +
                                std::to_string(second.size()) + " second texts");
  std::vector<Encoding> encodings;
  encodings.reserve(first.size());
  for (size_t i = 0; i < first.size(); ++i)
    encodings.push_back(tokenizer.encode_for_model(first[i], second[i], options.max_length));
  return collate(tokenizer, encodings, options);
}

}  // namespace tram::hf::tokenizers

// What the tokenizer harnesses do with a tokenizer the reader accepted: a
// vocabulary that loads but makes encoding or decoding misbehave is a
// finding too, so each accepted one encodes and decodes a text with ASCII,
// accents, CJK, an emoji and a control byte, and looks up every id.
#pragma once

#include <tram/hf/tokenizers/tokenizer.h>

namespace tram::fuzz {

inline void exercise(const tram::hf::tokenizers::Tokenizer& tokenizer) {
  const std::string_view text = "Hello, world! caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \x01 12.5%";
  const auto ids = tokenizer.encode(text);
  (void)tokenizer.decode(ids);
  (void)tokenizer.decode(ids, /*skip_special_tokens=*/true);
  (void)tokenizer.encode_for_model(text, "a second text", /*max_length=*/16);
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) (void)tokenizer.id_to_token(id);
}

}  // namespace tram::fuzz

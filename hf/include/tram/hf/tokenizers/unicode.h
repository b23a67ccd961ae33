// UTF-8 and the character classes the tokenizers need.
//
// The classes are not the Unicode database's general categories but what the
// Hugging Face reference does with each code point (the GPT-2 regex's \p{L},
// \p{N}, \s; the BERT normalizer's control, whitespace, punctuation, CJK,
// accent and case handling), measured one code point at a time by
// tools/make_tokenizer_fixtures.py into unicode_tables.inc. The reference uses
// three Unicode versions at once (Oniguruma's for the regex, two older Rust
// crates for BERT); measured tables match all three without guessing which.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tram::hf::tokenizers::unicode {

// Bits of char_class(); the order is the generator's FLAG_NAMES.
enum CharClass : uint16_t {
  kLetter = 1 << 0,            // GPT-2 regex \p{L}
  kNumber = 1 << 1,            // GPT-2 regex \p{N}
  kSpace = 1 << 2,             // GPT-2 regex \s
  kBertControl = 1 << 3,       // BERT clean_text removes it
  kBertSpace = 1 << 4,         // BERT clean_text replaces it by ' '
  kBertPunctuation = 1 << 5,   // BERT pre-tokenizer makes it a word of its own
  kBertWhitespace = 1 << 6,    // BERT pre-tokenizer splits on it
  kCjk = 1 << 7,               // BERT handle_chinese_chars puts spaces around it
  kStripRemoves = 1 << 8,      // BERT strip_accents removes it (a combining mark)
};

uint16_t char_class(char32_t code_point);

// One decoded UTF-8 sequence. Invalid input (a stray continuation byte, an
// overlong form, a surrogate, a truncated sequence, > U+10FFFF) decodes as
// U+FFFD of length 1, so that a scan always advances and every byte is kept.
struct DecodedChar {
  char32_t code_point;
  uint8_t length;
  bool valid;
};
DecodedChar decode_utf8(std::string_view text, size_t position);

void append_utf8(std::string& out, char32_t code_point);
std::u32string to_utf32(std::string_view text);  // invalid bytes become U+FFFD
std::string to_utf8(std::u32string_view text);

// Bytes that are not valid UTF-8 replaced by U+FFFD, one per maximal invalid
// subpart (what Rust's String::from_utf8_lossy does, so decoded text equals
// the reference's).
std::string repair_utf8(std::string_view bytes);

// BERT's strip_accents of one code point (NFD without combining marks;
// Hangul syllables become their jamo) and its lowercase mapping (per
// character, so a final sigma stays σ, as in the reference), appended to out.
void append_strip_accents(char32_t code_point, std::u32string& out);
void append_lowercase(char32_t code_point, std::u32string& out);

}  // namespace tram::hf::tokenizers::unicode

#include <tram/hf/tokenizers/unicode.h>

#include <algorithm>
#include <array>
#include <iterator>

namespace tram::hf::tokenizers::unicode {
namespace {

struct CodePointRun {
  char32_t first;
  uint16_t flags;
};

struct CodePointMapping {
  char32_t from;
  uint8_t length;
  char32_t to[3];
};

#include "unicode_tables.inc"

constexpr char32_t kReplacement = 0xFFFD;
constexpr char32_t kHangulFirst = 0xAC00;
constexpr char32_t kHangulCount = 11172;

uint16_t lookup_runs(char32_t code_point) {
  auto after = std::upper_bound(std::begin(kCodePointRuns), std::end(kCodePointRuns), code_point,
                                [](char32_t cp, const CodePointRun& run) { return cp < run.first; });
  return std::prev(after)->flags;  // the first run starts at 0, so `after` is never the first
}

// ASCII is nearly all of the text the examples see: a direct table.
const std::array<uint16_t, 128>& ascii_classes() {
  static const std::array<uint16_t, 128> table = [] {
    std::array<uint16_t, 128> t{};
    for (char32_t cp = 0; cp < 128; ++cp) t[cp] = lookup_runs(cp);
    return t;
  }();
  return table;
}

const CodePointMapping* find_mapping(const CodePointMapping* begin, const CodePointMapping* end,
                                     char32_t code_point) {
  auto it = std::lower_bound(begin, end, code_point,
                             [](const CodePointMapping& m, char32_t cp) { return m.from < cp; });
  return (it != end && it->from == code_point) ? it : nullptr;
}

}  // namespace

uint16_t char_class(char32_t code_point) {
  if (code_point < 128) return ascii_classes()[code_point];
  if (code_point > 0x10FFFF) return 0;
  return lookup_runs(code_point);
}

DecodedChar decode_utf8(std::string_view text, size_t position) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(position);
  if (lead < 0x80) return {lead, 1, true};
  size_t length;
  char32_t code_point;
  char32_t minimum;  // smallest value of this length: anything below is overlong
  if ((lead & 0xE0) == 0xC0) {
    length = 2, code_point = lead & 0x1F, minimum = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3, code_point = lead & 0x0F, minimum = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4, code_point = lead & 0x07, minimum = 0x10000;
  } else {
    return {kReplacement, 1, false};
  }
  if (position + length > text.size()) return {kReplacement, 1, false};
  for (size_t i = 1; i < length; ++i) {
    const unsigned char next = byte(position + i);
    if ((next & 0xC0) != 0x80) return {kReplacement, 1, false};
    code_point = (code_point << 6) | (next & 0x3F);
  }
  if (code_point < minimum || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point < 0xE000))
    return {kReplacement, 1, false};
  return {code_point, static_cast<uint8_t>(length), true};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::u32string to_utf32(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const DecodedChar c = decode_utf8(text, i);
    out += c.code_point;
    i += c.length;
  }
  return out;
}

std::string to_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) append_utf8(out, cp);
  return out;
}

std::string repair_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const DecodedChar c = decode_utf8(bytes, i);
    if (c.valid) {
      out.append(bytes.data() + i, c.length);
      i += c.length;
      continue;
    }
    // A maximal invalid subpart: a lead byte followed by the continuation
    // bytes that were still acceptable before the sequence broke off.
    const auto lead = static_cast<unsigned char>(bytes[i]);
    size_t expected = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : (lead & 0xF8) == 0xF0 ? 4 : 1;
    if (lead == 0xC0 || lead == 0xC1 || lead > 0xF4) expected = 1;
    size_t length = 1;
    while (length < expected && i + length < bytes.size()) {
      const auto next = static_cast<unsigned char>(bytes[i + length]);
      // Second-byte limits that rule out overlongs, surrogates and > U+10FFFF.
      unsigned char low = 0x80, high = 0xBF;
      if (length == 1) {
        if (lead == 0xE0) low = 0xA0;
        if (lead == 0xED) high = 0x9F;
        if (lead == 0xF0) low = 0x90;
        if (lead == 0xF4) high = 0x8F;
      }
      if (next < low || next > high) break;
      ++length;
    }
    append_utf8(out, kReplacement);
    i += length;
  }
  return out;
}

void append_strip_accents(char32_t cp, std::u32string& out) {
  if (char_class(cp) & kStripRemoves) return;
  if (cp >= kHangulFirst && cp < kHangulFirst + kHangulCount) {
    // The Hangul syllable decomposition is arithmetic (Unicode 3.12).
    const char32_t index = cp - kHangulFirst;
    out += static_cast<char32_t>(0x1100 + index / 588);
    out += static_cast<char32_t>(0x1161 + (index % 588) / 28);
    if (index % 28 != 0) out += static_cast<char32_t>(0x11A7 + index % 28);
    return;
  }
  if (const CodePointMapping* m =
          find_mapping(std::begin(kStripAccentsMap), std::end(kStripAccentsMap), cp)) {
    out.append(m->to, m->length);
    return;
  }
  out += cp;
}

void append_lowercase(char32_t cp, std::u32string& out) {
  if (cp < 128) {
    out += (cp >= 'A' && cp <= 'Z') ? cp + ('a' - 'A') : cp;
    return;
  }
  if (const CodePointMapping* m = find_mapping(std::begin(kLowercaseMap), std::end(kLowercaseMap), cp)) {
    out.append(m->to, m->length);
    return;
  }
  out += cp;
}

}  // namespace tram::hf::tokenizers::unicode

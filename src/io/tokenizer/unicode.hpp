// UTF-8 and Unicode helpers of the tokenizers (src/io/tokenizer/): code point iteration over
// valid UTF-8, the character classes the reference implementation's components test (numeric,
// white space, regex \w), and normalization forms through ICU. Private to src/io/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace nvfp4::io::hf {

// The code point starting at s[i] (s valid UTF-8), advancing i past it.
inline uint32_t next_cp(std::string_view s, size_t& i) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  if (b0 < 0xE0) {
    const uint32_t c = (uint32_t(b0 & 0x1F) << 6) | (uint8_t(s[i + 1]) & 0x3F);
    i += 2;
    return c;
  }
  if (b0 < 0xF0) {
    const uint32_t c = (uint32_t(b0 & 0x0F) << 12) | (uint32_t(uint8_t(s[i + 1]) & 0x3F) << 6) | (uint8_t(s[i + 2]) & 0x3F);
    i += 3;
    return c;
  }
  const uint32_t c = (uint32_t(b0 & 0x07) << 18) | (uint32_t(uint8_t(s[i + 1]) & 0x3F) << 12) |
                     (uint32_t(uint8_t(s[i + 2]) & 0x3F) << 6) | (uint8_t(s[i + 3]) & 0x3F);
  i += 4;
  return c;
}

// Bytes of the UTF-8 sequence a lead byte starts (valid UTF-8).
inline size_t cp_len(uint8_t lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

void append_cp(std::string& out, uint32_t cp);
// Whether a well-formed UTF-8 sequence (Unicode Table 3-7) starts at s[i]: `len` gets its length,
// or when ill-formed the length of the maximal subpart (at least 1), what U+FFFD replaces.
bool utf8_well_formed_at(std::string_view s, size_t i, size_t& len);

// The first code point of s (valid, non-empty) and the last one.
uint32_t first_cp(std::string_view s);
uint32_t last_cp(std::string_view s);

bool is_numeric(uint32_t cp);      // general category Nd, Nl or No (Rust char::is_numeric)
bool is_white_space(uint32_t cp);  // the White_Space property (Rust char::is_whitespace, regex \s)
bool is_word_char(uint32_t cp);    // regex \w: Alphabetic, M, Nd, Pc, Join_Control (UTS #18)
bool is_alphanumeric(uint32_t cp);
// Python's str.isprintable() of one character (repr() escapes the others): not in the general
// categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs, U+0020 excepted. For the chat-template renderer.
bool is_python_printable(uint32_t cp);
// Cased, or changed by upper/lower/title casing (\p{Cased}, \p{CWCM}): a character Python's
// str.upper() & co. would touch. The chat-template renderer maps case for ASCII letters only and
// refuses text holding any other such character.
bool has_case(uint32_t cp);

enum class NormalForm : uint8_t { nfc, nfd, nfkc, nfkd };
std::string normalize(std::string_view s, NormalForm form);  // s valid UTF-8
std::string lowercase(std::string_view s);                   // per code point, full mapping

}  // namespace nvfp4::io::hf

// Unicode helpers of the tokenizers: ICU for character properties and normalization forms.
#include "io/tokenizer/unicode.hpp"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::io {

std::string utf8_replace_invalid(std::string_view s) {
  // Fast path: valid UTF-8 is returned as it is.
  auto valid_at = [&](size_t i, size_t& len) -> bool {
    const auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 < 0x80) {
      len = 1;
      return true;
    }
    // Unicode Table 3-7: the well-formed byte sequences. `len` gets the length of the maximal
    // subpart when ill-formed (at least 1).
    uint8_t lo = 0x80, hi = 0xBF;
    size_t need;
    if (b0 >= 0xC2 && b0 <= 0xDF) need = 1;
    else if (b0 == 0xE0) need = 2, lo = 0xA0;
    else if (b0 >= 0xE1 && b0 <= 0xEC) need = 2;
    else if (b0 == 0xED) need = 2, hi = 0x9F;
    else if (b0 >= 0xEE && b0 <= 0xEF) need = 2;
    else if (b0 == 0xF0) need = 3, lo = 0x90;
    else if (b0 >= 0xF1 && b0 <= 0xF3) need = 3;
    else if (b0 == 0xF4) need = 3, hi = 0x8F;
    else {
      len = 1;
      return false;
    }
    for (size_t k = 1; k <= need; ++k) {
      if (i + k >= s.size()) {
        len = k;
        return false;
      }
      const auto b = static_cast<uint8_t>(s[i + k]);
      const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
      if (!ok) {
        len = k;
        return false;
      }
    }
    len = need + 1;
    return true;
  };
  size_t i = 0, len = 0;
  while (i < s.size() && valid_at(i, len)) i += len;
  if (i == s.size()) return std::string(s);
  std::string out(s.substr(0, i));
  out.reserve(s.size() + 16);
  while (i < s.size()) {
    if (valid_at(i, len)) {
      out.append(s.substr(i, len));
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal subpart
    }
    i += len;
  }
  return out;
}

namespace hf {

void append_cp(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

uint32_t first_cp(std::string_view s) {
  size_t i = 0;
  return next_cp(s, i);
}

uint32_t last_cp(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return next_cp(s, i);
}

bool is_numeric(uint32_t cp) {
  const int8_t t = u_charType(static_cast<UChar32>(cp));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_white_space(uint32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

bool is_alphanumeric(uint32_t cp) {
  return u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_ALPHABETIC) || is_numeric(cp);
}

bool is_word_char(uint32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) return true;
  const int8_t t = u_charType(c);
  return t == U_NON_SPACING_MARK || t == U_COMBINING_SPACING_MARK || t == U_ENCLOSING_MARK ||
         t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION;
}

namespace {

std::u16string to_utf16(std::string_view s) {
  std::u16string u(s.size() + 1, u'\0');
  int32_t n = 0;
  UErrorCode st = U_ZERO_ERROR;
  u_strFromUTF8(reinterpret_cast<UChar*>(u.data()), static_cast<int32_t>(u.size()), &n, s.data(),
                static_cast<int32_t>(s.size()), &st);
  if (U_FAILURE(st)) throw Error(std::string("tokenizer: UTF-8 to UTF-16 conversion failed: ") + u_errorName(st));
  u.resize(static_cast<size_t>(n));
  return u;
}

std::string to_utf8(const std::u16string& u) {
  std::string s(u.size() * 3 + 1, '\0');
  int32_t n = 0;
  UErrorCode st = U_ZERO_ERROR;
  u_strToUTF8(s.data(), static_cast<int32_t>(s.size()), &n, reinterpret_cast<const UChar*>(u.data()),
              static_cast<int32_t>(u.size()), &st);
  if (U_FAILURE(st)) throw Error(std::string("tokenizer: UTF-16 to UTF-8 conversion failed: ") + u_errorName(st));
  s.resize(static_cast<size_t>(n));
  return s;
}

}  // namespace

std::string normalize(std::string_view s, NormalForm form) {
  UErrorCode st = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case NormalForm::nfc: n = unorm2_getNFCInstance(&st); break;
    case NormalForm::nfd: n = unorm2_getNFDInstance(&st); break;
    case NormalForm::nfkc: n = unorm2_getNFKCInstance(&st); break;
    case NormalForm::nfkd: n = unorm2_getNFKDInstance(&st); break;
  }
  if (U_FAILURE(st)) throw Error(std::string("tokenizer: ICU normalizer unavailable: ") + u_errorName(st));
  const std::u16string in = to_utf16(s);
  if (unorm2_isNormalized(n, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()), &st) &&
      U_SUCCESS(st)) {
    return std::string(s);
  }
  st = U_ZERO_ERROR;
  std::u16string out(in.size() * 4 + 16, u'\0');
  int32_t len = unorm2_normalize(n, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()),
                                 reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &st);
  if (st == U_BUFFER_OVERFLOW_ERROR) {
    st = U_ZERO_ERROR;
    out.assign(static_cast<size_t>(len) + 1, u'\0');
    len = unorm2_normalize(n, reinterpret_cast<const UChar*>(in.data()), static_cast<int32_t>(in.size()),
                           reinterpret_cast<UChar*>(out.data()), static_cast<int32_t>(out.size()), &st);
  }
  if (U_FAILURE(st)) throw Error(std::string("tokenizer: normalization failed: ") + u_errorName(st));
  out.resize(static_cast<size_t>(len));
  return to_utf8(out);
}

std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const uint32_t c = next_cp(s, i);
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    // Full lowercase mapping of the code point alone (no context: Rust's char::to_lowercase).
    UChar in[2];
    int32_t in_len = 0;
    U16_APPEND_UNSAFE(in, in_len, static_cast<UChar32>(c));
    UChar buf[8];
    UErrorCode st = U_ZERO_ERROR;
    const int32_t n = u_strToLower(buf, 8, in, in_len, "", &st);
    if (U_FAILURE(st)) {
      append_cp(out, c);
      continue;
    }
    for (int32_t k = 0; k < n;) {
      UChar32 d;
      U16_NEXT(buf, k, n, d);
      append_cp(out, static_cast<uint32_t>(d));
    }
  }
  return out;
}

}  // namespace hf
}  // namespace nvfp4::io

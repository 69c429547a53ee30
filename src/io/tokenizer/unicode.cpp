// Unicode helpers of the tokenizers. Character classes come from PCRE2's Unicode tables (the
// library the split patterns already use) and a fixed White_Space list; normalization forms and
// lowercasing come from ICU, loaded at run time (dlopen) when a tokenizer asks for them — so the
// binaries need no libicu where they run unless such a tokenizer is used (the GPU machines have
// none), and then the error names the library to install.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/tokenizer/unicode.hpp"

#include <dlfcn.h>
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/utypes.h>

#include <bitset>
#include <memory>
#include <mutex>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::io {
namespace hf {
bool utf8_well_formed_at(std::string_view s, size_t i, size_t& len) {
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
}
}  // namespace hf

std::string utf8_replace_invalid(std::string_view s) {
  // Fast path: valid UTF-8 is returned as it is.
  auto valid_at = [&](size_t i, size_t& len) { return hf::utf8_well_formed_at(s, i, len); };
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

namespace {

// A character class from a PCRE2 pattern matching one character: answered from a bitset for the
// Basic Multilingual Plane (built once, at first use), by matching above it.
class CharClass {
 public:
  explicit CharClass(const char* pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                          &off, nullptr);
    if (!code_) throw Error(std::string("tokenizer: internal character class does not compile: ") + pattern);
    md_ = pcre2_match_data_create(1, nullptr);
    for (uint32_t c = 0; c < 0x10000; ++c) {
      if (c >= 0xD800 && c < 0xE000) continue;  // surrogates: never in valid UTF-8
      bmp_[c] = slow(c);
    }
  }
  bool operator()(uint32_t c) const {
    if (c < 0x10000) return bmp_[c];
    std::lock_guard<std::mutex> lock(mu_);
    return slow(c);
  }

 private:
  bool slow(uint32_t c) const {
    std::string u;
    append_cp(u, c);
    return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(u.data()), u.size(), 0, PCRE2_NO_UTF_CHECK, md_, nullptr) >= 0;
  }
  pcre2_code* code_ = nullptr;
  pcre2_match_data* md_ = nullptr;
  std::bitset<0x10000> bmp_;
  mutable std::mutex mu_;
};

}  // namespace

bool is_numeric(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  static const CharClass numeric(R"(\A[\p{Nd}\p{Nl}\p{No}]\z)");
  return numeric(cp);
}

bool is_white_space(uint32_t c) {
  // The Unicode White_Space property (PropList.txt), 25 code points.
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_word_char(uint32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  static const CharClass word(R"(\A[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]\z)");
  return word(cp);
}

bool is_alphanumeric(uint32_t cp) {
  static const CharClass alnum(R"(\A[\p{Alphabetic}\p{Nd}\p{Nl}\p{No}]\z)");
  return alnum(cp);
}

bool is_python_printable(uint32_t cp) {
  if (cp < 0x80) return cp >= 0x20 && cp < 0x7F;
  static const CharClass printable(R"(\A[^\p{C}\p{Z}]\z)");
  return printable(cp);
}

bool has_case(uint32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
  static const CharClass cased(R"(\A[\p{Cased}\p{CWCM}]\z)");
  return cased(cp);
}

namespace {

// UTF-8 (valid) <-> UTF-16.
std::u16string to_utf16(std::string_view s) {
  std::u16string u;
  u.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = next_cp(s, i);
    if (c < 0x10000) {
      u += static_cast<char16_t>(c);
    } else {
      u += static_cast<char16_t>(0xD800 + ((c - 0x10000) >> 10));
      u += static_cast<char16_t>(0xDC00 + ((c - 0x10000) & 0x3FF));
    }
  }
  return u;
}

std::string to_utf8(const std::u16string& u) {
  std::string s;
  s.reserve(u.size() * 3);
  for (size_t i = 0; i < u.size(); ++i) {
    uint32_t c = u[i];
    if (c >= 0xD800 && c < 0xDC00 && i + 1 < u.size() && u[i + 1] >= 0xDC00 && u[i + 1] < 0xE000) {
      c = 0x10000 + ((c - 0xD800) << 10) + (u[i + 1] - 0xDC00);
      ++i;
    }
    append_cp(s, c);
  }
  return s;
}

// ICU's C API, found at run time. Its symbols carry the library's major version (u_strToLower_72).
struct Icu {
  using GetInstance = const UNormalizer2* (*)(UErrorCode*);
  GetInstance nfc = nullptr, nfd = nullptr, nfkc = nullptr, nfkd = nullptr;
  UBool (*is_normalized)(const UNormalizer2*, const UChar*, int32_t, UErrorCode*) = nullptr;
  int32_t (*normalize)(const UNormalizer2*, const UChar*, int32_t, UChar*, int32_t, UErrorCode*) = nullptr;
  int32_t (*to_lower)(UChar*, int32_t, const UChar*, int32_t, const char*, UErrorCode*) = nullptr;
  const char* (*error_name)(UErrorCode) = nullptr;
};

const Icu& icu() {
  static const Icu lib = [] {
    Icu l;
    void* h = dlopen("libicuuc.so", RTLD_NOW | RTLD_LOCAL);
    for (int v = 90; !h && v >= 50; --v) h = dlopen(("libicuuc.so." + std::to_string(v)).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      throw Error("this tokenizer needs ICU for Unicode normalization or lowercasing, and libicuuc.so was not found; "
                  "install it (Debian: apt-get install libicu72)");
    }
    std::string suffix;
    for (int v = 90; v >= 50 && suffix.empty(); --v) {
      if (dlsym(h, ("u_errorName_" + std::to_string(v)).c_str())) suffix = "_" + std::to_string(v);
    }
    auto sym = [&](const char* name) {
      void* p = dlsym(h, (name + suffix).c_str());
      if (!p) throw Error(std::string("ICU (libicuuc) lacks ") + name + suffix + "; install Debian's libicu72");
      return p;
    };
    l.nfc = reinterpret_cast<Icu::GetInstance>(sym("unorm2_getNFCInstance"));
    l.nfd = reinterpret_cast<Icu::GetInstance>(sym("unorm2_getNFDInstance"));
    l.nfkc = reinterpret_cast<Icu::GetInstance>(sym("unorm2_getNFKCInstance"));
    l.nfkd = reinterpret_cast<Icu::GetInstance>(sym("unorm2_getNFKDInstance"));
    l.is_normalized = reinterpret_cast<decltype(l.is_normalized)>(sym("unorm2_isNormalized"));
    l.normalize = reinterpret_cast<decltype(l.normalize)>(sym("unorm2_normalize"));
    l.to_lower = reinterpret_cast<decltype(l.to_lower)>(sym("u_strToLower"));
    l.error_name = reinterpret_cast<decltype(l.error_name)>(sym("u_errorName"));
    return l;
  }();
  return lib;
}

const UChar* uc(const std::u16string& s) { return reinterpret_cast<const UChar*>(s.data()); }
UChar* uc(std::u16string& s) { return reinterpret_cast<UChar*>(s.data()); }

}  // namespace

std::string normalize(std::string_view s, NormalForm form) {
  const Icu& I = icu();
  UErrorCode st = U_ZERO_ERROR;
  const UNormalizer2* n = form == NormalForm::nfc ? I.nfc(&st) : form == NormalForm::nfd ? I.nfd(&st)
                          : form == NormalForm::nfkc ? I.nfkc(&st) : I.nfkd(&st);
  if (U_FAILURE(st)) throw Error(std::string("tokenizer: ICU normalizer unavailable: ") + I.error_name(st));
  const std::u16string in = to_utf16(s);
  const auto len = static_cast<int32_t>(in.size());
  if (I.is_normalized(n, uc(in), len, &st) && U_SUCCESS(st)) return std::string(s);
  st = U_ZERO_ERROR;
  std::u16string out(in.size() * 4 + 16, u'\0');
  int32_t got = I.normalize(n, uc(in), len, uc(out), static_cast<int32_t>(out.size()), &st);
  if (st == U_BUFFER_OVERFLOW_ERROR) {
    st = U_ZERO_ERROR;
    out.assign(static_cast<size_t>(got) + 1, u'\0');
    got = I.normalize(n, uc(in), len, uc(out), static_cast<int32_t>(out.size()), &st);
  }
  if (U_FAILURE(st)) throw Error(std::string("tokenizer: normalization failed: ") + I.error_name(st));
  out.resize(static_cast<size_t>(got));
  return to_utf8(out);
}

std::string lowercase(std::string_view s) {
  bool ascii = true;
  for (char c : s) ascii &= static_cast<uint8_t>(c) < 0x80;
  std::string out(s);
  if (ascii) {
    for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
    return out;
  }
  // Each code point's full lowercase mapping on its own (no context, as Rust's
  // char::to_lowercase): ICU on one UTF-16 code point (one unit, or a surrogate pair) at a time.
  const std::u16string u = to_utf16(s);
  std::u16string lower;
  lower.reserve(u.size());
  UChar buf[8];
  for (size_t k = 0; k < u.size();) {
    const size_t n = (u[k] >= 0xD800 && u[k] < 0xDC00 && k + 1 < u.size()) ? 2 : 1;
    UErrorCode st = U_ZERO_ERROR;
    const int32_t m = icu().to_lower(buf, 8, reinterpret_cast<const UChar*>(u.data() + k), static_cast<int32_t>(n), "", &st);
    if (U_FAILURE(st)) lower.append(u, k, n);
    else lower.append(reinterpret_cast<const char16_t*>(buf), static_cast<size_t>(m));
    k += n;
  }
  return to_utf8(lower);
}

}  // namespace hf
}  // namespace nvfp4::io

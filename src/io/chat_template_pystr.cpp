// Python's str operations as the chat-template renderer needs them (str.strip/split/rsplit/
// splitlines/replace/upper/lower/title/capitalize, int() and float() of a string, and jinja2's
// title filter), on valid UTF-8 by code point, with Python's whitespace (str.isspace).
//
// Case mapping covers ASCII letters; text holding another letter with case fails ("unsupported"),
// since Python's full Unicode case tables are not here. Text without such letters (CJK, emoji,
// punctuation) maps exactly.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "io/chat_template_internal.hpp"
#include "io/tokenizer/unicode.hpp"

namespace nvfp4::io::chat {

static void check_case(std::string_view s, const char* what) {
  charge_bytes(s.size());
  for (size_t i = 0; i < s.size();) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    if (hf::has_case(hf::next_cp(s, i))) {
      fail(std::string("unsupported: ") + what + " of text with non-ASCII letters (the renderer maps case for ASCII letters only)");
    }
  }
}

static char up(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }
static char low(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }
static bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string str_upper(std::string_view s) {
  check_case(s, "upper");
  std::string out(s);
  for (char& c : out) c = up(c);
  return out;
}
std::string str_lower(std::string_view s) {
  check_case(s, "lower");
  std::string out(s);
  for (char& c : out) c = low(c);
  return out;
}
std::string str_capitalize(std::string_view s) {  // str.capitalize
  check_case(s, "capitalize");
  std::string out(s);
  for (size_t k = 0; k < out.size(); ++k) out[k] = k == 0 ? up(out[k]) : low(out[k]);
  return out;
}
std::string str_title(std::string_view s) {  // str.title: a letter after a letter is lowered
  check_case(s, "title");
  std::string out(s);
  bool prev_cased = false;
  for (char& c : out) {
    const bool cased = ascii_alpha(c);
    c = prev_cased ? low(c) : up(c);
    prev_cased = cased;
  }
  return out;
}
std::string jinja_title(std::string_view s) {  // jinja2's do_title: words start after [-\s({\[<]
  check_case(s, "title");
  std::string out;
  bool start = true;
  for (size_t i = 0; i < s.size();) {
    const size_t b = i;
    const uint32_t c = hf::next_cp(s, i);
    const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    if (sep) {
      out.append(s.substr(b, i - b));
      start = true;
    } else {
      out += i - b == 1 ? (start ? up(s[b]) : low(s[b])) : s[b];
      if (i - b > 1) out.append(s.substr(b + 1, i - b - 1));
      start = false;
    }
  }
  return out;
}

static bool in_set(uint32_t c, const std::optional<std::string>& chars) {
  if (!chars) return py_isspace(c);
  for (size_t i = 0; i < chars->size();) {
    if (hf::next_cp(*chars, i) == c) return true;
  }
  return false;
}

std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  charge_bytes(s.size());
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e) {
      size_t i = b;
      if (!in_set(hf::next_cp(s, i), chars)) break;
      b = i;
    }
  }
  if (right) {
    while (e > b) {
      size_t start = e - 1;
      while (start > b && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
      size_t i = start;
      if (!in_set(hf::next_cp(s, i), chars)) break;
      e = start;
    }
  }
  return std::string(s.substr(b, e - b));
}

static size_t space_at(std::string_view s, size_t i) {  // the length of a whitespace code point at i, or 0
  if (i >= s.size()) return 0;
  size_t j = i;
  return py_isspace(hf::next_cp(s, j)) ? j - i : 0;
}

std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
  charge_bytes(s.size());
  std::vector<std::string> out;
  int64_t left = maxsplit < 0 ? INT64_MAX : maxsplit;
  if (!sep) {
    size_t i = 0;
    while (left-- > 0) {
      for (size_t k; (k = space_at(s, i)) != 0;) i += k;
      if (i == s.size()) break;
      const size_t j = i;
      while (i < s.size() && !space_at(s, i)) hf::next_cp(s, i);
      check_items(out.size() + 1), out.emplace_back(s.substr(j, i - j));
    }
    for (size_t k; (k = space_at(s, i)) != 0;) i += k;
    if (i < s.size()) check_items(out.size() + 1), out.emplace_back(s.substr(i));
    return out;
  }
  if (sep->empty()) fail("empty separator");
  size_t i = 0;
  while (left-- > 0) {
    const size_t j = s.find(*sep, i);
    if (j == std::string_view::npos) break;
    check_items(out.size() + 1), out.emplace_back(s.substr(i, j - i));
    i = j + sep->size();
  }
  check_items(out.size() + 1), out.emplace_back(s.substr(i));
  return out;
}

std::vector<std::string> py_rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
  charge_bytes(s.size());
  std::vector<std::string> out;
  int64_t left = maxsplit < 0 ? INT64_MAX : maxsplit;
  auto space_before = [&](size_t e) -> size_t {  // length of a whitespace code point ending at e
    if (e == 0) return 0;
    size_t start = e - 1;
    while (start > 0 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    return space_at(s, start) ? e - start : 0;
  };
  if (!sep) {
    size_t e = s.size();
    while (left-- > 0) {
      for (size_t k; (k = space_before(e)) != 0;) e -= k;
      if (e == 0) break;
      const size_t j = e;
      while (e > 0 && !space_before(e)) {
        --e;
        while (e > 0 && (static_cast<uint8_t>(s[e]) & 0xC0) == 0x80) --e;
      }
      check_items(out.size() + 1), out.emplace_back(s.substr(e, j - e));
    }
    for (size_t k; (k = space_before(e)) != 0;) e -= k;
    if (e > 0) check_items(out.size() + 1), out.emplace_back(s.substr(0, e));
    std::reverse(out.begin(), out.end());
    return out;
  }
  if (sep->empty()) fail("empty separator");
  size_t e = s.size();
  while (left-- > 0) {
    if (e < sep->size()) break;
    const size_t j = s.rfind(*sep, e - sep->size());
    if (j == std::string_view::npos) break;
    check_items(out.size() + 1), out.emplace_back(s.substr(j + sep->size(), e - j - sep->size()));
    e = j;
  }
  check_items(out.size() + 1), out.emplace_back(s.substr(0, e));
  std::reverse(out.begin(), out.end());
  return out;
}

static bool line_break(uint32_t c) {
  return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}

std::vector<std::string> py_splitlines(std::string_view s, bool keepends) {
  charge_bytes(s.size());
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i, eol = s.size();
    while (j < s.size()) {
      size_t k = j;
      const uint32_t c = hf::next_cp(s, k);
      if (line_break(c)) {
        eol = j;
        j = c == '\r' && k < s.size() && s[k] == '\n' ? k + 1 : k;
        break;
      }
      j = k;
    }
    if (eol == s.size()) eol = j;
    check_items(out.size() + 1), out.emplace_back(s.substr(i, (keepends ? j : eol) - i));
    i = j;
  }
  return out;
}

std::string py_replace(std::string_view s, std::string_view old, std::string_view with, int64_t count) {
  std::string out;
  if (count < 0) count = INT64_MAX;
  if (old.empty()) {
    // An empty pattern matches before every character and at the end.
    for (size_t i = 0; i <= s.size();) {
      if (count > 0) {
        out += with;
        --count;
      }
      if (i == s.size()) break;
      const size_t b = i;
      hf::next_cp(s, i);
      out.append(s.substr(b, i - b));
      check_bytes(out.size());
    }
  } else {
    size_t i = 0;
    while (count > 0) {
      const size_t j = s.find(old, i);
      if (j == std::string_view::npos) break;
      out.append(s.substr(i, j - i));
      out += with;
      check_bytes(out.size());
      i = j + old.size();
      --count;
    }
    out.append(s.substr(i));
  }
  check_bytes(out.size());
  charge_bytes(out.size());
  return out;
}

static std::string_view trim_py_space(std::string_view s) {
  charge_bytes(s.size());
  while (!s.empty() && space_at(s, 0)) s.remove_prefix(space_at(s, 0));
  while (!s.empty()) {
    size_t start = s.size() - 1;
    while (start > 0 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    if (!space_at(s, start)) break;
    s = s.substr(0, start);
  }
  return s;
}

// Digits (of `base`) with single underscores between them, as Python's int() and float() take.
static bool digits_with_underscores(std::string_view s, int base) {
  if (s.empty() || s.front() == '_' || s.back() == '_') return false;
  for (size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    if (c == '_') {
      if (s[k + 1] == '_') return false;
      continue;
    }
    int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? (c | 0x20) - 'a' + 10 : 99;
    if (d >= base) return false;
  }
  return true;
}

static std::string without_underscores(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c != '_') out += c;
  }
  return out;
}

// Python's int(s, base) for base 2..36 (0: from the prefix). nullopt: a ValueError.
std::optional<int64_t> py_int(std::string_view text, int base) {
  std::string_view s = trim_py_space(text);
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.size() >= 2 && s[0] == '0') {
    const char p = static_cast<char>(s[1] | 0x20);
    const int pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
    if (pb && (base == 0 || base == pb)) {
      base = pb;
      s.remove_prefix(2);
      if (!s.empty() && s[0] == '_') s.remove_prefix(1);
    }
  }
  if (base == 0) {
    base = 10;
    if (s.size() > 1 && s[0] == '0' && s.find_first_not_of("0_") != std::string_view::npos) return std::nullopt;
  }
  if (!digits_with_underscores(s, base)) return std::nullopt;
  const std::string d = without_underscores(s);
  uint64_t u = 0;
  const auto r = std::from_chars(d.data(), d.data() + d.size(), u, base);
  if (r.ec != std::errc() || u > (neg ? uint64_t(INT64_MAX) + 1 : uint64_t(INT64_MAX))) {
    fail("integer overflow (the renderer's integers are 64-bit; Python's are not)");
  }
  return neg ? static_cast<int64_t>(0 - u) : static_cast<int64_t>(u);
}

// Python's float(s). nullopt: a ValueError.
std::optional<double> py_float(std::string_view text) {
  std::string_view s = trim_py_space(text);
  std::string_view body = s;
  bool neg = false;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
    neg = body[0] == '-';
    body.remove_prefix(1);
  }
  std::string lower;
  for (const char c : body) lower += low(c);
  if (lower == "inf" || lower == "infinity") return neg ? -HUGE_VAL : HUGE_VAL;
  if (lower == "nan") return std::nan("");
  // [digits][.digits][e[sign]digits], at least one digit before the exponent.
  const size_t e = lower.find('e');
  const std::string_view mant = std::string_view(body).substr(0, e);
  const size_t dot = mant.find('.');
  const std::string_view ip = mant.substr(0, dot);
  const std::string_view fp = dot == std::string_view::npos ? std::string_view() : mant.substr(dot + 1);
  if (ip.empty() && fp.empty()) return std::nullopt;
  if (!ip.empty() && !digits_with_underscores(ip, 10)) return std::nullopt;
  if (!fp.empty() && !digits_with_underscores(fp, 10)) return std::nullopt;
  if (e != std::string::npos) {
    std::string_view ex = std::string_view(body).substr(e + 1);
    if (!ex.empty() && (ex[0] == '+' || ex[0] == '-')) ex.remove_prefix(1);
    if (!digits_with_underscores(ex, 10)) return std::nullopt;
  }
  const std::string clean = without_underscores(body);
  double v = 0;
  const auto r = std::from_chars(clean.data(), clean.data() + clean.size(), v);
  if (r.ec == std::errc::result_out_of_range) {
    const size_t k = clean.find_first_of("eE");
    v = k != std::string::npos && clean[k + 1] == '-' ? 0.0 : HUGE_VAL;
  } else if (r.ec != std::errc() || r.ptr != clean.data() + clean.size()) {
    return std::nullopt;
  }
  return neg ? -v : v;
}

bool case_test(const Value& v, bool want_lower) {
  const std::string s = to_str(v);
  check_case(s, want_lower ? "islower" : "isupper");
  bool cased = false;
  for (const char c : s) {
    if (!ascii_alpha(c)) continue;
    cased = true;
    if ((c >= 'a' && c <= 'z') != want_lower) return false;
  }
  return cased;
}

}  // namespace nvfp4::io::chat

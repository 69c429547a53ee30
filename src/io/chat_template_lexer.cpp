// jinja2's lexer (jinja2/lexer.py, 3.1) with transformers' settings: trim_blocks and lstrip_blocks
// on, the default delimiters, no line statements. Template text between tags becomes data
// tokens; {{ ... }} and {% ... %} become begin/end tokens around names, literals and operators;
// comments and {% raw %} bodies are resolved here.
//
// Whitespace control, as jinja2 applies it when it meets a tag:
//   - "{%-", "{{-", "{#-": the data before the tag loses its trailing whitespace (str.rstrip());
//   - "-%}", "-}}", "-#}": the whitespace after the tag is skipped (\s*);
//   - trim_blocks: the one "\n" right after "%}" or "#}" is skipped ("+%}" keeps it);
//   - lstrip_blocks: before "{%" and "{#" (not "{{"), spaces and tabs from the start of the line
//     are dropped when nothing else stands between the line start and the tag — "line start"
//     being after a "\n" in the data, or the template start / a tag that ended with "\n";
//     "{%+" keeps them.
// "Whitespace" is Python's (str.isspace), not only ASCII.
#include <charconv>
#include <cmath>

#include "io/chat_template_internal.hpp"
#include "io/tokenizer/unicode.hpp"

namespace nvfp4::io::chat {

void syntax_error(std::string_view source_name, Pos pos, const std::string& message) {
  throw Error(std::string(source_name) + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.col) + ": " + message);
}

std::string normalize_source(std::string_view text) {
  // jinja2 splits on \r\n, \r and \n, drops a final empty line (keep_trailing_newline=False) and
  // joins with \n.
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\r') {
      out += '\n';
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
    } else {
      out += text[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

class Lexer {
 public:
  Lexer(std::string_view src, std::string_view name) : s_(src), name_(name) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < s_.size(); ++i) {
      if (s_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    const size_t n = s_.size();
    while (pos_ < n) {
      const size_t p = find_opener(pos_);
      if (p == std::string_view::npos) {
        emit_data(pos_, s_.substr(pos_));
        break;
      }
      const char kind = s_[p + 1];  // '{' variable, '%' block, '#' comment
      const size_t after = p + 2;
      const char sign = after < n && (s_[after] == '-' || s_[after] == '+') ? s_[after] : 0;
      size_t raw_end = 0;
      const bool raw = kind == '%' && match_raw_begin(p, raw_end);
      emit_data(pos_, strip_before(s_.substr(pos_, p - pos_), sign, kind != '{'));
      if (raw) {
        pos_ = raw_end;
        line_starting_ = s_[raw_end - 1] == '\n';
        lex_raw(p);
        continue;
      }
      const size_t body = after + (sign ? 1 : 0);
      line_starting_ = false;
      if (kind == '#') {
        lex_comment(p, body);
        continue;
      }
      push(kind == '{' ? Tok::var_begin : Tok::block_begin, p);
      pos_ = body;
      lex_tag(kind == '%');
    }
    push(Tok::eof, s_.size());
    return std::move(out_);
  }

 private:
  Pos pos_at(size_t off) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    const size_t line = static_cast<size_t>(it - line_starts_.begin());  // 1-based
    // Tokens come in order: count the columns on from the last position on this line (a template
    // of one long line would otherwise cost quadratic time).
    size_t from = line_starts_[line - 1], col = 1;
    if (cache_line_ == line && cache_off_ <= off) from = cache_off_, col = cache_col_;
    col += cp_count(s_.substr(from, off - from));
    cache_line_ = line, cache_off_ = off, cache_col_ = col;
    return Pos{static_cast<int>(line), static_cast<int>(col)};
  }

  [[noreturn]] void error(size_t off, const std::string& msg) const { syntax_error(name_, pos_at(off), msg); }

  Token& push(Tok type, size_t off) {
    out_.push_back(Token{type, pos_at(off), {}, 0, 0});
    return out_.back();
  }

  void emit_data(size_t off, std::string_view text) {
    if (!text.empty()) push(Tok::data, off).text = std::string(text);
  }

  bool starts(size_t i, std::string_view what) const { return s_.substr(i, what.size()) == what; }

  // Python-whitespace code point at i: its length, or 0.
  size_t space_len(size_t i) const {
    if (i >= s_.size()) return 0;
    const auto b = static_cast<uint8_t>(s_[i]);
    if (b < 0x80) return py_isspace(b) ? 1 : 0;
    size_t j = i;
    const uint32_t c = hf::next_cp(s_, j);
    return py_isspace(c) ? j - i : 0;
  }
  size_t skip_space(size_t i) const {
    for (size_t k; (k = space_len(i)) != 0;) i += k;
    return i;
  }
  static bool all_space(std::string_view t) {
    if (t.empty()) return false;
    for (size_t i = 0; i < t.size();) {
      if (!py_isspace(hf::next_cp(t, i))) return false;
    }
    return true;
  }
  static std::string_view rstrip(std::string_view t) {
    while (!t.empty()) {
      size_t start = t.size() - 1;
      while (start > 0 && (static_cast<uint8_t>(t[start]) & 0xC0) == 0x80) --start;
      size_t j = start;
      if (!py_isspace(hf::next_cp(t, j))) break;
      t = t.substr(0, start);
    }
    return t;
  }

  // The data before a tag, after the tag's "-" or lstrip_blocks (jinja2's OptionalLStrip rule).
  std::string_view strip_before(std::string_view text, char sign, bool lstrip_applies) const {
    if (sign == '-') return rstrip(text);
    if (sign != '+' && lstrip_applies) {
      const size_t nl = text.rfind('\n');
      const size_t l = nl == std::string_view::npos ? 0 : nl + 1;
      if ((l > 0 || line_starting_) && all_space(text.substr(l))) return text.substr(0, l);
    }
    return text;
  }

  size_t find_opener(size_t from) const {
    for (size_t p = s_.find('{', from); p != std::string_view::npos; p = s_.find('{', p + 1)) {
      if (p + 1 < s_.size() && (s_[p + 1] == '{' || s_[p + 1] == '%' || s_[p + 1] == '#')) return p;
    }
    return std::string_view::npos;
  }

  // {%(-|+|)\s*raw\s*(-%}\s*|%}) at p.
  bool match_raw_begin(size_t p, size_t& end) const {
    size_t i = p + 2;
    if (i < s_.size() && (s_[i] == '-' || s_[i] == '+')) ++i;
    i = skip_space(i);
    if (!starts(i, "raw")) return false;
    i = skip_space(i + 3);
    if (starts(i, "-%}")) {
      end = skip_space(i + 3);
      return true;
    }
    if (starts(i, "%}")) {
      end = i + 2;
      return true;
    }
    return false;
  }

  void lex_raw(size_t begin) {
    for (size_t q = s_.find("{%", pos_); q != std::string_view::npos; q = s_.find("{%", q + 1)) {
      size_t i = q + 2;
      const char sign = i < s_.size() && (s_[i] == '-' || s_[i] == '+') ? s_[i] : 0;
      if (sign) ++i;
      i = skip_space(i);
      if (!starts(i, "endraw")) continue;
      i = skip_space(i + 6);
      size_t end;
      if (starts(i, "+%}")) {
        end = i + 3;
      } else if (starts(i, "-%}")) {
        end = skip_space(i + 3);
      } else if (starts(i, "%}")) {
        end = i + 2;
        if (end < s_.size() && s_[end] == '\n') ++end;
      } else {
        continue;
      }
      emit_data(pos_, strip_before(s_.substr(pos_, q - pos_), sign, true));
      pos_ = end;
      line_starting_ = s_[end - 1] == '\n';
      return;
    }
    error(begin, "missing end of raw directive ({% endraw %})");
  }

  void lex_comment(size_t begin, size_t body) {
    const size_t r = s_.find("#}", body);
    if (r == std::string_view::npos) error(begin, "missing end of comment tag (#})");
    size_t end;
    if (r > body && s_[r - 1] == '+') {
      end = r + 2;
    } else if (r > body && s_[r - 1] == '-') {
      end = skip_space(r + 2);
    } else {
      end = r + 2;
      if (end < s_.size() && s_[end] == '\n') ++end;
    }
    pos_ = end;
    line_starting_ = s_[end - 1] == '\n';
  }

  // (\d+_)*\d+ at i.
  bool digits(size_t& i) const {
    if (i >= s_.size() || !is_digit(s_[i])) return false;
    while (i < s_.size() && is_digit(s_[i])) ++i;
    while (i + 1 < s_.size() && s_[i] == '_' && is_digit(s_[i + 1])) {
      ++i;
      while (i < s_.size() && is_digit(s_[i])) ++i;
    }
    return true;
  }

  bool lex_float() {
    if (pos_ > 0 && s_[pos_ - 1] == '.') return false;
    size_t i = pos_;
    if (!digits(i)) return false;
    size_t j = i, end = 0;
    bool frac = false;
    if (j < s_.size() && s_[j] == '.') {
      size_t k = j + 1;
      if (digits(k)) j = k, frac = true;
    }
    if (j < s_.size() && (s_[j] == 'e' || s_[j] == 'E')) {
      size_t k = j + 1;
      if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) ++k;
      if (digits(k)) end = k;
    }
    if (!end && frac) end = j;
    if (!end) return false;
    std::string text;
    for (size_t k = pos_; k < end; ++k) {
      if (s_[k] != '_') text += s_[k];
    }
    double v = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    if (r.ec == std::errc::result_out_of_range) {
      const size_t e = text.find_first_of("eE");
      v = e != std::string::npos && text[e + 1] == '-' ? 0.0 : HUGE_VAL;  // Python: 1e-999 is 0.0, 1e999 inf
    }
    Token& t = push(Tok::floating, pos_);
    t.f = v;
    pos_ = end;
    return true;
  }

  bool lex_integer() {
    const size_t n = s_.size();
    if (!is_digit(s_[pos_])) return false;
    auto run = [&](size_t k, auto ok) {  // (_?[set])+ from k: the end, or k when none
      for (;;) {
        if (k < n && ok(s_[k])) ++k;
        else if (k + 1 < n && s_[k] == '_' && ok(s_[k + 1])) k += 2;
        else return k;
      }
    };
    size_t end = 0;
    int base = 10;
    if (s_[pos_] == '0' && pos_ + 1 < n) {
      const char x = static_cast<char>(s_[pos_ + 1] | 0x20);
      auto bin = [](char c) { return c == '0' || c == '1'; };
      auto oct = [](char c) { return c >= '0' && c <= '7'; };
      auto hex = [](char c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); };
      size_t k = pos_ + 2;
      if (x == 'b' && (end = run(k, bin)) > k) base = 2;
      else if (x == 'o' && (end = run(k, oct)) > k) base = 8;
      else if (x == 'x' && (end = run(k, hex)) > k) base = 16;
      else end = 0;
    }
    if (!end) end = s_[pos_] == '0' ? run(pos_ + 1, [](char c) { return c == '0'; }) : run(pos_ + 1, is_digit);
    std::string text;
    for (size_t k = pos_ + (base == 10 ? 0 : 2); k < end; ++k) {
      if (s_[k] != '_') text += s_[k];
    }
    int64_t v = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v, base);
    if (r.ec != std::errc()) error(pos_, "unsupported: the integer literal " + std::string(s_.substr(pos_, end - pos_)) + " does not fit 64 bits");
    Token& t = push(Tok::integer, pos_);
    t.i = v;
    pos_ = end;
    return true;
  }

  // Python's str literal decoding as jinja2 does it: value.encode("ascii", "backslashreplace")
  // .decode("unicode-escape") — so a backslash before a non-ASCII character stays a backslash.
  std::string decode_string(std::string_view raw, size_t off) const {
    static const char* hex = "0123456789abcdef";
    std::string a;  // the backslash-replaced ASCII form
    for (size_t i = 0; i < raw.size();) {
      const uint32_t c = hf::next_cp(raw, i);
      if (c < 0x80) {
        a += static_cast<char>(c);
        continue;
      }
      const int nd = c <= 0xFF ? 2 : c <= 0xFFFF ? 4 : 8;
      a += nd == 2 ? "\\x" : nd == 4 ? "\\u" : "\\U";
      for (int k = nd - 1; k >= 0; --k) a += hex[(c >> (4 * k)) & 15];
    }
    std::string out;
    auto hexval = [](char c) -> int {
      if (is_digit(c)) return c - '0';
      c = static_cast<char>(c | 0x20);
      return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i] != '\\') {
        out += a[i];
        continue;
      }
      const char e = a[++i];  // the literal's syntax puts a character after every backslash
      uint32_t cp = 0;
      switch (e) {
        case '\n': continue;
        case '\\': out += '\\'; continue;
        case '\'': out += '\''; continue;
        case '"': out += '"'; continue;
        case 'a': out += '\a'; continue;
        case 'b': out += '\b'; continue;
        case 'f': out += '\f'; continue;
        case 'n': out += '\n'; continue;
        case 'r': out += '\r'; continue;
        case 't': out += '\t'; continue;
        case 'v': out += '\v'; continue;
        case 'N': error(off, "unsupported: \\N{...} escapes in string literals");
        case 'x':
        case 'u':
        case 'U': {
          const int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          for (int k = 0; k < nd; ++k) {
            const int h = i + 1 < a.size() ? hexval(a[i + 1]) : -1;
            if (h < 0) error(off, std::string("truncated \\") + e + std::string(static_cast<size_t>(nd), 'X') + " escape in a string literal");
            cp = cp * 16 + static_cast<uint32_t>(h);
            ++i;
          }
          if (cp > 0x10FFFF) error(off, "illegal Unicode character escape in a string literal");
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            cp = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2 && i + 1 < a.size() && a[i + 1] >= '0' && a[i + 1] <= '7'; ++k) cp = cp * 8 + static_cast<uint32_t>(a[++i] - '0');
            break;
          }
          out += '\\';  // an unknown escape keeps its backslash
          out += e;
          continue;
      }
      if (cp >= 0xD800 && cp < 0xE000) error(off, "unsupported: a surrogate code point escape in a string literal");
      hf::append_cp(out, cp);
    }
    return out;
  }

  bool lex_string() {
    const char q = s_[pos_];
    if (q != '\'' && q != '"') return false;
    size_t i = pos_ + 1;
    while (i < s_.size() && s_[i] != q) i += s_[i] == '\\' ? 2 : 1;
    if (i >= s_.size()) return false;  // unterminated: jinja2 reports the quote as unexpected
    Token& t = push(Tok::string, pos_);
    t.text = decode_string(s_.substr(pos_ + 1, i - pos_ - 1), pos_);
    pos_ = i + 1;
    return true;
  }

  void lex_tag(bool block) {
    std::string balance;  // the closing brackets owed
    while (pos_ < s_.size()) {
      if (balance.empty()) {
        if (block) {
          if (starts(pos_, "+%}")) return end_tag(Tok::block_end, pos_ + 3);
          if (starts(pos_, "-%}")) return end_tag(Tok::block_end, skip_space(pos_ + 3));
          if (starts(pos_, "%}")) {
            const size_t e = pos_ + 2;
            return end_tag(Tok::block_end, e < s_.size() && s_[e] == '\n' ? e + 1 : e);
          }
        } else {
          if (starts(pos_, "-}}")) return end_tag(Tok::var_end, skip_space(pos_ + 3));
          if (starts(pos_, "}}")) return end_tag(Tok::var_end, pos_ + 2);
        }
      }
      if (const size_t j = skip_space(pos_); j > pos_) {
        pos_ = j;
        continue;
      }
      if (lex_float() || lex_integer() || lex_string()) continue;
      const char c = s_[pos_];
      if (is_name_start(c)) {
        size_t j = pos_;
        while (j < s_.size() && is_name_char(s_[j])) ++j;
        if (j < s_.size() && static_cast<uint8_t>(s_[j]) >= 0x80) error(j, "unsupported: a non-ASCII character in a name");
        push(Tok::name, pos_).text = std::string(s_.substr(pos_, j - pos_));
        pos_ = j;
        continue;
      }
      static constexpr std::string_view two[] = {"//", "**", "==", "!=", ">=", "<="};
      std::string_view op;
      for (const std::string_view t : two) {
        if (starts(pos_, t)) op = t;
      }
      if (op.empty() && std::string_view("+-/*%~[](){}><=.:|,;").find(c) != std::string_view::npos) op = s_.substr(pos_, 1);
      if (op.empty()) {
        if (static_cast<uint8_t>(c) >= 0x80) error(pos_, "unsupported: a non-ASCII character outside a string literal in a tag");
        error(pos_, std::string("unexpected character '") + c + "' in a tag");
      }
      if (op == "(" || op == "[" || op == "{") {
        balance += op == "(" ? ')' : op == "[" ? ']' : '}';
      } else if (op == ")" || op == "]" || op == "}") {
        if (balance.empty()) error(pos_, "unexpected '" + std::string(op) + "'");
        if (balance.back() != op[0]) error(pos_, "unexpected '" + std::string(op) + "', expected '" + balance.back() + "'");
        balance.pop_back();
      }
      push(Tok::op, pos_).text = std::string(op);
      pos_ += op.size();
    }
    // The template ended inside the tag: the parser reports what it expected.
  }

  void end_tag(Tok type, size_t end) {
    push(type, pos_);
    pos_ = end;
    line_starting_ = s_[end - 1] == '\n';
  }

  std::string_view s_, name_;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  mutable size_t cache_line_ = 0, cache_off_ = 0, cache_col_ = 1;
};

}  // namespace

std::vector<Token> tokenize(std::string_view src, std::string_view source_name) {
  return Lexer(src, source_name).run();
}

}  // namespace nvfp4::io::chat

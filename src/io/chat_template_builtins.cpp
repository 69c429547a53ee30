// The filters, tests, global functions and str/dict/list methods of the chat-template renderer,
// each as jinja2 3.1 (jinja2/filters.py, jinja2/tests.py) or Python defines it; transformers'
// tojson (json.dumps with ensure_ascii=False by default). Arguments bind as Python binds them
// (positional, then by keyword; unknown keywords fail).
//
// Case mapping (upper, lower, title, capitalize, the case-insensitive sorts, islower/isupper)
// works on ASCII letters; text holding another letter with case fails ("unsupported"), since
// Python's full Unicode case tables are not here. Text without such letters (CJK, emoji,
// punctuation) maps exactly.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>

#include "io/chat_template_internal.hpp"
#include "io/tokenizer/unicode.hpp"

namespace nvfp4::io::chat {

namespace {

// ---- arguments -------------------------------------------------------------------------------------

struct Params {
  std::vector<std::optional<Value>> v;
  bool has(size_t k) const { return v[k].has_value(); }
  const Value& get(size_t k) const { return *v[k]; }
  Value get_or(size_t k, Value d) const { return v[k] ? *v[k] : std::move(d); }
};

Params bind(const CallArgs& a, std::initializer_list<std::string_view> names, const std::string& what) {
  Params p;
  p.v.resize(names.size());
  if (a.pos.size() > names.size()) {
    fail(what + "() takes at most " + std::to_string(names.size()) + " argument(s) (" + std::to_string(a.pos.size()) + " given)");
  }
  for (size_t k = 0; k < a.pos.size(); ++k) p.v[k] = a.pos[k];
  for (const auto& [key, val] : a.kw) {
    const auto it = std::find(names.begin(), names.end(), key);
    if (it == names.end()) fail(what + "() got an unexpected keyword argument '" + key + "'");
    const auto k = static_cast<size_t>(it - names.begin());
    if (p.v[k]) fail(what + "() got multiple values for argument '" + key + "'");
    p.v[k] = val;
  }
  return p;
}

int64_t int_arg(const Value& v, const std::string& what) {
  if (!v.is_int_like()) fail(what + ": '" + type_name(v) + "' object cannot be interpreted as an integer");
  return v.as_int();
}

const std::string& str_arg(const Value& v, const std::string& what) {
  if (!v.is_string()) fail(what + " must be a string, not " + type_name(v));
  return v.str();
}

Value make_iter(IterData::Kind kind, std::vector<Value> items) {
  auto d = std::make_shared<IterData>();
  d->kind = kind;
  d->items = std::move(items);
  Value v;
  v.type = Type::iterator;
  v.p = std::move(d);
  return v;
}
Value generator(std::vector<Value> items) { return make_iter(IterData::Kind::generator, std::move(items)); }

// jinja2's soft_str: a string stays itself (a Markup stays a Markup), anything else becomes str().
Value soft_str(const Value& v) { return v.is_string() ? v : Value::string(to_str(v)); }

// ---- Python str helpers ---------------------------------------------------------------------------

void check_case(std::string_view s, const char* what) {
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

char up(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }
char low(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }
bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

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

bool in_set(uint32_t c, const std::optional<std::string>& chars) {
  if (!chars) return py_isspace(c);
  for (size_t i = 0; i < chars->size();) {
    if (hf::next_cp(*chars, i) == c) return true;
  }
  return false;
}

std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
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

size_t space_at(std::string_view s, size_t i) {  // the length of a whitespace code point at i, or 0
  if (i >= s.size()) return 0;
  size_t j = i;
  return py_isspace(hf::next_cp(s, j)) ? j - i : 0;
}

std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  int64_t left = maxsplit < 0 ? INT64_MAX : maxsplit;
  if (!sep) {
    size_t i = 0;
    while (left-- > 0) {
      for (size_t k; (k = space_at(s, i)) != 0;) i += k;
      if (i == s.size()) break;
      const size_t j = i;
      while (i < s.size() && !space_at(s, i)) hf::next_cp(s, i);
      out.emplace_back(s.substr(j, i - j));
    }
    for (size_t k; (k = space_at(s, i)) != 0;) i += k;
    if (i < s.size()) out.emplace_back(s.substr(i));
    return out;
  }
  if (sep->empty()) fail("empty separator");
  size_t i = 0;
  while (left-- > 0) {
    const size_t j = s.find(*sep, i);
    if (j == std::string_view::npos) break;
    out.emplace_back(s.substr(i, j - i));
    i = j + sep->size();
  }
  out.emplace_back(s.substr(i));
  return out;
}

std::vector<std::string> py_rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
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
      out.emplace_back(s.substr(e, j - e));
    }
    for (size_t k; (k = space_before(e)) != 0;) e -= k;
    if (e > 0) out.emplace_back(s.substr(0, e));
    std::reverse(out.begin(), out.end());
    return out;
  }
  if (sep->empty()) fail("empty separator");
  size_t e = s.size();
  while (left-- > 0) {
    if (e < sep->size()) break;
    const size_t j = s.rfind(*sep, e - sep->size());
    if (j == std::string_view::npos) break;
    out.emplace_back(s.substr(j + sep->size(), e - j - sep->size()));
    e = j;
  }
  out.emplace_back(s.substr(0, e));
  std::reverse(out.begin(), out.end());
  return out;
}

bool line_break(uint32_t c) {
  return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}

std::vector<std::string> py_splitlines(std::string_view s, bool keepends) {
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
    out.emplace_back(s.substr(i, (keepends ? j : eol) - i));
    i = j;
  }
  return out;
}

std::string py_replace(Renderer& r, std::string_view s, std::string_view old, std::string_view with, int64_t count) {
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
      r.check_size(out.size());
    }
  } else {
    size_t i = 0;
    while (count > 0) {
      const size_t j = s.find(old, i);
      if (j == std::string_view::npos) break;
      out.append(s.substr(i, j - i));
      out += with;
      r.check_size(out.size());
      i = j + old.size();
      --count;
    }
    out.append(s.substr(i));
  }
  r.check_size(out.size());
  r.charge(static_cast<int64_t>(out.size()));
  return out;
}

std::string_view trim_py_space(std::string_view s) {
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
bool digits_with_underscores(std::string_view s, int base) {
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

std::string without_underscores(std::string_view s) {
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

// ---- attribute paths (jinja2's make_attrgetter) ----------------------------------------------------

std::vector<Value> attr_parts(const Value& attribute) {
  std::vector<Value> parts;
  if (attribute.type == Type::none) return parts;
  if (!attribute.is_string()) {
    parts.push_back(attribute);
    return parts;
  }
  for (const std::string& p : py_split(attribute.str(), std::string("."), -1)) {
    const bool digits = !p.empty() && std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; });
    parts.push_back(digits ? Value::integer(*py_int(p, 10)) : Value::string(p));
  }
  return parts;
}

Value get_path(Renderer& r, Value item, const std::vector<Value>& parts, const Value* default_value = nullptr) {
  for (const Value& part : parts) {
    item = r.getitem(item, part);
    if (default_value && default_value->type != Type::none && item.is_undefined()) item = *default_value;
  }
  return item;
}

Value ignore_case(const Value& v) {
  if (!v.is_string()) return v;
  return Value::string(str_lower(v.str()), v.markup);
}

// A sort key: the attribute path's value (or the item), lowered unless case-sensitive.
std::vector<Value> sort_keys(Renderer& r, const std::vector<Value>& items, const Value& attribute, bool case_sensitive,
                             bool multi) {
  std::vector<std::vector<Value>> paths;
  if (multi && attribute.is_string()) {
    for (const std::string& a : py_split(attribute.str(), std::string(","), -1)) paths.push_back(attr_parts(Value::string(a)));
  } else {
    paths.push_back(attr_parts(attribute));
  }
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const Value& item : items) {
    std::vector<Value> parts;
    for (const auto& path : paths) {
      Value k = get_path(r, item, path);
      parts.push_back(case_sensitive ? k : ignore_case(k));
    }
    keys.push_back(multi ? Value::list(std::move(parts)) : parts[0]);
  }
  return keys;
}

bool less(const Value& a, const Value& b) { return compare(a, b, "<") == -1; }

std::vector<Value> sorted_by(std::vector<Value> items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return reverse ? less(keys[b], keys[a]) : less(keys[a], keys[b]); });
  std::vector<Value> out;
  out.reserve(items.size());
  for (const size_t k : order) out.push_back(std::move(items[k]));
  return out;
}

// ---- filters -----------------------------------------------------------------------------------------

Value f_abs(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "abs");
  if (v.is_int_like()) {
    if (v.as_int() == INT64_MIN) fail("integer overflow");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.type == Type::floating) return Value::floating(std::fabs(v.f));
  fail("bad operand type for abs(): '" + type_name(v) + "'");
}

Value f_attr(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"name"}, "attr");
  if (!p.has(0)) fail("attr() missing the argument 'name'");
  const std::string name = to_str(p.get(0));
  if (v.is_undefined()) fail_undefined(v);
  if (v.type == Type::dict) {
    if (std::optional<Value> m = method_of(v, name)) return *m;
    return Value::undefined("'dict object' has no attribute '" + name + "'");
  }
  return r.getattr(v, name);
}

Value f_capitalize(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "capitalize");
  const Value s = soft_str(v);
  return Value::string(str_capitalize(s.str()), s.markup);
}

Value f_length(Renderer& r, const Value& v, const CallArgs& a) {
  bind(a, {}, "length");
  switch (v.type) {
    case Type::undefined: return Value::integer(0);
    case Type::string: return Value::integer(static_cast<int64_t>(cp_count(v.str())));
    case Type::list:
    case Type::tuple: return Value::integer(static_cast<int64_t>(v.seq().items.size()));
    case Type::dict: return Value::integer(static_cast<int64_t>(v.map().items.size()));
    case Type::iterator:
      if (v.iter().reusable()) return Value::integer(static_cast<int64_t>(v.iter().items.size()));
      break;
    case Type::loop: return r.loop_attr(v, "length");
    default: break;
  }
  fail("object of type '" + type_name(v) + "' has no len()");
}

Value f_default(Renderer&, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"default_value", "boolean"}, "default");
  const bool boolean = p.has(1) && truthy(p.get(1));
  if (v.is_undefined() || (boolean && !truthy(v))) return p.get_or(0, Value::string(""));
  return v;
}

Value f_dictsort(Renderer&, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"case_sensitive", "by", "reverse"}, "dictsort");
  if (v.is_undefined()) fail_undefined(v);
  if (v.type != Type::dict) fail("dictsort: '" + type_name(v) + "' object has no attribute 'items'");
  const bool case_sensitive = p.has(0) && truthy(p.get(0));
  const Value by = p.get_or(1, Value::string("key"));
  if (!by.is_string() || (by.str() != "key" && by.str() != "value")) fail("You can only sort by either \"key\" or \"value\"");
  const size_t pos = by.str() == "key" ? 0 : 1;
  std::vector<Value> items, keys;
  for (const auto& [k, x] : v.map().items) {
    items.push_back(Value::tuple({k, x}));
    const Value& key = pos == 0 ? k : x;
    keys.push_back(case_sensitive ? key : ignore_case(key));
  }
  return Value::list(sorted_by(std::move(items), keys, p.has(2) && truthy(p.get(2))));
}

Value f_first(Renderer& r, const Value& v, const CallArgs& a) {
  bind(a, {}, "first");
  if (v.type == Type::iterator && !v.iter().reusable()) {
    IterData& it = v.iter();
    if (it.pos < it.items.size()) return it.items[it.pos++];
    return Value::undefined("No first item, sequence was empty.");
  }
  if (v.type == Type::string && !v.str().empty()) return Value::string(std::string(code_points(v.str()).front()));
  const std::vector<Value> items = r.iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Renderer& r, const Value& v, const CallArgs& a) {
  bind(a, {}, "last");
  if (v.type == Type::iterator && !v.iter().reusable()) fail("'generator' object is not reversible (add |list before |last)");
  const std::vector<Value> items = r.iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}

Value f_float(Renderer&, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"default"}, "float");
  const Value d = p.get_or(0, Value::floating(0.0));
  if (v.is_undefined()) fail_undefined(v);
  if (v.is_number()) return Value::floating(v.as_double());
  if (v.is_string()) {
    if (const std::optional<double> x = py_float(v.str())) return Value::floating(*x);
  }
  return d;
}

Value f_int(Renderer&, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"default", "base"}, "int");
  const Value d = p.get_or(0, Value::integer(0));
  if (v.is_undefined()) fail_undefined(v);
  auto from_double = [&](double x) -> Value {
    if (std::isnan(x)) return d;
    if (std::isinf(x)) fail("cannot convert float infinity to integer");
    if (std::fabs(x) >= 9223372036854775808.0) fail("integer overflow (the renderer's integers are 64-bit; Python's are not)");
    return Value::integer(static_cast<int64_t>(x));
  };
  if (v.is_int_like()) return Value::integer(v.as_int());
  if (v.type == Type::floating) return from_double(v.f);
  if (v.is_string()) {
    const int64_t base = p.has(1) ? int_arg(p.get(1), "int() base") : 10;
    if (base != 0 && (base < 2 || base > 36)) fail("int() base must be >= 2 and <= 36, or 0");
    if (const std::optional<int64_t> x = py_int(v.str(), static_cast<int>(base))) return Value::integer(*x);
    if (const std::optional<double> x = py_float(v.str())) return from_double(*x);
  }
  return d;
}

Value f_indent(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"width", "first", "blank"}, "indent");
  const Value width = p.get_or(0, Value::integer(4));
  const std::string indention = width.is_string() ? width.str() : std::string(static_cast<size_t>(std::max<int64_t>(int_arg(width, "indent width"), 0)), ' ');
  const bool first = p.has(1) && truthy(p.get(1)), blank = p.has(2) && truthy(p.get(2));
  const Value s = soft_str(v);
  const std::vector<std::string> lines = py_splitlines(s.str() + "\n", false);
  std::string rv;
  for (size_t k = 0; k < lines.size(); ++k) {
    if (k > 0) rv += '\n';
    if (k > 0 && (blank || !lines[k].empty())) rv += indention;
    rv += lines[k];
    r.check_size(rv.size());
  }
  if (first) rv = indention + rv;
  r.charge(static_cast<int64_t>(rv.size()));
  return Value::string(std::move(rv), s.markup);
}

Value f_items(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "items");
  if (v.is_undefined()) return generator({});
  if (v.type != Type::dict) fail("Can only get item pairs from a mapping.");
  std::vector<Value> items;
  for (const auto& [k, x] : v.map().items) items.push_back(Value::tuple({k, x}));
  return generator(std::move(items));
}

Value f_join(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"d", "attribute"}, "join");
  const std::string sep = p.has(0) ? to_str(p.get(0)) : std::string();
  const std::vector<Value> parts = p.has(1) ? attr_parts(p.get(1)) : std::vector<Value>{};
  std::string out;
  bool firstp = true;
  for (const Value& item : r.iterate(v)) {
    if (!firstp) out += sep;
    firstp = false;
    const Value x = p.has(1) ? get_path(r, item, parts) : item;
    out += x.is_string() ? x.str() : to_str(x);
    r.check_size(out.size());
  }
  r.charge(static_cast<int64_t>(out.size()));
  return Value::string(std::move(out));
}

Value f_list(Renderer& r, const Value& v, const CallArgs& a) {
  bind(a, {}, "list");
  return Value::list(r.iterate(v));
}

Value f_lower(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "lower");
  const Value s = soft_str(v);
  return Value::string(str_lower(s.str()), s.markup);
}

Value f_upper(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "upper");
  const Value s = soft_str(v);
  return Value::string(str_upper(s.str()), s.markup);
}

Value f_map(Renderer& r, const Value& v, const CallArgs& a) {
  if (!truthy(v)) return generator({});
  std::vector<Value> out;
  const std::vector<Value> items = r.iterate(v);
  const bool by_attribute = a.pos.empty() && std::any_of(a.kw.begin(), a.kw.end(), [](const auto& kv) { return kv.first == "attribute"; });
  if (by_attribute) {
    const Params p = bind(a, {"attribute", "default"}, "map");
    const std::vector<Value> parts = attr_parts(p.get(0));
    const Value d = p.get_or(1, Value::none());
    for (const Value& item : items) out.push_back(get_path(r, item, parts, &d));
    return generator(std::move(out));
  }
  if (a.pos.empty()) fail("map requires a filter argument");
  if (!a.pos[0].is_string()) fail("map: the filter name must be a string");
  const int fn = find_filter(a.pos[0].str());
  if (fn < 0) fail("no filter named '" + a.pos[0].str() + "'");
  CallArgs rest{std::vector<Value>(a.pos.begin() + 1, a.pos.end()), a.kw};
  for (const Value& item : items) out.push_back(apply_filter(r, fn, item, rest));
  return generator(std::move(out));
}

Value min_max(Renderer& r, const Value& v, const CallArgs& a, bool max) {
  const Params p = bind(a, {"case_sensitive", "attribute"}, max ? "max" : "min");
  const std::vector<Value> items = r.iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const std::vector<Value> keys = sort_keys(r, items, p.get_or(1, Value::none()), p.has(0) && truthy(p.get(0)), false);
  size_t best = 0;
  for (size_t k = 1; k < items.size(); ++k) {
    if (max ? less(keys[best], keys[k]) : less(keys[k], keys[best])) best = k;
  }
  return items[best];
}
Value f_max(Renderer& r, const Value& v, const CallArgs& a) { return min_max(r, v, a, true); }
Value f_min(Renderer& r, const Value& v, const CallArgs& a) { return min_max(r, v, a, false); }

// select / reject / selectattr / rejectattr (jinja2's select_or_reject).
Value select_or_reject(Renderer& r, const Value& v, const CallArgs& a, bool select, bool by_attr) {
  if (!truthy(v)) return generator({});
  const std::vector<Value> items = r.iterate(v);
  size_t off = 0;
  std::vector<Value> parts;
  if (by_attr) {
    if (a.pos.empty()) fail("Missing parameter for attribute name");
    parts = attr_parts(a.pos[0]);
    off = 1;
  }
  int fn = -1;
  CallArgs rest;
  const bool has_test = a.pos.size() > off;
  if (has_test) {
    if (!a.pos[off].is_string()) fail("the test name must be a string");
    fn = find_test(a.pos[off].str());
    if (fn < 0) fail("no test named '" + a.pos[off].str() + "'");
    rest.pos.assign(a.pos.begin() + static_cast<std::ptrdiff_t>(off + 1), a.pos.end());
    rest.kw = a.kw;
  }
  std::vector<Value> out;
  for (const Value& item : items) {
    const Value x = by_attr ? get_path(r, item, parts) : item;
    const bool ok = has_test ? apply_test(r, fn, x, rest) : truthy(x);
    if (ok == select) out.push_back(item);
  }
  return generator(std::move(out));
}
Value f_select(Renderer& r, const Value& v, const CallArgs& a) { return select_or_reject(r, v, a, true, false); }
Value f_reject(Renderer& r, const Value& v, const CallArgs& a) { return select_or_reject(r, v, a, false, false); }
Value f_selectattr(Renderer& r, const Value& v, const CallArgs& a) { return select_or_reject(r, v, a, true, true); }
Value f_rejectattr(Renderer& r, const Value& v, const CallArgs& a) { return select_or_reject(r, v, a, false, true); }

Value f_replace(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"old", "new", "count"}, "replace");
  if (!p.has(0) || !p.has(1)) fail("replace() needs the arguments old and new");
  const int64_t count = p.has(2) && p.get(2).type != Type::none ? int_arg(p.get(2), "replace count") : -1;
  return Value::string(py_replace(r, to_str(v), to_str(p.get(0)), to_str(p.get(1)), count));
}

Value f_reverse(Renderer& r, const Value& v, const CallArgs& a) {
  bind(a, {}, "reverse");
  if (v.is_string()) {
    std::vector<std::string_view> cps = code_points(v.str());
    std::string out;
    out.reserve(v.str().size());
    for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
    return Value::string(std::move(out));
  }
  const bool generator_in = v.type == Type::iterator && !v.iter().reusable();
  if (!generator_in && v.type != Type::list && v.type != Type::tuple && v.type != Type::dict && v.type != Type::undefined &&
      v.type != Type::iterator) {
    fail("argument must be iterable");
  }
  std::vector<Value> items = r.iterate(v);
  if (v.type == Type::iterator && v.iter().kind == IterData::Kind::dict_values) fail("unsupported: reversing dict values");
  std::reverse(items.begin(), items.end());
  // reversed() gives an iterator; a generator cannot be reversed, and jinja2 makes a list of it.
  return generator_in ? Value::list(std::move(items)) : generator(std::move(items));
}

// Python's round(x, n) for a float: correctly rounded, ties to even.
double round_float(double x, int64_t n) {
  if (!std::isfinite(x) || n > 330) return x;
  if (n < 0) fail("unsupported: round() of a float with a negative precision");
  char buf[400];
  const auto r = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::fixed, static_cast<int>(n));
  double y = 0;
  std::from_chars(buf, r.ptr, y);
  return y;
}

Value f_round(Renderer&, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"precision", "method"}, "round");
  const int64_t precision = p.has(0) ? int_arg(p.get(0), "round precision") : 0;
  const std::string method = p.has(1) ? to_str(p.get(1)) : "common";
  if (method != "common" && method != "ceil" && method != "floor") fail("method must be common, ceil or floor");
  if (v.is_undefined()) fail_undefined(v);
  if (!v.is_number()) fail("type " + type_name(v) + " doesn't define __round__ method");
  if (method == "common") {
    if (v.is_int_like()) {
      if (precision >= 0) return Value::integer(v.as_int());
      fail("unsupported: round() of an integer with a negative precision");
    }
    return Value::floating(round_float(v.f, precision));
  }
  const double factor = std::pow(10.0, static_cast<double>(precision));
  const double scaled = v.as_double() * factor;
  const double r = method == "ceil" ? std::ceil(scaled) : std::floor(scaled);
  return Value::floating(r / factor);
}

Value f_safe(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "safe");
  return Value::string(v.is_string() ? v.str() : to_str(v), true);
}

Value f_escape(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "escape");
  if (v.is_string() && v.markup) return v;
  return Value::string(markup_escape(to_str(v)), true);
}

Value f_forceescape(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "forceescape");
  return Value::string(markup_escape(to_str(v)), true);
}

Value f_sort(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"reverse", "case_sensitive", "attribute"}, "sort");
  std::vector<Value> items = r.iterate(v);
  const std::vector<Value> keys = sort_keys(r, items, p.get_or(2, Value::none()), p.has(1) && truthy(p.get(1)), true);
  r.charge(static_cast<int64_t>(items.size()) * 8);
  return Value::list(sorted_by(std::move(items), keys, p.has(0) && truthy(p.get(0))));
}

Value f_string(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "string");
  return soft_str(v);
}

Value f_sum(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"attribute", "start"}, "sum");
  Value acc = p.get_or(1, Value::integer(0));
  if (acc.is_string()) fail("sum() can't sum strings [use ''.join(seq) instead]");
  const std::vector<Value> parts = p.has(0) ? attr_parts(p.get(0)) : std::vector<Value>{};
  for (const Value& item : r.iterate(v)) acc = apply_binary(r, BinOp::add, acc, p.has(0) ? get_path(r, item, parts) : item);
  return acc;
}

Value f_title(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "title");
  return Value::string(jinja_title(to_str(v)));
}

Value f_tojson(Renderer& r, const Value& v, const CallArgs& a) {
  // transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent, separators=..., sort_keys=...)
  const Params p = bind(a, {"ensure_ascii", "indent", "separators", "sort_keys"}, "tojson");
  JsonStyle style;
  style.ensure_ascii = p.has(0) && truthy(p.get(0));
  if (p.has(1) && p.get(1).type != Type::none) {
    const Value& ind = p.get(1);
    style.indent = ind.is_string() ? ind.str() : std::string(static_cast<size_t>(std::max<int64_t>(int_arg(ind, "tojson indent"), 0)), ' ');
    style.item_sep = ",";
  }
  if (p.has(2) && p.get(2).type != Type::none) {
    const Value& sep = p.get(2);
    if ((sep.type != Type::tuple && sep.type != Type::list) || sep.seq().items.size() != 2 || !sep.seq().items[0].is_string() ||
        !sep.seq().items[1].is_string()) {
      fail("tojson separators must be a pair of strings");
    }
    style.item_sep = sep.seq().items[0].str();
    style.key_sep = sep.seq().items[1].str();
  }
  style.sort_keys = p.has(3) && truthy(p.get(3));
  std::string out;
  append_json(out, v, style);
  r.check_size(out.size());
  r.charge(static_cast<int64_t>(out.size()));
  return Value::string(std::move(out));
}

Value f_trim(Renderer&, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"chars"}, "trim");
  std::optional<std::string> chars;
  if (p.has(0) && p.get(0).type != Type::none) chars = str_arg(p.get(0), "trim chars");
  const Value s = soft_str(v);
  return Value::string(py_strip(s.str(), chars, true, true), s.markup);
}

Value f_unique(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"case_sensitive", "attribute"}, "unique");
  const std::vector<Value> items = r.iterate(v);
  const std::vector<Value> keys = sort_keys(r, items, p.get_or(1, Value::none()), p.has(0) && truthy(p.get(0)), false);
  DictData seen;
  std::vector<Value> out;
  for (size_t k = 0; k < items.size(); ++k) {
    if (seen.find(keys[k])) continue;
    seen.set(keys[k], Value::none());
    out.push_back(items[k]);
  }
  return generator(std::move(out));
}

struct FilterDef {
  const char* name;
  FilterFn fn;
};
const FilterDef kFilters[] = {
    {"abs", f_abs},         {"attr", f_attr},       {"capitalize", f_capitalize}, {"count", f_length},
    {"d", f_default},       {"default", f_default}, {"dictsort", f_dictsort},     {"e", f_escape},
    {"escape", f_escape},   {"first", f_first},     {"float", f_float},           {"forceescape", f_forceescape},
    {"indent", f_indent},   {"int", f_int},         {"items", f_items},           {"join", f_join},
    {"last", f_last},       {"length", f_length},   {"list", f_list},             {"lower", f_lower},
    {"map", f_map},         {"max", f_max},         {"min", f_min},               {"reject", f_reject},
    {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse}, {"round", f_round},
    {"safe", f_safe},       {"select", f_select},   {"selectattr", f_selectattr}, {"sort", f_sort},
    {"string", f_string},   {"sum", f_sum},         {"title", f_title},           {"tojson", f_tojson},
    {"trim", f_trim},       {"unique", f_unique},   {"upper", f_upper},
};

const char* kJinjaFilters[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "items", "join",
    "last", "length", "list", "lower", "map", "max", "min", "pprint", "random", "reject", "rejectattr",
    "replace", "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags",
    "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount",
    "wordwrap", "xmlattr"};

// ---- tests ---------------------------------------------------------------------------------------------

bool t_defined(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "defined"), !v.is_undefined(); }
bool t_undefined(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "undefined"), v.is_undefined(); }
bool t_none(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "none"), v.type == Type::none; }
bool t_boolean(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "boolean"), v.type == Type::boolean; }
bool t_false(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "false"), v.type == Type::boolean && !v.b; }
bool t_true(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "true"), v.type == Type::boolean && v.b; }
bool t_integer(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "integer"), v.type == Type::integer; }
bool t_float(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "float"), v.type == Type::floating; }
bool t_number(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "number"), v.is_number(); }
bool t_string(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "string"), v.is_string(); }
bool t_mapping(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "mapping"), v.type == Type::dict; }
bool t_escaped(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "escaped"), v.is_string() && v.markup; }
bool t_callable(Renderer&, const Value& v, const CallArgs& a) {
  return bind(a, {}, "callable"), v.type == Type::callable || v.is_undefined();
}
bool t_sequence(Renderer&, const Value& v, const CallArgs& a) {
  // jinja2: len(value) and value.__getitem__ both exist (a dict, and Undefined, qualify).
  bind(a, {}, "sequence");
  switch (v.type) {
    case Type::undefined:
    case Type::string:
    case Type::list:
    case Type::tuple:
    case Type::dict: return true;
    case Type::iterator: return v.iter().kind == IterData::Kind::range;
    default: return false;
  }
}
bool t_iterable(Renderer&, const Value& v, const CallArgs& a) {
  bind(a, {}, "iterable");
  switch (v.type) {
    case Type::undefined:
    case Type::string:
    case Type::list:
    case Type::tuple:
    case Type::dict:
    case Type::iterator:
    case Type::loop: return true;
    default: return false;
  }
}
bool mod_equals(Renderer& r, const Value& v, const Value& m, int64_t want) {
  return equal(apply_binary(r, BinOp::mod, v, m), Value::integer(want));
}
bool t_odd(Renderer& r, const Value& v, const CallArgs& a) { return bind(a, {}, "odd"), mod_equals(r, v, Value::integer(2), 1); }
bool t_even(Renderer& r, const Value& v, const CallArgs& a) { return bind(a, {}, "even"), mod_equals(r, v, Value::integer(2), 0); }
bool t_divisibleby(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"num"}, "divisibleby");
  if (!p.has(0)) fail("divisibleby() missing 1 required positional argument: 'num'");
  return mod_equals(r, v, p.get(0), 0);
}
const Value& other_arg(const CallArgs& a, const char* name) {
  const Params p = bind(a, {"other"}, name);
  if (!p.has(0)) fail(std::string(name) + "() missing 1 required positional argument: 'other'");
  return a.pos.empty() ? a.kw[0].second : a.pos[0];
}
bool t_eq(Renderer&, const Value& v, const CallArgs& a) { return equal(v, other_arg(a, "eq")); }
bool t_ne(Renderer&, const Value& v, const CallArgs& a) { return !equal(v, other_arg(a, "ne")); }
bool t_lt(Renderer&, const Value& v, const CallArgs& a) { return compare(v, other_arg(a, "lt"), "<") == -1; }
bool t_le(Renderer&, const Value& v, const CallArgs& a) {
  const int c = compare(v, other_arg(a, "le"), "<=");
  return c == -1 || c == 0;
}
bool t_gt(Renderer&, const Value& v, const CallArgs& a) { return compare(v, other_arg(a, "gt"), ">") == 1; }
bool t_ge(Renderer&, const Value& v, const CallArgs& a) {
  const int c = compare(v, other_arg(a, "ge"), ">=");
  return c == 1 || c == 0;
}
bool t_in(Renderer& r, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"seq"}, "in");
  if (!p.has(0)) fail("in() missing 1 required positional argument: 'seq'");
  return contains(r, p.get(0), v);
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
bool t_lower(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "lower"), case_test(v, true); }
bool t_upper(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "upper"), case_test(v, false); }
bool t_sameas(Renderer&, const Value& v, const CallArgs& a) {
  const Value& o = other_arg(a, "sameas");
  const auto singleton = [](const Value& x) { return x.type == Type::none || x.type == Type::boolean; };
  if (singleton(v) || singleton(o)) return v.type == o.type && (v.type == Type::none || v.b == o.b);
  fail("unsupported: 'sameas' (object identity) on values other than none, true and false");
}
bool t_filter(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "filter"), v.is_string() && jinja_has_filter(v.str()); }
bool t_test(Renderer&, const Value& v, const CallArgs& a) { return bind(a, {}, "test"), v.is_string() && jinja_has_test(v.str()); }

struct TestDef {
  const char* name;
  TestFn fn;
};
const TestDef kTests[] = {
    {"!=", t_ne},         {"<", t_lt},           {"<=", t_le},       {"==", t_eq},           {">", t_gt},
    {">=", t_ge},         {"boolean", t_boolean}, {"callable", t_callable}, {"defined", t_defined},
    {"divisibleby", t_divisibleby}, {"eq", t_eq}, {"equalto", t_eq}, {"escaped", t_escaped}, {"even", t_even},
    {"false", t_false},   {"filter", t_filter},  {"float", t_float}, {"ge", t_ge},         {"greaterthan", t_gt},
    {"gt", t_gt},         {"in", t_in},          {"integer", t_integer}, {"iterable", t_iterable}, {"le", t_le},
    {"lessthan", t_lt},   {"lower", t_lower},    {"lt", t_lt},       {"mapping", t_mapping}, {"ne", t_ne},
    {"none", t_none},     {"number", t_number},  {"odd", t_odd},     {"sameas", t_sameas},   {"sequence", t_sequence},
    {"string", t_string}, {"test", t_test},      {"true", t_true},   {"undefined", t_undefined}, {"upper", t_upper},
};

const char* kJinjaTests[] = {"!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq",
                             "equalto", "escaped", "even", "false", "filter", "float", "ge", "greaterthan", "gt", "in",
                             "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number",
                             "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper"};

// ---- methods --------------------------------------------------------------------------------------------

const char* kStrMethods[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format", "format_map",
    "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
    "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition",
    "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split",
    "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill"};
const char* kDictMethods[] = {"copy", "fromkeys", "get", "items", "keys", "values"};
const char* kDictMutators[] = {"clear", "pop", "popitem", "setdefault", "update"};
const char* kListMethods[] = {"copy", "count", "index"};
const char* kListMutators[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"};
// markupsafe.Markup wraps these: string arguments are escaped, and the result is a Markup.
const char* kMarkupWrapped[] = {"capitalize", "title", "lower", "upper", "replace", "lstrip", "rstrip", "strip"};

template <size_t N>
bool listed(const char* const (&names)[N], std::string_view name) {
  return std::any_of(std::begin(names), std::end(names), [&](const char* n) { return name == n; });
}

Value bound(const Value& self, const std::string& name) {
  auto c = std::make_shared<Callable>();
  c->kind = Callable::Kind::method;
  c->name = name;
  c->self = self;
  Value v;
  v.type = Type::callable;
  v.p = std::move(c);
  return v;
}

[[noreturn]] void unsupported_method(const Value& self, const std::string& name) {
  fail("unsupported: the " + type_name(self) + " method '" + name + "' (see docs/tokenizers.md, \"Chat templates\")");
}

std::optional<std::string> opt_str(const Params& p, size_t k, const std::string& what) {
  if (!p.has(k) || p.get(k).type == Type::none) return std::nullopt;
  return str_arg(p.get(k), what);
}

Value list_of_strings(std::vector<std::string> parts, bool markup) {
  std::vector<Value> out;
  out.reserve(parts.size());
  for (std::string& s : parts) out.push_back(Value::string(std::move(s), markup));
  return Value::list(std::move(out));
}

bool starts_or_ends(const std::string& s, const Value& what, bool ends, const std::string& name) {
  auto one = [&](const Value& x) {
    const std::string& t = str_arg(x, name + " argument");
    return ends ? s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0 : s.compare(0, t.size(), t) == 0;
  };
  if (what.type == Type::tuple) {
    return std::any_of(what.seq().items.begin(), what.seq().items.end(), one);
  }
  if (!what.is_string()) fail(name + " first arg must be str or a tuple of str, not " + type_name(what));
  return one(what);
}

Value str_method(Renderer& r, const Value& self, const std::string& name, const CallArgs& args_in) {
  const std::string& s = self.str();
  // Markup's wrapped methods escape their string arguments and return a Markup.
  const bool wrap = self.markup && listed(kMarkupWrapped, name);
  CallArgs args = args_in;
  if (wrap) {
    // NOTE: markupsafe 2.1 escapes every string argument; 3.0 no longer escapes some (replace's
    // `old`). Arguments escaping leaves alone give the same result under both.
    auto escape_arg = [&](Value& a) {
      if (!a.is_string() || a.markup) return;
      if (markup_escape(a.str()) != a.str()) {
        fail("unsupported: Markup." + name + "() with an argument holding & < > \" ' (markupsafe versions differ)");
      }
      a.markup = true;
    };
    for (Value& a : args.pos) escape_arg(a);
    for (auto& [k, a] : args.kw) escape_arg(a);
  }
  const auto result = [&](std::string out) { return Value::string(std::move(out), wrap); };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const Params p = bind(args, {"chars"}, name);
    return result(py_strip(s, opt_str(p, 0, name + " arg"), name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    const Params p = bind(args, {"sep", "maxsplit"}, name);
    const int64_t maxsplit = p.has(1) ? int_arg(p.get(1), name + " maxsplit") : -1;
    const std::optional<std::string> sep = opt_str(p, 0, name + " separator");
    r.charge(static_cast<int64_t>(s.size()));
    return list_of_strings(name == "split" ? py_split(s, sep, maxsplit) : py_rsplit(s, sep, maxsplit), self.markup);
  }
  if (name == "splitlines") {
    const Params p = bind(args, {"keepends"}, name);
    r.charge(static_cast<int64_t>(s.size()));
    return list_of_strings(py_splitlines(s, p.has(0) && truthy(p.get(0))), self.markup);
  }
  if (name == "startswith" || name == "endswith") {
    const Params p = bind(args, {"prefix"}, name);
    if (!p.has(0)) fail(name + "() takes at least 1 argument (0 given)");
    return Value::boolean(starts_or_ends(s, p.get(0), name == "endswith", name));
  }
  if (name == "upper") return bind(args, {}, name), result(str_upper(s));
  if (name == "lower") return bind(args, {}, name), result(str_lower(s));
  if (name == "title") return bind(args, {}, name), result(str_title(s));
  if (name == "capitalize") return bind(args, {}, name), result(str_capitalize(s));
  if (name == "replace") {
    const Params p = bind(args, {"old", "new", "count"}, name);
    if (!p.has(0) || !p.has(1)) fail("replace() takes at least 2 arguments");
    const int64_t count = p.has(2) ? int_arg(p.get(2), "replace count") : -1;
    return result(py_replace(r, s, str_arg(p.get(0), "replace old"), str_arg(p.get(1), "replace new"), count));
  }
  if (name == "find" || name == "rfind" || name == "count") {
    const Params p = bind(args, {"sub"}, name);
    if (!p.has(0)) fail(name + "() takes at least 1 argument (0 given)");
    const std::string& sub = str_arg(p.get(0), name + " argument");
    r.charge(static_cast<int64_t>(s.size()));
    if (name == "count") {
      if (sub.empty()) return Value::integer(static_cast<int64_t>(cp_count(s)) + 1);
      int64_t n = 0;
      for (size_t i = s.find(sub); i != std::string::npos; i = s.find(sub, i + sub.size())) ++n;
      return Value::integer(n);
    }
    const size_t at = name == "find" ? s.find(sub) : s.rfind(sub);
    return Value::integer(at == std::string::npos ? -1 : static_cast<int64_t>(cp_count(std::string_view(s).substr(0, at))));
  }
  if (name == "join") {
    const Params p = bind(args, {"iterable"}, name);
    if (!p.has(0)) fail("join() takes exactly one argument (0 given)");
    std::string out;
    bool first = true;
    for (const Value& x : r.iterate(p.get(0))) {
      if (!x.is_string()) fail("sequence item: expected str instance, " + type_name(x) + " found");
      if (!first) out += s;
      first = false;
      out += self.markup && !x.markup ? markup_escape(x.str()) : x.str();
      r.check_size(out.size());
    }
    return Value::string(std::move(out), self.markup);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    const Params p = bind(args, {"affix"}, name);
    if (!p.has(0)) fail(name + "() takes exactly one argument (0 given)");
    const std::string& t = str_arg(p.get(0), name + " argument");
    const bool prefix = name == "removeprefix";
    if (starts_or_ends(s, p.get(0), !prefix, name)) {
      return Value::string(prefix ? s.substr(t.size()) : s.substr(0, s.size() - t.size()));
    }
    return Value::string(s);
  }
  if (name == "isspace") {
    bind(args, {}, name);
    if (s.empty()) return Value::boolean(false);
    for (size_t i = 0; i < s.size();) {
      if (!py_isspace(hf::next_cp(s, i))) return Value::boolean(false);
    }
    return Value::boolean(true);
  }
  if (name == "islower" || name == "isupper") return bind(args, {}, name), Value::boolean(case_test(self, name == "islower"));
  unsupported_method(self, name);
}

Value dict_method(Renderer&, const Value& self, const std::string& name, const CallArgs& args) {
  const DictData& d = self.map();
  if (name == "get") {
    if (!args.kw.empty()) fail("get() takes no keyword arguments");
    if (args.pos.empty() || args.pos.size() > 2) fail("get expected 1 or 2 arguments, got " + std::to_string(args.pos.size()));
    if (const Value* v = d.find(args.pos[0])) return *v;
    return args.pos.size() > 1 ? args.pos[1] : Value::none();
  }
  if (name == "items" || name == "keys" || name == "values") {
    bind(args, {}, name);
    std::vector<Value> items;
    for (const auto& [k, v] : d.items) items.push_back(name == "keys" ? k : name == "values" ? v : Value::tuple({k, v}));
    return make_iter(name == "keys" ? IterData::Kind::dict_keys : name == "values" ? IterData::Kind::dict_values : IterData::Kind::dict_items,
                     std::move(items));
  }
  unsupported_method(self, name);
}

Value list_method(Renderer&, const Value& self, const std::string& name, const CallArgs& args) {
  const std::vector<Value>& items = self.seq().items;
  if (name == "count" || name == "index") {
    if (!args.kw.empty() || args.pos.size() != 1) unsupported_method(self, name + " with more than the item");
    int64_t n = 0;
    for (size_t k = 0; k < items.size(); ++k) {
      if (!equal(items[k], args.pos[0])) continue;
      if (name == "index") return Value::integer(static_cast<int64_t>(k));
      ++n;
    }
    if (name == "index") fail(to_str(args.pos[0]) + " is not in " + type_name(self));
    return Value::integer(n);
  }
  unsupported_method(self, name);
}

// ---- global functions ----------------------------------------------------------------------------------

Value g_range(Renderer& r, const CallArgs& a) {
  if (!a.kw.empty()) fail("range() takes no keyword arguments");
  if (a.pos.empty() || a.pos.size() > 3) fail("range expected 1 to 3 arguments, got " + std::to_string(a.pos.size()));
  int64_t start = 0, stop = 0, step = 1;
  if (a.pos.size() == 1) {
    stop = int_arg(a.pos[0], "range()");
  } else {
    start = int_arg(a.pos[0], "range()");
    stop = int_arg(a.pos[1], "range()");
    if (a.pos.size() == 3) step = int_arg(a.pos[2], "range()");
  }
  if (step == 0) fail("range() arg 3 must not be zero");
  const double count = step > 0 ? std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step))
                                 : std::ceil((static_cast<double>(start) - static_cast<double>(stop)) / static_cast<double>(-step));
  if (count > static_cast<double>(kLimits.max_range)) {
    fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" + std::to_string(kLimits.max_range) + ").");
  }
  auto d = std::make_shared<IterData>();
  d->kind = IterData::Kind::range;
  d->start = start;
  d->stop = stop;
  d->step = step;
  for (int64_t x = start; step > 0 ? x < stop : x > stop; x += step) d->items.push_back(Value::integer(x));
  r.charge(static_cast<int64_t>(d->items.size()));
  Value v;
  v.type = Type::iterator;
  v.p = std::move(d);
  return v;
}

// dict(...) / namespace(...): Python's dict(mapping or pairs, **kwargs).
std::shared_ptr<DictData> dict_args(Renderer& r, const CallArgs& a, const char* what) {
  auto d = std::make_shared<DictData>();
  if (a.pos.size() > 1) fail(std::string(what) + " expected at most 1 argument, got " + std::to_string(a.pos.size()));
  if (!a.pos.empty()) {
    const Value& src = a.pos[0];
    if (src.type == Type::dict) {
      for (const auto& [k, v] : src.map().items) d->set(k, v);
    } else {
      for (const Value& pair : r.iterate(src)) {
        const std::vector<Value> kv = r.iterate(pair);
        if (kv.size() != 2) fail(std::string(what) + " update sequence element has length " + std::to_string(kv.size()) + "; 2 is required");
        d->set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : a.kw) d->set(Value::string(k), v);
  return d;
}

// Python's datetime.strftime of a naive local time: %f, %z and %Z are Python's own (microseconds,
// "" and ""), the rest the C library's in the C locale.
std::string py_strftime(const std::string& fmt, const std::tm& tm, int micros) {
  std::string f;
  for (size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] != '%' || k + 1 >= fmt.size()) {
      f += fmt[k];
      continue;
    }
    const char c = fmt[++k];
    if (c == 'f') {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "%06d", micros);
      f += buf;
    } else if (c != 'z' && c != 'Z') {
      f += '%';
      f += c;
    }
  }
  if (f.find('\0') != std::string::npos) fail("embedded null character in the strftime format");
  if (f.empty()) return {};
  // CPython's time.strftime: grow the buffer until the result fits or 256 bytes per format byte.
  for (size_t size = 1024;; size *= 2) {
    std::string buf(size, '\0');
    const size_t n = std::strftime(buf.data(), size, f.c_str(), &tm);
    if (n > 0 || size >= 256 * f.size()) return buf.substr(0, n);
  }
}

Value g_strftime_now(Renderer& r, const CallArgs& a) {
  const Params p = bind(a, {"format"}, "strftime_now");
  if (!p.has(0)) fail("strftime_now() missing 1 required positional argument: 'format'");
  const std::string& fmt = str_arg(p.get(0), "strftime_now format");
  int micros = 0;
  const std::tm now = r.now(micros);
  return Value::string(py_strftime(fmt, now, micros));
}

}  // namespace

// ---- tables and dispatch -------------------------------------------------------------------------------

int find_filter(std::string_view name) {
  for (size_t k = 0; k < std::size(kFilters); ++k) {
    if (name == kFilters[k].name) return static_cast<int>(k);
  }
  return -1;
}
int find_test(std::string_view name) {
  for (size_t k = 0; k < std::size(kTests); ++k) {
    if (name == kTests[k].name) return static_cast<int>(k);
  }
  return -1;
}
bool jinja_has_filter(std::string_view name) { return listed(kJinjaFilters, name); }
bool jinja_has_test(std::string_view name) { return listed(kJinjaTests, name); }
const char* filter_name(int fn) { return kFilters[fn].name; }
const char* test_name(int fn) { return kTests[fn].name; }

Value apply_filter(Renderer& r, int fn, const Value& subject, const CallArgs& args) {
  return kFilters[fn].fn(r, subject, args);
}
bool apply_test(Renderer& r, int fn, const Value& subject, const CallArgs& args) { return kTests[fn].fn(r, subject, args); }

std::vector<std::pair<std::string, Value>> global_functions() {
  std::vector<std::pair<std::string, Value>> out;
  for (const char* name : {"range", "namespace", "dict", "raise_exception", "strftime_now"}) {
    auto c = std::make_shared<Callable>();
    c->kind = Callable::Kind::global;
    c->name = name;
    Value v;
    v.type = Type::callable;
    v.p = std::move(c);
    out.emplace_back(name, std::move(v));
  }
  return out;
}

Value call_global(Renderer& r, const std::string& name, const CallArgs& args) {
  if (name == "range") return g_range(r, args);
  if (name == "dict") return Value::dict(dict_args(r, args, "dict"));
  if (name == "namespace") {
    auto ns = std::make_shared<Namespace>();
    const std::shared_ptr<DictData> attrs = dict_args(r, args, "namespace");
    for (const auto& [k, v] : attrs->items) {
      if (!k.is_string()) fail("unsupported: a namespace attribute that is not a string");
      ns->set(k.str(), v);
    }
    Value v;
    v.type = Type::ns;
    v.p = std::move(ns);
    return v;
  }
  if (name == "raise_exception") {
    const Params p = bind(args, {"message"}, "raise_exception");
    if (!p.has(0)) fail("raise_exception() missing 1 required positional argument: 'message'");
    throw Failure{to_str(p.get(0)), true};
  }
  if (name == "strftime_now") return g_strftime_now(r, args);
  fail("unknown function '" + name + "'");
}

std::optional<Value> method_of(const Value& self, const std::string& name) {
  const auto unsafe = [&]() {
    return Value::undefined("access to attribute '" + name + "' of '" + type_name(self) + "' object is unsafe.");
  };
  switch (self.type) {
    case Type::string:
      if (listed(kStrMethods, name)) return bound(self, name);
      return std::nullopt;
    case Type::dict:
      if (listed(kDictMethods, name)) return bound(self, name);
      if (listed(kDictMutators, name)) return unsafe();
      return std::nullopt;
    case Type::list:
      if (listed(kListMethods, name)) return bound(self, name);
      if (listed(kListMutators, name)) return unsafe();
      return std::nullopt;
    case Type::tuple:
      if (name == "count" || name == "index") return bound(self, name);
      return std::nullopt;
    default: return std::nullopt;
  }
}

Value call_method(Renderer& r, const Value& self, const std::string& name, const CallArgs& args) {
  switch (self.type) {
    case Type::string: return str_method(r, self, name, args);
    case Type::dict: return dict_method(r, self, name, args);
    case Type::list:
    case Type::tuple: return list_method(r, self, name, args);
    default: fail("'" + type_name(self) + "' object has no method '" + name + "'");
  }
}

}  // namespace nvfp4::io::chat

// Values of the chat-template renderer as Python sees them: str(), repr(), ==, ordering,
// truthiness, Python's float repr, and JSON in (the render variables) and out (the tojson filter,
// json.dumps). See chat_template_internal.hpp.
#include <algorithm>
#include <cmath>
#include <charconv>
#include <compare>

#include "io/chat_template_internal.hpp"
#include "io/tokenizer/unicode.hpp"

namespace nvfp4::io::chat {

using hf::append_cp;
using hf::next_cp;

void fail(std::string message) { throw Failure{std::move(message), false}; }

namespace {
thread_local RenderBudget* t_budget = nullptr;
}
const ChatTemplateLimits& limits() { return t_budget ? t_budget->limits : kLimits; }
RenderBudget::RenderBudget(const ChatTemplateLimits& l) : limits(l), saved_(std::exchange(t_budget, this)) {}
RenderBudget::~RenderBudget() { t_budget = saved_; }

void check_bytes(size_t bytes) {
  if (static_cast<int64_t>(bytes) > limits().max_string_bytes) {
    fail("a string or the output grew past " + std::to_string(limits().max_string_bytes) + " bytes (the renderer's limit)");
  }
}

void check_items(size_t items) {
  if (static_cast<int64_t>(items) > limits().max_list_items) {
    fail("a list grew past " + std::to_string(limits().max_list_items) + " items (the renderer's limit)");
  }
}

void charge(int64_t units) {
  if (!t_budget) return;
  t_budget->work += units;
  if (t_budget->work > t_budget->limits.max_work) {
    fail("the template did more than " + std::to_string(t_budget->limits.max_work) + " units of work (the renderer's limit)");
  }
}

// ---- construction ----------------------------------------------------------------------------------

Value Value::undefined(std::string hint) {
  Value v;
  v.type = Type::undefined;
  if (!hint.empty()) v.p = std::make_shared<std::string>(std::move(hint));
  return v;
}
Value Value::none() {
  Value v;
  v.type = Type::none;
  return v;
}
Value Value::boolean(bool x) {
  Value v;
  v.type = Type::boolean;
  v.b = x;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.type = Type::integer;
  v.i = x;
  return v;
}
Value Value::floating(double x) {
  Value v;
  v.type = Type::floating;
  v.f = x;
  return v;
}
Value Value::string(std::string s, bool markup) {
  Value v;
  v.type = Type::string;
  v.markup = markup;
  charge_bytes(s.size());
  v.p = std::make_shared<std::string>(std::move(s));
  return v;
}

int value_depth(const Value& v) {
  switch (v.type) {
    case Type::list:
    case Type::tuple: return v.seq().depth;
    case Type::dict: return v.map().depth;
    default: return 0;
  }
}

void check_depth(int depth) {
  if (depth > limits().max_value_depth) {
    fail("a value nests deeper than " + std::to_string(limits().max_value_depth) + " lists or dicts (the renderer's limit)");
  }
}

static Value make_seq(Type type, std::vector<Value> items) {
  auto d = std::make_shared<ListData>();
  int depth = 0;
  for (const Value& x : items) depth = std::max(depth, value_depth(x));
  d->depth = depth + 1;
  check_depth(d->depth);
  check_items(items.size());
  charge_items(items.size());
  d->items = std::move(items);
  Value v;
  v.type = type;
  v.p = std::move(d);
  return v;
}
Value Value::list(std::vector<Value> items) { return make_seq(Type::list, std::move(items)); }
Value Value::tuple(std::vector<Value> items) { return make_seq(Type::tuple, std::move(items)); }
Value Value::dict(std::shared_ptr<DictData> d) {
  Value v;
  v.type = Type::dict;
  v.p = std::move(d);
  return v;
}

// ---- dict --------------------------------------------------------------------------------------------

static bool hashable(const Value& k) {
  switch (k.type) {
    case Type::none:
    case Type::boolean:
    case Type::integer:
    case Type::floating:
    case Type::string: return true;
    case Type::tuple:
      return std::all_of(k.seq().items.begin(), k.seq().items.end(), [](const Value& x) { return hashable(x); });
    default: return false;
  }
}

const Value* DictData::find_str(std::string_view key) const {
  charge_bytes(key.size());
  const auto it = str_index_.find(std::string(key));
  return it == str_index_.end() ? nullptr : &items[it->second].second;
}

const Value* DictData::find(const Value& key) const {
  if (key.is_string()) return find_str(key.str());
  if (!hashable(key)) fail("unhashable type: '" + type_name(key) + "'");
  charge_items(items.size());
  for (const auto& [k, v] : items) {
    if (!k.is_string() && equal(k, key)) return &v;
  }
  return nullptr;
}

void DictData::set(Value key, Value value) {
  if (!hashable(key)) fail("unhashable type: '" + type_name(key) + "'");
  depth = std::max(depth, value_depth(value) + 1);
  depth = std::max(depth, value_depth(key) + 1);
  check_depth(depth);
  if (const Value* old = find(key)) {
    *const_cast<Value*>(old) = std::move(value);
    return;
  }
  if (key.is_string()) str_index_.emplace(key.str(), items.size());
  items.emplace_back(std::move(key), std::move(value));
}

Value* Namespace::find(std::string_view name) {
  for (auto& [k, v] : attrs) {
    if (k == name) return &v;
  }
  return nullptr;
}

void Namespace::set(const std::string& name, Value v) {
  if (Value* old = find(name)) {
    *old = std::move(v);
  } else {
    attrs.emplace_back(name, std::move(v));
  }
}

// ---- text ------------------------------------------------------------------------------------------

size_t utf8_valid_prefix(std::string_view s) {
  size_t i = 0, len = 0;
  while (i < s.size() && hf::utf8_well_formed_at(s, i, len)) i += len;
  return i;
}

bool valid_utf8(std::string_view s) { return utf8_valid_prefix(s) == s.size(); }

bool py_isspace(uint32_t c) {
  // Python's str.isspace(): bidirectional class WS, B or S, or category Zs.
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t cp_count(std::string_view s) {
  charge_bytes(s.size());
  size_t n = 0;
  for (const char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

std::vector<std::string_view> code_points(std::string_view s) {
  charge_bytes(s.size());
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    next_cp(s, i);
    out.push_back(s.substr(start, i - start));
  }
  return out;
}

std::string markup_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&#39;"; break;
      case '"': out += "&#34;"; break;
      default: out += c;
    }
  }
  return out;
}

// ---- numbers ---------------------------------------------------------------------------------------

std::string float_repr(double x) {
  // Python's repr(float): the shortest digits that round-trip; exponent form when the decimal
  // point would sit more than 16 digits right of the first digit or 4 left of it.
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x < 0 ? "-inf" : "inf";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<size_t>(r.ptr - buf));  // "-1.2345e+20"
  const size_t e = sci.find('e');
  std::string sign, digits;
  for (const char c : sci.substr(0, e)) {
    if (c == '-') sign = "-";
    else if (c != '.') digits += c;
  }
  int exp10 = 0;
  std::from_chars(sci.data() + e + (sci[e + 1] == '+' ? 2 : 1), sci.data() + sci.size(), exp10);
  const int decpt = exp10 + 1;  // value = 0.digits * 10^decpt
  const int n = static_cast<int>(digits.size());
  std::string out = sign;
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (n > 1) out += "." + digits.substr(1);
    const int ex = decpt - 1;
    out += ex < 0 ? "e-" : "e+";
    const std::string es = std::to_string(std::abs(ex));
    if (es.size() < 2) out += "0";
    out += es;
  } else if (decpt <= 0) {
    out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  } else if (decpt >= n) {
    out += digits + std::string(static_cast<size_t>(decpt - n), '0') + ".0";
  } else {
    out += digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
  }
  return out;
}

// ---- str() and repr() ---------------------------------------------------------------------------

std::string type_name(const Value& v) {
  switch (v.type) {
    case Type::undefined: return "Undefined";
    case Type::none: return "NoneType";
    case Type::boolean: return "bool";
    case Type::integer: return "int";
    case Type::floating: return "float";
    case Type::string: return v.markup ? "Markup" : "str";
    case Type::list: return "list";
    case Type::tuple: return "tuple";
    case Type::dict: return "dict";
    case Type::iterator:
      switch (v.iter().kind) {
        case IterData::Kind::generator: return "generator";
        case IterData::Kind::dict_keys: return "dict_keys";
        case IterData::Kind::dict_values: return "dict_values";
        case IterData::Kind::dict_items: return "dict_items";
        case IterData::Kind::range: return "range";
      }
      return "iterator";
    case Type::ns: return "Namespace";
    case Type::loop: return "LoopContext";
    case Type::callable: return v.fn().kind == Callable::Kind::macro ? "Macro" : "function";
  }
  return "object";
}

std::string undefined_message(const Value& v) {
  const std::string* h = v.hint();
  return h ? *h : "undefined value";
}

void fail_undefined(const Value& v) { fail(undefined_message(v)); }

static void append_str_repr(std::string& out, std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out += quote;
  static const char* hex = "0123456789abcdef";
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = next_cp(s, i);
    if (c == static_cast<uint32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else if (c < 0x7F || hf::is_python_printable(c)) {
      append_cp(out, c);
    } else {
      const int digits = c <= 0xFF ? 2 : c <= 0xFFFF ? 4 : 8;
      out += digits == 2 ? "\\x" : digits == 4 ? "\\u" : "\\U";
      for (int k = digits - 1; k >= 0; --k) out += hex[(c >> (4 * k)) & 15];
    }
  }
  out += quote;
}

static void check_built(const std::string& out) { check_bytes(out.size()); }

static void append_items_repr(std::string& out, const std::vector<Value>& items, size_t from = 0) {
  for (size_t k = from; k < items.size(); ++k) {
    if (k > from) out += ", ";
    append_repr(out, items[k]);
    check_built(out);
  }
}

void append_repr(std::string& out, const Value& v) {
  switch (v.type) {
    case Type::undefined: out += "Undefined"; return;
    case Type::string:
      if (v.markup) {
        out += "Markup(";
        append_str_repr(out, v.str());
        out += ')';
      } else {
        append_str_repr(out, v.str());
      }
      return;
    case Type::list:
      out += '[';
      append_items_repr(out, v.seq().items);
      out += ']';
      return;
    case Type::tuple:
      out += '(';
      append_items_repr(out, v.seq().items);
      if (v.seq().items.size() == 1) out += ',';
      out += ')';
      return;
    case Type::dict:
      out += '{';
      for (size_t k = 0; k < v.map().items.size(); ++k) {
        if (k) out += ", ";
        append_repr(out, v.map().items[k].first);
        out += ": ";
        append_repr(out, v.map().items[k].second);
        check_built(out);
      }
      out += '}';
      return;
    default: out += to_str(v); return;
  }
}

std::string to_str(const Value& v) {
  switch (v.type) {
    case Type::undefined: return "";
    case Type::none: return "None";
    case Type::boolean: return v.b ? "True" : "False";
    case Type::integer: return std::to_string(v.i);
    case Type::floating: return float_repr(v.f);
    case Type::string: return v.str();
    case Type::list:
    case Type::tuple:
    case Type::dict: {
      std::string out;
      append_repr(out, v);
      return out;
    }
    case Type::iterator: {
      const IterData& it = v.iter();
      std::string out;
      switch (it.kind) {
        case IterData::Kind::range:
          out = "range(" + std::to_string(it.start) + ", " + std::to_string(it.stop);
          if (it.step != 1) out += ", " + std::to_string(it.step);
          return out + ")";
        case IterData::Kind::dict_keys:
        case IterData::Kind::dict_values:
        case IterData::Kind::dict_items:
          out = type_name(v) + "([";
          append_items_repr(out, it.items);
          return out + "])";
        case IterData::Kind::generator:
          fail("a generator (the result of map, select, reverse, unique, items, ...) cannot be printed: jinja2 prints "
               "its address; add |list");
      }
      return out;
    }
    case Type::ns: {
      std::string out = "<Namespace {";
      const auto& attrs = v.ns().attrs;
      for (size_t k = 0; k < attrs.size(); ++k) {
        if (k) out += ", ";
        append_str_repr(out, attrs[k].first);
        out += ": ";
        append_repr(out, attrs[k].second);
        check_built(out);
      }
      return out + "}>";
    }
    case Type::loop:
      fail("the loop object cannot be printed (jinja2 prints its internal state)");
    case Type::callable:
      fail("a function or macro cannot be printed (jinja2 prints its address); call it");
  }
  return "";
}

// ---- truthiness, equality, ordering -------------------------------------------------------------

bool truthy(const Value& v) {
  switch (v.type) {
    case Type::undefined:
    case Type::none: return false;
    case Type::boolean: return v.b;
    case Type::integer: return v.i != 0;
    case Type::floating: return v.f != 0;
    case Type::string: return !v.str().empty();
    case Type::list:
    case Type::tuple: return !v.seq().items.empty();
    case Type::dict: return !v.map().items.empty();
    case Type::iterator: return v.iter().kind == IterData::Kind::generator || !v.iter().items.empty();
    default: return true;
  }
}

// Python's exact int-float comparison.
static std::partial_ordering cmp_int_float(int64_t a, double b) {
  if (std::isnan(b)) return std::partial_ordering::unordered;
  if (b >= 9223372036854775808.0) return std::partial_ordering::less;
  if (b < -9223372036854775808.0) return std::partial_ordering::greater;
  const double fl = std::floor(b);
  const auto bi = static_cast<int64_t>(fl);
  if (a < bi) return std::partial_ordering::less;
  if (a > bi) return std::partial_ordering::greater;
  return fl == b ? std::partial_ordering::equivalent : std::partial_ordering::less;
}

static std::partial_ordering cmp_numbers(const Value& a, const Value& b) {
  if (a.is_int_like() && b.is_int_like()) return a.as_int() <=> b.as_int();
  if (a.is_int_like()) return cmp_int_float(a.as_int(), b.f);
  if (b.is_int_like()) return 0 <=> cmp_int_float(b.as_int(), a.f);
  return a.f <=> b.f;
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return cmp_numbers(a, b) == 0;
  if (a.type != b.type) return false;
  switch (a.type) {
    case Type::undefined:
    case Type::none: return true;
    case Type::string:
      charge_bytes(std::min(a.str().size(), b.str().size()));
      return a.str() == b.str();
    case Type::list:
    case Type::tuple: {
      const auto& x = a.seq().items;
      const auto& y = b.seq().items;
      if (x.size() != y.size()) return false;
      charge_items(x.size());
      for (size_t k = 0; k < x.size(); ++k) {
        if (!equal(x[k], y[k])) return false;
      }
      return true;
    }
    case Type::dict: {
      const DictData& x = a.map();
      const DictData& y = b.map();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* w = y.find(k);
        if (!w || !equal(v, *w)) return false;
      }
      return true;
    }
    case Type::iterator:
      if (a.p == b.p) return true;
      if (a.iter().kind == IterData::Kind::range && b.iter().kind == IterData::Kind::range) {
        return equal(Value::list(a.iter().items), Value::list(b.iter().items));
      }
      return false;
    default: return a.p == b.p;
  }
}

static std::partial_ordering ordering(const Value& a, const Value& b, const char* op) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (a.is_number() && b.is_number()) return cmp_numbers(a, b);
  if (a.type == b.type) {
    if (a.is_string()) {
      charge_bytes(std::min(a.str().size(), b.str().size()));
      return a.str().compare(b.str()) <=> 0;  // UTF-8 byte order is code point order
    }
    if (a.type == Type::list || a.type == Type::tuple) {
      const auto& x = a.seq().items;
      const auto& y = b.seq().items;
      charge_items(std::min(x.size(), y.size()));
      for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
        if (!equal(x[k], y[k])) return ordering(x[k], y[k], op);
      }
      return x.size() <=> y.size();
    }
  }
  fail(std::string("'") + op + "' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
}

int compare(const Value& a, const Value& b, const char* op) {
  const std::partial_ordering o = ordering(a, b, op);
  if (o == std::partial_ordering::unordered) return 2;  // NaN: every ordering test is false
  return o < 0 ? -1 : o > 0 ? 1 : 0;
}

// ---- JSON ------------------------------------------------------------------------------------------

Value from_json(const nlohmann::ordered_json& j, int depth) {
  using nlohmann::ordered_json;
  switch (j.type()) {
    case ordered_json::value_t::null: return Value::none();
    case ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case ordered_json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) fail("the JSON integer " + std::to_string(u) + " does not fit 64 bits");
      return Value::integer(static_cast<int64_t>(u));
    }
    case ordered_json::value_t::number_float: return Value::floating(j.get<double>());
    case ordered_json::value_t::string: {
      const auto& s = j.get_ref<const std::string&>();
      if (!valid_utf8(s)) fail("a JSON string is not valid UTF-8");
      return Value::string(s);
    }
    case ordered_json::value_t::array: {
      check_depth(depth + 1);
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(from_json(x, depth + 1));
      return Value::list(std::move(items));
    }
    case ordered_json::value_t::object: {
      check_depth(depth + 1);
      auto d = std::make_shared<DictData>();
      for (const auto& [k, x] : j.items()) {
        if (!valid_utf8(k)) fail("a JSON key is not valid UTF-8");
        d->set(Value::string(k), from_json(x, depth + 1));
      }
      return Value::dict(std::move(d));
    }
    default: fail("binary JSON values are not supported");
  }
}

static void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  static const char* hex = "0123456789abcdef";
  auto u4 = [&](uint32_t c) {
    out += "\\u";
    for (int k = 3; k >= 0; --k) out += hex[(c >> (4 * k)) & 15];
  };
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const uint32_t c = next_cp(s, i);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
      if (c >= 0x10000) {
        u4(0xD800 + ((c - 0x10000) >> 10));
        u4(0xDC00 + ((c - 0x10000) & 0x3FF));
      } else {
        u4(c);
      }
    } else {
      append_cp(out, c);
    }
  }
  out += '"';
}

static std::string json_float(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x < 0 ? "-Infinity" : "Infinity";
  return float_repr(x);
}

static std::string json_key(const Value& k) {
  switch (k.type) {
    case Type::string: return k.str();
    case Type::boolean: return k.b ? "true" : "false";
    case Type::none: return "null";
    case Type::integer: return std::to_string(k.i);
    case Type::floating: return json_float(k.f);
    default: fail("keys must be str, int, float, bool or None, not " + type_name(k));
  }
}

void append_json(std::string& out, const Value& v, const JsonStyle& style, int level) {
  check_built(out);
  auto newline = [&](int lvl) {
    out += '\n';
    for (int k = 0; k < lvl; ++k) out += *style.indent;
  };
  switch (v.type) {
    case Type::none: out += "null"; return;
    case Type::boolean: out += v.b ? "true" : "false"; return;
    case Type::integer: out += std::to_string(v.i); return;
    case Type::floating: out += json_float(v.f); return;
    case Type::string: append_json_string(out, v.str(), style.ensure_ascii); return;
    case Type::list:
    case Type::tuple: {
      const auto& items = v.seq().items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += style.item_sep;
        if (style.indent) newline(level + 1);
        append_json(out, items[k], style, level + 1);
      }
      if (style.indent) newline(level);
      out += ']';
      return;
    }
    case Type::dict: {
      const auto& items = v.map().items;
      if (items.empty()) {
        out += "{}";
        return;
      }
      std::vector<size_t> order(items.size());
      for (size_t k = 0; k < order.size(); ++k) order[k] = k;
      if (style.sort_keys) {
        std::stable_sort(order.begin(), order.end(),
                         [&](size_t a, size_t b) { return compare(items[a].first, items[b].first, "<") < 0; });
      }
      out += '{';
      for (size_t k = 0; k < order.size(); ++k) {
        const auto& [key, val] = items[order[k]];
        if (k) out += style.item_sep;
        if (style.indent) newline(level + 1);
        append_json_string(out, json_key(key), style.ensure_ascii);
        out += style.key_sep;
        append_json(out, val, style, level + 1);
      }
      if (style.indent) newline(level);
      out += '}';
      return;
    }
    default: fail("Object of type " + type_name(v) + " is not JSON serializable");
  }
}

}  // namespace nvfp4::io::chat

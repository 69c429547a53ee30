// The filters and tests of the chat-template renderer, each as jinja2 3.1 defines it
// (jinja2/filters.py, jinja2/tests.py), and transformers' tojson (json.dumps with
// ensure_ascii=False by default). Arguments bind as Python binds them (positional, then by
// keyword; unknown keywords fail).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "io/chat_template_internal.hpp"
#include "io/tokenizer/unicode.hpp"

namespace nvfp4::io::chat {

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

namespace {

// Python's ' ' * n (n < 0: ""), within the string limit.
std::string spaces(int64_t n) {
  if (n <= 0) return {};
  check_bytes(static_cast<size_t>(n));
  return std::string(static_cast<size_t>(n), ' ');
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
  if (v.type == Type::string && !v.str().empty()) {
    size_t i = 0;
    hf::next_cp(v.str(), i);
    return Value::string(v.str().substr(0, i));
  }
  const std::vector<Value> items = r.iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Renderer& r, const Value& v, const CallArgs& a) {
  bind(a, {}, "last");
  if (v.type == Type::iterator && !v.iter().reusable()) fail("'generator' object is not reversible (add |list before |last)");
  if (v.type == Type::string && !v.str().empty()) {
    const std::string& s = v.str();
    size_t start = s.size() - 1;
    while (start > 0 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    return Value::string(s.substr(start));
  }
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
    charge_bytes(v.str().size());
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
    charge_bytes(v.str().size());
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
  const std::string indention = width.is_string() ? width.str() : spaces(int_arg(width, "indent width"));
  const bool first = p.has(1) && truthy(p.get(1)), blank = p.has(2) && truthy(p.get(2));
  const Value s = soft_str(v);
  const std::vector<std::string> lines = py_splitlines(s.str() + "\n", false);
  std::string rv;
  for (size_t k = 0; k < lines.size(); ++k) {
    if (k > 0) rv += '\n';
    if (k > 0 && (blank || !lines[k].empty())) rv += indention;
    rv += lines[k];
    check_bytes(rv.size());
  }
  if (first) rv = indention + rv;
  r.charge_bytes(rv.size());
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
    check_bytes(out.size());
  }
  r.charge_bytes(out.size());
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

Value f_replace(Renderer&, const Value& v, const CallArgs& a) {
  const Params p = bind(a, {"old", "new", "count"}, "replace");
  if (!p.has(0) || !p.has(1)) fail("replace() needs the arguments old and new");
  const int64_t count = p.has(2) && p.get(2).type != Type::none ? int_arg(p.get(2), "replace count") : -1;
  return Value::string(py_replace(to_str(v), to_str(p.get(0)), to_str(p.get(1)), count));
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
      // Python's int.__round__: to a multiple of 10^-precision, halves to the even multiple.
      if (precision < -18) return Value::integer(0);
      int64_t m = 1;
      for (int64_t k = 0; k < -precision; ++k) m *= 10;
      const int64_t x = v.as_int();
      int64_t q = x / m, rem = x % m;
      if (rem < 0) rem += m, q -= 1;  // floor division
      if (2 * rem > m || (2 * rem == m && (q & 1))) q += 1;
      int64_t out = 0;
      if (__builtin_mul_overflow(q, m, &out)) fail("integer overflow (the renderer's integers are 64-bit; Python's are not)");
      return Value::integer(out);
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
  charge_items(items.size());
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
    style.indent = ind.is_string() ? ind.str() : spaces(int_arg(ind, "tojson indent"));
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
  check_bytes(out.size());
  r.charge_bytes(out.size());
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

Value apply_filter(Renderer& r, int fn, const Value& subject, const CallArgs& args) {
  return kFilters[fn].fn(r, subject, args);
}
bool apply_test(Renderer& r, int fn, const Value& subject, const CallArgs& args) { return kTests[fn].fn(r, subject, args); }


}  // namespace nvfp4::io::chat

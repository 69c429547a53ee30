// The global functions (range, dict, namespace, raise_exception, strftime_now) and the str, dict
// and list methods of the chat-template renderer, as Python and jinja2's sandbox define them: a
// method jinja2's ImmutableSandboxedEnvironment blocks (list.append, dict.update, ...) is an
// Undefined that fails when called; a Python method this renderer lacks fails when called.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "io/chat_template_internal.hpp"
#include "io/tokenizer/unicode.hpp"

namespace nvfp4::io::chat {

namespace {

// ---- methods --------------------------------------------------------------------------------------------

const char* kStrMethods[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format", "format_map",
    "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
    "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition",
    "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split",
    "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill"};
// The str methods str_method implements (the others of kStrMethods fail when called).
const char* kStrSupported[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith",
                               "upper", "lower", "title", "capitalize", "replace", "find", "rfind", "count", "join",
                               "removeprefix", "removesuffix", "isspace", "islower", "isupper"};
const char* kDictMethods[] = {"copy", "fromkeys", "get", "items", "keys", "values"};
const char* kDictMutators[] = {"clear", "pop", "popitem", "setdefault", "update"};
const char* kListMethods[] = {"copy", "count", "index"};
const char* kListMutators[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"};
// markupsafe.Markup wraps these: string arguments are escaped, and the result is a Markup.
const char* kMarkupWrapped[] = {"capitalize", "title", "lower", "upper", "replace", "lstrip", "rstrip", "strip"};


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
    r.charge_bytes(s.size());
    return list_of_strings(name == "split" ? py_split(s, sep, maxsplit) : py_rsplit(s, sep, maxsplit), self.markup);
  }
  if (name == "splitlines") {
    const Params p = bind(args, {"keepends"}, name);
    r.charge_bytes(s.size());
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
    return result(py_replace(s, str_arg(p.get(0), "replace old"), str_arg(p.get(1), "replace new"), count));
  }
  if (name == "find" || name == "rfind" || name == "count") {
    const Params p = bind(args, {"sub"}, name);
    if (!p.has(0)) fail(name + "() takes at least 1 argument (0 given)");
    const std::string& sub = str_arg(p.get(0), name + " argument");
    r.charge_bytes(s.size());
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
      check_bytes(out.size());
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

Value g_range(Renderer&, const CallArgs& a) {
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
  if (count > static_cast<double>(limits().max_range)) {
    fail("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" + std::to_string(limits().max_range) + ").");
  }
  auto d = std::make_shared<IterData>();
  d->kind = IterData::Kind::range;
  d->start = start;
  d->stop = stop;
  d->step = step;
  for (int64_t x = start; step > 0 ? x < stop : x > stop; x += step) d->items.push_back(Value::integer(x));
  charge_items(d->items.size());
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
    r.track(ns);
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

bool string_method_supported(std::string_view name) { return listed(kStrSupported, name); }

}  // namespace nvfp4::io::chat

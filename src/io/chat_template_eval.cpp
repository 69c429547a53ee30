// The chat-template renderer: walks the tree of chat_template_parser.cpp as jinja2's compiled code
// runs it. Scopes follow jinja2's frames: a for loop's body gets a fresh scope each iteration
// (what it sets is gone after the iteration, and a name read before it is set in the body reads
// the enclosing value); an `if` opens none; macros, set/filter blocks, `with` and
// {% generation %} bodies open their own; a macro sees the scope it was defined in, as it is when
// the macro is called. Attribute and item access follow jinja2's sandbox (getattr, then the item;
// getitem, then the attribute; a miss is Undefined).
#include <chrono>
#include <cmath>
#include <cstring>

#include "io/chat_template_internal.hpp"
#include "io/tokenizer/unicode.hpp"

namespace nvfp4::io::chat {

namespace {

constexpr uintptr_t kStackBudget = 1 << 20;  // bytes of C++ stack one render may use

// Python's slice.indices(): the positions a[start:stop:step] takes from a sequence of `len` items.
std::vector<size_t> slice_positions(int64_t len, const std::optional<int64_t>& start_in, const std::optional<int64_t>& stop_in,
                                    int64_t step) {
  if (step == 0) fail("slice step cannot be zero");
  auto adjust = [&](const std::optional<int64_t>& v, bool is_start) -> int64_t {
    if (!v) return step < 0 ? (is_start ? len - 1 : -1) : (is_start ? 0 : len);
    int64_t x = *v;
    if (x < 0) {
      x += len;
      if (x < 0) x = step < 0 ? -1 : 0;
    } else if (x >= len) {
      x = step < 0 ? len - 1 : len;
    }
    return x;
  };
  const int64_t start = adjust(start_in, true), stop = adjust(stop_in, false);
  std::vector<size_t> out;
  if (step > 0) {
    for (int64_t i = start; i < stop; i += step) out.push_back(static_cast<size_t>(i));
  } else {
    for (int64_t i = start; i > stop; i += step) out.push_back(static_cast<size_t>(i));
  }
  return out;
}

}  // namespace

const Value* Scope::find(const std::string& name) const {
  for (const Scope* s = this; s; s = s->parent.get()) {
    const auto it = s->vars.find(name);
    if (it != s->vars.end()) return &it->second;
  }
  return nullptr;
}

// Runs a body in another scope, restoring the current one after.
struct ScopeGuard {
  ScopeGuard(Renderer& r, std::shared_ptr<Scope> s) : r_(r), saved_(std::exchange(r.scope_, std::move(s))) {}
  ~ScopeGuard() { r_.scope_ = std::move(saved_); }
  Renderer& r_;
  std::shared_ptr<Scope> saved_;
};

static std::shared_ptr<Scope> child_of(const std::shared_ptr<Scope>& parent) {
  auto s = std::make_shared<Scope>();
  s->parent = parent;
  return s;
}

Renderer::Renderer(const Template& t, std::shared_ptr<Scope> context, std::optional<std::tm> now)
    : t_(t), scope_(std::move(context)), now_(now) {
  track(scope_);
}

Renderer::~Renderer() {
  for (const auto& w : captured_scopes_) {
    if (const auto s = w.lock()) s->vars.clear();
  }
  for (const auto& w : namespaces_) {
    if (const auto n = w.lock()) n->attrs.clear();
  }
  for (const auto& w : loops_) {
    if (const auto l = w.lock()) {
      l->source.clear();
      l->accepted.clear();
      l->outer.reset();
      l->last_changed.reset();
    }
  }
}

void Renderer::track(const std::shared_ptr<Scope>& captured) { captured_scopes_.push_back(captured); }
void Renderer::track(const std::shared_ptr<Namespace>& ns) { namespaces_.push_back(ns); }
void Renderer::track(const std::shared_ptr<LoopState>& loop) { loops_.push_back(loop); }

std::string Renderer::run() {
  char marker = 0;
  stack_base_ = reinterpret_cast<uintptr_t>(&marker);
  std::string out;
  try {
    exec(t_.body, out);
  } catch (const Failure& f) {
    rethrow(f);
  }
  return out;
}

void Renderer::rethrow(const Failure& f) const {
  const std::string where = t_.source + ":" + std::to_string(pos_.line) + ":" + std::to_string(pos_.col) + ": ";
  if (f.raised) throw ChatTemplateRaised(where + "raise_exception: " + f.message, f.message);
  throw Error(where + f.message);
}

void Renderer::guard_stack() const {
  char here = 0;
  const auto addr = reinterpret_cast<uintptr_t>(&here);
  if (stack_base_ > addr && stack_base_ - addr > kStackBudget) {
    fail("the template recurses too deeply (the renderer's stack limit)");
  }
}

std::tm Renderer::now(int& micros) const {
  micros = 0;
  if (now_) return *now_;
  const auto since = std::chrono::system_clock::now().time_since_epoch();
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(since).count();
  const std::time_t t = static_cast<std::time_t>(us / 1000000);
  micros = static_cast<int>(us % 1000000);
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm;
}

Value Renderer::lookup(const std::string& name) const {
  if (const Value* v = scope_->find(name)) return *v;
  return Value::undefined("'" + name + "' is undefined");
}

// ---- statements ----------------------------------------------------------------------------------

Renderer::Flow Renderer::exec(const std::vector<NodePtr>& body, std::string& out) {
  for (const NodePtr& n : body) {
    const Flow f = exec_node(*n, out);
    if (f != Flow::normal) return f;
  }
  return Flow::normal;
}

void Renderer::assign(const Target& t, const Value& v, Scope& scope) {
  switch (t.kind) {
    case Target::Kind::name: scope.vars[t.name] = v; return;
    case Target::Kind::tuple: {
      const std::vector<Value> items = iterate(v);
      if (items.size() != t.items.size()) {
        pos_ = t.pos;
        fail(items.size() > t.items.size()
                 ? "too many values to unpack (expected " + std::to_string(t.items.size()) + ")"
                 : "not enough values to unpack (expected " + std::to_string(t.items.size()) + ", got " + std::to_string(items.size()) + ")");
      }
      for (size_t k = 0; k < items.size(); ++k) assign(t.items[k], items[k], scope);
      return;
    }
    case Target::Kind::ns_attr: {
      const Value ns = lookup(t.name);
      if (ns.type != Type::ns) {
        pos_ = t.pos;
        fail("cannot assign attribute on non-namespace object ('" + t.name + "' is " + type_name(ns) + ")");
      }
      ns.ns().set(t.attr, v);
      return;
    }
  }
}

Renderer::Flow Renderer::exec_node(const Node& n, std::string& out) {
  guard_stack();
  charge(1);
  pos_ = n.pos;
  switch (n.kind) {
    case NodeKind::text:
      out += n.text;
      check_size(out.size());
      charge_bytes(n.text.size());
      return Flow::normal;
    case NodeKind::output:
      for (const ExprPtr& e : n.exprs) {
        const Value v = eval(*e);
        if (v.is_string()) {
          out += v.str();
        } else {
          out += to_str(v);
        }
        check_size(out.size());
      }
      return Flow::normal;
    case NodeKind::if_: return exec(truthy(eval(*n.expr)) ? n.body : n.else_body, out);
    case NodeKind::for_: exec_for(n, out); return Flow::normal;
    case NodeKind::set: {
      const Value v = eval(*n.expr);
      assign(n.target, v, *scope_);
      return Flow::normal;
    }
    case NodeKind::set_block:
    case NodeKind::filter_block: {
      std::string text;
      {
        ScopeGuard g(*this, child_of(scope_));
        exec(n.body, text);
      }
      Value v = Value::string(std::move(text));
      if (n.filter) {
        // The filter chain's innermost subject is the block's text.
        std::vector<const Expr*> chain;
        for (const Expr* f = n.filter.get(); f; f = f->subject.get()) chain.push_back(f);
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
          const Expr& f = **it;
          CallArgs args;
          eval_args(f, args);
          pos_ = f.pos;
          if (f.fn < 0) fail("no filter named '" + f.name + "'");
          v = apply_filter(*this, f.fn, v, args);
        }
      }
      pos_ = n.pos;
      if (n.kind == NodeKind::set_block) {
        assign(n.target, v, *scope_);
      } else {
        out += to_str(v);
        check_size(out.size());
      }
      return Flow::normal;
    }
    case NodeKind::macro: {
      auto c = std::make_shared<Callable>();
      c->kind = Callable::Kind::macro;
      c->name = n.name;
      c->macro = &n;
      c->closure = scope_;
      track(scope_);
      Value v;
      v.type = Type::callable;
      v.p = std::move(c);
      scope_->vars[n.name] = std::move(v);
      return Flow::normal;
    }
    case NodeKind::with: {
      std::vector<Value> values;
      for (const ExprPtr& e : n.exprs) values.push_back(eval(*e));
      auto s = child_of(scope_);
      for (size_t k = 0; k < values.size(); ++k) assign(n.targets[k], values[k], *s);
      ScopeGuard g(*this, s);
      return exec(n.body, out);
    }
    case NodeKind::scoped: {
      ScopeGuard g(*this, child_of(scope_));
      exec(n.body, out);
      return Flow::normal;
    }
    case NodeKind::break_: return Flow::break_;
    case NodeKind::continue_: return Flow::continue_;
  }
  return Flow::normal;
}

bool Renderer::loop_fetch(LoopState& l, size_t k) {
  while (l.accepted.size() <= k) {
    if (!l.filtered || l.scan >= l.source.size()) return false;
    const Value item = l.source[l.scan++];
    if (++iterations_ > limits().max_iterations) fail("the template ran more than " + std::to_string(limits().max_iterations) + " loop iterations (the renderer's limit)");
    auto s = child_of(l.outer);
    assign(l.node->target, item, *s);
    ScopeGuard g(*this, s);
    if (truthy(eval(*l.node->cond))) l.accepted.push_back(item);
  }
  return true;
}

void Renderer::exec_for(const Node& n, std::string& out) {
  const Value iterable = eval(*n.expr);
  pos_ = n.pos;
  auto state = std::make_shared<LoopState>();
  track(state);
  state->filtered = n.cond != nullptr;
  state->node = &n;
  state->outer = scope_;
  if (state->filtered) {
    state->source = iterate(iterable);
  } else {
    state->accepted = iterate(iterable);
  }
  Value loop;
  loop.type = Type::loop;
  loop.p = state;
  bool no_full_iteration = true;  // jinja2 runs the else block unless a body ran to its end
  for (size_t k = 0; loop_fetch(*state, k); ++k) {
    if (!state->filtered && ++iterations_ > limits().max_iterations) {
      fail("the template ran more than " + std::to_string(limits().max_iterations) + " loop iterations (the renderer's limit)");
    }
    state->index0 = static_cast<int64_t>(k);
    auto s = child_of(state->outer);
    assign(n.target, state->accepted[k], *s);
    s->vars["loop"] = loop;
    Flow f;
    {
      ScopeGuard g(*this, s);
      f = exec(n.body, out);
    }
    if (f == Flow::break_) break;
    if (f == Flow::continue_) continue;
    no_full_iteration = false;
  }
  if (no_full_iteration && !n.else_body.empty()) {
    ScopeGuard g(*this, child_of(scope_));
    exec(n.else_body, out);
  }
}

// ---- access --------------------------------------------------------------------------------------

std::vector<Value> Renderer::iterate(const Value& v) {
  std::vector<Value> out;
  switch (v.type) {
    case Type::undefined: return out;
    case Type::list:
    case Type::tuple: out = v.seq().items; break;
    case Type::dict:
      out.reserve(v.map().items.size());
      for (const auto& [k, x] : v.map().items) out.push_back(k);
      break;
    case Type::string:
      check_items(cp_count(v.str()));
      for (const std::string_view c : code_points(v.str())) out.push_back(Value::string(std::string(c)));
      break;
    case Type::iterator: {
      IterData& it = v.iter();
      if (it.reusable()) {
        out = it.items;
      } else {
        out.assign(it.items.begin() + static_cast<std::ptrdiff_t>(it.pos), it.items.end());
        it.pos = it.items.size();
      }
      break;
    }
    default: fail("'" + type_name(v) + "' object is not iterable");
  }
  charge_items(out.size());
  return out;
}

Value Renderer::loop_attr(const Value& loopv, const std::string& name) {
  LoopState& l = loopv.loop();
  const auto length = [&]() {
    while (loop_fetch(l, l.accepted.size())) {
    }
    return static_cast<int64_t>(l.accepted.size());
  };
  if (name == "index") return Value::integer(l.index0 + 1);
  if (name == "index0") return Value::integer(l.index0);
  if (name == "first") return Value::boolean(l.index0 == 0);
  if (name == "last") return Value::boolean(!loop_fetch(l, static_cast<size_t>(l.index0 + 1)));
  if (name == "length") return Value::integer(length());
  if (name == "revindex") return Value::integer(length() - l.index0);
  if (name == "revindex0") return Value::integer(length() - l.index0 - 1);
  if (name == "depth") return Value::integer(1);
  if (name == "depth0") return Value::integer(0);
  if (name == "previtem") {
    if (l.index0 <= 0) return Value::undefined("there is no previous item");
    return l.accepted[static_cast<size_t>(l.index0 - 1)];
  }
  if (name == "nextitem") {
    if (!loop_fetch(l, static_cast<size_t>(l.index0 + 1))) return Value::undefined("there is no next item");
    return l.accepted[static_cast<size_t>(l.index0 + 1)];
  }
  if (name == "cycle" || name == "changed") {
    auto c = std::make_shared<Callable>();
    c->kind = name == "cycle" ? Callable::Kind::loop_cycle : Callable::Kind::loop_changed;
    c->name = name;
    c->self = loopv;
    Value v;
    v.type = Type::callable;
    v.p = std::move(c);
    return v;
  }
  return Value::undefined("'LoopContext object' has no attribute '" + name + "'");
}

Value Renderer::getattr(const Value& obj, const std::string& name) {
  const auto missing = [&]() { return Value::undefined(cat("'", type_name(obj), " object' has no attribute '", name, "'")); };
  switch (obj.type) {
    case Type::undefined: fail_undefined(obj);
    case Type::dict:
      if (std::optional<Value> m = method_of(obj, name)) return *m;
      if (const Value* v = obj.map().find_str(name)) return *v;
      return missing();
    case Type::ns:
      if (const Value* v = obj.ns().find(name)) return *v;
      return missing();
    case Type::loop: return loop_attr(obj, name);
    default:
      if (std::optional<Value> m = method_of(obj, name)) return *m;
      return missing();
  }
}

Value Renderer::getitem(const Value& obj, const Value& key) {
  const auto by_attr = [&]() -> Value {
    // The sandbox's getitem falls back to the attribute of a string key.
    if (key.is_string() && obj.type != Type::dict) return getattr(obj, key.str());
    if (key.is_string()) {
      if (std::optional<Value> m = method_of(obj, key.str())) return *m;
    }
    return Value::undefined(cat("'", type_name(obj), " object' has no item ", key.is_string() ? cat("'", key.str(), "'") : to_str(key)));
  };
  switch (obj.type) {
    case Type::undefined: fail_undefined(obj);
    case Type::dict: {
      try {
        if (const Value* v = obj.map().find(key)) return *v;
      } catch (const Failure&) {  // an unhashable key: the sandbox catches the TypeError
      }
      return by_attr();
    }
    case Type::list:
    case Type::tuple:
    case Type::string:
    case Type::iterator: {
      const bool indexable = obj.type != Type::iterator || obj.iter().kind == IterData::Kind::range;
      if (!key.is_int_like() || !indexable) return by_attr();
      int64_t k = key.as_int();
      if (obj.is_string()) {
        const std::string& s = obj.str();
        bool ascii = true;
        charge_bytes(s.size());
        for (const char c : s) ascii &= static_cast<uint8_t>(c) < 0x80;
        const int64_t len = ascii ? static_cast<int64_t>(s.size()) : static_cast<int64_t>(cp_count(s));
        if (k < 0) k += len;
        if (k < 0 || k >= len) return Value::undefined("string index out of range");
        if (ascii) return Value::string(s.substr(static_cast<size_t>(k), 1));
        return Value::string(std::string(code_points(s)[static_cast<size_t>(k)]));
      }
      const std::vector<Value>& items = obj.type == Type::iterator ? obj.iter().items : obj.seq().items;
      const auto len = static_cast<int64_t>(items.size());
      if (k < 0) k += len;
      if (k < 0 || k >= len) return Value::undefined(type_name(obj) + " index out of range");
      return items[static_cast<size_t>(k)];
    }
    default: return by_attr();
  }
}

// ---- calls -------------------------------------------------------------------------------------

void Renderer::eval_args(const Expr& e, CallArgs& out) {
  for (const ExprPtr& a : e.args) out.pos.push_back(eval(*a));
  for (const auto& [k, a] : e.kwargs) out.kw.emplace_back(k, eval(*a));
}

Value Renderer::call(const Value& fn, const CallArgs& args) {
  if (fn.is_undefined()) fail_undefined(fn);
  if (fn.type != Type::callable) fail("'" + type_name(fn) + "' object is not callable");
  const Callable& c = fn.fn();
  switch (c.kind) {
    case Callable::Kind::global: return call_global(*this, c.name, args);
    case Callable::Kind::macro: return call_macro(c, args);
    case Callable::Kind::method: return call_method(*this, c.self, c.name, args);
    case Callable::Kind::loop_cycle: {
      if (!args.kw.empty()) fail("loop.cycle() takes no keyword arguments");
      if (args.pos.empty()) fail("no items for cycling given");
      const auto n = static_cast<int64_t>(args.pos.size());
      return args.pos[static_cast<size_t>(((c.self.loop().index0 % n) + n) % n)];
    }
    case Callable::Kind::loop_changed: {
      if (!args.kw.empty()) fail("loop.changed() takes no keyword arguments");
      LoopState& l = c.self.loop();
      bool same = l.last_changed && l.last_changed->size() == args.pos.size();
      for (size_t k = 0; same && k < args.pos.size(); ++k) same = equal((*l.last_changed)[k], args.pos[k]);
      if (same) return Value::boolean(false);
      l.last_changed = args.pos;
      return Value::boolean(true);
    }
  }
  return Value();
}

Value Renderer::call_macro(const Callable& m, const CallArgs& args) {
  const Node& n = *m.macro;
  if (call_depth_ >= limits().max_call_depth) {
    fail("macro calls nest deeper than " + std::to_string(limits().max_call_depth) + " (the renderer's limit)");
  }
  const size_t np = n.params.size();
  if (args.pos.size() > np && !n.uses_varargs) {
    fail("macro '" + n.name + "' takes not more than " + std::to_string(np) + " argument(s)");
  }
  auto s = child_of(m.closure);
  std::vector<bool> bound(np, false);
  for (size_t k = 0; k < np && k < args.pos.size(); ++k) {
    s->vars[n.params[k]] = args.pos[k];
    bound[k] = true;
  }
  auto extra_kw = std::make_shared<DictData>();
  for (const auto& [key, v] : args.kw) {
    const auto it = std::find(n.params.begin(), n.params.end(), key);
    const size_t k = static_cast<size_t>(it - n.params.begin());
    if (it != n.params.end() && !bound[k]) {
      s->vars[key] = v;
      bound[k] = true;
    } else if (n.uses_kwargs) {
      extra_kw->set(Value::string(key), v);
    } else {
      fail("macro '" + n.name + "' takes no keyword argument '" + key + "'");
    }
  }
  if (n.uses_varargs) {
    std::vector<Value> rest;
    for (size_t k = np; k < args.pos.size(); ++k) rest.push_back(args.pos[k]);
    s->vars["varargs"] = Value::tuple(std::move(rest));
  }
  if (n.uses_kwargs) s->vars["kwargs"] = Value::dict(extra_kw);
  ++call_depth_;
  ScopeGuard g(*this, s);
  const size_t first_default = np - n.defaults.size();
  for (size_t k = 0; k < np; ++k) {
    if (bound[k]) continue;
    s->vars[n.params[k]] = k >= first_default ? eval(*n.defaults[k - first_default])
                                             : Value::undefined("parameter '" + n.params[k] + "' was not provided");
  }
  std::string out;
  exec(n.body, out);
  --call_depth_;
  return Value::string(std::move(out));
}

Value Renderer::eval_call(const Expr& e) {
  const Value callee = eval(*e.subject);
  CallArgs args;
  eval_args(e, args);
  pos_ = e.pos;
  return call(callee, args);
}

// ---- expressions -------------------------------------------------------------------------------

Value Renderer::eval_slice(const Value& obj, const Expr& e) {
  std::optional<int64_t> part[3];
  bool bad_index = false;
  for (int k = 0; k < 3; ++k) {
    if (!e.args[static_cast<size_t>(k)]) continue;
    const Value v = eval(*e.args[static_cast<size_t>(k)]);
    if (v.is_int_like()) part[k] = v.as_int();
    else if (v.type != Type::none) bad_index = true;
  }
  pos_ = e.pos;
  if (obj.is_undefined()) fail_undefined(obj);
  const bool sequence = obj.type == Type::list || obj.type == Type::tuple || obj.is_string() ||
                        (obj.type == Type::iterator && obj.iter().kind == IterData::Kind::range);
  if (!sequence || bad_index) return Value::undefined(cat("'", type_name(obj), "' object cannot be sliced with these indices"));
  const int64_t step = part[2].value_or(1);
  if (obj.is_string()) {
    const std::vector<std::string_view> cps = code_points(obj.str());
    std::string out;
    for (const size_t i : slice_positions(static_cast<int64_t>(cps.size()), part[0], part[1], step)) out += cps[i];
    charge_bytes(out.size());
    return Value::string(std::move(out));
  }
  const std::vector<Value>& items = obj.type == Type::iterator ? obj.iter().items : obj.seq().items;
  std::vector<Value> out;
  for (const size_t i : slice_positions(static_cast<int64_t>(items.size()), part[0], part[1], step)) out.push_back(items[i]);
  charge_items(out.size());
  if (obj.type == Type::iterator) {  // a slice of a range is a range; as a list it prints differently
    fail("unsupported: slicing a range");
  }
  return obj.type == Type::tuple ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

Value Renderer::eval_compare(const Expr& e) {
  Value left = eval(*e.args[0]);
  for (size_t k = 0; k < e.cmp.size(); ++k) {
    Value right = eval(*e.args[k + 1]);
    pos_ = e.pos;
    bool r = false;
    switch (e.cmp[k]) {
      case CmpOp::eq: r = equal(left, right); break;
      case CmpOp::ne: r = !equal(left, right); break;
      case CmpOp::lt: r = compare(left, right, "<") == -1; break;
      case CmpOp::le: {
        const int c = compare(left, right, "<=");
        r = c == -1 || c == 0;
        break;
      }
      case CmpOp::gt: r = compare(left, right, ">") == 1; break;
      case CmpOp::ge: {
        const int c = compare(left, right, ">=");
        r = c == 1 || c == 0;
        break;
      }
      case CmpOp::in: r = contains(*this, right, left); break;
      case CmpOp::not_in: r = !contains(*this, right, left); break;
    }
    if (!r) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

Value Renderer::eval(const Expr& e) {
  guard_stack();
  charge(1);
  pos_ = e.pos;
  switch (e.kind) {
    case ExprKind::constant: return e.value;
    case ExprKind::name: return lookup(e.name);
    case ExprKind::getattr: {
      const Value obj = eval(*e.subject);
      pos_ = e.pos;
      return getattr(obj, e.name);
    }
    case ExprKind::getitem: {
      const Value obj = eval(*e.subject);
      const Value key = eval(*e.args[0]);
      pos_ = e.pos;
      return getitem(obj, key);
    }
    case ExprKind::slice: return eval_slice(eval(*e.subject), e);
    case ExprKind::call: return eval_call(e);
    case ExprKind::filter:
    case ExprKind::test: {
      const Value subject = eval(*e.subject);
      CallArgs args;
      eval_args(e, args);
      pos_ = e.pos;
      const bool filter = e.kind == ExprKind::filter;
      if (e.fn < 0) fail(std::string("no ") + (filter ? "filter" : "test") + " named '" + e.name + "'");
      if (filter) return apply_filter(*this, e.fn, subject, args);
      return Value::boolean(apply_test(*this, e.fn, subject, args));
    }
    case ExprKind::not_: return Value::boolean(!truthy(eval(*e.subject)));
    case ExprKind::neg:
    case ExprKind::pos: {
      const Value v = eval(*e.subject);
      pos_ = e.pos;
      if (v.is_undefined()) fail_undefined(v);
      const bool neg = e.kind == ExprKind::neg;
      if (v.is_int_like()) {
        if (neg && v.as_int() == INT64_MIN) fail("integer overflow (the renderer's integers are 64-bit; Python's are not)");
        return Value::integer(neg ? -v.as_int() : v.as_int());
      }
      if (v.type == Type::floating) return Value::floating(neg ? -v.f : v.f);
      fail(std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + type_name(v) + "'");
    }
    case ExprKind::binary: {
      const Value a = eval(*e.args[0]);
      const Value b = eval(*e.args[1]);
      pos_ = e.pos;
      return apply_binary(*this, e.op, a, b);
    }
    case ExprKind::concat: {
      std::string s;
      for (const ExprPtr& a : e.args) {
        const Value v = eval(*a);
        s += v.is_string() ? v.str() : to_str(v);
        check_size(s.size());
      }
      charge_bytes(s.size());
      return Value::string(std::move(s));
    }
    case ExprKind::compare: return eval_compare(e);
    case ExprKind::and_: {
      Value l = eval(*e.args[0]);
      return truthy(l) ? eval(*e.args[1]) : l;
    }
    case ExprKind::or_: {
      Value l = eval(*e.args[0]);
      return truthy(l) ? l : eval(*e.args[1]);
    }
    case ExprKind::cond:
      if (truthy(eval(*e.args[0]))) return eval(*e.args[1]);
      if (e.args[2]) return eval(*e.args[2]);
      return Value::undefined("the inline if-expression on line " + std::to_string(e.pos.line) +
                              " evaluated to false and no else section was defined.");
    case ExprKind::list:
    case ExprKind::tuple: {
      std::vector<Value> items;
      items.reserve(e.args.size());
      for (const ExprPtr& a : e.args) items.push_back(eval(*a));
      pos_ = e.pos;
      return e.kind == ExprKind::list ? Value::list(std::move(items)) : Value::tuple(std::move(items));
    }
    case ExprKind::dict: {
      auto d = std::make_shared<DictData>();
      for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
        Value key = eval(*e.args[k]);
        Value v = eval(*e.args[k + 1]);
        pos_ = e.pos;
        d->set(std::move(key), std::move(v));
      }
      return Value::dict(std::move(d));
    }
  }
  return Value();
}

}  // namespace nvfp4::io::chat

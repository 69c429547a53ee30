// The chat-template renderer's internals (include/nvfp4/chat_template.hpp is the API): Python-like
// values, the token stream, the syntax tree, and the renderer that walks it. Private to src/io/.
//
//   chat_template_value.cpp     values: str(), repr(), ==, <, truthiness, JSON in and out (tojson)
//   chat_template_lexer.cpp     jinja2's lexer: data, tags, comments, raw, whitespace control
//   chat_template_parser.cpp    jinja2's parser: statements and expressions into the tree below
//   chat_template_check.cpp     the compiler's checks after parsing (unknown filters and tests)
//   chat_template_eval.cpp      the renderer: scopes, statements, attribute access, calls
//   chat_template_ops.cpp       Python's binary operators and `in`
//   chat_template_pystr.cpp     Python's str operations (strip, split, replace, case, int(), float())
//   chat_template_filters.cpp   the filters and tests
//   chat_template_builtins.cpp  the str, dict and list methods, the global functions
//   chat_template.cpp           the public class: parse, tokenizer_config.json, render
//
// Every rule here is jinja2's (3.1) as transformers configures it; where a rule is Python's (str,
// int, float, dict), the Python function it mirrors is named beside it.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvfp4/chat_template.hpp"

namespace nvfp4::io::chat {

// A template failure inside the renderer, turned into nvfp4::Error ("<source>:<line>:<col>: ...")
// where the position is known. `raised`: from raise_exception (the message is the template's).
struct Failure {
  std::string message;
  bool raised = false;
};
[[noreturn]] void fail(std::string message);

// The limits of the render running on this thread (kLimits outside one), and its work count:
// charge() adds to it and fails past limits().max_work. Creating a string or a list charges its
// size, so no operation on big values escapes the count.
const ChatTemplateLimits& limits();
void charge(int64_t units);
inline void charge_bytes(size_t bytes) { charge(static_cast<int64_t>(bytes >> 5)); }
inline void charge_items(size_t items) { charge(static_cast<int64_t>(items)); }
void check_bytes(size_t bytes);  // a string about to hold `bytes`: fails past limits().max_string_bytes
void check_items(size_t items);  // a list about to hold `items`: fails past limits().max_list_items
class RenderBudget {
 public:
  explicit RenderBudget(const ChatTemplateLimits& l);
  ~RenderBudget();
  RenderBudget(const RenderBudget&) = delete;
  RenderBudget& operator=(const RenderBudget&) = delete;

  const ChatTemplateLimits& limits;
  int64_t work = 0;

 private:
  RenderBudget* saved_;
};

// Concatenation without operator+ chains (GCC 12 warns falsely on some of those, -Wrestrict).
template <class... A>
std::string cat(const A&... parts) {
  std::string s;
  ((s += parts), ...);
  return s;
}

// ---- values ------------------------------------------------------------------------------------

enum class Type : uint8_t {
  undefined,  // jinja2's default Undefined; p: the hint (std::string) or null
  none,
  boolean,
  integer,   // 64-bit; Python's bool is an int in arithmetic, not here in type tests
  floating,
  string,    // p: std::string (valid UTF-8); markup: a jinja2 Markup (from |safe or |escape)
  list,      // p: ListData
  tuple,     // p: ListData
  dict,      // p: DictData (insertion ordered, as Python's dict)
  iterator,  // p: IterData: a generator, a dict view or a range
  ns,        // p: Namespace (mutable, shared: {% set ns.x = ... %} is seen by every holder)
  loop,      // p: LoopState (the `loop` variable of a for loop)
  callable,  // p: Callable (a macro, a global function, a bound method)
};

struct ListData;
struct DictData;
struct IterData;
struct Namespace;
struct LoopState;
struct Callable;

struct Value {
  Type type = Type::undefined;
  bool markup = false;
  union {
    bool b;
    int64_t i;
    double f;
  };
  std::shared_ptr<void> p;

  Value() : i(0) {}
  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value floating(double v);
  static Value string(std::string s, bool markup = false);
  static Value list(std::vector<Value> items);
  static Value tuple(std::vector<Value> items);
  static Value dict(std::shared_ptr<DictData> d);

  bool is_undefined() const { return type == Type::undefined; }
  bool is_string() const { return type == Type::string; }
  bool is_number() const { return type == Type::integer || type == Type::floating || type == Type::boolean; }
  bool is_int_like() const { return type == Type::integer || type == Type::boolean; }  // Python int (bool too)
  int64_t as_int() const { return type == Type::boolean ? (b ? 1 : 0) : i; }          // is_int_like()
  double as_double() const { return type == Type::floating ? f : static_cast<double>(as_int()); }

  const std::string& str() const { return *static_cast<const std::string*>(p.get()); }
  const std::string* hint() const { return static_cast<const std::string*>(p.get()); }  // undefined
  const ListData& seq() const { return *static_cast<const ListData*>(p.get()); }        // list, tuple
  const DictData& map() const { return *static_cast<const DictData*>(p.get()); }
  IterData& iter() const { return *static_cast<IterData*>(p.get()); }
  Namespace& ns() const { return *static_cast<Namespace*>(p.get()); }
  LoopState& loop() const { return *static_cast<LoopState*>(p.get()); }
  const Callable& fn() const { return *static_cast<const Callable*>(p.get()); }
};

struct ListData {
  std::vector<Value> items;
  int depth = 1;  // nesting: 1 + the deepest item's
};

// Python dict semantics: keys compare as Python compares them (1 == 1.0 == True); a key given
// twice keeps its first position and its last value.
struct DictData {
  std::vector<std::pair<Value, Value>> items;
  int depth = 1;
  const Value* find(const Value& key) const;
  void set(Value key, Value value);  // building only; unhashable keys (list, dict) fail
  const Value* find_str(std::string_view key) const;

 private:
  std::unordered_map<std::string, size_t> str_index_;
};

struct IterData {
  enum class Kind : uint8_t { generator, dict_keys, dict_values, dict_items, range };
  Kind kind = Kind::generator;
  std::vector<Value> items;
  size_t pos = 0;                      // generator: items before pos are consumed
  int64_t start = 0, stop = 0, step = 1;  // range
  bool reusable() const { return kind != Kind::generator; }
};

struct Namespace {
  std::vector<std::pair<std::string, Value>> attrs;
  Value* find(std::string_view name);
  void set(const std::string& name, Value v);
};

struct Node;
struct Expr;
struct Scope;

// The `loop` of a for loop. The items come through the loop's `if` filter lazily, as jinja2's
// LoopContext pulls them from its filtered generator: `accepted` holds what passed so far, and
// loop.last / loop.length / loop.nextitem look ahead only when asked.
struct LoopState {
  std::vector<Value> source;
  size_t scan = 0;  // next source index to test
  std::vector<Value> accepted;
  bool filtered = false;  // source goes through the for's `if`
  const Node* node = nullptr;
  std::shared_ptr<Scope> outer;  // where the `if` is evaluated (with the target bound)
  int64_t index0 = -1;
  std::optional<std::vector<Value>> last_changed;
};

struct Callable {
  enum class Kind : uint8_t { global, macro, method, loop_cycle, loop_changed };
  Kind kind = Kind::global;
  std::string name;                // global function or method name
  Value self;                      // method: the object; loop_*: the loop
  const Node* macro = nullptr;     // macro: its definition
  std::shared_ptr<Scope> closure;  // macro: the scope it was defined in
};

// Python's str(), repr(), truthiness, ==, and ordering (<) of values. Ordering between types Python
// cannot order fails ("'<' not supported between instances of 'str' and 'int'").
std::string to_str(const Value& v);  // str(v); jinja2's Undefined gives ""
void append_repr(std::string& out, const Value& v);
bool truthy(const Value& v);
bool equal(const Value& a, const Value& b);
int compare(const Value& a, const Value& b, const char* op);  // <0, 0, >0
std::string type_name(const Value& v);                         // Python's: "str", "int", "NoneType"
std::string float_repr(double x);                              // Python's repr(float)
std::string undefined_message(const Value& v);                 // "'x' is undefined"
[[noreturn]] void fail_undefined(const Value& v);              // jinja2's UndefinedError

int value_depth(const Value& v);  // 0 for scalars
void check_depth(int depth);      // fails beyond limits().max_value_depth
Value from_json(const nlohmann::ordered_json& j, int depth = 0);

struct JsonStyle {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // none: one line
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};
void append_json(std::string& out, const Value& v, const JsonStyle& style, int level = 0);  // json.dumps

// UTF-8 (valid; code points through io/tokenizer/unicode.hpp) and Python's character classes.
bool valid_utf8(std::string_view s);
size_t utf8_valid_prefix(std::string_view s);  // bytes before the first ill-formed sequence
bool py_isspace(uint32_t cp);  // str.isspace() of one character; \s of Python's re
size_t cp_count(std::string_view s);
std::vector<std::string_view> code_points(std::string_view s);
std::string markup_escape(std::string_view s);  // markupsafe.escape

// ---- syntax tree ---------------------------------------------------------------------------------

struct Pos {
  int line = 1, col = 1;
};

using ExprPtr = std::unique_ptr<Expr>;
using NodePtr = std::unique_ptr<Node>;

enum class ExprKind : uint8_t {
  constant, name, getattr, getitem, slice, call, filter, test, not_, neg, pos, binary, concat,
  compare, and_, or_, cond, list, tuple, dict,
};
enum class BinOp : uint8_t { add, sub, mul, div, floordiv, mod, pow };
enum class CmpOp : uint8_t { eq, ne, lt, le, gt, ge, in, not_in };

struct Expr {
  ExprKind kind = ExprKind::constant;
  Pos pos;
  Value value;        // constant
  std::string name;   // name; getattr's attribute; filter or test name
  int fn = -1;        // filter, test: index in the builtin table; -1: unknown (fails when run)
  BinOp op = BinOp::add;
  std::vector<CmpOp> cmp;  // compare: one per operand after the first
  ExprPtr subject;         // getattr/getitem/slice/call/filter/test/unary: the operand (filter: null in a filter block)
  std::vector<ExprPtr> args;  // operands; items (dict: key, value, ...); positional arguments; slice: start, stop, step (may be null); cond: test, then, else (may be null)
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Target {
  enum class Kind : uint8_t { name, tuple, ns_attr };
  Kind kind = Kind::name;
  Pos pos;
  std::string name, attr;  // ns_attr: name.attr
  std::vector<Target> items;
};

enum class NodeKind : uint8_t {
  text, output, if_, for_, set, set_block, macro, filter_block, with, break_, continue_, scoped,
};

struct Node {
  NodeKind kind = NodeKind::text;
  Pos pos;
  std::string text;               // text
  std::vector<ExprPtr> exprs;     // output: the expressions; with: the values
  ExprPtr expr;                   // if: test; for: iterable; set: value
  ExprPtr cond;                   // for: the `if` filter
  ExprPtr filter;                 // set_block, filter_block: the filter chain (innermost subject null)
  Target target;                  // for, set, set_block
  std::vector<Target> targets;    // with
  std::vector<NodePtr> body, else_body;  // if: else_body holds the elif chain as a nested if
  std::string name;               // macro
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // for the last defaults.size() params
  bool uses_varargs = false, uses_kwargs = false;
};

struct Template {
  std::string source;  // the name in messages
  std::vector<NodePtr> body;
};

// Parses jinja2 template text (after newline normalisation) into a Template; nvfp4::Error on
// failure. (chat_template_lexer.cpp, chat_template_parser.cpp)
enum class Tok : uint8_t { data, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof };
struct Token {
  Tok type = Tok::eof;
  Pos pos;
  std::string text;  // data, name, string value, operator
  int64_t i = 0;
  double f = 0;
};
std::string normalize_source(std::string_view text);  // \r\n, \r -> \n; one final \n dropped
std::vector<Token> tokenize(std::string_view src, std::string_view source_name);
std::unique_ptr<Template> parse_template(std::string_view text, std::string_view source_name);
[[noreturn]] void syntax_error(std::string_view source_name, Pos pos, const std::string& message);
// After parsing (chat_template_check.cpp): unknown filters and tests where jinja2's compiler
// refuses them, the globals this renderer lacks, macros' use of varargs / kwargs / caller.
void check_names(Template& t);

// ---- builtins (chat_template_filters.cpp, chat_template_builtins.cpp) -----------------------------

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

// Arguments bound to parameter names as Python binds them: positional first, then by keyword;
// too many, unknown or repeated ones fail, naming `what`.
struct Params {
  std::vector<std::optional<Value>> v;
  bool has(size_t k) const { return v[k].has_value(); }
  const Value& get(size_t k) const { return *v[k]; }
  Value get_or(size_t k, Value d) const { return v[k] ? *v[k] : std::move(d); }
};
Params bind(const CallArgs& a, std::initializer_list<std::string_view> names, const std::string& what);
int64_t int_arg(const Value& v, const std::string& what);             // an int (or bool), else fails
const std::string& str_arg(const Value& v, const std::string& what);  // a string, else fails
Value make_iter(IterData::Kind kind, std::vector<Value> items);
Value generator(std::vector<Value> items);
Value soft_str(const Value& v);  // jinja2's soft_str: a string stays itself (Markup too), else str()

template <size_t N>
bool listed(const char* const (&names)[N], std::string_view name) {
  for (const char* n : names) {
    if (name == n) return true;
  }
  return false;
}

class Renderer;
using FilterFn = Value (*)(Renderer& r, const Value& subject, const CallArgs& args);
using TestFn = bool (*)(Renderer& r, const Value& subject, const CallArgs& args);

// The filters and tests this renderer has: an index for Expr::fn, or -1.
int find_filter(std::string_view name);
int find_test(std::string_view name);
// Whether jinja2 (3.1) has the filter or test built in (tojson included). A name jinja2 has and
// this renderer lacks is refused at parse time; a name neither has fails as jinja2 fails.
bool jinja_has_filter(std::string_view name);
bool jinja_has_test(std::string_view name);
Value apply_filter(Renderer& r, int fn, const Value& subject, const CallArgs& args);
bool apply_test(Renderer& r, int fn, const Value& subject, const CallArgs& args);

// Global functions (range, namespace, dict, raise_exception, strftime_now) as values, and the
// methods of str and dict. getattr of a method name gives a bound Callable.
std::vector<std::pair<std::string, Value>> global_functions();
Value call_global(Renderer& r, const std::string& name, const CallArgs& args);
std::optional<Value> method_of(const Value& self, const std::string& name);  // nullopt: not a method
bool string_method_supported(std::string_view name);  // a str method this renderer implements
Value call_method(Renderer& r, const Value& self, const std::string& name, const CallArgs& args);

// Python's str operations (chat_template_pystr.cpp). Case mapping fails on non-ASCII letters.
std::string str_upper(std::string_view s);
std::string str_lower(std::string_view s);
std::string str_capitalize(std::string_view s);  // str.capitalize
std::string str_title(std::string_view s);       // str.title
std::string jinja_title(std::string_view s);     // jinja2's title filter (words start after [-\s({\[<])
bool case_test(const Value& v, bool want_lower);  // str(v).islower() / .isupper()
std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> py_rsplit(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> py_splitlines(std::string_view s, bool keepends);
std::string py_replace(std::string_view s, std::string_view old, std::string_view with, int64_t count);
std::optional<int64_t> py_int(std::string_view text, int base);  // int(s, base); nullopt: ValueError
std::optional<double> py_float(std::string_view text);           // float(s); nullopt: ValueError

// Python's binary operators and `in` (chat_template_ops.cpp).
Value apply_binary(Renderer& r, BinOp op, const Value& a, const Value& b);
bool contains(Renderer& r, const Value& container, const Value& item);

// ---- the renderer (chat_template_eval.cpp) --------------------------------------------------------

struct Scope {
  std::shared_ptr<Scope> parent;
  std::unordered_map<std::string, Value> vars;
  const Value* find(const std::string& name) const;
};

class Renderer {
 public:
  Renderer(const Template& t, std::shared_ptr<Scope> context, std::optional<std::tm> now);
  ~Renderer();  // breaks the reference cycles a render can make (see track)
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;
  std::string run();

  // Values can form cycles (a macro held in the scope it closes over, a namespace holding itself,
  // a loop remembered in a namespace of its own outer scope): every scope a value captures, every
  // namespace and every loop is tracked, and emptied when the render ends.
  void track(const std::shared_ptr<Scope>& captured);
  void track(const std::shared_ptr<Namespace>& ns);
  void track(const std::shared_ptr<LoopState>& loop);

  void charge(int64_t units) { chat::charge(units); }
  void charge_bytes(size_t bytes) { chat::charge_bytes(bytes); }
  void check_size(size_t bytes) { check_bytes(bytes); }
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  Value call(const Value& fn, const CallArgs& args);
  std::vector<Value> iterate(const Value& v);  // Python's iter(): consumes a generator
  std::tm now(int& micros) const;  // strftime_now's clock: local time and its microseconds
  Value loop_attr(const Value& loop, const std::string& name);

 private:
  enum class Flow : uint8_t { normal, break_, continue_ };
  Flow exec(const std::vector<NodePtr>& body, std::string& out);
  Flow exec_node(const Node& n, std::string& out);
  void exec_for(const Node& n, std::string& out);
  Value eval(const Expr& e);
  Value eval_compare(const Expr& e);
  Value eval_call(const Expr& e);
  Value eval_slice(const Value& obj, const Expr& e);
  void eval_args(const Expr& e, CallArgs& out);
  Value call_macro(const Callable& m, const CallArgs& args);
  void assign(const Target& t, const Value& v, Scope& scope);
  bool loop_fetch(LoopState& l, size_t k);  // is accepted[k] there (pulling through the filter)?
  Value lookup(const std::string& name) const;
  void guard_stack() const;
  [[noreturn]] void rethrow(const Failure& f) const;

  const Template& t_;
  std::shared_ptr<Scope> scope_;
  std::optional<std::tm> now_;
  Pos pos_;
  int64_t iterations_ = 0;
  int call_depth_ = 0;
  uintptr_t stack_base_ = 0;
  std::vector<std::weak_ptr<Scope>> captured_scopes_;
  std::vector<std::weak_ptr<Namespace>> namespaces_;
  std::vector<std::weak_ptr<LoopState>> loops_;
  friend struct ScopeGuard;
};

}  // namespace nvfp4::io::chat

// jinja2's parser (jinja2/parser.py, 3.1) over the tokens of chat_template_lexer.cpp: the same
// grammar, precedence and quirks (filters bind tighter than unary minus, ** is left-associative,
// `x is test arg` takes one primary argument), building the tree of chat_template_internal.hpp.
//
// What jinja2 has and this renderer lacks is refused here, with its position: the tags include,
// import, from, extends, block, call, autoescape; recursive loops; *args / **kwargs in calls; the
// filters and tests not in chat_template_filters.cpp; and, after parsing (check_names,
// chat_template_check.cpp), the globals cycler, joiner, lipsum. A filter or test neither has is,
// as in jinja2, an error at parse time — except inside an `if` or an inline `x if c else y`,
// where jinja2 defers it to when it runs.
#include <algorithm>

#include "io/chat_template_internal.hpp"

namespace nvfp4::io::chat {

namespace {

const char* kUnsupportedTags[] = {"include", "import", "from", "extends", "block", "call", "autoescape"};

class Parser {
 public:
  Parser(std::vector<Token> tokens, std::string_view name) : t_(std::move(tokens)), name_(name) {}

  std::unique_ptr<Template> parse() {
    auto tpl = std::make_unique<Template>();
    tpl->source = std::string(name_);
    tpl->body = subparse({});
    if (cur().type != Tok::eof) unexpected("a tag or text");
    return tpl;
  }

 private:
  // ---- token stream ----
  const Token& cur() const { return t_[i_]; }
  const Token& look() const { return t_[std::min(i_ + 1, t_.size() - 1)]; }
  const Token& next() {
    const Token& t = t_[i_];
    if (i_ + 1 < t_.size()) ++i_;
    return t;
  }
  bool is_name(std::string_view v) const { return cur().type == Tok::name && cur().text == v; }
  bool is_op(std::string_view v) const { return cur().type == Tok::op && cur().text == v; }
  bool skip_name(std::string_view v) {
    if (!is_name(v)) return false;
    next();
    return true;
  }
  bool skip_op(std::string_view v) {
    if (!is_op(v)) return false;
    next();
    return true;
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::data: return "template text";
      case Tok::var_begin: return "'{{'";
      case Tok::var_end: return "'}}'";
      case Tok::block_begin: return "'{%'";
      case Tok::block_end: return "'%}'";
      case Tok::name: return "'" + t.text + "'";
      case Tok::string: return "a string";
      case Tok::integer:
      case Tok::floating: return "a number";
      case Tok::op: return "'" + t.text + "'";
      case Tok::eof: return "the end of the template";
    }
    return "?";
  }

  [[noreturn]] void error(Pos pos, const std::string& msg) const { syntax_error(name_, pos, msg); }
  [[noreturn]] void unexpected(const std::string& expected) const {
    std::string msg = "expected " + expected + ", got " + describe(cur());
    if (cur().type == Tok::eof && !open_.empty()) {
      msg += " (the innermost open block is '" + open_.back().first + "' at " + std::to_string(open_.back().second.line) +
             ":" + std::to_string(open_.back().second.col) + ")";
    }
    error(cur().pos, msg);
  }
  void expect(Tok type, const char* what) {
    if (cur().type != type) unexpected(what);
    next();
  }
  void expect_op(std::string_view op) {
    if (!is_op(op)) unexpected("'" + std::string(op) + "'");
    next();
  }
  std::string expect_name(const char* what = "a name") {
    if (cur().type != Tok::name) unexpected(what);
    return next().text;
  }

  struct Depth {
    Depth(Parser& p, Pos pos) : p_(p) {
      if (++p_.depth_ > kMaxTemplateNesting) {
        p_.error(pos, "the template nests deeper than " + std::to_string(kMaxTemplateNesting) +
                          " blocks, brackets and operators (the renderer's limit)");
      }
    }
    ~Depth() { --p_.depth_; }
    Parser& p_;
  };

  static ExprPtr make(ExprKind kind, Pos pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }
  static NodePtr make_node(NodeKind kind, Pos pos) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->pos = pos;
    return n;
  }

  // ---- statements ----
  std::vector<NodePtr> subparse(const std::vector<std::string_view>& end_tokens) {
    std::vector<NodePtr> body;
    for (;;) {
      switch (cur().type) {
        case Tok::data: {
          auto n = make_node(NodeKind::text, cur().pos);
          n->text = next().text;
          body.push_back(std::move(n));
          break;
        }
        case Tok::var_begin: {
          auto n = make_node(NodeKind::output, cur().pos);
          next();
          n->exprs.push_back(parse_tuple(false, true, {}, false));
          expect(Tok::var_end, "'}}'");
          body.push_back(std::move(n));
          break;
        }
        case Tok::block_begin: {
          next();
          for (const std::string_view e : end_tokens) {
            if (is_name(e)) return body;
          }
          body.push_back(parse_statement());
          expect(Tok::block_end, "'%}'");
          break;
        }
        case Tok::eof: return body;
        default: unexpected("template text or a tag");
      }
    }
  }

  std::vector<NodePtr> parse_statements(const std::vector<std::string_view>& end_tokens, bool drop_needle) {
    Depth d(*this, cur().pos);
    skip_op(":");  // jinja2 allows a Python-style colon: {% for x in xs: %}
    expect(Tok::block_end, "'%}'");
    std::vector<NodePtr> body = subparse(end_tokens);
    if (cur().type == Tok::eof) {
      std::string want;
      for (const std::string_view e : end_tokens) want += (want.empty() ? "{% " : " or {% ") + std::string(e) + " %}";
      unexpected(want);
    }
    if (drop_needle) next();
    return body;
  }

  NodePtr parse_statement() {
    if (cur().type != Tok::name) unexpected("a tag name");
    const std::string tag = cur().text;
    const Pos pos = cur().pos;
    open_.emplace_back(tag, pos);
    NodePtr n;
    if (tag == "for") n = parse_for();
    else if (tag == "if") n = parse_if();
    else if (tag == "set") n = parse_set();
    else if (tag == "macro") n = parse_macro();
    else if (tag == "filter") n = parse_filter_block();
    else if (tag == "with") n = parse_with();
    else if (tag == "print") n = parse_print();
    else if (tag == "break" || tag == "continue") n = parse_loop_control();
    else if (tag == "generation") n = parse_generation();
    else {
      for (const char* u : kUnsupportedTags) {
        if (tag == u) {
          error(pos, "unsupported: the '" + tag + "' tag (this renderer has no template loader and no call blocks; "
                     "see docs/tokenizers.md, \"Chat templates\")");
        }
      }
      error(pos, "unknown tag '" + tag + "'");
    }
    open_.pop_back();
    return n;
  }

  NodePtr parse_for() {
    auto n = make_node(NodeKind::for_, next().pos);
    n->target = parse_assign_target(true, false, "in", false);
    check_no_loop_target(n->target);
    if (!skip_name("in")) unexpected("'in'");
    n->expr = parse_tuple(false, false, "recursive", false);
    if (skip_name("if")) n->cond = parse_expression(true);
    if (is_name("recursive")) error(cur().pos, "unsupported: recursive for loops");
    ++loop_depth_;
    n->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    if (next().text != "endfor") {
      const int saved = loop_depth_;
      loop_depth_ = 0;  // jinja2 runs the else block after the Python loop: break there is not this loop's
      n->else_body = parse_statements({"endfor"}, true);
      loop_depth_ = saved;
    }
    return n;
  }

  void check_no_loop_target(const Target& t) {
    if (t.kind == Target::Kind::name && t.name == "loop") error(t.pos, "can't assign to the special loop variable in a for-loop target");
    for (const Target& x : t.items) check_no_loop_target(x);
  }

  NodePtr parse_if() {
    auto n = make_node(NodeKind::if_, next().pos);
    Node* node = n.get();
    for (;;) {
      node->expr = parse_tuple(false, false, {}, false);
      node->body = parse_statements({"elif", "else", "endif"}, false);
      const Token& t = next();
      if (t.text == "elif") {
        auto elif = make_node(NodeKind::if_, cur().pos);
        Node* next_node = elif.get();
        node->else_body.push_back(std::move(elif));
        node = next_node;
        continue;
      }
      if (t.text == "else") node->else_body = parse_statements({"endif"}, true);
      break;
    }
    return n;
  }

  NodePtr parse_set() {
    const Pos pos = next().pos;
    Target target = parse_assign_target(true, false, {}, true);
    if (skip_op("=")) {
      auto n = make_node(NodeKind::set, pos);
      n->target = std::move(target);
      n->expr = parse_tuple(false, true, {}, false);
      return n;
    }
    auto n = make_node(NodeKind::set_block, pos);
    n->target = std::move(target);
    if (is_op("|")) n->filter = parse_filter(nullptr, false);
    n->body = loop_free_body({"endset"});
    return n;
  }

  // A body jinja2 compiles as a separate function or buffer, where {% break %} cannot reach an
  // enclosing loop.
  std::vector<NodePtr> loop_free_body(const std::vector<std::string_view>& end) {
    const int saved = loop_depth_;
    loop_depth_ = 0;
    auto body = parse_statements(end, true);
    loop_depth_ = saved;
    return body;
  }

  NodePtr parse_macro() {
    auto n = make_node(NodeKind::macro, next().pos);
    n->name = expect_name("a macro name");
    expect_op("(");
    while (!is_op(")")) {
      if (!n->params.empty()) expect_op(",");
      const Pos p = cur().pos;
      const std::string param = expect_name("a parameter name");
      if (std::find(n->params.begin(), n->params.end(), param) != n->params.end()) error(p, "duplicate parameter '" + param + "'");
      if (skip_op("=")) {
        n->defaults.push_back(parse_expression(true));
      } else if (!n->defaults.empty()) {
        error(p, "non-default argument follows default argument");
      }
      n->params.push_back(param);
    }
    expect_op(")");
    n->body = loop_free_body({"endmacro"});
    return n;
  }

  NodePtr parse_filter_block() {
    auto n = make_node(NodeKind::filter_block, next().pos);
    n->filter = parse_filter(nullptr, true);
    n->body = loop_free_body({"endfilter"});
    return n;
  }

  NodePtr parse_with() {
    auto n = make_node(NodeKind::with, next().pos);
    while (cur().type != Tok::block_end) {
      if (!n->targets.empty()) expect_op(",");
      n->targets.push_back(parse_assign_target(true, false, {}, false));
      expect_op("=");
      n->exprs.push_back(parse_expression(true));
    }
    n->body = parse_statements({"endwith"}, true);
    return n;
  }

  NodePtr parse_print() {
    auto n = make_node(NodeKind::output, next().pos);
    while (cur().type != Tok::block_end) {
      if (!n->exprs.empty()) expect_op(",");
      n->exprs.push_back(parse_expression(true));
    }
    return n;
  }

  NodePtr parse_loop_control() {
    const Token& t = next();
    if (loop_depth_ == 0) error(t.pos, "'" + t.text + "' outside a for loop");
    return make_node(t.text == "break" ? NodeKind::break_ : NodeKind::continue_, t.pos);
  }

  // transformers' {% generation %} ... {% endgeneration %}: marks assistant text for its
  // assistant-token mask and renders the body as it is (a call block's body: its own scope).
  NodePtr parse_generation() {
    auto n = make_node(NodeKind::scoped, next().pos);
    n->body = loop_free_body({"endgeneration"});
    return n;
  }

  Target parse_assign_target(bool with_tuple, bool name_only, std::string_view extra_end, bool with_namespace) {
    Target t;
    t.pos = cur().pos;
    if (with_namespace && cur().type == Tok::name && look().type == Tok::op && look().text == ".") {
      t.kind = Target::Kind::ns_attr;
      t.name = next().text;
      next();
      t.attr = expect_name("an attribute name");
      return t;
    }
    if (name_only) {
      t.name = expect_name();
      return t;
    }
    ExprPtr e = with_tuple ? parse_tuple(true, true, extra_end, false) : parse_primary();
    return to_target(*e);
  }

  Target to_target(const Expr& e) const {
    Target t;
    t.pos = e.pos;
    if (e.kind == ExprKind::name) {
      t.name = e.name;
      return t;
    }
    if (e.kind == ExprKind::tuple) {
      t.kind = Target::Kind::tuple;
      for (const ExprPtr& x : e.args) t.items.push_back(to_target(*x));
      return t;
    }
    error(e.pos, "can't assign to this expression (a name or a tuple of names is needed)");
  }

  // ---- expressions ----
  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    Depth d(*this, cur().pos);
    const Pos pos = cur().pos;
    ExprPtr expr1 = parse_or();
    while (skip_name("if")) {
      auto c = make(ExprKind::cond, pos);
      ExprPtr test = parse_or();
      ExprPtr other = skip_name("else") ? parse_condexpr() : nullptr;
      c->args.push_back(std::move(test));
      c->args.push_back(std::move(expr1));
      c->args.push_back(std::move(other));
      expr1 = std::move(c);
    }
    return expr1;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      auto e = make(ExprKind::or_, next().pos);
      e->args.push_back(std::move(left));
      e->args.push_back(parse_and());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      auto e = make(ExprKind::and_, next().pos);
      e->args.push_back(std::move(left));
      e->args.push_back(parse_not());
      left = std::move(e);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      Depth d(*this, cur().pos);
      auto e = make(ExprKind::not_, next().pos);
      e->subject = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const Pos pos = cur().pos;
    ExprPtr expr = parse_math1();
    ExprPtr cmp;
    for (;;) {
      CmpOp op;
      if (cur().type == Tok::op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
                                    cur().text == ">" || cur().text == ">=")) {
        const std::string& t = next().text;
        op = t == "==" ? CmpOp::eq : t == "!=" ? CmpOp::ne : t == "<" ? CmpOp::lt : t == "<=" ? CmpOp::le : t == ">" ? CmpOp::gt : CmpOp::ge;
      } else if (skip_name("in")) {
        op = CmpOp::in;
      } else if (is_name("not") && look().type == Tok::name && look().text == "in") {
        next();
        next();
        op = CmpOp::not_in;
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(ExprKind::compare, pos);
        cmp->args.push_back(std::move(expr));
      }
      cmp->cmp.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(expr);
  }

  ExprPtr binary(BinOp op, Pos pos, ExprPtr l, ExprPtr r) {
    if (op == BinOp::mod && l->kind == ExprKind::constant && l->value.is_string()) {
      error(pos, "unsupported: printf-style string formatting ('...' % values)");
    }
    auto e = make(ExprKind::binary, pos);
    e->op = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      left = binary(t.text == "+" ? BinOp::add : BinOp::sub, t.pos, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto e = make(ExprKind::concat, cur().pos);
    e->args.push_back(std::move(first));
    while (skip_op("~")) e->args.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      const BinOp op = t.text == "*" ? BinOp::mul : t.text == "/" ? BinOp::div : t.text == "//" ? BinOp::floordiv : BinOp::mod;
      left = binary(op, t.pos, std::move(left), parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const Pos pos = next().pos;
      left = binary(BinOp::pow, pos, std::move(left), parse_unary(true));
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    Depth d(*this, cur().pos);
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      node = make(t.text == "-" ? ExprKind::neg : ExprKind::pos, t.pos);
      node->subject = parse_unary(false);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr constant(Value v, Pos pos) {
    auto e = make(ExprKind::constant, pos);
    e->value = std::move(v);
    return e;
  }

  ExprPtr parse_primary() {
    Depth d(*this, cur().pos);
    const Token& t = cur();
    const Pos pos = t.pos;
    switch (t.type) {
      case Tok::name: {
        const std::string v = next().text;
        if (v == "true" || v == "True") return constant(Value::boolean(true), pos);
        if (v == "false" || v == "False") return constant(Value::boolean(false), pos);
        if (v == "none" || v == "None") return constant(Value::none(), pos);
        auto e = make(ExprKind::name, pos);
        e->name = v;
        return e;
      }
      case Tok::string: {
        std::string s = next().text;
        while (cur().type == Tok::string) s += next().text;  // adjacent literals join, as in Python
        return constant(Value::string(std::move(s)), pos);
      }
      case Tok::integer: return constant(Value::integer(next().i), pos);
      case Tok::floating: return constant(Value::floating(next().f), pos);
      case Tok::op:
        if (t.text == "(") {
          next();
          ExprPtr e = parse_tuple(false, true, {}, true);
          expect_op(")");
          return e;
        }
        if (t.text == "[") return parse_list();
        if (t.text == "{") return parse_dict();
        break;
      default: break;
    }
    unexpected("an expression");
  }

  bool is_tuple_end(std::string_view extra_end) const {
    if (cur().type == Tok::var_end || cur().type == Tok::block_end || is_op(")")) return true;
    return !extra_end.empty() && is_name(extra_end);
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, std::string_view extra_end, bool explicit_parens) {
    const Pos pos = cur().pos;
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    for (;;) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      args.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) unexpected("an expression");
    }
    auto e = make(ExprKind::tuple, pos);
    e->args = std::move(args);
    return e;
  }

  ExprPtr parse_list() {
    auto e = make(ExprKind::list, next().pos);
    while (!is_op("]")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("]")) break;
      e->args.push_back(parse_expression(true));
    }
    expect_op("]");
    return e;
  }

  ExprPtr parse_dict() {
    auto e = make(ExprKind::dict, next().pos);
    while (!is_op("}")) {
      if (!e->args.empty()) expect_op(",");
      if (is_op("}")) break;
      e->args.push_back(parse_expression(true));
      expect_op(":");
      e->args.push_back(parse_expression(true));
    }
    expect_op("}");
    return e;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    for (;;) {
      if (is_op(".") || is_op("[")) node = parse_subscript(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    for (;;) {
      if (is_op("|")) node = parse_filter(std::move(node), false);
      else if (is_name("is")) node = parse_test(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  ExprPtr parse_subscript(ExprPtr node) {
    const Token& t = next();
    if (t.text == ".") {
      const Token& a = cur();
      if (a.type == Tok::name) {
        auto e = make(ExprKind::getattr, t.pos);
        e->subject = std::move(node);
        e->name = next().text;
        return e;
      }
      if (a.type != Tok::integer) unexpected("a name or a number after '.'");
      auto e = make(ExprKind::getitem, t.pos);
      e->subject = std::move(node);
      e->args.push_back(constant(Value::integer(next().i), a.pos));
      return e;
    }
    const Pos pos = t.pos;
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    if (args.size() == 1 && args[0]->kind == ExprKind::slice) {
      args[0]->subject = std::move(node);
      return std::move(args[0]);
    }
    auto e = make(ExprKind::getitem, pos);
    e->subject = std::move(node);
    if (args.size() == 1) {
      e->args.push_back(std::move(args[0]));
    } else {
      for (const ExprPtr& a : args) {
        if (a->kind == ExprKind::slice) error(a->pos, "unsupported: a slice inside a tuple subscript");
      }
      auto tuple = make(ExprKind::tuple, pos);
      tuple->args = std::move(args);
      e->args.push_back(std::move(tuple));
    }
    return e;
  }

  ExprPtr parse_subscribed() {
    const Pos pos = cur().pos;
    auto s = make(ExprKind::slice, pos);
    if (is_op(":")) {
      next();
      s->args.push_back(nullptr);
    } else {
      ExprPtr node = parse_expression(true);
      if (!is_op(":")) return node;
      next();
      s->args.push_back(std::move(node));
    }
    if (is_op(":")) s->args.push_back(nullptr);
    else if (!is_op("]") && !is_op(",")) s->args.push_back(parse_expression(true));
    else s->args.push_back(nullptr);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) s->args.push_back(parse_expression(true));
      else s->args.push_back(nullptr);
    } else {
      s->args.push_back(nullptr);
    }
    return s;
  }

  void parse_call_args(Expr& e) {
    const Pos pos = cur().pos;
    expect_op("(");
    bool require_comma = false;
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) error(cur().pos, "unsupported: *args and **kwargs in a call");
      if (cur().type == Tok::name && look().type == Tok::op && look().text == "=") {
        const Pos kpos = cur().pos;
        std::string key = next().text;
        next();
        for (const auto& [k, v] : e.kwargs) {
          if (k == key) error(kpos, "keyword argument repeated: " + key);
        }
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) error(pos, "invalid syntax for function call expression (a positional argument after a keyword one)");
        e.args.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr node) {
    // A method of a string literal is known now: one this renderer lacks ('{}'.format) is refused.
    if (node->kind == ExprKind::getattr && node->subject->kind == ExprKind::constant && node->subject->value.is_string() &&
        method_of(node->subject->value, node->name) && !string_method_supported(node->name)) {
      error(node->pos, "unsupported: the str method '" + node->name + "'");
    }
    auto e = make(ExprKind::call, node->pos);  // errors point at the callee: raise_exception(...)
    e->subject = std::move(node);
    parse_call_args(*e);
    return e;
  }

  std::string dotted_name() {
    std::string name = expect_name();
    while (skip_op(".")) {
      name += '.';
      name += expect_name();
    }
    return name;
  }

  ExprPtr parse_filter(ExprPtr node, bool start_inline) {
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      start_inline = false;
      const Pos pos = cur().pos;
      auto e = make(ExprKind::filter, pos);
      e->name = dotted_name();
      e->fn = find_filter(e->name);
      if (e->fn < 0 && jinja_has_filter(e->name)) {
        error(pos, "unsupported: the filter '" + e->name + "' (see docs/tokenizers.md, \"Chat templates\", for the filters supported)");
      }
      if (is_op("(")) parse_call_args(*e);
      check_named_argument(*e, e->name == "map" ? 0 : -1, e->name == "select" || e->name == "reject" ? 0
                                                            : e->name == "selectattr" || e->name == "rejectattr" ? 1 : -1);
      e->subject = std::move(node);
      node = std::move(e);
    }
    return node;
  }

  // map('filter'), select('test'), selectattr('attr', 'test'): a literal name jinja2 has and this
  // renderer lacks is refused now rather than when it runs.
  void check_named_argument(const Expr& e, int filter_arg, int test_arg) const {
    auto literal = [&](int k) -> const Expr* {
      if (k < 0 || k >= static_cast<int>(e.args.size())) return nullptr;
      const Expr* a = e.args[static_cast<size_t>(k)].get();
      return a->kind == ExprKind::constant && a->value.is_string() ? a : nullptr;
    };
    if (const Expr* a = literal(filter_arg); a && find_filter(a->value.str()) < 0 && jinja_has_filter(a->value.str())) {
      error(a->pos, "unsupported: the filter '" + a->value.str() + "'");
    }
    if (const Expr* a = literal(test_arg); a && find_test(a->value.str()) < 0 && jinja_has_test(a->value.str())) {
      error(a->pos, "unsupported: the test '" + a->value.str() + "'");
    }
  }

  ExprPtr parse_test(ExprPtr node) {
    const Pos pos = next().pos;
    const bool negated = skip_name("not");
    const Pos npos = cur().pos;
    auto e = make(ExprKind::test, npos);
    e->name = dotted_name();
    e->fn = find_test(e->name);
    if (e->fn < 0 && jinja_has_test(e->name)) {
      error(npos, "unsupported: the test '" + e->name + "' (see docs/tokenizers.md, \"Chat templates\", for the tests supported)");
    }
    if (is_op("(")) {
      parse_call_args(*e);
    } else if ((cur().type == Tok::name || cur().type == Tok::string || cur().type == Tok::integer ||
                cur().type == Tok::floating || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) error(cur().pos, "you cannot chain multiple tests with 'is'");
      e->args.push_back(parse_postfix(parse_primary()));
    }
    e->subject = std::move(node);
    if (!negated) return e;
    auto n = make(ExprKind::not_, pos);
    n->subject = std::move(e);
    return n;
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  std::string_view name_;
  int depth_ = 0;
  int loop_depth_ = 0;
  std::vector<std::pair<std::string, Pos>> open_;  // the tags being parsed, for end-of-template errors
};

}  // namespace

std::unique_ptr<Template> parse_template(std::string_view text, std::string_view source_name) {
  const std::string src = normalize_source(text);
  if (const size_t ok = utf8_valid_prefix(src); ok != src.size()) {
    const std::string_view before = std::string_view(src).substr(0, ok);
    const size_t nl = before.rfind('\n');
    const auto line = static_cast<int>(std::count(before.begin(), before.end(), '\n')) + 1;
    const auto col = static_cast<int>(cp_count(before.substr(nl == std::string_view::npos ? 0 : nl + 1))) + 1;
    syntax_error(source_name, Pos{line, col}, "the template is not valid UTF-8");
  }
  auto tpl = Parser(tokenize(src, source_name), source_name).parse();
  check_names(*tpl);
  return tpl;
}

}  // namespace nvfp4::io::chat

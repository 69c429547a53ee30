// The checks jinja2's compiler makes after parsing, which the renderer needs as it does: unknown
// filters and tests, the globals jinja2 has and this renderer lacks, and which macros read varargs,
// kwargs or caller.
//
// jinja2's compiler fails on an unknown filter or test when it compiles it, unless the expression
// sits in a "soft" frame: the test and the branches of an `if`, and the parts of an inline
// `a if c else b`; there it fails only when it runs. A for loop's body, a macro, a set or filter
// block start hard frames again.
#include "io/chat_template_internal.hpp"

namespace nvfp4::io::chat {

namespace {

const char* kUnsupportedGlobals[] = {"cycler", "joiner", "lipsum"};

class NameCheck {
 public:
  explicit NameCheck(std::string_view source) : source_(source) {}

  void nodes(const std::vector<NodePtr>& body, bool soft) {
    for (const NodePtr& n : body) node(*n, soft);
  }

 private:
  void node(Node& n, bool soft) {
    switch (n.kind) {
      case NodeKind::if_:
        expr(n.expr.get(), true);
        nodes(n.body, true);
        nodes(n.else_body, true);
        return;
      case NodeKind::for_:
        expr(n.expr.get(), soft);
        expr(n.cond.get(), false);
        nodes(n.body, false);
        nodes(n.else_body, false);
        return;
      case NodeKind::macro: {
        Macro* saved = macro_;
        Macro m;
        macro_ = &m;
        for (const ExprPtr& d : n.defaults) expr(d.get(), false);
        nodes(n.body, false);
        macro_ = saved;
        if (m.caller) syntax_error(source_, n.pos, "unsupported: 'caller' in a macro (call blocks)");
        n.uses_varargs = m.varargs;
        n.uses_kwargs = m.kwargs;
        return;
      }
      case NodeKind::set_block:
      case NodeKind::filter_block:
      case NodeKind::scoped:
        expr(n.filter.get(), false);
        nodes(n.body, false);
        return;
      case NodeKind::with:
        for (const ExprPtr& e : n.exprs) expr(e.get(), soft);
        nodes(n.body, false);
        return;
      default:
        for (const ExprPtr& e : n.exprs) expr(e.get(), soft);
        expr(n.expr.get(), soft);
        return;
    }
  }

  void expr(Expr* e, bool soft) {
    if (!e) return;
    if (e->kind == ExprKind::cond) soft = true;
    if ((e->kind == ExprKind::filter || e->kind == ExprKind::test) && e->fn < 0 && !soft) {
      syntax_error(source_, e->pos, std::string("no ") + (e->kind == ExprKind::filter ? "filter" : "test") + " named '" + e->name + "'");
    }
    if (e->kind == ExprKind::name) {
      for (const char* g : kUnsupportedGlobals) {
        if (e->name == g) syntax_error(source_, e->pos, "unsupported: the global '" + e->name + "'");
      }
      if (macro_) {
        macro_->varargs |= e->name == "varargs";
        macro_->kwargs |= e->name == "kwargs";
        macro_->caller |= e->name == "caller";
      }
    }
    expr(e->subject.get(), soft);
    for (const ExprPtr& a : e->args) expr(a.get(), soft);
    for (auto& [k, a] : e->kwargs) expr(a.get(), soft);
  }

  struct Macro {
    bool varargs = false, kwargs = false, caller = false;
  };
  std::string_view source_;
  Macro* macro_ = nullptr;
};

}  // namespace

void check_names(Template& t) { NameCheck(t.source).nodes(t.body, false); }

}  // namespace nvfp4::io::chat

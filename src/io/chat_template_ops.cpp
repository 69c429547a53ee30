// Python's binary operators (+ - * / // % **) and `in` on the chat-template renderer's values, as
// Python defines them for int, float, str, list and tuple (floor division and modulo round toward
// minus infinity; int / int is a float), with markupsafe's rule for Markup + str (the str is
// escaped), 64-bit integers (an overflow is an error: Python's ints do not overflow) and the
// renderer's size limits.
#include <cmath>

#include "io/chat_template_internal.hpp"

namespace nvfp4::io::chat {

namespace {

bool checked_add(int64_t a, int64_t b, int64_t& r) { return !__builtin_add_overflow(a, b, &r); }
bool checked_sub(int64_t a, int64_t b, int64_t& r) { return !__builtin_sub_overflow(a, b, &r); }
bool checked_mul(int64_t a, int64_t b, int64_t& r) { return !__builtin_mul_overflow(a, b, &r); }

[[noreturn]] void overflow() { fail("integer overflow (the renderer's integers are 64-bit; Python's are not)"); }

[[noreturn]] void bad_operands(const char* op, const Value& a, const Value& b) {
  fail(std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
}

// Python's float divmod (floatobject.c _float_div_mod).
void float_divmod(double vx, double wx, double& floordiv, double& mod) {
  if (wx == 0) fail("float division by zero");
  mod = std::fmod(vx, wx);
  double div = (vx - mod) / wx;
  if (mod != 0) {
    if ((wx < 0) != (mod < 0)) {
      mod += wx;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, wx);
  }
  if (div != 0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, vx / wx);
  }
}

std::string repeat(const std::string& s, int64_t n, Renderer& r) {
  if (n <= 0 || s.empty()) return {};
  if (static_cast<double>(s.size()) * static_cast<double>(n) > static_cast<double>(limits().max_string_bytes)) {
    check_bytes(static_cast<size_t>(limits().max_string_bytes) + 1);
  }
  std::string out;
  out.reserve(s.size() * static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) out += s;
  r.charge_bytes(out.size());
  return out;
}

}  // namespace

bool contains(Renderer& r, const Value& container, const Value& item) {
  switch (container.type) {
    case Type::undefined: return false;
    case Type::string:
      if (!item.is_string()) fail("'in <string>' requires string as left operand, not " + type_name(item));
      r.charge_bytes(container.str().size());
      return container.str().find(item.str()) != std::string::npos;
    case Type::dict: return container.map().find(item) != nullptr;
    case Type::list:
    case Type::tuple:
      charge_items(container.seq().items.size());
      for (const Value& x : container.seq().items) {
        if (equal(x, item)) return true;
      }
      return false;
    case Type::iterator: {
      IterData& it = container.iter();
      if (it.kind == IterData::Kind::dict_keys || it.kind == IterData::Kind::dict_items) {
        for (const Value& x : it.items) {
          if (equal(x, item)) return true;
        }
        return false;
      }
      if (it.reusable()) {
        for (const Value& x : it.items) {
          if (equal(x, item)) return true;
        }
        return false;
      }
      while (it.pos < it.items.size()) {  // a generator is consumed up to the match
        if (equal(it.items[it.pos++], item)) return true;
      }
      return false;
    }
    default: fail("argument of type '" + type_name(container) + "' is not iterable");
  }
}

Value apply_binary(Renderer& r, BinOp op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  const bool ints = a.is_int_like() && b.is_int_like();
  const bool nums = a.is_number() && b.is_number();
  int64_t n = 0;
  switch (op) {
    case BinOp::add:
      if (ints) return checked_add(a.as_int(), b.as_int(), n) ? Value::integer(n) : (overflow(), Value());
      if (nums) return Value::floating(a.as_double() + b.as_double());
      if (a.is_string() && b.is_string()) {
        // markupsafe: Markup + str escapes the str, and the result is Markup.
        const bool markup = a.markup || b.markup;
        std::string s = markup && !a.markup ? markup_escape(a.str()) : a.str();
        s += markup && !b.markup ? markup_escape(b.str()) : b.str();
        r.check_size(s.size());
        r.charge_bytes(s.size());
        return Value::string(std::move(s), markup);
      }
      if ((a.type == Type::list || a.type == Type::tuple) && a.type == b.type) {
        check_items(a.seq().items.size() + b.seq().items.size());
        std::vector<Value> items = a.seq().items;
        items.insert(items.end(), b.seq().items.begin(), b.seq().items.end());
        charge_items(items.size());
        return a.type == Type::list ? Value::list(std::move(items)) : Value::tuple(std::move(items));
      }
      bad_operands("+", a, b);
    case BinOp::sub:
      if (ints) return checked_sub(a.as_int(), b.as_int(), n) ? Value::integer(n) : (overflow(), Value());
      if (nums) return Value::floating(a.as_double() - b.as_double());
      bad_operands("-", a, b);
    case BinOp::mul: {
      if (ints) return checked_mul(a.as_int(), b.as_int(), n) ? Value::integer(n) : (overflow(), Value());
      if (nums) return Value::floating(a.as_double() * b.as_double());
      const Value* seq = a.is_int_like() ? &b : b.is_int_like() ? &a : nullptr;
      const Value* count = seq == &b ? &a : &b;
      if (seq && seq->is_string()) return Value::string(repeat(seq->str(), count->as_int(), r), seq->markup);
      if (seq && (seq->type == Type::list || seq->type == Type::tuple)) {
        const auto& src = seq->seq().items;
        const int64_t n = std::max<int64_t>(count->as_int(), 0);
        if (!src.empty() && static_cast<double>(src.size()) * static_cast<double>(n) > static_cast<double>(limits().max_list_items)) {
          check_items(static_cast<size_t>(limits().max_list_items) + 1);
        }
        std::vector<Value> items;
        for (int64_t k = 0; k < n && !src.empty(); ++k) items.insert(items.end(), src.begin(), src.end());
        charge_items(items.size());
        return seq->type == Type::list ? Value::list(std::move(items)) : Value::tuple(std::move(items));
      }
      bad_operands("*", a, b);
    }
    case BinOp::div:
      if (!nums) bad_operands("/", a, b);
      if (b.as_double() == 0) fail("division by zero");
      return Value::floating(a.as_double() / b.as_double());
    case BinOp::floordiv:
    case BinOp::mod: {
      if (a.is_string() && op == BinOp::mod) fail("unsupported: printf-style string formatting ('...' % values)");
      if (!nums) bad_operands(op == BinOp::mod ? "%" : "//", a, b);
      if (ints) {
        const int64_t x = a.as_int(), y = b.as_int();
        if (y == 0) fail("integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) {
          if (op == BinOp::mod) return Value::integer(0);
          overflow();
        }
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          m += y;
          q -= 1;
        }
        return Value::integer(op == BinOp::mod ? m : q);
      }
      double fd = 0, md = 0;
      float_divmod(a.as_double(), b.as_double(), fd, md);
      return Value::floating(op == BinOp::mod ? md : fd);
    }
    case BinOp::pow: {
      if (!nums) bad_operands("** or pow()", a, b);
      if (ints && b.as_int() >= 0) {
        int64_t base = a.as_int(), ex = b.as_int(), acc = 1;
        while (ex > 0) {
          if ((ex & 1) && !checked_mul(acc, base, acc)) overflow();
          ex >>= 1;
          if (ex > 0 && !checked_mul(base, base, base)) overflow();
        }
        return Value::integer(acc);
      }
      const double x = a.as_double(), y = b.as_double();
      if (x == 0 && y < 0) fail("0.0 cannot be raised to a negative power");
      if (x < 0 && y != std::floor(y)) fail("unsupported: a negative number to a fractional power (a complex number in Python)");
      const double v = std::pow(x, y);
      if (std::isinf(v) && std::isfinite(x) && std::isfinite(y)) fail("numerical result out of range (float power)");
      return Value::floating(v);
    }
  }
  return Value();
}

}  // namespace nvfp4::io::chat

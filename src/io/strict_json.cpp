// Strict JSON parsing (src/io/strict_json.hpp): nlohmann's SAX events into a DOM, stopping at
// the first duplicate key at any depth.
#include "io/strict_json.hpp"

#include <utility>
#include <vector>

namespace nvfp4::io {

using json = nlohmann::json;

namespace {

// Builds the DOM from nlohmann's SAX events and stops at the first duplicate key.
//
// nlohmann keeps the last of two equal keys without a word; a safetensors header with a tensor
// listed twice is ambiguous (which offsets are right?), so every object at every depth is
// checked. NOTE: nlohmann's own callback parser (json::parse with a callback) would also see the
// keys, but after every closed object it scans the whole parent for discarded values: quadratic,
// minutes for a header of 700k tensors. This builder is linear and, like nlohmann's parser, keeps
// no recursion, so deeply nested input cannot overflow the stack.
class StrictDomBuilder final : public json::json_sax_t {
 public:
  explicit StrictDomBuilder(StrictJson& r)
      : syntax_error_(r.syntax_error),
        duplicate_key_(r.duplicate_key),
        duplicate_depth_(r.duplicate_depth),
        top_key_(r.top_key),
        root_(r.value) {}

  bool null() override { return place(json(nullptr)); }
  bool boolean(bool v) override { return place(json(v)); }
  bool number_integer(number_integer_t v) override { return place(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return place(json(v)); }
  bool number_float(number_float_t v, const string_t& /*text*/) override { return place(json(v)); }
  bool string(string_t& v) override { return place(json(std::move(v))); }
  bool binary(binary_t& v) override { return place(json::binary(std::move(v))); }  // not in JSON text

  bool start_object(std::size_t /*elements*/) override { return open(json::object()); }
  bool start_array(std::size_t /*elements*/) override { return open(json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    auto& object = *stack_.back()->get_ptr<json::object_t*>();
    if (stack_.size() == 1) top_key_ = k;
    const auto [it, inserted] = object.try_emplace(k);
    if (!inserted) {
      duplicate_key_ = k;
      duplicate_depth_ = stack_.size();
      return false;  // stops the parse
    }
    slot_ = &it->second;
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/, const json::exception& e) override {
    syntax_error_ = e.what();
    return false;
  }

  // What stopped the parse, for the caller's message.
  std::optional<std::string>& syntax_error_;
  std::optional<std::string>& duplicate_key_;
  size_t& duplicate_depth_;
  std::string& top_key_;  // the last key of the top-level object

 private:
  // Stores v where the grammar puts it (root, next array element, or the slot of the last key)
  // and returns its address.
  json* put(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      auto& array = *top.get_ptr<json::array_t*>();
      array.push_back(std::move(v));
      return &array.back();  // stable while it is the innermost open container
    }
    *slot_ = std::move(v);
    return slot_;
  }
  bool place(json&& v) {
    put(std::move(v));
    return true;
  }
  bool open(json&& container) {
    stack_.push_back(put(std::move(container)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }

  json& root_;
  std::vector<json*> stack_;  // open containers, innermost last
  json* slot_ = nullptr;      // value slot of the last key read
};

}  // namespace

StrictJson parse_strict_json(std::string_view text) {
  StrictJson r;
  StrictDomBuilder builder(r);
  try {
    r.ok = json::sax_parse(text.begin(), text.end(), &builder, json::input_format_t::json, /*strict=*/true,
                           /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    r.ok = false;
    r.syntax_error = e.what();
  }
  return r;
}

}  // namespace nvfp4::io

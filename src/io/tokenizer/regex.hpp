// Regular expressions for tokenizer patterns (Split, Replace, the byte-level and GPT-style word
// patterns): PCRE2 in UTF + Unicode-property mode with its JIT, which has the look-ahead and
// \p{..} classes those patterns use. Matching is bounded: a pattern that back-tracks past the
// match limit on some input is an nvfp4::Error, not a hang. Private to src/io/.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace nvfp4::io::hf {

class Regex {
 public:
  // Compiles `pattern` (Oniguruma / PCRE syntax as tokenizer.json files use). `where` names the
  // file and JSON path for errors.
  Regex(std::string_view pattern, const std::string& where);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Every non-overlapping match of the pattern in `s` (valid UTF-8), left to right, as
  // (start, end) byte offsets. After an empty match the search resumes one character later (as
  // Oniguruma's iterator does).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;
  // The same matches, each handed to on_match(start, end) as it is found.
  template <typename F>
  void find_each(std::string_view s, F&& on_match) const {
    find_each_impl(s, &on_match, [](void* f, size_t a, size_t b) { (*static_cast<std::remove_reference_t<F>*>(f))(a, b); });
  }

  const std::string& pattern() const { return pattern_; }

 private:
  void find_each_impl(std::string_view s, void* ctx, void (*cb)(void*, size_t, size_t)) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string pattern_, where_;
};

}  // namespace nvfp4::io::hf

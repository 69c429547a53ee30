// Normalizers, pre-tokenizers, post-processors and decoders of the Hugging Face tokenizer
// pipeline, each as the reference library defines the component of the same name.
#include <algorithm>
#include <utility>

#include "io/tokenizer/pipeline.hpp"
#include "io/tokenizer/unicode.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::io::hf {

namespace {

using Matches = std::vector<std::pair<size_t, size_t>>;

// Non-overlapping occurrences of a literal, left to right (the reference escapes a string
// pattern into a regex: the same matches).
void find_literal(std::string_view s, std::string_view lit, Matches& out) {
  if (lit.empty()) return;
  size_t at = 0;
  while ((at = s.find(lit, at)) != std::string_view::npos) {
    out.emplace_back(at, at + lit.size());
    at += lit.size();
  }
}

// A pattern: a literal string or a regex.
struct Pattern {
  std::string literal;
  std::unique_ptr<Regex> regex;
  Pattern(std::string p, bool is_regex, const std::string& where) {
    if (is_regex) regex = std::make_unique<Regex>(p, where);
    else literal = std::move(p);
  }
  void find(std::string_view s, Matches& out) const {
    if (regex) regex->find_all(s, out);
    else find_literal(s, literal, out);
  }
};

// The reference's split of one piece, streamed: the piece's matches become a cover of it (the
// parts between matches are non-matches), each part flagged (inverted when asked), then joined or
// removed by the behavior; each kept, non-empty part goes to f. One part of look-behind (a
// pending group) is all any behavior needs:
//   Contiguous          a part joins the group before it when both are matches or both are not;
//   MergedWithPrevious  a match joins the group before it when that group ended in a non-match;
//   MergedWithNext      a match joins the part after it when that part is a non-match;
//   Isolated / Removed  every part is its own group; Removed drops the matches.
class PartSink {
 public:
  PartSink(std::string_view text, bool at_start, SplitBehavior b, bool invert, WordFn f)
      : text_(text), at_start_(at_start), b_(b), invert_(invert), f_(f) {}

  void part(size_t a, size_t e, bool match) {
    match ^= invert_;
    switch (b_) {
      case SplitBehavior::isolated:
        out(a, e);
        break;
      case SplitBehavior::removed:
        if (!match) out(a, e);
        break;
      case SplitBehavior::contiguous:
        if (have_ && match == prev_match_) {
          pe_ = e;
        } else {
          flush();
          open(a, e);
        }
        break;
      case SplitBehavior::merged_with_previous:
        if (have_ && match && !prev_match_) {
          pe_ = e;
        } else {
          flush();
          open(a, e);
        }
        break;
      case SplitBehavior::merged_with_next:
        if (have_ && pending_match_ && !match) {  // the pending match starts this part's group
          out(pa_, e);
          have_ = false;
        } else {
          flush();
          if (match) {
            open(a, e);
            pending_match_ = true;
          } else {
            out(a, e);
          }
        }
        break;
    }
    prev_match_ = match;
  }
  // Cover from a stream of matches: call match(a, e) for each, then finish().
  void match(size_t a, size_t e) {
    if (prev_end_ != a) part(prev_end_, a, false);
    part(a, e, true);
    prev_end_ = e;
  }
  void finish() {
    if (text_.empty()) part(0, 0, false);
    else if (prev_end_ != text_.size()) part(prev_end_, text_.size(), false);
    flush();
  }

 private:
  void open(size_t a, size_t e) {
    have_ = true;
    pending_match_ = false;
    pa_ = a;
    pe_ = e;
  }
  void flush() {
    if (have_) out(pa_, pe_);
    have_ = false;
  }
  void out(size_t a, size_t e) {
    if (e > a) f_(text_.substr(a, e - a), at_start_ && a == 0);
  }
  std::string_view text_;
  bool at_start_;
  SplitBehavior b_;
  bool invert_;
  WordFn f_;
  bool have_ = false, pending_match_ = false, prev_match_ = false;
  size_t pa_ = 0, pe_ = 0, prev_end_ = 0;
};

// Matches of single characters satisfying pred, each its own match.
template <typename Pred>
void find_chars(std::string_view s, Pred pred, PartSink& sink) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t a = i;
    const uint32_t c = next_cp(s, i);
    if (pred(c)) sink.match(a, i);
  }
}

// Literal occurrences into a sink.
void find_literal(std::string_view s, std::string_view lit, PartSink& sink) {
  if (lit.empty()) return;
  size_t at = 0;
  while ((at = s.find(lit, at)) != std::string_view::npos) {
    sink.match(at, at + lit.size());
    at += lit.size();
  }
}

// ---- normalizers ----

struct UnicodeNorm final : Normalizer {
  NormalForm form;
  explicit UnicodeNorm(NormalForm f) : form(f) {}
  void apply(std::string& s) const override {
    bool ascii = true;
    for (char c : s) ascii &= static_cast<uint8_t>(c) < 0x80;
    if (!ascii) s = normalize(s, form);
  }
};

struct Prepend final : Normalizer {
  std::string prefix;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix);
  }
};

struct Replace final : Normalizer {
  Pattern pattern;
  std::string content;
  Replace(std::string p, bool regex, std::string c, const std::string& where)
      : pattern(std::move(p), regex, where), content(std::move(c)) {}
  void apply(std::string& s) const override {
    Matches m;
    pattern.find(s, m);
    if (m.empty()) return;
    std::string out;
    out.reserve(s.size());
    size_t prev = 0;
    for (const auto& [a, b] : m) {
      out.append(s, prev, a - prev);
      out += content;
      prev = b;
    }
    out.append(s, prev, std::string::npos);
    s.swap(out);
  }
};

struct Lowercase final : Normalizer {
  void apply(std::string& s) const override { s = lowercase(s); }
};

struct Strip final : Normalizer {
  bool left, right;
  void apply(std::string& s) const override {
    size_t a = 0, b = s.size();
    if (left) {
      while (a < b) {
        size_t i = a;
        if (!is_white_space(next_cp(s, i))) break;
        a = i;
      }
    }
    if (right) {
      while (b > a) {
        const uint32_t c = last_cp(std::string_view(s).substr(a, b - a));
        if (!is_white_space(c)) break;
        size_t n = 1;
        while ((static_cast<uint8_t>(s[b - n]) & 0xC0) == 0x80) ++n;
        b -= n;
      }
    }
    s = s.substr(a, b - a);
  }
};

struct NormSeq final : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> parts;
  void apply(std::string& s) const override {
    for (const auto& p : parts) p->apply(s);
  }
};

// ---- pre-tokenizers ----

struct Split final : PreTokenizer {
  Pattern pattern;
  SplitBehavior behavior;
  bool invert;
  Split(std::string p, bool regex, SplitBehavior b, bool inv, const std::string& where)
      : pattern(std::move(p), regex, where), behavior(b), invert(inv) {}
  void each(std::string_view t, bool at_start, WordFn f) const override {
    PartSink sink(t, at_start, behavior, invert, f);
    if (pattern.regex) pattern.regex->find_each(t, [&](size_t a, size_t b) { sink.match(a, b); });
    else find_literal(t, pattern.literal, sink);
    sink.finish();
  }
};

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteLevel final : PreTokenizer {
  bool add_prefix_space, map_bytes;
  std::unique_ptr<Regex> regex;
  ByteLevel(bool prefix, bool use_regex, bool map) : add_prefix_space(prefix), map_bytes(map) {
    if (use_regex) regex = std::make_unique<Regex>(kGpt2Pattern, "the ByteLevel pre-tokenizer's pattern");
  }
  void each(std::string_view t, bool at_start, WordFn f) const override {
    std::string prefixed;
    if (add_prefix_space && t.front() != ' ') {
      prefixed.reserve(t.size() + 1);
      prefixed += ' ';
      prefixed.append(t);
      t = prefixed;
    }
    std::string mapped;
    auto deliver = [&](std::string_view w, bool s) {
      if (!map_bytes) {
        f(w, s);
        return;
      }
      const auto& chars = byte_level_chars();
      mapped.clear();
      for (char c : w) mapped += chars[static_cast<uint8_t>(c)];
      f(mapped, s);
    };
    if (!regex) {
      deliver(t, at_start);
      return;
    }
    PartSink sink(t, at_start, SplitBehavior::isolated, false, deliver);
    regex->find_each(t, [&](size_t a, size_t b) { sink.match(a, b); });
    sink.finish();
  }
};

struct Metaspace final : PreTokenizer {
  std::string rep;
  uint32_t rep_cp;
  PrependScheme scheme;
  bool split;
  void each(std::string_view t, bool at_start, WordFn f) const override {
    std::string s;
    s.reserve(t.size() + rep.size() * 4);
    for (char c : t) {
      if (c == ' ') s += rep;
      else s += c;
    }
    const bool starts = s.compare(0, rep.size(), rep) == 0;
    if (!starts && (scheme == PrependScheme::always || (scheme == PrependScheme::first && at_start))) s.insert(0, rep);
    if (!split) {
      if (!s.empty()) f(s, at_start);
      return;
    }
    PartSink sink(s, at_start, SplitBehavior::merged_with_next, false, f);
    find_literal(s, rep, sink);
    sink.finish();
  }
};

struct Digits final : PreTokenizer {
  bool individual;
  void each(std::string_view t, bool at_start, WordFn f) const override {
    PartSink sink(t, at_start, individual ? SplitBehavior::isolated : SplitBehavior::contiguous, false, f);
    find_chars(t, is_numeric, sink);
    sink.finish();
  }
};

struct Whitespace final : PreTokenizer {
  Regex regex{R"(\w+|[^\w\s]+)", "the Whitespace pre-tokenizer's pattern"};
  void each(std::string_view t, bool at_start, WordFn f) const override {
    PartSink sink(t, at_start, SplitBehavior::removed, true, f);
    regex.find_each(t, [&](size_t a, size_t b) { sink.match(a, b); });
    sink.finish();
  }
};

struct WhitespaceSplit final : PreTokenizer {
  void each(std::string_view t, bool at_start, WordFn f) const override {
    PartSink sink(t, at_start, SplitBehavior::removed, false, f);
    find_chars(t, is_white_space, sink);
    sink.finish();
  }
};

// Each part hands its words straight to the next by recursion: stack frames grow with the number
// of parts. A longer Sequence (a hostile file can list a million parts) runs in groups of
// kStreamed parts, the words between two groups collected in a buffer; the words are the same.
struct PreSeq final : PreTokenizer {
  static constexpr size_t kStreamed = 16;
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void run(size_t k, size_t end, std::string_view t, bool at_start, WordFn f) const {
    if (k == end) {
      f(t, at_start);
      return;
    }
    auto next = [&](std::string_view w, bool s) { run(k + 1, end, w, s, f); };
    parts[k]->each(t, at_start, next);
  }
  void each(std::string_view t, bool at_start, WordFn f) const override {
    if (parts.size() <= kStreamed) {
      run(0, parts.size(), t, at_start, f);
      return;
    }
    struct Words {
      std::string text;                          // the words, one after the other
      std::vector<std::pair<size_t, bool>> ends;  // (end offset in text, at_start) of each
    };
    Words cur{std::string(t), {{t.size(), at_start}}}, next;
    auto collect = [&](std::string_view w, bool s) {
      next.text.append(w);
      next.ends.emplace_back(next.text.size(), s);
    };
    for (size_t k = 0; k < parts.size(); k += kStreamed) {
      const size_t end = std::min(k + kStreamed, parts.size());
      next.text.clear();
      next.ends.clear();
      size_t a = 0;
      for (const auto& [e, s] : cur.ends) {
        const std::string_view w = std::string_view(cur.text).substr(a, e - a);
        a = e;
        if (end == parts.size()) run(k, end, w, s, f);
        else run(k, end, w, s, collect);
      }
      std::swap(cur, next);
    }
  }
};

// ---- post-processors ----

struct Template final : PostProcessor {
  std::vector<std::vector<int32_t>> items;  // empty vector: the sequence
  void apply(std::vector<int32_t>& ids, bool add_special) const override {
    if (!add_special) return;
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& it : items) {
      if (it.empty()) out.insert(out.end(), ids.begin(), ids.end());
      else out.insert(out.end(), it.begin(), it.end());
    }
    ids.swap(out);
  }
};

struct NoopProcessor final : PostProcessor {
  void apply(std::vector<int32_t>&, bool) const override {}
};

struct ProcSeq final : PostProcessor {
  std::vector<std::unique_ptr<PostProcessor>> parts;
  void apply(std::vector<int32_t>& ids, bool add_special) const override {
    for (const auto& p : parts) p->apply(ids, add_special);
  }
};

// ---- decoders ----

struct ByteLevelDecoder final : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      if (auto raw = byte_level_decode(t)) bytes += *raw;
      else bytes += t;
    }
    tokens.assign(1, utf8_replace_invalid(bytes));
  }
};

struct ReplaceDecoder final : Decoder {
  Replace r;
  ReplaceDecoder(std::string p, bool regex, std::string c, const std::string& where)
      : r(std::move(p), regex, std::move(c), where) {}
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) r.apply(t);
  }
};

struct ByteFallbackDecoder final : Decoder {
  static std::optional<uint8_t> byte_of(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return std::nullopt;
    // Rust's u8::from_str_radix(hex, 16): two hex digits, or '+' and one digit.
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (t[3] == '+') {
      const int d = hex(t[4]);
      return d < 0 ? std::nullopt : std::optional<uint8_t>(static_cast<uint8_t>(d));
    }
    const int h = hex(t[3]), l = hex(t[4]);
    if (h < 0 || l < 0) return std::nullopt;
    return static_cast<uint8_t>(h * 16 + l);
  }
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_replace_invalid(pending) == pending) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (auto& t : tokens) {
      if (const auto b = byte_of(t)) {
        pending += static_cast<char>(*b);
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

struct FuseDecoder final : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

struct StripDecoder final : Decoder {
  uint32_t content;
  size_t start, stop;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<uint32_t> cps;
      for (size_t i = 0; i < t.size();) cps.push_back(next_cp(t, i));
      size_t a = 0;
      for (size_t i = 0; i < std::min(start, cps.size()); ++i) {
        if (cps[i] != content) break;
        a = i + 1;
      }
      size_t b = cps.size();
      for (size_t i = 0; i < stop && i < cps.size(); ++i) {
        const size_t index = cps.size() - i - 1;
        if (cps[index] != content) break;
        b = index;
      }
      std::string s;
      for (size_t i = a; i < std::max(a, b); ++i) append_cp(s, cps[i]);
      t.swap(s);
    }
  }
};

struct MetaspaceDecoder final : Decoder {
  uint32_t rep;
  PrependScheme scheme;
  void apply(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      std::string s;
      const std::string& t = tokens[k];
      for (size_t i = 0; i < t.size();) {
        const uint32_t c = next_cp(t, i);
        if (c == rep) {
          if (!(k == 0 && scheme != PrependScheme::never)) s += ' ';
        } else {
          append_cp(s, c);
        }
      }
      tokens[k].swap(s);
    }
  }
};

struct DecSeq final : Decoder {
  std::vector<std::unique_ptr<Decoder>> parts;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts) p->apply(tokens);
  }
};

}  // namespace

// ---- factories ----

std::unique_ptr<Normalizer> make_unicode_normalizer(int form) {
  return std::make_unique<UnicodeNorm>(static_cast<NormalForm>(form));
}
std::unique_ptr<Normalizer> make_prepend(std::string prepend) {
  auto n = std::make_unique<Prepend>();
  n->prefix = std::move(prepend);
  return n;
}
std::unique_ptr<Normalizer> make_replace(std::string pattern, bool regex, std::string content, const std::string& where) {
  return std::make_unique<Replace>(std::move(pattern), regex, std::move(content), where);
}
std::unique_ptr<Normalizer> make_lowercase() { return std::make_unique<Lowercase>(); }
std::unique_ptr<Normalizer> make_strip(bool left, bool right) {
  auto n = std::make_unique<Strip>();
  n->left = left;
  n->right = right;
  return n;
}
std::unique_ptr<Normalizer> make_normalizer_sequence(std::vector<std::unique_ptr<Normalizer>> parts) {
  auto n = std::make_unique<NormSeq>();
  n->parts = std::move(parts);
  return n;
}

std::unique_ptr<PreTokenizer> make_split(std::string pattern, bool regex, SplitBehavior behavior, bool invert,
                                         const std::string& where) {
  return std::make_unique<Split>(std::move(pattern), regex, behavior, invert, where);
}
std::unique_ptr<PreTokenizer> make_byte_level(bool add_prefix_space, bool use_regex, bool map_bytes) {
  return std::make_unique<ByteLevel>(add_prefix_space, use_regex, map_bytes);
}
std::unique_ptr<PreTokenizer> make_metaspace(std::string replacement, PrependScheme scheme, bool split) {
  auto p = std::make_unique<Metaspace>();
  p->rep_cp = first_cp(replacement);
  p->rep = std::move(replacement);
  p->scheme = scheme;
  p->split = split;
  return p;
}
std::unique_ptr<PreTokenizer> make_digits(bool individual) {
  auto p = std::make_unique<Digits>();
  p->individual = individual;
  return p;
}
std::unique_ptr<PreTokenizer> make_whitespace() { return std::make_unique<Whitespace>(); }
std::unique_ptr<PreTokenizer> make_whitespace_split() { return std::make_unique<WhitespaceSplit>(); }
std::unique_ptr<PreTokenizer> make_pre_tokenizer_sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) {
  auto p = std::make_unique<PreSeq>();
  p->parts = std::move(parts);
  return p;
}

std::unique_ptr<PostProcessor> make_template(std::vector<std::vector<int32_t>> items) {
  auto p = std::make_unique<Template>();
  p->items = std::move(items);
  return p;
}
std::unique_ptr<PostProcessor> make_noop_processor() { return std::make_unique<NoopProcessor>(); }
std::unique_ptr<PostProcessor> make_processor_sequence(std::vector<std::unique_ptr<PostProcessor>> parts) {
  auto p = std::make_unique<ProcSeq>();
  p->parts = std::move(parts);
  return p;
}

std::unique_ptr<Decoder> make_byte_level_decoder() { return std::make_unique<ByteLevelDecoder>(); }
std::unique_ptr<Decoder> make_replace_decoder(std::string pattern, bool regex, std::string content, const std::string& where) {
  return std::make_unique<ReplaceDecoder>(std::move(pattern), regex, std::move(content), where);
}
std::unique_ptr<Decoder> make_byte_fallback_decoder() { return std::make_unique<ByteFallbackDecoder>(); }
std::unique_ptr<Decoder> make_fuse_decoder() { return std::make_unique<FuseDecoder>(); }
std::unique_ptr<Decoder> make_strip_decoder(std::string content, size_t start, size_t stop) {
  auto d = std::make_unique<StripDecoder>();
  d->content = first_cp(content);
  d->start = start;
  d->stop = stop;
  return d;
}
std::unique_ptr<Decoder> make_metaspace_decoder(std::string replacement, PrependScheme scheme) {
  auto d = std::make_unique<MetaspaceDecoder>();
  d->rep = first_cp(replacement);
  d->scheme = scheme;
  return d;
}
std::unique_ptr<Decoder> make_decoder_sequence(std::vector<std::unique_ptr<Decoder>> parts) {
  auto d = std::make_unique<DecSeq>();
  d->parts = std::move(parts);
  return d;
}

// ---- byte-level alphabet ----

const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_cp(s, printable[b] ? static_cast<uint32_t>(b) : 256 + n++);
      t[b] = s;
    }
    return t;
  }();
  return table;
}

std::optional<std::string> byte_level_decode(std::string_view s) {
  static const StringMap<int32_t> inverse = [] {
    StringMap<int32_t> m;
    const auto& t = byte_level_chars();
    for (int b = 0; b < 256; ++b) m.set(t[b], b);
    return m;
  }();
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = cp_len(static_cast<uint8_t>(s[i]));
    const int32_t* b = inverse.find(s.substr(i, n));
    if (!b) return std::nullopt;
    out += static_cast<char>(*b);
    i += n;
  }
  return out;
}

// ---- added-token matching ----

void TokenMatcher::add(std::string_view pattern, int32_t token_index) {
  if (pattern.empty()) return;
  uint32_t node = 0;
  for (char ch : pattern) {
    const auto c = static_cast<uint8_t>(ch);
    auto& next = nodes_[node].next;
    auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(c, uint32_t{0}),
                               [](const auto& x, const auto& y) { return x.first < y.first; });
    if (it != next.end() && it->first == c) {
      node = it->second;
    } else {
      const auto child = static_cast<uint32_t>(nodes_.size());
      next.insert(it, {c, child});
      nodes_.emplace_back();
      node = child;
    }
  }
  if (nodes_[node].token < 0) nodes_[node].token = token_index;  // the first of equal patterns
  first_[static_cast<uint8_t>(pattern[0])] = true;
}

void TokenMatcher::find(std::string_view s, std::vector<std::array<size_t, 3>>& out) const {
  size_t i = 0;
  while (i < s.size()) {
    if (!first_[static_cast<uint8_t>(s[i])]) {
      ++i;
      continue;
    }
    uint32_t node = 0;
    size_t best_end = 0;
    int32_t best = -1;
    for (size_t j = i; j < s.size(); ++j) {
      const auto& next = nodes_[node].next;
      const auto c = static_cast<uint8_t>(s[j]);
      auto it = std::lower_bound(next.begin(), next.end(), std::make_pair(c, uint32_t{0}),
                                 [](const auto& x, const auto& y) { return x.first < y.first; });
      if (it == next.end() || it->first != c) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_end = j + 1;
      }
    }
    if (best >= 0) {
      out.push_back({i, best_end, static_cast<size_t>(best)});
      i = best_end;
    } else {
      ++i;
    }
  }
}

}  // namespace nvfp4::io::hf

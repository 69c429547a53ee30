// tokenizer.json -> the pipeline's components. The file is untrusted: every field is checked for
// its type, and every error names the file and the JSON path of the offending value.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "io/strict_json.hpp"
#include "io/tokenizer/pipeline.hpp"
#include "io/tokenizer/unicode.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::io::hf {

namespace {

using json = nlohmann::json;

// Sequences of components nest by recursion, here and when the pipeline runs, so their depth is
// bounded, where the reference's is: serde_json refuses more than 128 levels of JSON nesting, each
// Sequence taking two (its object and its list), and tokenizers 0.23.2 loads at most 62 nested
// Sequences of normalizers, pre-tokenizers or decoders (measured with the Node binding).
constexpr int kMaxNesting = 62;

class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw Error(source_ + ": " + path + ": " + what);
  }
  std::string where(const std::string& path) const { return source_ + ": " + path; }

  const json& field(const json& obj, const std::string& path, const char* key) const {
    const auto it = obj.find(key);
    if (it == obj.end()) fail(path, std::string("missing the field \"") + key + "\"");
    return *it;
  }
  const json* optional(const json& obj, const char* key) const {
    const auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  std::string str(const json& v, const std::string& path) const {
    if (!v.is_string()) fail(path, std::string("expected a string, found ") + v.type_name());
    // JSON text is UTF-8 by definition; nlohmann accepts escaped lone surrogates, which are not.
    const std::string s = v.get<std::string>();
    if (utf8_replace_invalid(s) != s) fail(path, "the string is not valid UTF-8 (an escaped lone surrogate?)");
    return s;
  }
  bool boolean(const json& obj, const std::string& path, const char* key, bool def) const {
    const json* v = optional(obj, key);
    if (!v) return def;
    if (!v->is_boolean()) fail(path + "." + key, std::string("expected true or false, found ") + v->type_name());
    return v->get<bool>();
  }
  int64_t integer(const json& v, const std::string& path, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer()) fail(path, std::string("expected an integer, found ") + v.type_name());
    const int64_t x = v.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), INT64_MAX))
                                             : v.get<int64_t>();
    if (x < lo || x > hi) fail(path, std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }
  const json& object(const json& v, const std::string& path) const {
    if (!v.is_object()) fail(path, std::string("expected an object, found ") + v.type_name());
    return v;
  }
  const json& array(const json& v, const std::string& path) const {
    if (!v.is_array()) fail(path, std::string("expected an array, found ") + v.type_name());
    return v;
  }
  std::string type_of(const json& v, const std::string& path) const {
    object(v, path);
    return str(field(v, path, "type"), path + ".type");
  }
  // {"String": s} or {"Regex": r}: (pattern, is_regex).
  std::pair<std::string, bool> pattern(const json& v, const std::string& path) const {
    object(v, path);
    if (v.size() != 1) fail(path, "expected {\"String\": ...} or {\"Regex\": ...}");
    if (v.contains("String")) return {str(v["String"], path + ".String"), false};
    if (v.contains("Regex")) return {str(v["Regex"], path + ".Regex"), true};
    fail(path, "expected {\"String\": ...} or {\"Regex\": ...}, found key \"" + v.begin().key() + "\"");
  }
  // Held while loading one Sequence: one level deeper.
  class Nest {
   public:
    Nest(const Loader& l, const std::string& path) : l_(l) {
      if (++l_.depth_ > kMaxNesting) {
        --l_.depth_;
        l_.fail(path, "Sequences nested more than " + std::to_string(kMaxNesting) + " deep");
      }
    }
    ~Nest() { --l_.depth_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;

   private:
    const Loader& l_;
  };

  [[noreturn]] void unsupported(const std::string& kind, const std::string& type, const std::string& path,
                                const std::string& supported) const {
    fail(path + ".type", "the " + kind + " \"" + type + "\" is not supported (supported: " + supported + ")");
  }

  std::unique_ptr<Normalizer> normalizer(const json& v, const std::string& path) const {
    const std::string t = type_of(v, path);
    if (t == "NFC") return make_unicode_normalizer(static_cast<int>(NormalForm::nfc));
    if (t == "NFD") return make_unicode_normalizer(static_cast<int>(NormalForm::nfd));
    if (t == "NFKC") return make_unicode_normalizer(static_cast<int>(NormalForm::nfkc));
    if (t == "NFKD") return make_unicode_normalizer(static_cast<int>(NormalForm::nfkd));
    if (t == "Prepend") return make_prepend(str(field(v, path, "prepend"), path + ".prepend"));
    if (t == "Replace") {
      const auto [p, regex] = pattern(field(v, path, "pattern"), path + ".pattern");
      return make_replace(p, regex, str(field(v, path, "content"), path + ".content"), where(path + ".pattern"));
    }
    if (t == "Lowercase") return make_lowercase();
    if (t == "Strip") return make_strip(boolean(v, path, "strip_left", true), boolean(v, path, "strip_right", true));
    if (t == "Sequence") {
      const Nest nest(*this, path);
      const json& a = array(field(v, path, "normalizers"), path + ".normalizers");
      std::vector<std::unique_ptr<Normalizer>> parts;
      for (size_t i = 0; i < a.size(); ++i) parts.push_back(normalizer(a[i], path + ".normalizers[" + std::to_string(i) + "]"));
      return make_normalizer_sequence(std::move(parts));
    }
    unsupported("normalizer", t, path, "NFC, NFD, NFKC, NFKD, Prepend, Replace, Lowercase, Strip, Sequence");
  }

  PrependScheme scheme(const json& v, const std::string& path) const {
    PrependScheme s = PrependScheme::always;
    if (const json* p = optional(v, "prepend_scheme")) {
      const std::string n = str(*p, path + ".prepend_scheme");
      if (n == "first") s = PrependScheme::first;
      else if (n == "never") s = PrependScheme::never;
      else if (n == "always") s = PrependScheme::always;
      else fail(path + ".prepend_scheme", "\"" + n + "\" is not first, never or always");
    }
    if (const json* a = optional(v, "add_prefix_space")) {
      if (!a->is_boolean()) fail(path + ".add_prefix_space", "expected true or false");
      if (!a->get<bool>()) {
        if (s != PrependScheme::never && optional(v, "prepend_scheme")) {
          fail(path + ".add_prefix_space", "false does not match the declared prepend_scheme");
        }
        s = PrependScheme::never;
      }
    }
    return s;
  }

  std::string replacement(const json& v, const std::string& path) const {
    const std::string r = str(field(v, path, "replacement"), path + ".replacement");
    size_t i = 0;
    if (r.empty() || (next_cp(r, i), i != r.size())) fail(path + ".replacement", "expected exactly one character");
    return r;
  }

  // last: this pre-tokenizer is the pipeline's final step (its ByteLevel may leave the mapping
  // of bytes to the model).
  std::unique_ptr<PreTokenizer> pre_tokenizer(const json& v, const std::string& path, bool last) {
    const std::string t = type_of(v, path);
    if (t == "Split") {
      const auto [p, regex] = pattern(field(v, path, "pattern"), path + ".pattern");
      const std::string b = str(field(v, path, "behavior"), path + ".behavior");
      SplitBehavior behavior;
      if (b == "Removed") behavior = SplitBehavior::removed;
      else if (b == "Isolated") behavior = SplitBehavior::isolated;
      else if (b == "MergedWithPrevious") behavior = SplitBehavior::merged_with_previous;
      else if (b == "MergedWithNext") behavior = SplitBehavior::merged_with_next;
      else if (b == "Contiguous") behavior = SplitBehavior::contiguous;
      else fail(path + ".behavior", "\"" + b + "\" is not Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous");
      return make_split(p, regex, behavior, boolean(v, path, "invert", false), where(path + ".pattern"));
    }
    if (t == "ByteLevel") {
      const bool map = !last;
      byte_level_last = byte_level_last || last;
      return make_byte_level(boolean(v, path, "add_prefix_space", true), boolean(v, path, "use_regex", true), map);
    }
    if (t == "Metaspace") {
      return make_metaspace(replacement(v, path), scheme(v, path), boolean(v, path, "split", true));
    }
    if (t == "Digits") return make_digits(boolean(v, path, "individual_digits", false));
    if (t == "Whitespace") return make_whitespace();
    if (t == "WhitespaceSplit") return make_whitespace_split();
    if (t == "Sequence") {
      const Nest nest(*this, path);
      const json& a = array(field(v, path, "pretokenizers"), path + ".pretokenizers");
      std::vector<std::unique_ptr<PreTokenizer>> parts;
      for (size_t i = 0; i < a.size(); ++i) {
        parts.push_back(pre_tokenizer(a[i], path + ".pretokenizers[" + std::to_string(i) + "]", last && i + 1 == a.size()));
      }
      return make_pre_tokenizer_sequence(std::move(parts));
    }
    unsupported("pre-tokenizer", t, path, "Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Sequence");
  }

  std::unique_ptr<Bpe> model(const json& v, const std::string& path) const {
    object(v, path);
    if (const json* t = optional(v, "type")) {
      const std::string type = str(*t, path + ".type");
      if (type != "BPE") fail(path + ".type", "the model \"" + type + "\" is not supported (supported: BPE)");
    }
    if (const json* d = optional(v, "dropout")) {
      if (!d->is_number() || d->get<double>() != 0.0) fail(path + ".dropout", "BPE dropout is not supported (use null)");
    }
    BpeOptions o;
    if (const json* u = optional(v, "unk_token")) o.unk_token = str(*u, path + ".unk_token");
    if (const json* u = optional(v, "continuing_subword_prefix")) o.continuing_subword_prefix = str(*u, path + ".continuing_subword_prefix");
    if (const json* u = optional(v, "end_of_word_suffix")) o.end_of_word_suffix = str(*u, path + ".end_of_word_suffix");
    o.fuse_unk = boolean(v, path, "fuse_unk", false);
    o.byte_fallback = boolean(v, path, "byte_fallback", false);
    o.ignore_merges = boolean(v, path, "ignore_merges", false);
    const json& vocab = object(field(v, path, "vocab"), path + ".vocab");
    std::vector<std::pair<std::string, int32_t>> entries;
    entries.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const std::string p = path + ".vocab[\"" + it.key().substr(0, 60) + "\"]";
      entries.emplace_back(str(json(it.key()), p), static_cast<int32_t>(integer(it.value(), p, 0, INT32_MAX - 1)));
    }
    const json& merges = array(field(v, path, "merges"), path + ".merges");
    std::vector<std::pair<std::string, std::string>> pairs;
    pairs.reserve(merges.size());
    size_t rank = 0;
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string p = path + ".merges[" + std::to_string(i) + "]";
      const json& m = merges[i];
      if (m.is_string()) {
        const std::string line = str(m, p);
        if (line.rfind("#version", 0) == 0) continue;  // the reference skips these lines
        const size_t sp = line.find(' ');
        if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
          fail(p, "a merge \"a b\" has exactly one space");
        }
        pairs.emplace_back(line.substr(0, sp), line.substr(sp + 1));
      } else if (m.is_array() && m.size() == 2) {
        pairs.emplace_back(str(m[0], p + "[0]"), str(m[1], p + "[1]"));
      } else {
        fail(p, "a merge is \"a b\" or [\"a\", \"b\"]");
      }
      ++rank;
    }
    return std::make_unique<Bpe>(std::move(entries), pairs, std::move(o), source_);
  }

  std::unique_ptr<PostProcessor> post_processor(const json& v, const std::string& path) const {
    const std::string t = type_of(v, path);
    if (t == "TemplateProcessing") {
      const json& single = array(field(v, path, "single"), path + ".single");
      const json* specials = optional(v, "special_tokens");
      std::vector<std::vector<int32_t>> items;
      for (size_t i = 0; i < single.size(); ++i) {
        const std::string ip = path + ".single[" + std::to_string(i) + "]";
        const json& it = object(single[i], ip);
        if (it.contains("Sequence")) {
          items.emplace_back();
        } else if (it.contains("SpecialToken")) {
          const json& st = object(it["SpecialToken"], ip + ".SpecialToken");
          const std::string name = str(field(st, ip + ".SpecialToken", "id"), ip + ".SpecialToken.id");
          if (!specials || !specials->contains(name)) fail(ip, "special token \"" + name + "\" is not in special_tokens");
          const std::string sp = path + ".special_tokens[\"" + name + "\"]";
          const json& ids = array(field((*specials)[name], sp, "ids"), sp + ".ids");
          std::vector<int32_t> list;
          for (size_t k = 0; k < ids.size(); ++k) {
            list.push_back(static_cast<int32_t>(integer(ids[k], sp + ".ids[" + std::to_string(k) + "]", 0, INT32_MAX - 1)));
          }
          if (list.empty()) fail(sp + ".ids", "no ids");
          items.push_back(std::move(list));
        } else {
          fail(ip, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
        }
      }
      return make_template(std::move(items));
    }
    if (t == "BertProcessing" || t == "RobertaProcessing") {
      auto tok = [&](const char* key) {
        const json& a = array(field(v, path, key), path + "." + key);
        if (a.size() != 2) fail(path + "." + key, "expected [token, id]");
        return static_cast<int32_t>(integer(a[1], path + "." + key + "[1]", 0, INT32_MAX - 1));
      };
      return make_template({{tok("cls")}, {}, {tok("sep")}});
    }
    if (t == "ByteLevel") return make_noop_processor();
    if (t == "Sequence") {
      const Nest nest(*this, path);
      const json& a = array(field(v, path, "processors"), path + ".processors");
      std::vector<std::unique_ptr<PostProcessor>> parts;
      for (size_t i = 0; i < a.size(); ++i) parts.push_back(post_processor(a[i], path + ".processors[" + std::to_string(i) + "]"));
      return make_processor_sequence(std::move(parts));
    }
    unsupported("post-processor", t, path, "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence");
  }

  std::unique_ptr<Decoder> decoder(const json& v, const std::string& path) const {
    const std::string t = type_of(v, path);
    if (t == "ByteLevel") return make_byte_level_decoder();
    if (t == "Replace") {
      const auto [p, regex] = pattern(field(v, path, "pattern"), path + ".pattern");
      return make_replace_decoder(p, regex, str(field(v, path, "content"), path + ".content"), where(path + ".pattern"));
    }
    if (t == "ByteFallback") return make_byte_fallback_decoder();
    if (t == "Fuse") return make_fuse_decoder();
    if (t == "Strip") {
      const std::string c = str(field(v, path, "content"), path + ".content");
      size_t i = 0;
      if (c.empty() || (next_cp(c, i), i != c.size())) fail(path + ".content", "expected exactly one character");
      return make_strip_decoder(c, static_cast<size_t>(integer(field(v, path, "start"), path + ".start", 0, 1 << 20)),
                                static_cast<size_t>(integer(field(v, path, "stop"), path + ".stop", 0, 1 << 20)));
    }
    if (t == "Metaspace") return make_metaspace_decoder(replacement(v, path), scheme(v, path));
    if (t == "Sequence") {
      const Nest nest(*this, path);
      const json& a = array(field(v, path, "decoders"), path + ".decoders");
      std::vector<std::unique_ptr<Decoder>> parts;
      for (size_t i = 0; i < a.size(); ++i) parts.push_back(decoder(a[i], path + ".decoders[" + std::to_string(i) + "]"));
      return make_decoder_sequence(std::move(parts));
    }
    unsupported("decoder", t, path, "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence");
  }

  bool byte_level_last = false;

 private:
  std::string source_;
  mutable int depth_ = 0;  // Sequences being loaded (Nest)
};

}  // namespace

std::unique_ptr<Pipeline> load_pipeline(std::string_view text, const std::string& source) {
  StrictJson doc = parse_strict_json(text);
  if (!doc.ok) {
    if (doc.duplicate_key) {
      throw Error(source + ": the key \"" + doc.duplicate_key->substr(0, 80) + "\" appears twice in one object " +
                  "(under \"" + doc.top_key.substr(0, 80) + "\"); the file is corrupt");
    }
    throw Error(source + ": not valid JSON (" + utf8_replace_invalid(doc.syntax_error.value_or("parse stopped")) +
                "); is this a tokenizer.json?");
  }
  const json& root = doc.value;
  Loader L(source);
  L.object(root, "(top level)");
  if (const json* v = L.optional(root, "version")) {
    if (L.str(*v, "version") != "1.0") L.fail("version", "unknown tokenizer.json version \"" + v->get<std::string>() + "\"");
  }
  if (L.optional(root, "truncation") || L.optional(root, "padding")) {
    // Truncation and padding shape batches; ids of a single text are what we reproduce. They are
    // ignored, as our CLI and data pipeline never truncate or pad.
  }
  auto p = std::make_unique<Pipeline>();
  if (const json* n = L.optional(root, "normalizer")) p->normalizer = L.normalizer(*n, "normalizer");
  if (const json* t = L.optional(root, "pre_tokenizer")) p->pre_tokenizer = L.pre_tokenizer(*t, "pre_tokenizer", true);
  p->model = L.model(L.field(root, "(top level)", "model"), "model");
  if (L.byte_level_last) p->model->set_byte_level_input();

  // Added tokens: ids as the reference assigns them (the model's id for a token it has, else the
  // next free id after the model's vocabulary), in file order.
  int32_t next_id = static_cast<int32_t>(p->model->vocab_len());
  int32_t max_id = p->model->max_id();
  if (const json* a = L.optional(root, "added_tokens")) {
    L.array(*a, "added_tokens");
    for (size_t i = 0; i < a->size(); ++i) {
      const std::string path = "added_tokens[" + std::to_string(i) + "]";
      const json& t = L.object((*a)[i], path);
      AddedToken tok;
      tok.content = L.str(L.field(t, path, "content"), path + ".content");
      L.integer(L.field(t, path, "id"), path + ".id", 0, INT32_MAX - 1);
      tok.single_word = L.boolean(t, path, "single_word", false);
      tok.lstrip = L.boolean(t, path, "lstrip", false);
      tok.rstrip = L.boolean(t, path, "rstrip", false);
      tok.special = L.boolean(t, path, "special", false);
      tok.normalized = L.boolean(t, path, "normalized", !tok.special);
      if (tok.content.empty()) continue;  // the reference ignores empty tokens
      if (const int32_t* seen = p->added_by_content.find(tok.content)) {
        AddedToken& old = p->added[static_cast<size_t>(*seen)];
        tok.id = old.id;
        old = tok;  // the later entry's properties
      } else if (auto id = p->model->token_to_id(tok.content)) {
        tok.id = *id;
      } else {
        if (next_id >= INT32_MAX - 1) L.fail(path, "too many tokens");
        tok.id = next_id++;
      }
      if (!p->added_by_content.find(tok.content)) {
        p->added_by_content.set(tok.content, static_cast<int32_t>(p->added.size()));
        p->added.push_back(tok);
      }
      max_id = std::max(max_id, tok.id);
    }
  }
  for (size_t i = 0; i < p->added.size(); ++i) {
    AddedToken& t = p->added[i];
    p->added_by_id.set(t.id, static_cast<int32_t>(i));
    t.decode_form = t.content;
    if (t.normalized && p->normalizer) {
      std::string n = t.content;
      p->normalizer->apply(n);
      t.decode_form = n;
    }
    if (t.special) p->special_contents.set(t.content, 1);
  }
  // The matchers: in id order, as the reference builds them (the first of equal patterns wins).
  std::vector<size_t> order(p->added.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p->added[a].id < p->added[b].id; });
  for (size_t i : order) {
    const AddedToken& t = p->added[i];
    if (t.normalized) p->normalized_matcher.add(t.decode_form, static_cast<int32_t>(i));
    else p->raw_matcher.add(t.content, static_cast<int32_t>(i));
  }
  p->vocab_size = max_id + 1;
  if (const json* pp = L.optional(root, "post_processor")) p->post_processor = L.post_processor(*pp, "post_processor");
  if (const json* d = L.optional(root, "decoder")) p->decoder = L.decoder(*d, "decoder");
  return p;
}

}  // namespace nvfp4::io::hf

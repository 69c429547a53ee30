// The components of a Hugging Face tokenizer (nvfp4/hf_tokenizer.hpp), as loaded from a
// tokenizer.json by load.cpp: normalizers, pre-tokenizers, the BPE model, post-processors and
// decoders, each behaving as the reference library's component of the same name. Private to
// src/io/.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "io/tokenizer/regex.hpp"
#include "io/tokenizer/string_map.hpp"

namespace nvfp4::io::hf {

// ---- normalizers ------------------------------------------------------------------------------

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;  // s valid UTF-8, modified in place
};
std::unique_ptr<Normalizer> make_unicode_normalizer(int form);  // NormalForm as int
std::unique_ptr<Normalizer> make_prepend(std::string prepend);
// Every match of `pattern` (a literal, or a regex when `regex` is set) replaced by `content`.
std::unique_ptr<Normalizer> make_replace(std::string pattern, bool regex, std::string content, const std::string& where);
std::unique_ptr<Normalizer> make_lowercase();
std::unique_ptr<Normalizer> make_strip(bool left, bool right);
std::unique_ptr<Normalizer> make_normalizer_sequence(std::vector<std::unique_ptr<Normalizer>> parts);

// ---- pre-tokenizers ---------------------------------------------------------------------------

// A callable taking (word, at_start) without owning it (a function reference): pre-tokenizers
// hand their words to the next stage one at a time, so no list of all words is ever built.
// at_start: the word begins at offset 0 of the original text (Metaspace's "first" scheme asks).
class WordFn {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::remove_cv_t<F>, WordFn>>>
  WordFn(F& f) : obj_(&f), call_([](void* o, std::string_view w, bool s) { (*static_cast<F*>(o))(w, s); }) {}  // NOLINT
  WordFn(const WordFn&) = default;
  WordFn& operator=(const WordFn&) = default;
  void operator()(std::string_view w, bool at_start) const { call_(obj_, w, at_start); }

 private:
  void* obj_;
  void (*call_)(void*, std::string_view, bool);
};

enum class SplitBehavior : uint8_t { removed, isolated, merged_with_previous, merged_with_next, contiguous };

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  // Splits (and maybe rewrites) `text` into words, calling f with each non-empty one in order.
  virtual void each(std::string_view text, bool at_start, WordFn f) const = 0;
};
std::unique_ptr<PreTokenizer> make_split(std::string pattern, bool regex, SplitBehavior behavior, bool invert,
                                         const std::string& where);
// map_bytes: replace each byte by its byte-level character (false when the model reads the raw
// bytes directly: the mapping is a bijection, so the model's vocabulary is mapped instead).
std::unique_ptr<PreTokenizer> make_byte_level(bool add_prefix_space, bool use_regex, bool map_bytes);
enum class PrependScheme : uint8_t { first, never, always };
std::unique_ptr<PreTokenizer> make_metaspace(std::string replacement, PrependScheme scheme, bool split);
std::unique_ptr<PreTokenizer> make_digits(bool individual);
std::unique_ptr<PreTokenizer> make_whitespace();        // \w+|[^\w\s]+
std::unique_ptr<PreTokenizer> make_whitespace_split();  // split on white space, removed
std::unique_ptr<PreTokenizer> make_pre_tokenizer_sequence(std::vector<std::unique_ptr<PreTokenizer>> parts);

// The byte-level alphabet: byte -> its character (UTF-8), and the inverse.
const std::array<std::string, 256>& byte_level_chars();
// The raw bytes a byte-level string stands for; nullopt when a character is outside the alphabet.
std::optional<std::string> byte_level_decode(std::string_view s);

// ---- the BPE model ----------------------------------------------------------------------------

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::optional<std::string> continuing_subword_prefix;
  std::optional<std::string> end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class Bpe {
 public:
  // vocab: (token, id); merges: (left, right) in rank order. Errors name `where`.
  Bpe(std::vector<std::pair<std::string, int32_t>> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      BpeOptions options, const std::string& where);
  ~Bpe();

  // Words arrive as the raw bytes of byte-level text (the ByteLevel pre-tokenizer ran last and
  // did not map): each byte is the symbol its byte-level character is. Call once after loading.
  void set_byte_level_input();

  // Appends the ids of `word` (non-empty) to out.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  size_t vocab_len() const { return vocab_.size(); }  // entries of the vocabulary (the reference's vocab size)
  int32_t max_id() const { return max_id_; }

 private:
  struct Cache;   // words seen before -> their ids
  struct Caches;  // one Cache per thread that encoded with this model, freed with it
  Cache& cache() const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids, std::vector<uint32_t>& lens) const;

  std::unique_ptr<Caches> caches_;
  StringMap<int32_t> vocab_;        // token (as written in the file) -> id
  StringMap<int32_t> raw_vocab_;    // byte-level input: raw bytes -> id
  IdMap<uint32_t> id_to_token_;      // id -> index into tokens_
  std::vector<std::string> tokens_;
  PairMap<uint64_t> merges_;         // (left id, right id) -> rank << 32 | new id
  BpeOptions opt_;
  std::string where_;
  bool byte_input_ = false;
  std::array<int32_t, 256> byte_unit_{};       // byte-level input: each byte's symbol id (-1: none)
  std::array<int32_t, 256> fallback_{};        // <0xXX> ids (-1: none)
  int32_t max_id_ = -1;
  uint64_t serial_ = 0;                        // identifies this model to a thread's last-cache memo
};

// ---- post-processors --------------------------------------------------------------------------

struct PostProcessor {
  virtual ~PostProcessor() = default;
  // With add_special, the special tokens around the sequence's ids.
  virtual void apply(std::vector<int32_t>& ids, bool add_special) const = 0;
};
// TemplateProcessing's single template: items are (is_special, special id list or -1 for $A).
std::unique_ptr<PostProcessor> make_template(std::vector<std::vector<int32_t>> items);
std::unique_ptr<PostProcessor> make_noop_processor();  // ByteLevel (offsets only)
std::unique_ptr<PostProcessor> make_processor_sequence(std::vector<std::unique_ptr<PostProcessor>> parts);

// ---- decoders ---------------------------------------------------------------------------------

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_byte_level_decoder();
std::unique_ptr<Decoder> make_replace_decoder(std::string pattern, bool regex, std::string content, const std::string& where);
std::unique_ptr<Decoder> make_byte_fallback_decoder();
std::unique_ptr<Decoder> make_fuse_decoder();
std::unique_ptr<Decoder> make_strip_decoder(std::string content, size_t start, size_t stop);
std::unique_ptr<Decoder> make_metaspace_decoder(std::string replacement, PrependScheme scheme);
std::unique_ptr<Decoder> make_decoder_sequence(std::vector<std::unique_ptr<Decoder>> parts);

// ---- the whole tokenizer ----------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  std::string decode_form;  // what decoding shows: the normalized content when normalization changed it
};

// Leftmost-longest matching of a set of byte strings (the added tokens), non-overlapping.
class TokenMatcher {
 public:
  void add(std::string_view pattern, int32_t token_index);
  bool empty() const { return nodes_.size() <= 1; }
  // (start, end, token index) of each match, left to right.
  void find(std::string_view s, std::vector<std::array<size_t, 3>>& out) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, uint32_t>> next;  // sorted by byte
    int32_t token = -1;
  };
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_{};
};

struct Pipeline {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Bpe> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;               // in file order
  StringMap<int32_t> added_by_content;         // content -> index in `added`
  IdMap<int32_t> added_by_id;                  // id -> index in `added`
  TokenMatcher raw_matcher, normalized_matcher;
  StringMap<int32_t> special_contents;         // contents of special tokens
  int32_t vocab_size = 0;                      // 1 + the largest id
};

// Parses a tokenizer.json text (errors name `source` and the JSON path).
std::unique_ptr<Pipeline> load_pipeline(std::string_view json, const std::string& source);

// Ids of `text` (valid UTF-8) without special tokens, appended to out.
void encode_ids(const Pipeline& p, std::string_view text, std::vector<int32_t>& out);

}  // namespace nvfp4::io::hf

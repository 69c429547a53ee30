// Hugging Face tokenizers: a `tokenizer.json` with a BPE model, loaded and run exactly as the
// reference implementation (the `tokenizers` library) does — the same ids for the same text.
//
// The pipeline, as the reference defines it (docs/tokenizers.md):
//   1. added tokens (special or not) are found first: those with normalized = false in the raw
//      text, the others in the normalized pieces; matches are leftmost-longest, then filtered
//      by single_word and widened by lstrip / rstrip;
//   2. the normalizer (NFC/NFD/NFKC/NFKD, Prepend, Replace, Lowercase, Strip, Sequence);
//   3. the pre-tokenizer splits pieces into words (Split, ByteLevel, Metaspace, Digits,
//      Whitespace, WhitespaceSplit, Sequence);
//   4. the BPE model turns each word into ids (merges by rank, byte_fallback, unk / fuse_unk,
//      ignore_merges, continuing_subword_prefix / end_of_word_suffix);
//   5. with add_special, the post-processor adds BOS/EOS (TemplateProcessing; ByteLevel and
//      Sequence of them).
// Decoding maps ids to tokens and runs the decoder chain (ByteLevel, Replace, ByteFallback, Fuse,
// Strip, Metaspace, Sequence).
//
// Text is UTF-8. Invalid UTF-8 is replaced by U+FFFD before encoding, one per maximal invalid
// subpart (the WHATWG / Unicode rule — what the reference sees from a JavaScript or Python
// string decoded with replacement). A tokenizer.json is untrusted input: every structural
// problem is an nvfp4::Error naming the file and the JSON path ("model.merges[12]"); an
// unsupported component names its type and path.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/tokenizer.hpp"

namespace nvfp4::io {

namespace hf {
struct Pipeline;  // the loaded components (src/io/tokenizer/)
}

class HfTokenizer final : public Tokenizer {
 public:
  // Loads `path`: a tokenizer.json, or a folder holding one (a model folder). A
  // tokenizer_config.json beside it supplies the end-of-text token (its "eos_token") when
  // present. Errors name the file.
  static std::unique_ptr<HfTokenizer> load(const std::string& path);
  // From the text of a tokenizer.json; `source` names it in errors. eot: the end-of-text token's
  // content (empty: found among the special tokens, see eot_token()).
  static std::unique_ptr<HfTokenizer> from_json(std::string_view json, const std::string& source,
                                                const std::string& eot = "");
  ~HfTokenizer() override;

  std::string name() const override { return "hf"; }
  int32_t vocab_size() const override;  // 1 + the largest id (model vocabulary and added tokens)
  // The end-of-text id the data pipeline puts between documents: tokenizer_config.json's
  // eos_token, else the first special token among <|end_of_text|>, <|endoftext|>, </s>, <eos>,
  // <|end|>, <|return|>; an nvfp4::Error naming the file when there is none (encoding and
  // decoding work without one; the data pipeline needs it).
  int32_t eot_token() const override;
  int32_t shard_id() const override { return 2; }
  // {"name":"hf","kind":"bpe",...,"tokenizer_json":<the file's text>}: enough to rebuild it.
  std::string describe() const override;

  // Ids of `text` without special tokens (what the data pipeline stores).
  std::vector<int32_t> encode(std::string_view text) const override;
  void encode_append(std::string_view text, std::vector<int32_t>& out) const override;
  // With add_special, the post-processor's tokens (e.g. Llama-3's <|begin_of_text|>) too.
  std::vector<int32_t> encode(std::string_view text, bool add_special) const;
  // The text of `tokens`, special tokens included (skip_special = false), or left out. An id
  // that is neither in the model nor an added token is an nvfp4::Error naming its position.
  std::string decode(std::span<const int32_t> tokens) const override;
  std::string decode(std::span<const int32_t> tokens, bool skip_special) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  const std::string& json() const { return json_; }  // the tokenizer.json text it came from

 private:
  HfTokenizer() = default;
  std::unique_ptr<hf::Pipeline> p_;
  std::string json_, source_;
  int32_t eot_ = -1;
};

// Invalid UTF-8 in `bytes` replaced by U+FFFD, one per maximal subpart of an ill-formed sequence
// (Unicode §3.9, the WHATWG decoder's rule); valid input is returned unchanged.
std::string utf8_replace_invalid(std::string_view bytes);

}  // namespace nvfp4::io

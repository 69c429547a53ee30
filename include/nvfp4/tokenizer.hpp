// Tokenizers: text <-> token ids, for the token shards (nvfp4/token_shards.hpp) and, later, for
// training and inference. docs/data.md describes them.
//
// A tokenizer is an object behind the abstract `Tokenizer` interface, made by name with
// make_tokenizer(). Today there is one, "byte"; a BPE tokenizer (vocabulary and merges read from
// a file) slots in as another subclass and another name in make_tokenizer(), and everything that
// takes a `const Tokenizer&` keeps working.
//
// What a tokenizer must provide, beyond encode/decode:
//   - vocab_size(): token ids are in [0, vocab_size). Shards store uint16 tokens up to 65,536
//     ids and uint32 above (shard_token_bytes in nvfp4/token_shards.hpp).
//   - eot_token(): the end-of-text id the data pipeline puts before every document.
//   - shard_id(): the small integer recorded in every shard header (slot 4) so a shard says which
//     tokenizer made it; ids are registered in kTokenizerIds below and are never reused.
//   - describe(): a JSON object (as text) that identifies the tokenizer completely: it is stored
//     in the dataset manifest and in every checkpoint ("nvfp4.tokenizer"), and two tokenizers with
//     equal descriptions must tokenize identically. Keys: "name" (what make_tokenizer() takes),
//     "kind" ("byte"; "bpe" later), "vocab_size", "eot_token", "special_tokens" ({text: id}),
//     "shard_id", "version"; a BPE tokenizer adds "tokenizer_json" (the tokenizer.json content)
//     or "tokenizer_json_sha256" (its hash, with the file beside the model).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nvfp4::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::string name() const = 0;      // what make_tokenizer() takes: "byte"
  virtual int32_t vocab_size() const = 0;    // ids are in [0, vocab_size)
  virtual int32_t eot_token() const = 0;     // end of text; never produced by encode()
  virtual int32_t shard_id() const = 0;      // header[4] of a token shard (kTokenizerIds)
  virtual std::string describe() const = 0;  // a JSON object, compact, one line

  // Token ids of `text`. Any bytes are accepted (text need not be valid UTF-8).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Appends the tokens of `text` to `out` (what the data pipeline calls; saves a copy). The
  // default implementation calls encode().
  virtual void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  // The text of `tokens`. An id outside [0, vocab_size) is an nvfp4::Error naming its position.
  virtual std::string decode(std::span<const int32_t> tokens) const = 0;
};

// Tokenizer ids recorded in shard headers (header[4]). 0 means "not recorded" (llm.c's own
// GPT-2 shards leave the slot zero). Add new tokenizers at the end; never renumber.
struct TokenizerId {
  int32_t id;
  const char* name;
};
inline constexpr TokenizerId kTokenizerIds[] = {
    {1, "byte"},
    {2, "hf"},  // a Hugging Face tokenizer.json (nvfp4/hf_tokenizer.hpp); the manifest holds which
};
// The registered name of a shard's tokenizer id; "unknown" for 0 and unregistered ids.
std::string tokenizer_name_for_id(int32_t id);

// The byte-level tokenizer: every byte of the text is one token, its value 0..255; id 256 is
// end-of-text. vocab_size() is 257. Lossless for any byte string (UTF-8 text becomes its UTF-8
// bytes, one token each); decode() writes the end-of-text token as the text "<|endoftext|>"
// (GPT-2's spelling) so a decoded shard stays readable.
class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEot = 256;
  static constexpr int32_t kVocabSize = 257;
  static constexpr std::string_view kEotText = "<|endoftext|>";

  std::string name() const override { return "byte"; }
  int32_t vocab_size() const override { return kVocabSize; }
  int32_t eot_token() const override { return kEot; }
  int32_t shard_id() const override { return 1; }
  std::string describe() const override;
  std::vector<int32_t> encode(std::string_view text) const override;
  void encode_append(std::string_view text, std::vector<int32_t>& out) const override;
  std::string decode(std::span<const int32_t> tokens) const override;
};

// The tokenizer called `name`: "byte", or the path of a Hugging Face tokenizer.json or of a model
// folder holding one (HfTokenizer). Anything else is an nvfp4::Error saying what is accepted.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name);

// What make_tokenizer() takes, for --help: "byte", "TOKENIZER.json", "MODEL_FOLDER".
std::vector<std::string> tokenizer_names();

// The tokenizer a stored description names: `description` is describe()'s JSON object, or a
// bare name (what checkpoints before the description held, e.g. "byte"). The tokenizer is made
// by name and must match the description's vocab_size and eot_token (else this build's
// tokenizer of that name tokenizes differently). Errors are nvfp4::Error naming `source` (the
// file it came from) and the field.
std::unique_ptr<Tokenizer> make_tokenizer_from_description(const std::string& description, const std::string& source);

}  // namespace nvfp4::io

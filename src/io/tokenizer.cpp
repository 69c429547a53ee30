// Tokenizers; the contract is in nvfp4/tokenizer.hpp.
#include "nvfp4/tokenizer.hpp"

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"

namespace nvfp4::io {

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  const std::vector<int32_t> t = encode(text);
  out.insert(out.end(), t.begin(), t.end());
}

std::string tokenizer_name_for_id(int32_t id) {
  for (const auto& t : kTokenizerIds) {
    if (t.id == id) return t.name;
  }
  return "unknown";
}

// ---- ByteTokenizer ------------------------------------------------------------------------

std::string ByteTokenizer::describe() const {
  const nlohmann::ordered_json j = {{"name", name()},       {"vocab_size", kVocabSize}, {"eot_token", kEot},
                            {"shard_id", shard_id()}, {"version", 1},
                            {"rule", "one token per byte (0..255), 256 = end of text"}};
  return j.dump();
}

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  encode_append(text, out);
  return out;
}

void ByteTokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  const size_t at = out.size();
  out.resize(at + text.size());
  for (size_t i = 0; i < text.size(); ++i) out[at + i] = static_cast<unsigned char>(text[i]);
}

std::string ByteTokenizer::decode(std::span<const int32_t> tokens) const {
  std::string out;
  out.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    if (t >= 0 && t < 256) {
      out += static_cast<char>(static_cast<unsigned char>(t));
    } else if (t == kEot) {
      out += kEotText;
    } else {
      throw Error("byte tokenizer: token " + std::to_string(t) + " at position " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(kVocabSize) +
                  "); were these tokens made by another tokenizer?");
    }
  }
  return out;
}

// ---- factory ------------------------------------------------------------------------------

std::vector<std::string> tokenizer_names() { return {"byte"}; }

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  std::string known;
  for (const auto& n : tokenizer_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("unknown tokenizer '" + name + "'; known tokenizers: " + known);
}

}  // namespace nvfp4::io

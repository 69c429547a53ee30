// Tokenizers; the contract is in nvfp4/tokenizer.hpp.
#include "nvfp4/tokenizer.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>

#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

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
  const nlohmann::ordered_json j = {{"name", name()},
                                    {"kind", "byte"},
                                    {"vocab_size", kVocabSize},
                                    {"eot_token", kEot},
                                    {"special_tokens", {{kEotText, kEot}}},
                                    {"shard_id", shard_id()},
                                    {"version", 1},
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

std::vector<std::string> tokenizer_names() { return {"byte", "TOKENIZER.json", "MODEL_FOLDER"}; }

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  std::error_code ec;
  if (std::filesystem::exists(name, ec)) return HfTokenizer::load(name);  // a tokenizer.json or model folder
  throw Error("unknown tokenizer '" + name + "': neither \"byte\" nor an existing tokenizer.json or model folder");
}

std::unique_ptr<Tokenizer> make_tokenizer_from_description(const std::string& description, const std::string& source) {
  const auto j = nlohmann::json::parse(description, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    // Checkpoints written before the full description held the tokenizer's name only.
    if (!description.empty() && description.find_first_of("{}[]\" \n") == std::string::npos) {
      try {
        return make_tokenizer(description);
      } catch (const Error& e) {
        throw Error(source + ": " + e.what());
      }
    }
    throw Error(source + ": the tokenizer description is neither a JSON object nor a tokenizer name: '" +
                description.substr(0, 80) + "'");
  }
  const auto* name = j.contains("name") ? j["name"].get_ptr<const std::string*>() : nullptr;
  if (name == nullptr) throw Error(source + ": the tokenizer description has no \"name\" string: " + j.dump());
  std::unique_ptr<Tokenizer> tok;
  if (*name == "hf") {  // a Hugging Face tokenizer: its tokenizer.json is in the description
    const auto* text = j.contains("tokenizer_json") ? j["tokenizer_json"].get_ptr<const std::string*>() : nullptr;
    const auto* eot = j.contains("eot_text") ? j["eot_text"].get_ptr<const std::string*>() : nullptr;
    if (!text) throw Error(source + ": the tokenizer description (name \"hf\") has no \"tokenizer_json\" string");
    tok = HfTokenizer::from_json(*text, source + " (its tokenizer)", eot ? *eot : "");
  } else {
    try {
      tok = make_tokenizer(*name);
    } catch (const Error& e) {
      throw Error(source + ": " + e.what());
    }
  }
  for (const auto& [key, have] : {std::pair{"vocab_size", tok->vocab_size()}, std::pair{"eot_token", tok->eot_token()}}) {
    if (j.contains(key) && j[key] != have) {
      throw Error(source + ": the tokenizer description says " + key + " " + j[key].dump() + " but this build's '" +
                  *name + "' tokenizer has " + std::to_string(have) +
                  "; the data was tokenized differently, use the nvfp4 that made it");
    }
  }
  return tok;
}

}  // namespace nvfp4::io

// HfTokenizer (nvfp4/hf_tokenizer.hpp): the encode and decode passes over the loaded pipeline.
#include "nvfp4/hf_tokenizer.hpp"

#include <sys/stat.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/tokenizer/pipeline.hpp"
#include "io/tokenizer/unicode.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::io {

namespace hf {

namespace {

struct Seg {
  size_t a, b;
  int32_t token;  // index into Pipeline::added, or -1
};

// The reference's find_matches: leftmost-longest matches of the added tokens, single_word ones
// kept only between non-word characters, lstrip / rstrip widening them over white space; the
// rest of s between them. Covers s.
void split_added(const Pipeline& p, const TokenMatcher& m, std::string_view s, std::vector<Seg>& out) {
  out.clear();
  if (m.empty() || s.empty()) {
    out.push_back({0, s.size(), -1});
    return;
  }
  thread_local std::vector<std::array<size_t, 3>> found;
  found.clear();
  m.find(s, found);
  size_t start_offset = 0;
  for (const auto& [mstart, mstop, idx] : found) {
    size_t start = mstart, stop = mstop;
    const AddedToken& t = p.added[idx];
    if (t.single_word) {
      const bool start_space = start == 0 || !is_word_char(last_cp(s.substr(0, start)));
      const bool stop_space = stop == s.size() || !is_word_char(first_cp(s.substr(stop)));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t ns = start;  // the start of the white space that ends s[..start]
      while (ns > 0) {
        size_t k = ns - 1;
        while (k > 0 && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
        size_t j = k;
        if (!is_white_space(next_cp(s, j))) break;
        ns = k;
      }
      start = std::max(ns, start_offset);
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t j = stop;
        if (!is_white_space(next_cp(s, j))) break;
        stop = j;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, static_cast<int32_t>(idx)});
    start_offset = stop;
  }
  if (start_offset != s.size()) out.push_back({start_offset, s.size(), -1});
}

// Pre-tokenizes and tokenizes one normalized piece.
void model_piece(const Pipeline& p, std::string_view piece, bool at_start, std::vector<int32_t>& out) {
  if (piece.empty()) return;
  if (!p.pre_tokenizer) {
    p.model->tokenize(piece, out);
    return;
  }
  auto word = [&](std::string_view w, bool) { p.model->tokenize(w, out); };
  p.pre_tokenizer->each(piece, at_start, word);
}

}  // namespace

void encode_ids(const Pipeline& p, std::string_view text, std::vector<int32_t>& out) {
  if (text.size() >= (size_t{1} << 32)) throw Error("tokenizer: a text of 4 GiB or more cannot be encoded at once");
  std::vector<Seg> raw, norm;
  split_added(p, p.raw_matcher, text, raw);
  std::string normalized;
  for (const Seg& r : raw) {
    if (r.token >= 0) {
      out.push_back(p.added[static_cast<size_t>(r.token)].id);
      continue;
    }
    if (r.b <= r.a) continue;
    std::string_view piece = text.substr(r.a, r.b - r.a);
    const bool at_start = r.a == 0;
    if (p.normalizer) {
      normalized.assign(piece);
      p.normalizer->apply(normalized);
      piece = normalized;
    }
    split_added(p, p.normalized_matcher, piece, norm);
    for (const Seg& n : norm) {
      if (n.token >= 0) out.push_back(p.added[static_cast<size_t>(n.token)].id);
      else if (n.b > n.a) model_piece(p, piece.substr(n.a, n.b - n.a), at_start && n.a == 0, out);
    }
  }
}

}  // namespace hf

namespace {

std::string read_text_file(const std::string& path, const char* what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error(path + ": cannot open " + what + " (no such file?)");
  if (!S_ISREG(st.st_mode)) throw Error(path + ": is not a regular file; expected " + what);
  if (st.st_size > (int64_t{1} << 30)) throw Error(path + ": larger than 1 GiB; not " + std::string(what));
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot read " + what);
  std::ostringstream ss;
  ss << f.rdbuf();
  if (!f && !f.eof()) throw Error(path + ": read error");
  return ss.str();
}

// tokenizer_config.json's eos_token: a string or {"content": ...}; empty when absent.
std::string config_eos(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return "";
  const auto j = nlohmann::json::parse(read_text_file(path, "a tokenizer_config.json"), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(path + ": not a JSON object");
  if (!j.contains("eos_token") || j["eos_token"].is_null()) return "";
  const auto& e = j["eos_token"];
  if (e.is_string()) return e.get<std::string>();
  if (e.is_object() && e.contains("content") && e["content"].is_string()) return e["content"].get<std::string>();
  throw Error(path + ": eos_token: expected a string or an object with \"content\"");
}

}  // namespace

HfTokenizer::~HfTokenizer() = default;

std::unique_ptr<HfTokenizer> HfTokenizer::load(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (std::filesystem::is_directory(path, ec)) {
    file = (std::filesystem::path(path) / "tokenizer.json").string();
    if (!std::filesystem::exists(file, ec)) throw Error(path + ": this folder has no tokenizer.json");
  }
  const std::string config = (std::filesystem::path(file).parent_path() / "tokenizer_config.json").string();
  return from_json(read_text_file(file, "a tokenizer.json"), file, config_eos(config));
}

std::unique_ptr<HfTokenizer> HfTokenizer::from_json(std::string_view json, const std::string& source,
                                                    const std::string& eot) {
  std::unique_ptr<HfTokenizer> t(new HfTokenizer());
  t->p_ = hf::load_pipeline(json, source);
  t->json_ = std::string(json);
  auto id_of = [&](const std::string& content) -> std::optional<int32_t> {
    if (const int32_t* a = t->p_->added_by_content.find(content)) return t->p_->added[static_cast<size_t>(*a)].id;
    return t->p_->model->token_to_id(content);
  };
  if (!eot.empty()) {
    const auto id = id_of(eot);
    if (!id) throw Error(source + ": the end-of-text token \"" + eot + "\" is not in this tokenizer");
    t->eot_ = *id;
  } else {
    for (const char* name : {"<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|end|>", "<|return|>"}) {
      const int32_t* a = t->p_->added_by_content.find(name);
      if (a && t->p_->added[static_cast<size_t>(*a)].special) {
        t->eot_ = t->p_->added[static_cast<size_t>(*a)].id;
        break;
      }
    }
  }
  t->source_ = source;
  return t;
}

int32_t HfTokenizer::vocab_size() const { return p_->vocab_size; }

int32_t HfTokenizer::eot_token() const {
  if (eot_ < 0) {
    throw Error(source_ + ": no end-of-text token found (looked for tokenizer_config.json's eos_token and the special "
                          "tokens <|end_of_text|>, <|endoftext|>, </s>, <eos>, <|end|>, <|return|>); add an eos_token "
                          "to tokenizer_config.json beside it");
  }
  return eot_;
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text) const { return encode(text, false); }

void HfTokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  const std::string valid = utf8_replace_invalid(text);
  hf::encode_ids(*p_, valid, out);
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  encode_append(text, ids);
  if (p_->post_processor) p_->post_processor->apply(ids, add_special);
  return ids;
}

std::string HfTokenizer::decode(std::span<const int32_t> tokens) const { return decode(tokens, false); }

std::string HfTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    const std::string* s = nullptr;
    if (const int32_t* a = p_->added_by_id.find(id)) {
      s = &p_->added[static_cast<size_t>(*a)].decode_form;
    } else {
      s = p_->model->id_to_token(id);
    }
    if (!s) {
      throw Error("decode: token " + std::to_string(i) + " is id " + std::to_string(id) +
                  ", which this tokenizer does not have (vocabulary of " + std::to_string(p_->vocab_size) + ")");
    }
    if (skip_special && p_->special_contents.find(*s)) continue;
    tokens.push_back(*s);
  }
  if (!p_->decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  p_->decoder->apply(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  if (const int32_t* a = p_->added_by_content.find(token)) return p_->added[static_cast<size_t>(*a)].id;
  return p_->model->token_to_id(token);
}

std::optional<std::string> HfTokenizer::id_to_token(int32_t id) const {
  if (const int32_t* a = p_->added_by_id.find(id)) {
    return p_->added[static_cast<size_t>(*a)].content;
  }
  const std::string* s = p_->model->id_to_token(id);
  return s ? std::optional<std::string>(*s) : std::nullopt;
}

std::string HfTokenizer::describe() const {
  nlohmann::json specials = nlohmann::json::object();
  for (const auto& t : p_->added) {
    if (t.special) specials[t.content] = t.id;
  }
  nlohmann::json d{{"name", name()},
                   {"kind", "bpe"},
                   {"vocab_size", vocab_size()},
                   {"eot_token", eot_token()},
                   {"eot_text", id_to_token(eot_).value_or("")},
                   {"special_tokens", specials},
                   {"shard_id", shard_id()},
                   {"version", 1},
                   {"tokenizer_json", json_}};
  return d.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace nvfp4::io

// A Hugging Face model folder (include/nvfp4/hf_model.hpp).
#include "nvfp4/hf_model.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "format/nvfp4.hpp"
#include "format/scalar.hpp"
#include "kernels/cpu/ops_common.hpp"  // NVFP4_OMP
#include "nvfp4/checkpoint_model.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"  // io::read_input_text

namespace nvfp4::infer {

namespace fs = std::filesystem;

struct HfModel::Impl {
  std::string dir;
  io::HfLlamaConfig hf;
  model::ModelConfig config;
  std::vector<model::ParamSpec> specs;
  io::Checkpoint weights;
  std::vector<std::string> stored_name;  // per spec: the tensor holding it (NVFP4: the codes)
  std::optional<io::QuantConfig> quant;
  std::vector<std::string> nvfp4_module;  // per spec: its module when stored as NVFP4, else empty
  std::map<size_t, io::Nvfp4Linear> layers;  // open_with_layers: the NVFP4 layers, by spec
  std::unique_ptr<io::Tokenizer> tokenizer;
  std::vector<int32_t> eos;
  bool nvfp4_export = false;  // written by `nvfp4 export-hf`: documents start with end-of-text
  std::optional<io::KvCacheScales> kv_scales;  // a checkpoint's FP8 KV cache scales
};

namespace {

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// generation_config.json's eos_token_id (an id or a list); none when the file is absent.
std::vector<int32_t> generation_eos(const fs::path& p) {
  if (!fs::exists(p)) return {};
  const auto j = nlohmann::json::parse(io::read_input_text(p.string()), nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(p.string() + ": not a JSON object");
  std::vector<int32_t> ids;
  if (!j.contains("eos_token_id") || j.at("eos_token_id").is_null()) return ids;
  const auto& e = j.at("eos_token_id");
  for (const auto& x : e.is_array() ? e : nlohmann::json::array({e})) {
    // An integer beyond int32 would wrap into some other id.
    const bool fits = x.is_number_unsigned() ? x.get<uint64_t>() <= uint64_t{std::numeric_limits<int32_t>::max()}
                      : x.is_number_integer() && x.get<int64_t>() >= std::numeric_limits<int32_t>::min() &&
                            x.get<int64_t>() <= std::numeric_limits<int32_t>::max();
    if (!fits) throw Error(p.string() + ": field \"eos_token_id\" is " + e.dump() + "; expected token ids");
    ids.push_back(x.get<int32_t>());
  }
  return ids;
}

// A NaN or infinity in a stored weight: the tensor and its first bad element, e.g. [3, 17].
[[noreturn]] void non_finite_weight(const std::string& dir, const model::ParamSpec& s, int64_t first, int64_t count) {
  std::string at = "]";
  for (size_t d = s.shape.size(); d-- > 0;) {
    at = std::to_string(first % s.shape[d]) + (at == "]" ? "" : ", ") + at;
    first /= s.shape[d];
  }
  throw Error(dir + ": tensor " + s.name + " holds " + std::to_string(count) + " NaN or infinite value(s), the first at [" +
              at + "; a model's weights are finite (the file is corrupt, or was saved from a diverged run)");
}

// The specs of the model's linear weights, the ones a quantized checkpoint may hold as NVFP4, by
// their module name (the spec's name without ".weight"): every block projection, and the LM head
// unless it is the tied embedding.
std::map<std::string, size_t> linear_weight_specs(const model::ModelConfig& c, const std::vector<model::ParamSpec>& specs) {
  std::map<std::string, size_t> out;
  const model::ParamIndex idx = model::param_index(c);
  auto add = [&](int spec) {
    const std::string& n = specs[static_cast<size_t>(spec)].name;
    out[n.substr(0, n.size() - std::string_view(".weight").size())] = static_cast<size_t>(spec);
  };
  for (const auto& L : idx.layers) {
    for (int k = 0; k < 7; ++k) add(L.weight(static_cast<model::LinearKind>(k)));
  }
  if (!c.tie_embeddings) add(idx.lm_head);
  return out;
}

// Whether a quantization config's ignore entry names the module: an exact name, an fnmatch
// pattern (ModelOpt's exclude_modules, e.g. "model.layers.0.*"), or compressed-tensors' "re:"
// regular expression, matched from the start of the name as Python's re.match does.
bool ignore_matches(const std::string& entry, const std::string& module) {
  if (entry.starts_with("re:")) {
    try {
      return std::regex_search(module, std::regex(entry.substr(3)), std::regex_constants::match_continuous);
    } catch (const std::regex_error&) {
      throw Error("quantization_config.ignore: \"" + entry + "\" is not a regular expression");
    }
  }
  return entry == module || fnmatch(entry.c_str(), module.c_str(), 0) == 0;
}

// The quantization a folder declares: config.json's quantization_config, else ModelOpt's
// hf_quant_config.json beside it.
std::optional<io::QuantConfig> folder_quantization(const fs::path& dir, const std::string& config_text) {
  const fs::path config_path = dir / "config.json", hf_quant = dir / "hf_quant_config.json";
  std::optional<io::QuantConfig> q = io::read_quantization_config(config_text, config_path.string());
  if (!q && fs::exists(hf_quant)) q = io::read_hf_quant_config(io::read_input_text(hf_quant.string()), hf_quant.string());
  return q;
}

}  // namespace

HfModel::HfModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfModel::HfModel(HfModel&&) noexcept = default;
HfModel& HfModel::operator=(HfModel&&) noexcept = default;
HfModel::~HfModel() = default;

HfModel HfModel::open(const std::string& dir_name) {
  const fs::path dir(dir_name);
  if (!fs::is_directory(dir)) {
    throw Error(dir_name + ": not a folder; a Hugging Face model is a folder with config.json and model.safetensors");
  }
  const fs::path config_path = dir / "config.json";
  if (!fs::exists(config_path)) throw Error(dir_name + ": no config.json in this folder (is it a Hugging Face model?)");
  const std::string config_text = io::read_input_text(config_path.string());
  auto m = std::make_unique<Impl>(Impl{dir_name, io::parse_config_json(config_text, config_path.string()), {}, {},
                                       io::Checkpoint::open(dir_name), {}, folder_quantization(dir, config_text), {},
                                       {}, nullptr, {}});
  try {
    m->config = model_config(m->hf);
  } catch (const Error& e) {
    throw Error(config_path.string() + ": " + e.what());
  }
  m->specs = model::param_specs(m->config);

  // Every parameter present with its exact shape and a float dtype.
  std::vector<std::string> names = m->weights.names();
  std::vector<bool> used(names.size(), false);
  auto position = [&](const std::string& n) {
    const auto it = std::lower_bound(names.begin(), names.end(), n);
    return it != names.end() && *it == n ? static_cast<long>(it - names.begin()) : -1L;
  };
  // The linear layers' weights: the parameters a quantized checkpoint may store as NVFP4.
  std::vector<std::string> module_of(m->specs.size());
  for (const auto& [module, spec] : linear_weight_specs(m->config, m->specs)) module_of[spec] = module;
  const int lm_head = model::param_index(m->config).lm_head;
  m->nvfp4_module.assign(m->specs.size(), std::string());
  for (const auto& s : m->specs) {
    const size_t i = m->stored_name.size();
    if (m->quant && !module_of[i].empty()) {
      const std::string& module = module_of[i];
      const bool ct = m->quant->format == io::QuantFormat::compressed_tensors;
      const std::string codes = module + (ct ? ".weight_packed" : ".weight");
      const long at_codes = position(codes);
      if (at_codes >= 0 && (ct || m->weights.info(codes).dtype == DType::U8)) {
        io::Nvfp4Linear l;
        try {
          l = io::read_nvfp4_linear(m->weights, module, m->quant->format);
        } catch (const Error& e) {
          throw Error(dir_name + ": " + e.what());
        }
        if (l.out != s.shape[0] || l.in != s.shape[1]) {
          throw Error(dir_name + ": NVFP4 layer " + module + " is " + std::to_string(l.out) + " x " + std::to_string(l.in) +
                      "; config.json implies " + std::to_string(s.shape[0]) + " x " + std::to_string(s.shape[1]));
        }
        if (l.w4a4() != m->quant->w4a4) {
          const auto names = io::nvfp4_linear_tensor_names(module, m->quant->format, true);
          throw Error(dir_name + ": NVFP4 layer " + module +
                      (m->quant->w4a4 ? " has no " + names.back() + ", which the config's W4A4 scheme needs"
                                      : " has " + names.back() + ", but the config says weight-only (W4A16)"));
        }
        for (const std::string& e : m->quant->ignore) {
          if (ignore_matches(e, module)) {
            throw Error(dir_name + ": NVFP4 layer " + module + " is stored quantized, but the quantization config's "
                        "ignore list names it (\"" + e + "\"): the config and the weights disagree");
          }
        }
        for (const std::string& n : io::nvfp4_linear_tensor_names(module, m->quant->format, l.w4a4())) {
          used[static_cast<size_t>(position(n))] = true;
        }
        m->stored_name.push_back(codes);
        m->nvfp4_module[i] = module;
        continue;
      }
      // A block's linear layer left in floats must be on the ignore list (a serving engine would
      // otherwise look for its quantized tensors). The LM head is unquantized by default.
      const bool head = static_cast<int>(i) == lm_head;
      if (!head && position(s.name) >= 0 &&
          std::none_of(m->quant->ignore.begin(), m->quant->ignore.end(),
                       [&](const std::string& e) { return ignore_matches(e, module); })) {
        throw Error(dir_name + ": tensor " + s.name + " is stored unquantized, but the quantization config's ignore "
                    "list does not name " + module + ": the config and the weights disagree");
      }
    }
    const long at = position(s.name);
    if (at < 0) {
      throw Error(dir_name + ": the weights have no tensor " + s.name + " (" + m->hf.architecture +
                  " with this config.json needs it)");
    }
    const io::TensorInfo& t = m->weights.info(s.name);
    if (t.dtype != DType::BF16 && t.dtype != DType::F16 && t.dtype != DType::F32) {
      throw Error(dir_name + ": tensor " + s.name + " is " + std::string(dtype_name(t.dtype)) +
                  "; nvfp4 loads BF16, F16 and F32 weights, and NVFP4 linear layers of a checkpoint whose config.json "
                  "declares them (quantization_config: modelopt or compressed-tensors)");
    }
    if (t.shape != s.shape) {
      auto dims = [](const std::vector<int64_t>& v) {
        std::string r = "[";
        for (size_t i = 0; i < v.size(); ++i) r += (i ? ", " : "") + std::to_string(v[i]);
        return r + "]";
      };
      throw Error(dir_name + ": tensor " + s.name + " has shape " + dims(t.shape) + "; config.json implies " +
                  dims(s.shape));
    }
    used[static_cast<size_t>(at)] = true;
    m->stored_name.push_back(s.name);
  }
  // ModelOpt's FP8 KV cache scales, read (and validated) when the config declares an FP8 cache.
  if (m->quant && m->quant->kv_cache_fp8) {
    try {
      m->kv_scales = io::read_kv_cache_scales(m->weights, m->config.n_layer);
    } catch (const Error& e) {
      throw Error(dir_name + ": " + e.what());
    }
    if (m->kv_scales) {
      for (int l = 0; l < m->config.n_layer; ++l) {
        for (const std::string& n : io::kv_cache_scale_names(l)) used[static_cast<size_t>(position(n))] = true;
      }
    }
  }
  for (size_t i = 0; i < names.size(); ++i) {
    if (used[i]) continue;
    const std::string& n = names[i];
    if (ends_with(n, ".k_proj.k_scale") || ends_with(n, ".v_proj.v_scale")) {
      throw Error(dir_name + ": tensor " + n + " is an FP8 KV cache scale" +
                  (m->quant && m->quant->kv_cache_fp8 ? " of no layer of this model"
                                                      : ", but the folder declares no FP8 KV cache (ModelOpt's "
                                                        "kv_cache_quant_algo \"FP8\")"));
    }
    if (ends_with(n, ".rotary_emb.inv_freq")) continue;  // a buffer older transformers saved; recomputed
    if (ends_with(n, ".self_attn.o_proj.bias") && m->hf.attention_bias) {
      // Llama's / Qwen3's attention_bias: o_proj's bias, which nvfp4's model has not — zeros only.
      const auto b = m->weights.bytes(n);
      if (std::all_of(b.begin(), b.end(), [](uint8_t x) { return x == 0 || x == 0x80; })) continue;
      throw Error(dir_name + ": tensor " + n + " is not zero; nvfp4's model has q/k/v biases only (no o_proj bias)");
    }
    if (n == "lm_head.weight" && m->config.tie_embeddings) {
      const auto a = m->weights.bytes(n), b = m->weights.bytes("model.embed_tokens.weight");
      if (m->weights.info(n).dtype == m->weights.info("model.embed_tokens.weight").dtype && a.size() == b.size() &&
          std::memcmp(a.data(), b.data(), a.size()) == 0) {
        continue;
      }
      throw Error(dir_name + ": tensor lm_head.weight differs from model.embed_tokens.weight, but config.json says "
                  "tie_word_embeddings: true");
    }
    throw Error(dir_name + ": unexpected tensor " + n + " (" + m->hf.architecture +
                " with this config.json has no such parameter)");
  }

  // Tokenizer: tokenizer.json, or our byte-level export's description.
  m->nvfp4_export = fs::exists(dir / "nvfp4_tokenizer.json");
  if (fs::exists(dir / "tokenizer.json")) {
    m->tokenizer = io::HfTokenizer::load(dir_name);
  } else if (fs::exists(dir / "nvfp4_tokenizer.json")) {
    const fs::path p = dir / "nvfp4_tokenizer.json";
    m->tokenizer = io::make_tokenizer_from_description(io::read_input_text(p.string()), p.string());
  }
  if (m->tokenizer && m->tokenizer->vocab_size() > m->config.vocab) {
    throw Error(dir_name + ": the tokenizer has " + std::to_string(m->tokenizer->vocab_size()) +
                " ids but config.json's vocab_size is " + std::to_string(m->config.vocab));
  }

  // End-of-text ids, in order, without duplicates.
  auto add_eos = [&](int32_t id) {
    if (id >= 0 && id < m->config.vocab && std::find(m->eos.begin(), m->eos.end(), id) == m->eos.end()) {
      m->eos.push_back(id);
    }
  };
  if (m->hf.eos_token_id) add_eos(*m->hf.eos_token_id);
  for (int id : m->hf.extra_eos_token_ids) add_eos(id);
  for (int32_t id : generation_eos(dir / "generation_config.json")) add_eos(id);
  if (m->tokenizer) {
    try {
      add_eos(m->tokenizer->eot_token());
    } catch (const Error&) {
      // A tokenizer without an end-of-text token: the config's ids are the ones.
    }
  }
  return HfModel(std::move(m));
}

HfModel HfModel::open_with_layers(const std::string& dir, std::vector<io::Nvfp4Linear> layers, bool w4a4) {
  HfModel m = open(dir);
  if (m.impl_->quant) throw Error(dir + " is already an NVFP4 checkpoint: give the unquantized model");
  const std::map<std::string, size_t> linear = linear_weight_specs(m.config(), m.impl_->specs);
  for (io::Nvfp4Linear& l : layers) {
    const auto it = linear.find(l.module);
    if (it == linear.end()) throw Error("NVFP4 layer " + l.module + ": " + dir + " has no such linear layer");
    const auto& s = m.impl_->specs[it->second];
    if (l.out != s.shape[0] || l.in != s.shape[1]) {
      throw Error("NVFP4 layer " + l.module + " is " + std::to_string(l.out) + " x " + std::to_string(l.in) + "; " +
                  s.name + " is " + std::to_string(s.shape[0]) + " x " + std::to_string(s.shape[1]));
    }
    io::check_nvfp4_linear(l);
    if (l.w4a4() != w4a4) {
      throw Error("NVFP4 layer " + l.module + (w4a4 ? " has no input factors, which W4A4 needs" : " has input factors, but "
                                                                                                  "the scheme is W4A16"));
    }
    if (!m.impl_->layers.emplace(it->second, std::move(l)).second) {
      throw Error("NVFP4 layer " + it->first + " is given twice");
    }
  }
  io::QuantConfig q;
  q.w4a4 = w4a4;
  m.impl_->quant = q;
  return m;
}

const std::string& HfModel::dir() const { return impl_->dir; }
const std::optional<io::QuantConfig>& HfModel::quantization() const { return impl_->quant; }
const std::optional<io::KvCacheScales>& HfModel::kv_cache_scales() const { return impl_->kv_scales; }
bool HfModel::stored_nvfp4(size_t i) const { return !impl_->nvfp4_module.at(i).empty() || impl_->layers.count(i); }
bool HfModel::has_unquantized(size_t i) const { return impl_->nvfp4_module.at(i).empty(); }

io::Nvfp4Linear HfModel::read_nvfp4(size_t i) const {
  if (const auto it = impl_->layers.find(i); it != impl_->layers.end()) return it->second;
  const std::string& module = impl_->nvfp4_module.at(i);
  if (module.empty()) throw Error(impl_->dir + ": tensor " + impl_->specs[i].name + " is not stored as NVFP4");
  try {
    return io::read_nvfp4_linear(impl_->weights, module, impl_->quant->format);
  } catch (const Error& e) {
    throw Error(impl_->dir + ": " + e.what());
  }
}
const io::HfLlamaConfig& HfModel::hf_config() const { return impl_->hf; }
const model::ModelConfig& HfModel::config() const { return impl_->config; }
const std::vector<model::ParamSpec>& HfModel::specs() const { return impl_->specs; }
DType HfModel::stored_dtype(size_t i) const { return impl_->weights.info(impl_->stored_name.at(i)).dtype; }

uint64_t HfModel::stored_bytes() const {
  uint64_t n = 0;
  for (size_t i = 0; i < impl_->specs.size(); ++i) {
    const std::string& module = impl_->nvfp4_module[i];
    if (module.empty()) {
      n += impl_->weights.info(impl_->stored_name[i]).nbytes();
      continue;
    }
    for (const std::string& t : io::nvfp4_linear_tensor_names(module, impl_->quant->format, impl_->quant->w4a4)) {
      n += impl_->weights.info(t).nbytes();
    }
  }
  return n;
}


void HfModel::read_f32(size_t i, std::span<float> out) const {
  const auto& s = impl_->specs.at(i);
  if (static_cast<int64_t>(out.size()) != s.numel) throw Error("HfModel::read_f32: wrong buffer size for " + s.name);
  if (!has_unquantized(i)) {
    io::decode_nvfp4_linear(read_nvfp4(i), out);
    // The scales and factor are finite, but their product may not be (a factor near FLT_MAX).
    int64_t bad = 0, first = s.numel;
    for (int64_t k = 0; k < s.numel; ++k) {
      if (!std::isfinite(out[k])) ++bad, first = std::min(first, k);
    }
    if (bad > 0) non_finite_weight(impl_->dir, s, first, bad);
    return;
  }
  const auto bytes = impl_->weights.bytes(impl_->stored_name[i]);
  const DType d = stored_dtype(i);
  // Converted in parallel (a model's weights are gigabytes); the count and the first bad element
  // do not depend on the thread count.
  int64_t bad = 0, first = s.numel;
  NVFP4_OMP("omp parallel for reduction(+ : bad) reduction(min : first)")
  for (int64_t k = 0; k < s.numel; ++k) {
    if (d == DType::F32) {
      std::memcpy(&out[k], bytes.data() + 4 * k, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * k, 2);
      out[k] = d == DType::BF16 ? fmt::bf16_decode(h) : fmt::fp16_decode(h);
    }
    if (!std::isfinite(out[k])) ++bad, first = std::min(first, k);
  }
  if (bad > 0) non_finite_weight(impl_->dir, s, first, bad);
}

void HfModel::read_bf16(size_t i, std::span<uint16_t> out) const {
  const auto& s = impl_->specs.at(i);
  if (static_cast<int64_t>(out.size()) != s.numel) throw Error("HfModel::read_bf16: wrong buffer size for " + s.name);
  if (!has_unquantized(i)) {
    std::vector<float> f(out.size());
    read_f32(i, f);
    for (size_t k = 0; k < f.size(); ++k) out[k] = fmt::bf16_encode(f[k]);
    return;
  }
  const auto bytes = impl_->weights.bytes(impl_->stored_name[i]);
  const DType d = stored_dtype(i);
  int64_t bad = 0, first = s.numel;
  if (d == DType::BF16) std::memcpy(out.data(), bytes.data(), bytes.size());
  NVFP4_OMP("omp parallel for reduction(+ : bad) reduction(min : first)")
  for (int64_t k = 0; k < s.numel; ++k) {
    if (d != DType::BF16) {
      float v;
      if (d == DType::F32) {
        std::memcpy(&v, bytes.data() + 4 * k, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * k, 2);
        v = fmt::fp16_decode(h);
      }
      out[k] = fmt::bf16_encode(v);  // a finite F32 beyond BF16's range becomes infinity: caught below
    }
    if ((out[k] & 0x7F80u) == 0x7F80u) ++bad, first = std::min(first, k);  // exponent all ones: NaN or infinity
  }
  if (bad > 0) non_finite_weight(impl_->dir, s, first, bad);
}

std::vector<float> HfModel::read_all_f32() const {
  const auto& last = impl_->specs.back();
  std::vector<float> all(static_cast<size_t>(last.offset + last.numel));
  for (size_t i = 0; i < impl_->specs.size(); ++i) {
    const auto& s = impl_->specs[i];
    read_f32(i, std::span<float>(all.data() + s.offset, static_cast<size_t>(s.numel)));
  }
  return all;
}

std::vector<std::string> HfModel::input_files() const {
  std::vector<std::string> files;
  const fs::path dir(impl_->dir);
  for (const char* name : {"config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
                           "tokenizer_config.json", "special_tokens_map.json", "nvfp4_tokenizer.json"}) {
    if (fs::exists(dir / name)) files.push_back((dir / name).string());
  }
  for (const auto& shard : impl_->weights.shards()) files.push_back(shard.path());
  return files;
}

std::vector<int32_t> HfModel::eos_ids() const { return impl_->eos; }
bool HfModel::has_tokenizer() const { return impl_->tokenizer != nullptr; }

const io::Tokenizer& HfModel::tokenizer() const {
  if (!impl_->tokenizer) {
    throw Error(impl_->dir + ": no tokenizer.json in this folder; add the model's tokenizer.json (or score token ids: "
                "nvfp4 eval --ids)");
  }
  return *impl_->tokenizer;
}

std::vector<int32_t> HfModel::encode_prompt(const std::string& text) const {
  const io::Tokenizer& tok = tokenizer();
  const auto* hf = dynamic_cast<const io::HfTokenizer*>(&tok);
  if (hf && !impl_->nvfp4_export) return hf->encode(text, /*add_special=*/true);
  std::vector<int32_t> ids = {tok.eot_token()};
  tok.encode_append(text, ids);
  return ids;
}

}  // namespace nvfp4::infer

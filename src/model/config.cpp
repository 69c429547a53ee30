// ModelConfig: validation, JSON, sizes; the parameter layout and its initialization.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "format/philox.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"

namespace nvfp4::model {

int ModelConfig::ffn() const {
  if (d_ffn > 0) return d_ffn;
  const int raw = (8 * d_model + 2) / 3;  // ceil(8/3 d)
  return (raw + 63) / 64 * 64;
}

void ModelConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("model config: " + what);
  };
  need(n_layer >= 1, "n_layer = " + std::to_string(n_layer) + " must be >= 1");
  need(d_model >= 16 && d_model % 16 == 0, "d_model = " + std::to_string(d_model) +
                                               " must be a positive multiple of 16 (NVFP4 blocks run along it)");
  need(head_dim >= 0, "head_dim = " + std::to_string(head_dim) + " must be >= 0 (0: d_model / n_head)");
  need(n_head >= 1 && (head_dim > 0 || d_model % n_head == 0),
       "n_head = " + std::to_string(n_head) + " must divide d_model = " + std::to_string(d_model) +
           " (or give head_dim)");
  need(head_size() >= 2 && head_size() % 2 == 0,
       "head size = " + std::to_string(head_size()) + " must be even and >= 2 (RoPE pairs)");
  need(sliding_window >= 0, "sliding_window = " + std::to_string(sliding_window) + " must be >= 0 (0: none)");
  const RopeScalingConfig& rs = rope_scaling;
  if (rs.type != RopeScaling::none) {
    need(rs.factor > 0 && std::isfinite(rs.factor), "rope_scaling.factor must be positive");
  }
  if (rs.type == RopeScaling::llama3) {
    need(rs.low_freq_factor > 0 && rs.high_freq_factor > rs.low_freq_factor && std::isfinite(rs.high_freq_factor),
         "rope_scaling needs 0 < low_freq_factor < high_freq_factor");
    need(rs.original_max_position >= 1, "rope_scaling.original_max_position_embeddings must be >= 1");
  }
  need(n_kv_head >= 1 && n_head % n_kv_head == 0,
       "n_kv_head = " + std::to_string(n_kv_head) + " must divide n_head = " + std::to_string(n_head));
  need(d_ffn >= 0 && ffn() % 16 == 0, "d_ffn = " + std::to_string(d_ffn) + " must be 0 (auto) or a multiple of 16");
  need(vocab >= 2, "vocab = " + std::to_string(vocab) + " must be >= 2");
  need(seq_len >= 1, "seq_len = " + std::to_string(seq_len) + " must be >= 1");
  need(rope_theta > 0 && std::isfinite(rope_theta), "rope_theta must be positive");
  need(norm_eps > 0 && std::isfinite(norm_eps), "norm_eps must be positive");
  need(init_std > 0 && std::isfinite(init_std), "init_std must be positive");
}

namespace {
// A float as the shortest-looking double that reads back as the same float ("1e-05", not
// "9.999999747378752e-06"): 9 significant digits always round-trip an FP32 value.
double float_for_json(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
  for (int digits = 1; digits <= 9; ++digits) {
    char shorter[32];
    std::snprintf(shorter, sizeof shorter, "%.*g", digits, static_cast<double>(v));
    if (std::strtof(shorter, nullptr) == v) return std::strtod(shorter, nullptr);
  }
  return std::strtod(buf, nullptr);
}
RopeScalingConfig rope_scaling_from_json(const nlohmann::json& v) {
  if (!v.is_object()) throw Error("model config: \"rope_scaling\" must be an object");
  RopeScalingConfig r;
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& k = it.key();
    const auto& x = it.value();
    if (k == "type") {
      if (x == "linear") r.type = RopeScaling::linear;
      else if (x == "llama3") r.type = RopeScaling::llama3;
      else throw Error("model config: rope_scaling.type " + x.dump() + " is not \"linear\" or \"llama3\"");
    } else if (k == "original_max_position") {
      if (!x.is_number_integer()) throw Error("model config: rope_scaling.original_max_position must be an integer");
      r.original_max_position = x.get<int>();
    } else if (k == "factor" || k == "low_freq_factor" || k == "high_freq_factor") {
      if (!x.is_number()) throw Error("model config: rope_scaling." + k + " must be a number");
      (k == "factor" ? r.factor : k == "low_freq_factor" ? r.low_freq_factor : r.high_freq_factor) = x.get<float>();
    } else {
      throw Error("model config: unknown key rope_scaling." + k +
                  " (known: type, factor, low_freq_factor, high_freq_factor, original_max_position)");
    }
  }
  if (r.type == RopeScaling::none) throw Error("model config: rope_scaling needs a \"type\"");
  return r;
}

}  // namespace

std::vector<float> ModelConfig::rope_inv_freq() const {
  const int HS = head_size();
  std::vector<float> f(static_cast<size_t>(HS / 2));
  for (int i = 0; i < HS / 2; ++i) {
    f[i] = 1.0f / std::pow(rope_theta, static_cast<float>(2 * i) / static_cast<float>(HS));  // as cpu::rope_forward
  }
  const RopeScalingConfig& r = rope_scaling;
  if (r.type == RopeScaling::linear) {
    for (float& x : f) x /= r.factor;
  } else if (r.type == RopeScaling::llama3) {
    // transformers' _compute_llama3_parameters, in FP32: long wavelengths divided by factor,
    // short ones kept, the band between blended linearly in the context/wavelength ratio.
    const float old_ctx = static_cast<float>(r.original_max_position);
    const float low_wavelen = old_ctx / r.low_freq_factor, high_wavelen = old_ctx / r.high_freq_factor;
    for (float& x : f) {
      const float wavelen = static_cast<float>(2.0 * 3.141592653589793) / x;
      const float scaled = wavelen > low_wavelen ? x / r.factor : x;
      if (wavelen < high_wavelen || wavelen > low_wavelen) {
        x = scaled;
      } else {
        const float smooth = (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        x = (1.0f - smooth) * scaled / r.factor + smooth * scaled;
      }
    }
  }
  return f;
}

std::string ModelConfig::to_json() const {
  nlohmann::ordered_json j;
  j["n_layer"] = n_layer;
  j["d_model"] = d_model;
  j["n_head"] = n_head;
  j["n_kv_head"] = n_kv_head;
  j["d_ffn"] = ffn();
  j["vocab"] = vocab;
  j["seq_len"] = seq_len;
  j["rope_theta"] = float_for_json(rope_theta);
  j["norm_eps"] = float_for_json(norm_eps);
  j["init_std"] = float_for_json(init_std);
  // The features only where they differ from their default: a plain model's JSON is unchanged.
  if (head_dim > 0) j["head_dim"] = head_dim;
  if (attention_bias) j["attention_bias"] = true;
  if (qk_norm) j["qk_norm"] = true;
  if (tie_embeddings) j["tie_embeddings"] = true;
  if (sliding_window > 0) j["sliding_window"] = sliding_window;
  if (rope_scaling.type != RopeScaling::none) {
    nlohmann::ordered_json r;
    r["type"] = rope_scaling.type == RopeScaling::linear ? "linear" : "llama3";
    r["factor"] = float_for_json(rope_scaling.factor);
    if (rope_scaling.type == RopeScaling::llama3) {
      r["low_freq_factor"] = float_for_json(rope_scaling.low_freq_factor);
      r["high_freq_factor"] = float_for_json(rope_scaling.high_freq_factor);
      r["original_max_position"] = rope_scaling.original_max_position;
    }
    j["rope_scaling"] = r;
  }
  return j.dump();
}

ModelConfig ModelConfig::from_json(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("model config: not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw Error("model config: expected a JSON object");
  ModelConfig c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const auto& v = it.value();
    auto as_int = [&]() {
      if (!v.is_number_integer()) throw Error("model config: \"" + k + "\" must be an integer");
      return v.get<int>();
    };
    auto as_float = [&]() {
      if (!v.is_number()) throw Error("model config: \"" + k + "\" must be a number");
      return v.get<float>();
    };
    auto as_bool = [&]() {
      if (!v.is_boolean()) throw Error("model config: \"" + k + "\" must be true or false");
      return v.get<bool>();
    };
    if (k == "n_layer") c.n_layer = as_int();
    else if (k == "d_model") c.d_model = as_int();
    else if (k == "n_head") c.n_head = as_int();
    else if (k == "n_kv_head") c.n_kv_head = as_int();
    else if (k == "d_ffn") c.d_ffn = as_int();
    else if (k == "vocab") c.vocab = as_int();
    else if (k == "seq_len") c.seq_len = as_int();
    else if (k == "rope_theta") c.rope_theta = as_float();
    else if (k == "norm_eps") c.norm_eps = as_float();
    else if (k == "init_std") c.init_std = as_float();
    else if (k == "head_dim") c.head_dim = as_int();
    else if (k == "attention_bias") c.attention_bias = as_bool();
    else if (k == "qk_norm") c.qk_norm = as_bool();
    else if (k == "tie_embeddings") c.tie_embeddings = as_bool();
    else if (k == "sliding_window") c.sliding_window = as_int();
    else if (k == "rope_scaling") c.rope_scaling = rope_scaling_from_json(v);
    else {
      throw Error("model config: unknown key \"" + k +
                  "\" (known: n_layer, d_model, n_head, n_kv_head, d_ffn, vocab, seq_len, rope_theta, norm_eps, "
                  "init_std, head_dim, attention_bias, qk_norm, tie_embeddings, sliding_window, rope_scaling)");
    }
  }
  c.validate();
  return c;
}

int64_t ModelConfig::num_params() const {
  int64_t n = 0;
  for (const auto& s : param_specs(*this)) n += s.numel;
  return n;
}

double ModelConfig::flops_per_token(int T) const {
  const double C = d_model, F = ffn(), HS = head_size(), L = n_layer;
  const double matmul = L * (C * HS * (n_head + 2.0 * n_kv_head) + HS * n_head * C + 3.0 * C * F) + C * vocab;
  // Attention: scores q.k and att.v, 2 x T x HS x NH multiply-adds per token and layer (full
  // T x T counted, as PaLM's MFU convention).
  const double attention = L * 2.0 * T * HS * n_head;
  return 6.0 * matmul + 6.0 * attention;
}

const char* linear_name(LinearKind k) {
  switch (k) {
    case LinearKind::q: return "self_attn.q_proj";
    case LinearKind::k: return "self_attn.k_proj";
    case LinearKind::v: return "self_attn.v_proj";
    case LinearKind::o: return "self_attn.o_proj";
    case LinearKind::gate: return "mlp.gate_proj";
    case LinearKind::up: return "mlp.up_proj";
    case LinearKind::down: return "mlp.down_proj";
    case LinearKind::lm_head: return "lm_head";
  }
  return "?";
}

std::vector<recipe::LinearRef> linear_refs(int n_layer) {
  // q, k, v read the block's first normed input; gate and up the second.
  constexpr int kInputGroup[] = {0, 0, 0, 1, 2, 2, 3};
  std::vector<recipe::LinearRef> refs;
  for (int l = 0; l < n_layer; ++l) {
    for (int k = 0; k < 7; ++k) {
      const auto kind = static_cast<LinearKind>(k);
      refs.push_back({l, linear_name(kind), static_cast<uint32_t>(k), kInputGroup[k]});
    }
  }
  refs.push_back({n_layer, linear_name(LinearKind::lm_head), static_cast<uint32_t>(LinearKind::lm_head), 0});
  return refs;
}

recipe::Plan resolve_plan(const recipe::Recipe& r, int n_layer) {
  const auto refs = linear_refs(n_layer);
  return recipe::Plan::resolve(r, n_layer, refs);
}

std::vector<ParamSpec> param_specs(const ModelConfig& c) {
  c.validate();
  const int64_t C = c.d_model, F = c.ffn(), V = c.vocab, HS = c.head_size(), NH = c.n_head, NKV = c.n_kv_head;
  std::vector<ParamSpec> s;
  int64_t offset = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    s.push_back({std::move(name), std::move(shape), offset, n, decay});
    offset += n;
  };
  add("model.embed_tokens.weight", {V, C}, true);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {C}, false);
    add(p + "self_attn.q_proj.weight", {NH * HS, C}, true);
    if (c.attention_bias) add(p + "self_attn.q_proj.bias", {NH * HS}, false);
    add(p + "self_attn.k_proj.weight", {NKV * HS, C}, true);
    if (c.attention_bias) add(p + "self_attn.k_proj.bias", {NKV * HS}, false);
    add(p + "self_attn.v_proj.weight", {NKV * HS, C}, true);
    if (c.attention_bias) add(p + "self_attn.v_proj.bias", {NKV * HS}, false);
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {HS}, false);
      add(p + "self_attn.k_norm.weight", {HS}, false);
    }
    add(p + "self_attn.o_proj.weight", {C, NH * HS}, true);
    add(p + "post_attention_layernorm.weight", {C}, false);
    add(p + "mlp.gate_proj.weight", {F, C}, true);
    add(p + "mlp.up_proj.weight", {F, C}, true);
    add(p + "mlp.down_proj.weight", {C, F}, true);
  }
  add("model.norm.weight", {C}, false);
  if (!c.tie_embeddings) add("lm_head.weight", {V, C}, true);
  return s;
}

int LayerParamIndex::weight(LinearKind k) const {
  switch (k) {
    case LinearKind::q: return wq;
    case LinearKind::k: return wk;
    case LinearKind::v: return wv;
    case LinearKind::o: return wo;
    case LinearKind::gate: return wg;
    case LinearKind::up: return wu;
    case LinearKind::down: return wd;
    case LinearKind::lm_head: break;
  }
  throw Error("LayerParamIndex::weight: the LM head is not a block's");
}

int LayerParamIndex::bias(LinearKind k) const {
  return k == LinearKind::q ? bq : k == LinearKind::k ? bk : k == LinearKind::v ? bv : -1;
}

ParamIndex param_index(const ModelConfig& c) {
  // Walks param_specs() in its order; the names say which slot each index fills.
  const auto specs = param_specs(c);
  ParamIndex x;
  x.layers.resize(static_cast<size_t>(c.n_layer));
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string& n = specs[i].name;
    const int idx = static_cast<int>(i);
    if (n == "model.embed_tokens.weight") { x.embed = idx; continue; }
    if (n == "model.norm.weight") { x.norm = idx; continue; }
    if (n == "lm_head.weight") { x.lm_head = idx; continue; }
    const size_t dot = n.find('.', 13);  // "model.layers.<l>."
    LayerParamIndex& L = x.layers.at(std::stoul(n.substr(13, dot - 13)));
    const std::string_view rest = std::string_view(n).substr(dot + 1);
    int* slot = rest == "input_layernorm.weight"            ? &L.ln1
                : rest == "self_attn.q_proj.weight"         ? &L.wq
                : rest == "self_attn.q_proj.bias"           ? &L.bq
                : rest == "self_attn.k_proj.weight"         ? &L.wk
                : rest == "self_attn.k_proj.bias"           ? &L.bk
                : rest == "self_attn.v_proj.weight"         ? &L.wv
                : rest == "self_attn.v_proj.bias"           ? &L.bv
                : rest == "self_attn.q_norm.weight"         ? &L.q_norm
                : rest == "self_attn.k_norm.weight"         ? &L.k_norm
                : rest == "self_attn.o_proj.weight"         ? &L.wo
                : rest == "post_attention_layernorm.weight" ? &L.ln2
                : rest == "mlp.gate_proj.weight"            ? &L.wg
                : rest == "mlp.up_proj.weight"              ? &L.wu
                : rest == "mlp.down_proj.weight"            ? &L.wd
                                                            : nullptr;
    if (!slot) throw Error("param_index: unexpected parameter " + n);
    *slot = idx;
  }
  if (c.tie_embeddings) x.lm_head = x.embed;
  return x;
}

void init_params(const ModelConfig& c, std::span<float> params, uint64_t seed) {
  const auto specs = param_specs(c);
  const int64_t total = specs.back().offset + specs.back().numel;
  if (static_cast<int64_t>(params.size()) != total) {
    throw Error("init_params: buffer holds " + std::to_string(params.size()) + " floats, the model needs " +
                std::to_string(total));
  }
  const float out_scale = 1.0f / std::sqrt(2.0f * static_cast<float>(c.n_layer));
  for (const ParamSpec& s : specs) {
    float* p = params.data() + s.offset;
    if (s.shape.size() == 1) {  // norm gains 1, biases 0
      const bool bias = s.name.size() > 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0;
      for (int64_t i = 0; i < s.numel; ++i) p[i] = bias ? 0.0f : 1.0f;
      continue;
    }
    const bool output_proj = s.name.find("o_proj") != std::string::npos || s.name.find("down_proj") != std::string::npos;
    const float stddev = c.init_std * (output_proj ? out_scale : 1.0f);
    // NOTE: the pair starting at element e of the whole buffer draws from counter (e, 0x1417);
    // Box-Muller turns two 24-bit uniforms into two normals. Same values on every machine (no
    // implementation-defined std:: distribution). A GPU run initializes on the host.
    for (int64_t i = 0; i < s.numel; i += 2) {
      const uint64_t e = static_cast<uint64_t>(s.offset + i);
      const fmt::Philox4x32 r = fmt::philox4x32_10({{uint32_t(e), uint32_t(e >> 32), 0x1417u, 0u}}, uint32_t(seed),
                                                   uint32_t(seed >> 32));
      const double u1 = (static_cast<double>(r.v[0] >> 8) + 1.0) / 16777217.0;  // (0, 1)
      const double u2 = static_cast<double>(r.v[1] >> 8) / 16777216.0;          // [0, 1)
      const double rad = std::sqrt(-2.0 * std::log(u1));
      p[i] = static_cast<float>(stddev * rad * std::cos(6.283185307179586 * u2));
      if (i + 1 < s.numel) p[i + 1] = static_cast<float>(stddev * rad * std::sin(6.283185307179586 * u2));
    }
  }
}

}  // namespace nvfp4::model

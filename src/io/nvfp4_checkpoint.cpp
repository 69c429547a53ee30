// ModelOpt and compressed-tensors NVFP4 layers and configs (include/nvfp4/nvfp4_checkpoint.hpp).
#include "nvfp4/nvfp4_checkpoint.hpp"

#include <cmath>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "format/nvfp4.hpp"
#include "format/scalar.hpp"
#include "io/strict_json.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::io {

namespace {

constexpr int kGroup = 16;

struct Names {
  const char *weight, *scale, *weight_factor, *input_factor;
};
Names names_of(QuantFormat f) {
  if (f == QuantFormat::modelopt) return {"weight", "weight_scale", "weight_scale_2", "input_scale"};
  return {"weight_packed", "weight_scale", "weight_global_scale", "input_global_scale"};
}

std::vector<uint8_t> f32_bytes(float v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

bool positive_finite(float v) { return std::isfinite(v) && v > 0.0f; }

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

const TensorInfo* find_tensor(const Checkpoint& ck, const std::string& name) {
  for (const auto& s : ck.shards()) {
    if (const TensorInfo* t = s.find(name)) return t;
  }
  return nullptr;
}

// A tensor-wide scale: F32 (or, when `bf16`, BF16), shape [] or [1]. `where` names it in errors.
float read_scalar(const Checkpoint& ck, const TensorInfo& t, const std::string& name, const std::string& where, bool bf16) {
  if (t.numel() != 1 || t.shape.size() > 1) {
    throw Error(where + " has shape " + shape_text(t.shape) + "; a tensor-wide scale is [] or [1]");
  }
  const auto b = ck.bytes(name);
  if (t.dtype == DType::F32) {
    float v;
    std::memcpy(&v, b.data(), 4);
    return v;
  }
  if (t.dtype == DType::BF16 && bf16) {
    uint16_t h;
    std::memcpy(&h, b.data(), 2);
    return fmt::bf16_decode(h);
  }
  throw Error(where + " is " + std::string(dtype_name(t.dtype)) + "; expected F32" + (bf16 ? " or BF16" : ""));
}

}  // namespace

std::string_view quant_format_name(QuantFormat f) {
  return f == QuantFormat::modelopt ? "modelopt" : "compressed-tensors";
}

QuantFormat parse_quant_format(std::string_view name, std::string_view option) {
  if (name == "modelopt") return QuantFormat::modelopt;
  if (name == "compressed-tensors") return QuantFormat::compressed_tensors;
  throw Error(std::string(option) + " " + std::string(name) + ": not a checkpoint format (modelopt, compressed-tensors)");
}

void check_nvfp4_linear(const Nvfp4Linear& l) {
  const std::string m = "NVFP4 layer " + l.module + ": ";
  if (l.in <= 0 || l.in % kGroup != 0 || l.out <= 0) {
    throw Error(m + "a " + std::to_string(l.out) + " x " + std::to_string(l.in) +
                " weight cannot be NVFP4 (its input size must be a positive multiple of 16)");
  }
  if (static_cast<int64_t>(l.packed.size()) != l.out * l.in / 2) {
    throw Error(m + std::to_string(l.packed.size()) + " code bytes; " + std::to_string(l.out) + " x " +
                std::to_string(l.in) + " needs " + std::to_string(l.out * l.in / 2));
  }
  if (static_cast<int64_t>(l.scales.size()) != l.out * l.in / kGroup) {
    throw Error(m + std::to_string(l.scales.size()) + " block scales; " + std::to_string(l.out) + " x " +
                std::to_string(l.in) + " needs " + std::to_string(l.out * l.in / kGroup));
  }
  for (size_t i = 0; i < l.scales.size(); ++i) {
    const uint8_t s = l.scales[i];
    if ((s & 0x7F) == 0x7F || (s & 0x80)) {
      throw Error(m + "block scale " + std::to_string(i) + " (row " + std::to_string(static_cast<int64_t>(i) / (l.in / kGroup)) +
                  ") is " + ((s & 0x7F) == 0x7F ? "NaN" : "negative") + " (E4M3 byte " + std::to_string(s) + ")");
    }
  }
  if (!positive_finite(l.weight_decode) || !positive_finite(l.weight_encode)) {
    throw Error(m + "the weight's tensor factor is not finite and positive (decode " + std::to_string(l.weight_decode) +
                ", encode " + std::to_string(l.weight_encode) + ")");
  }
  if (l.input_decode.has_value() != l.input_encode.has_value()) {
    throw Error(m + "only one of the input's decode and encode factors is set");
  }
  if (l.input_decode && (!positive_finite(*l.input_decode) || !positive_finite(*l.input_encode))) {
    throw Error(m + "the input's tensor factor is not finite and positive (decode " + std::to_string(*l.input_decode) +
                ", encode " + std::to_string(*l.input_encode) + ")");
  }
}

std::vector<std::string> nvfp4_linear_tensor_names(const std::string& module, QuantFormat f, bool w4a4) {
  const Names n = names_of(f);
  std::vector<std::string> v = {module + "." + n.weight, module + "." + n.scale, module + "." + n.weight_factor};
  if (w4a4) v.push_back(module + "." + n.input_factor);
  return v;
}

std::vector<OwnedTensor> nvfp4_linear_tensors(const Nvfp4Linear& l, QuantFormat f) {
  check_nvfp4_linear(l);
  const auto names = nvfp4_linear_tensor_names(l.module, f, l.w4a4());
  // ModelOpt's factors are 0-d decode scales; compressed-tensors' are [1] encode scales.
  const bool mo = f == QuantFormat::modelopt;
  const std::vector<int64_t> scalar = mo ? std::vector<int64_t>{} : std::vector<int64_t>{1};
  std::vector<OwnedTensor> t;
  t.push_back({names[0], DType::U8, {l.out, l.in / 2}, l.packed});
  t.push_back({names[1], DType::F8_E4M3, {l.out, l.in / kGroup}, l.scales});
  t.push_back({names[2], DType::F32, scalar, f32_bytes(mo ? l.weight_decode : l.weight_encode)});
  if (l.w4a4()) t.push_back({names[3], DType::F32, scalar, f32_bytes(mo ? *l.input_decode : *l.input_encode)});
  return t;
}

Nvfp4Linear read_nvfp4_linear(const Checkpoint& ck, const std::string& module, QuantFormat f) {
  const Names n = names_of(f);
  const bool mo = f == QuantFormat::modelopt;
  const auto where = [&](const std::string& name) { return "tensor " + name + " (" + std::string(quant_format_name(f)) + ")"; };
  const auto find = [&](const std::string& name) { return find_tensor(ck, name); };
  const auto require = [&](const std::string& name) -> const TensorInfo& {
    const TensorInfo* t = find(name);
    if (!t) throw Error("NVFP4 layer " + module + ": the checkpoint has no " + where(name));
    return *t;
  };
  // A scalar factor: F32 (or, for ModelOpt, BF16), shape [] or [1].
  const auto scalar = [&](const std::string& name) { return read_scalar(ck, require(name), name, where(name), mo); };

  Nvfp4Linear l;
  l.module = module;
  const std::string wname = module + "." + n.weight, sname = module + "." + n.scale;
  const TensorInfo& w = require(wname);
  if (w.dtype != DType::U8 || w.shape.size() != 2) {
    throw Error(where(wname) + " is " + std::string(dtype_name(w.dtype)) + " " + shape_text(w.shape) +
                "; NVFP4 codes are U8 [out, in/2]");
  }
  l.out = w.shape[0];
  l.in = w.shape[1] * 2;
  const TensorInfo& s = require(sname);
  if (s.dtype != DType::F8_E4M3 || s.shape != std::vector<int64_t>{l.out, l.in / kGroup}) {
    throw Error(where(sname) + " is " + std::string(dtype_name(s.dtype)) + " " + shape_text(s.shape) +
                "; the block scales of a " + std::to_string(l.out) + " x " + std::to_string(l.in) + " weight are F8_E4M3 " +
                shape_text({l.out, l.in / kGroup}));
  }
  const auto wb = ck.bytes(wname), sb = ck.bytes(sname);
  l.packed.assign(wb.begin(), wb.end());
  l.scales.assign(sb.begin(), sb.end());
  const float wf = scalar(module + "." + n.weight_factor);
  l.weight_decode = mo ? wf : 1.0f / wf;
  l.weight_encode = mo ? 1.0f / wf : wf;
  const std::string iname = module + "." + n.input_factor;
  if (find(iname)) {
    const float v = scalar(iname);
    l.input_decode = mo ? v : 1.0f / v;
    l.input_encode = mo ? 1.0f / v : v;
  }
  check_nvfp4_linear(l);
  return l;
}

void decode_nvfp4_linear(const Nvfp4Linear& l, std::span<float> out) {
  if (static_cast<int64_t>(out.size()) != l.out * l.in) throw Error("decode_nvfp4_linear: wrong buffer size for " + l.module);
  const int64_t half = l.in / 2, blocks = l.in / kGroup;
  for (int64_t r = 0; r < l.out; ++r) {
    for (int64_t k = 0; k < l.in; ++k) {
      const uint8_t byte = l.packed[static_cast<size_t>(r * half + k / 2)];
      const uint8_t code = k % 2 == 0 ? byte & 0x0F : byte >> 4;
      const uint8_t scale = l.scales[static_cast<size_t>(r * blocks + k / kGroup)];
      out[static_cast<size_t>(r * l.in + k)] = fmt::nvfp4_decode(code, scale, l.weight_decode);
    }
  }
}

// ---- FP8 KV cache scales ---------------------------------------------------------------------------

std::vector<std::string> kv_cache_scale_names(int layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.";
  return {p + "k_proj.k_scale", p + "v_proj.v_scale"};
}

std::optional<KvCacheScales> read_kv_cache_scales(const Checkpoint& ck, int n_layer) {
  KvCacheScales s;
  std::string first_present, first_missing;
  for (int l = 0; l < n_layer; ++l) {
    const auto names = kv_cache_scale_names(l);
    for (size_t j = 0; j < 2; ++j) {
      const TensorInfo* t = find_tensor(ck, names[j]);
      if (!t) {
        if (first_missing.empty()) first_missing = names[j];
        continue;
      }
      if (first_present.empty()) first_present = names[j];
      const std::string where = "tensor " + names[j] + " (FP8 KV cache scale)";
      const float v = read_scalar(ck, *t, names[j], where, /*bf16=*/true);
      if (!positive_finite(v)) {
        throw Error(where + " is " + std::to_string(v) + "; a KV cache scale is finite and positive");
      }
      (j == 0 ? s.k : s.v).push_back(v);
    }
  }
  if (first_present.empty()) return std::nullopt;
  if (!first_missing.empty()) {
    throw Error("the checkpoint has FP8 KV cache scales (" + first_present + ") but no " + first_missing +
                "; every layer needs its k_scale and v_scale, or none has them (scale 1)");
  }
  return s;
}

std::vector<OwnedTensor> kv_cache_scale_tensors(const KvCacheScales& s) {
  if (s.k.size() != s.v.size()) throw Error("FP8 KV cache scales: " + std::to_string(s.k.size()) + " k_scale but " +
                                            std::to_string(s.v.size()) + " v_scale");
  std::vector<OwnedTensor> t;
  for (size_t l = 0; l < s.k.size(); ++l) {
    const auto names = kv_cache_scale_names(static_cast<int>(l));
    for (size_t j = 0; j < 2; ++j) {
      const float v = (j == 0 ? s.k : s.v)[l];
      if (!positive_finite(v)) throw Error(names[j] + " is " + std::to_string(v) + "; a KV cache scale is finite and positive");
      t.push_back({names[j], DType::F32, {}, f32_bytes(v)});
    }
  }
  return t;
}

// ---- configuration files ---------------------------------------------------------------------------

namespace {

nlohmann::ordered_json weight_args(bool ct) {
  nlohmann::ordered_json w = {{"dynamic", false}, {"num_bits", 4}, {"type", "float"}, {"group_size", kGroup}};
  if (ct) {
    w["strategy"] = "tensor_group";
    w["symmetric"] = true;
  }
  return w;
}

// kv_cache_quant_algo: absent or null (an unquantized cache) or "FP8".
bool read_kv_cache_algo(const nlohmann::json& q, const std::string& field) {
  if (!q.contains("kv_cache_quant_algo") || q.at("kv_cache_quant_algo").is_null()) return false;
  const auto& a = q.at("kv_cache_quant_algo");
  if (a.is_string() && a.get<std::string>() == "FP8") return true;
  throw Error(field + " is " + a.dump() + "; nvfp4 reads null or \"FP8\" (an E4M3 KV cache with per-tensor scales)");
}

}  // namespace

std::string quantization_config_json(const QuantConfig& c) {
  const bool ct = c.format == QuantFormat::compressed_tensors;
  if (ct && c.kv_cache_fp8) {
    throw Error("an FP8 KV cache is written in ModelOpt checkpoints only (k_proj.k_scale / v_proj.v_scale); "
                "compressed-tensors' kv_cache_scheme is not written yet: use --format modelopt");
  }
  nlohmann::ordered_json group = {{"targets", nlohmann::ordered_json::array({"Linear"})}, {"weights", weight_args(ct)}};
  if (c.w4a4) {
    auto a = weight_args(ct);
    if (ct) a["dynamic"] = "local";  // per-block scales at run time under a calibrated global scale
    group["input_activations"] = a;
  }
  nlohmann::ordered_json q;
  if (ct) {
    q = {{"quant_method", "compressed-tensors"},
         {"format", "nvfp4-pack-quantized"},
         {"quantization_status", "compressed"},
         {"config_groups", {{"group_0", group}}},
         {"ignore", c.ignore}};
  } else {
    q = {{"quant_method", "modelopt"},
         {"quant_algo", c.w4a4 ? "NVFP4" : "W4A16_NVFP4"},
         {"config_groups", {{"group_0", group}}},
         {"ignore", c.ignore},
         {"kv_cache_quant_algo", c.kv_cache_fp8 ? nlohmann::ordered_json("FP8") : nlohmann::ordered_json(nullptr)},
         {"producer", {{"name", c.producer}, {"version", c.producer_version}}}};
  }
  return q.dump(2);
}

std::string hf_quant_config_json(const QuantConfig& c) {
  nlohmann::ordered_json j = {
      {"producer", {{"name", c.producer}, {"version", c.producer_version}}},
      {"quantization",
       {{"quant_algo", c.w4a4 ? "NVFP4" : "W4A16_NVFP4"},
        {"kv_cache_quant_algo", c.kv_cache_fp8 ? nlohmann::ordered_json("FP8") : nlohmann::ordered_json(nullptr)},
        {"group_size", kGroup},
        {"exclude_modules", c.ignore}}}};
  return j.dump(2);
}

std::optional<QuantConfig> read_quantization_config(std::string_view config_json, std::string_view file) {
  const std::string f(file);
  const StrictJson parsed = parse_strict_json(config_json);
  if (!parsed.ok) throw Error(f + ": not valid JSON" + (parsed.syntax_error ? " (" + *parsed.syntax_error + ")" : ""));
  const nlohmann::json& root = parsed.value;
  if (!root.is_object() || !root.contains("quantization_config")) return std::nullopt;
  const nlohmann::json& q = root.at("quantization_config");
  const auto field = [&](const std::string& k) { return f + ": quantization_config." + k; };
  if (!q.is_object() || !q.contains("quant_method") || !q.at("quant_method").is_string()) {
    throw Error(field("quant_method") + " is missing (nvfp4 reads modelopt and compressed-tensors NVFP4 checkpoints)");
  }
  const std::string method = q.at("quant_method").get<std::string>();
  QuantConfig c;
  if (method == "modelopt") {
    c.format = QuantFormat::modelopt;
    const std::string algo = q.value("quant_algo", std::string());
    if (algo != "NVFP4" && algo != "W4A16_NVFP4") {
      throw Error(field("quant_algo") + " is \"" + algo + "\"; nvfp4 reads NVFP4 and W4A16_NVFP4");
    }
    c.w4a4 = algo == "NVFP4";
  } else if (method == "compressed-tensors") {
    c.format = QuantFormat::compressed_tensors;
    const std::string fmt = q.value("format", std::string());
    if (fmt != "nvfp4-pack-quantized") {
      throw Error(field("format") + " is \"" + fmt + "\"; nvfp4 reads nvfp4-pack-quantized");
    }
    const auto& groups = q.value("config_groups", nlohmann::json::object());
    if (!groups.is_object() || groups.size() != 1) {
      throw Error(field("config_groups") + " must hold one group (mixed schemes are not read yet)");
    }
    const auto& g = groups.begin().value();
    c.w4a4 = g.is_object() && g.contains("input_activations") && !g.at("input_activations").is_null();
  } else {
    throw Error(field("quant_method") + " is \"" + method + "\"; nvfp4 reads modelopt and compressed-tensors");
  }
  if (q.contains("config_groups") && q.at("config_groups").is_object()) {
    for (const auto& [name, g] : q.at("config_groups").items()) {
      if (!g.is_object() || !g.contains("weights")) continue;
      const auto& w = g.at("weights");
      if (w.value("num_bits", 0) != 4 || w.value("group_size", 0) != kGroup || w.value("type", std::string()) != "float") {
        throw Error(field("config_groups." + name + ".weights") + " is not NVFP4 (4-bit float, group size 16)");
      }
    }
  }
  if (q.contains("ignore")) {
    if (!q.at("ignore").is_array()) throw Error(field("ignore") + " must be a list of module names or patterns");
    for (const auto& v : q.at("ignore")) {
      if (!v.is_string()) throw Error(field("ignore") + " must hold strings");
      c.ignore.push_back(v.get<std::string>());
    }
  }
  if (q.contains("kv_cache_scheme") && !q.at("kv_cache_scheme").is_null()) {
    throw Error(field("kv_cache_scheme") + " is " + q.at("kv_cache_scheme").dump() +
                "; nvfp4 reads a quantized KV cache only as ModelOpt declares it (kv_cache_quant_algo \"FP8\")");
  }
  c.kv_cache_fp8 = read_kv_cache_algo(q, field("kv_cache_quant_algo"));
  if (q.contains("producer") && q.at("producer").is_object()) {
    c.producer = q.at("producer").value("name", std::string());
    c.producer_version = q.at("producer").value("version", std::string());
  }
  return c;
}

QuantConfig read_hf_quant_config(std::string_view json, std::string_view file) {
  const std::string f(file);
  const StrictJson parsed = parse_strict_json(json);
  if (!parsed.ok) throw Error(f + ": not valid JSON" + (parsed.syntax_error ? " (" + *parsed.syntax_error + ")" : ""));
  const nlohmann::json& root = parsed.value;
  const auto field = [&](const std::string& k) { return f + ": quantization." + k; };
  if (!root.is_object() || !root.contains("quantization") || !root.at("quantization").is_object()) {
    throw Error(f + ": no \"quantization\" object (ModelOpt's hf_quant_config.json has one)");
  }
  const nlohmann::json& q = root.at("quantization");
  QuantConfig c;
  c.format = QuantFormat::modelopt;
  const std::string algo = q.contains("quant_algo") && q.at("quant_algo").is_string() ? q.at("quant_algo").get<std::string>() : "";
  if (algo != "NVFP4" && algo != "W4A16_NVFP4") {
    throw Error(field("quant_algo") + " is " + (q.contains("quant_algo") ? q.at("quant_algo").dump() : "missing") +
                "; nvfp4 reads NVFP4 and W4A16_NVFP4");
  }
  c.w4a4 = algo == "NVFP4";
  if (q.contains("group_size") && !(q.at("group_size").is_number_integer() && q.at("group_size").get<int64_t>() == kGroup)) {
    throw Error(field("group_size") + " is " + q.at("group_size").dump() + "; NVFP4 blocks are 16 values");
  }
  c.kv_cache_fp8 = read_kv_cache_algo(q, field("kv_cache_quant_algo"));
  if (q.contains("exclude_modules")) {
    if (!q.at("exclude_modules").is_array()) throw Error(field("exclude_modules") + " must be a list of module names or patterns");
    for (const auto& v : q.at("exclude_modules")) {
      if (!v.is_string()) throw Error(field("exclude_modules") + " must hold strings");
      c.ignore.push_back(v.get<std::string>());
    }
  }
  if (root.contains("producer") && root.at("producer").is_object()) {
    c.producer = root.at("producer").value("name", std::string());
    c.producer_version = root.at("producer").value("version", std::string());
  }
  return c;
}

}  // namespace nvfp4::io

// Quantized model folders (include/nvfp4/ptq_export.hpp).
#include "nvfp4/ptq_export.hpp"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "format/nvfp4.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"

namespace nvfp4::ptq {

namespace fs = std::filesystem;

namespace {

// Files of a model folder copied as they are.
constexpr const char* kCopied[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                   "generation_config.json", "nvfp4_tokenizer.json", "chat_template.jinja"};

}  // namespace

io::Nvfp4Linear checkpoint_layer(const std::string& module, const Nvfp4Weight& w, std::optional<float> input_amax) {
  io::Nvfp4Linear l;
  l.module = module;
  l.out = w.rows;
  l.in = w.cols;
  l.packed = w.codes;
  l.scales = w.scales;
  l.weight_decode = w.decode;
  l.weight_encode = w.encode;
  if (input_amax) {
    const auto t = fmt::nvfp4_tensor_scale(*input_amax);
    l.input_decode = fmt::nvfp4_tensor_decode_factor(*input_amax);
    l.input_encode = t.s_enc;
  }
  return l;
}

std::vector<std::string> write_quantized_folder(const std::string& model_dir, const std::string& out_dir,
                                                const std::vector<io::Nvfp4Linear>& layers, const ExportOptions& o) {
  const fs::path src(model_dir), out(out_dir);
  if (io::same_file(model_dir, out_dir)) throw Error("the output folder " + out_dir + " is the model folder itself");
  io::require_output_folder("the output folder", out_dir);
  if (fs::exists(out)) {
    for (const auto& e : fs::directory_iterator(out)) {
      const std::string n = e.path().filename().string();
      if (n.starts_with("model") && (n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json"))) {
        throw Error(out_dir + " already holds a model (" + n + "); give a new folder");
      }
    }
  }
  // config.json with the quantization_config.
  const std::string config_text = io::read_input_text((src / "config.json").string());
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(config_text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) throw Error((src / "config.json").string() + ": not a JSON object");
  if (config.contains("quantization_config")) {
    throw Error((src / "config.json").string() + " already has a quantization_config: quantize the unquantized model");
  }
  config["quantization_config"] = nlohmann::ordered_json::parse(io::quantization_config_json(o.config));

  const io::Checkpoint ck = io::Checkpoint::open(model_dir);
  if (o.config.kv_cache_fp8 != o.kv_scales.has_value()) {
    throw Error(o.config.kv_cache_fp8 ? "an FP8 KV cache config needs its k_scale / v_scale (calibrate them)"
                                      : "KV cache scales given, but the config declares no FP8 KV cache");
  }
  std::map<std::string, const io::Nvfp4Linear*> by_weight;
  const std::vector<std::string> names = ck.names();  // sorted
  for (const auto& l : layers) {
    if (l.w4a4() != o.config.w4a4) {
      throw Error("NVFP4 layer " + l.module + (o.config.w4a4 ? " has no input scale, which W4A4 needs"
                                                             : " has an input scale, but the scheme is W4A16"));
    }
    const std::string name = l.module + ".weight";
    if (!by_weight.emplace(name, &l).second) throw Error("NVFP4 layer " + l.module + " is given twice");
    if (!std::binary_search(names.begin(), names.end(), name)) {
      throw Error("NVFP4 layer " + l.module + ": the model has no tensor " + name);
    }
    const auto& info = ck.info(name);
    if (info.shape != std::vector<int64_t>{l.out, l.in}) {
      throw Error("NVFP4 layer " + l.module + " is " + std::to_string(l.out) + " x " + std::to_string(l.in) +
                  "; the model's " + name + " has another shape");
    }
  }
  // Every tensor (in name order), a quantized layer's weight as the format's tensors.
  // (A ref's bytes point into its OwnedTensor's buffer, which moving the tensor does not move.)
  std::vector<io::OwnedTensor> owned;
  std::vector<io::TensorRef> refs;
  for (const std::string& name : names) {
    const auto it = by_weight.find(name);
    if (it == by_weight.end()) {
      const auto& info = ck.info(name);
      refs.push_back({name, info.dtype, info.shape, ck.bytes(name)});
      continue;
    }
    for (auto& t : io::nvfp4_linear_tensors(*it->second, o.config.format)) {
      owned.push_back(std::move(t));
      refs.push_back(owned.back().ref());
    }
  }

  if (o.kv_scales) {
    int layers = 0;
    for (const std::string& n : names) layers += n.ends_with(".self_attn.k_proj.weight") ? 1 : 0;
    if (o.kv_scales->k.size() != static_cast<size_t>(layers) || o.kv_scales->v.size() != static_cast<size_t>(layers)) {
      throw Error("FP8 KV cache scales for " + std::to_string(o.kv_scales->k.size()) + " layers; the model has " +
                  std::to_string(layers));
    }
    for (auto& t : io::kv_cache_scale_tensors(*o.kv_scales)) {
      if (std::binary_search(names.begin(), names.end(), t.name)) throw Error("the model already has a tensor " + t.name);
      owned.push_back(std::move(t));
      refs.push_back(owned.back().ref());
    }
  }

  fs::create_directories(out);
  std::map<std::string, std::string> meta = o.metadata;
  meta["quantization"] = std::string(io::quant_format_name(o.config.format)) + (o.config.w4a4 ? " NVFP4" : " W4A16_NVFP4");
  std::vector<std::string> written = io::write_sharded(out_dir, refs, o.max_shard_bytes, meta);
  io::write_text_file_atomic((out / "config.json").string(), config.dump(2) + "\n");
  written.push_back((out / "config.json").string());
  if (o.config.format == io::QuantFormat::modelopt) {
    io::write_text_file_atomic((out / "hf_quant_config.json").string(), io::hf_quant_config_json(o.config) + "\n");
    written.push_back((out / "hf_quant_config.json").string());
  }
  for (const char* name : kCopied) {
    if (!fs::exists(src / name)) continue;
    io::write_text_file_atomic((out / name).string(), io::read_input_text((src / name).string()));
    written.push_back((out / name).string());
  }
  return written;
}

}  // namespace nvfp4::ptq

// FP8 KV cache scales in ModelOpt checkpoints: `quantize --kv-cache fp8` calibrates each layer's
// K (after RoPE) and V amax and writes k_scale = amax / 448, v_scale = amax / 448 with
// kv_cache_quant_algo "FP8"; the folder opens with those scales, bit for bit; the engine's FP8 cache
// under them equals the independent emulation (tests/infer/fp8_kv_emulation.hpp); malformed scales
// are errors naming the tensor; and the CLI writes, loads and evaluates such a checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "../infer/fp8_kv_emulation.hpp"
#include "../infer/tiny_hf_model.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/ptq_export.hpp"
#include "nvfp4/quantize_model.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"  // io::read_input_text
#include "nvfp4/tokenizer.hpp"
#include "checkpoint_rewrite.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using nvfp4::infer::HfModel;
using nvfp4::infer::KvCache;
using nvfp4::io::QuantFormat;
using nvfp4::test::error_of;
constexpr char kPrefix[] = "nvfp4_kv_scales_";
using PtqKvScales = nvfp4::test::ScratchDirTest<kPrefix>;

using Tensor = nvfp4::test::RawTensor;
void rewrite(const fs::path& from, const fs::path& to, const std::function<void(std::map<std::string, Tensor>&)>& edit,
             const std::function<void(nlohmann::json&)>& config = {}) {
  nvfp4::test::rewrite_checkpoint(from, to, edit, config, /*copy_hf_quant_config=*/false);
}

// dir/src (a tiny Qwen3-style model) quantized W4A16 with FP8 KV cache scales into dir/name.
nvfp4::ptq::QuantizeModelResult quantize_with_kv(const fs::path& dir, const std::string& name) {
  const auto c = nvfp4::test::tiny_config("qwen3");
  if (!fs::exists(dir / "src")) nvfp4::test::write_tiny_hf_model(dir / "src", "qwen3", c, 301);
  const auto m = HfModel::open((dir / "src").string());
  nvfp4::ptq::QuantizeModelOptions o;
  o.window = 40;
  o.w4a4 = false;
  o.kv_cache_fp8 = true;
  auto r = nvfp4::ptq::quantize_model(m, nvfp4::test::some_tokens(80, c.vocab, 302), o);
  nvfp4::ptq::ExportOptions eo;
  eo.config.w4a4 = false;
  eo.config.kv_cache_fp8 = true;
  eo.config.ignore = r.kept;
  eo.kv_scales = r.kv_scales;
  nvfp4::ptq::write_quantized_folder((dir / "src").string(), (dir / name).string(), r.layers, eo);
  return r;
}

std::vector<uint8_t> f32(float v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

std::string open_error(const fs::path& dir) {
  return error_of([&] { HfModel::open(dir.string()); });
}

TEST_F(PtqKvScales, CalibratedScalesAreWrittenReadBackAndRunAsTheEmulation) {
  const auto r = quantize_with_kv(dir_, "q");
  ASSERT_TRUE(r.kv_scales.has_value());
  const int L = 2;
  ASSERT_EQ(r.kv_scales->k.size(), static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) {
    EXPECT_GT(r.k_amax[l], 0.0f);
    EXPECT_EQ(r.kv_scales->k[l], r.k_amax[l] / 448.0f);  // ModelOpt's decode scale: amax / E4M3's max
    EXPECT_EQ(r.kv_scales->v[l], r.v_amax[l] / 448.0f);
  }
  const HfModel q = HfModel::open((dir_ / "q").string());
  ASSERT_TRUE(q.quantization().has_value());
  EXPECT_TRUE(q.quantization()->kv_cache_fp8);
  ASSERT_TRUE(q.kv_cache_scales().has_value());
  EXPECT_EQ(q.kv_cache_scales()->k, r.kv_scales->k);  // bit for bit
  EXPECT_EQ(q.kv_cache_scales()->v, r.kv_scales->v);
  const auto ck = nvfp4::io::Checkpoint::open((dir_ / "q").string());
  EXPECT_EQ(ck.info("model.layers.1.self_attn.v_proj.v_scale").dtype, nvfp4::DType::F32);
  EXPECT_EQ(nlohmann::json::parse(nvfp4::io::read_input_text((dir_ / "q" / "hf_quant_config.json").string()))
                .at("quantization")
                .at("kv_cache_quant_algo"),
            "FP8");
  EXPECT_EQ(nlohmann::json::parse(nvfp4::io::read_input_text((dir_ / "q" / "config.json").string()))
                .at("quantization_config")
                .at("kv_cache_quant_algo"),
            "FP8");

  // The engine: the checkpoint's scales, and the logits of the emulation under them.
  nvfp4::infer::EngineOptions o;
  o.kv_cache = KvCache::fp8;
  o.max_context = 32;
  const auto e = nvfp4::infer::make_cpu_engine(q, o);
  EXPECT_EQ(e->kv_k_scales(), r.kv_scales->k);
  const auto t = nvfp4::test::some_tokens(20, q.config().vocab, 303);
  const auto got = nvfp4::test::run_chunk(*e, 0, t, true);
  const auto want = nvfp4::test::fp8_kv_emulated_logits(q, t, r.kv_scales->k, r.kv_scales->v);
  EXPECT_LT(nvfp4::test::rel_diff(got, want), 2e-6);
  const auto fp32 = nvfp4::test::fp8_kv_emulated_logits(q, t, {}, {});
  EXPECT_GT(nvfp4::test::rel_diff(got, fp32), 1e-5);  // the rounding shows
  // Without --kv-cache fp8 the scales are read but the cache stays FP32.
  o.kv_cache = KvCache::model;
  EXPECT_LT(nvfp4::test::rel_diff(nvfp4::test::run_chunk(*nvfp4::infer::make_cpu_engine(q, o), 0, t, true), fp32), 2e-6);
}

TEST_F(PtqKvScales, MalformedScalesAreErrorsNamingTheTensor) {
  quantize_with_kv(dir_, "q");
  const fs::path bad = dir_ / "bad";
  const std::string k0 = "model.layers.0.self_attn.k_proj.k_scale", v1 = "model.layers.1.self_attn.v_proj.v_scale";
  rewrite(dir_ / "q", bad, [&](auto& t) { t[k0].bytes = f32(-0.5f); });
  EXPECT_NE(open_error(bad).find("tensor " + k0 + " (FP8 KV cache scale) is -0.5"), std::string::npos) << open_error(bad);
  rewrite(dir_ / "q", bad, [&](auto& t) { t[v1].bytes = f32(NAN); });
  EXPECT_NE(open_error(bad).find("tensor " + v1 + " (FP8 KV cache scale) is nan; a KV cache scale is finite and positive"),
            std::string::npos)
      << open_error(bad);
  rewrite(dir_ / "q", bad, [&](auto& t) { t[v1] = {nvfp4::DType::F32, {2}, std::vector<uint8_t>(8, 0)}; });
  EXPECT_NE(open_error(bad).find("tensor " + v1 + " (FP8 KV cache scale) has shape [2]; a tensor-wide scale is [] or [1]"),
            std::string::npos)
      << open_error(bad);
  rewrite(dir_ / "q", bad, [&](auto& t) { t[k0] = {nvfp4::DType::I32, {}, std::vector<uint8_t>(4, 0)}; });
  EXPECT_NE(open_error(bad).find("tensor " + k0 + " (FP8 KV cache scale) is I32; expected F32 or BF16"), std::string::npos)
      << open_error(bad);
  rewrite(dir_ / "q", bad, [&](auto& t) { t.erase(v1); });
  EXPECT_NE(open_error(bad).find("has FP8 KV cache scales (" + k0 + ") but no " + v1), std::string::npos) << open_error(bad);
  // BF16 [1] is read (some ModelOpt checkpoints): 0x3F80 is 1.0.
  rewrite(dir_ / "q", bad, [&](auto& t) { t[k0] = {nvfp4::DType::BF16, {1}, std::vector<uint8_t>{0x80, 0x3F}}; });
  EXPECT_EQ(HfModel::open(bad.string()).kv_cache_scales()->k[0], 1.0f);
  // Scales the config does not declare, and a KV algorithm nvfp4 does not read.
  rewrite(dir_ / "q", bad, [](auto&) {}, [](nlohmann::json& j) { j["quantization_config"]["kv_cache_quant_algo"] = nullptr; });
  EXPECT_NE(open_error(bad).find("tensor " + k0 + " is an FP8 KV cache scale, but the folder declares no FP8 KV cache"),
            std::string::npos)
      << open_error(bad);
  rewrite(dir_ / "q", bad, [](auto&) {}, [](nlohmann::json& j) { j["quantization_config"]["kv_cache_quant_algo"] = "INT8"; });
  EXPECT_NE(open_error(bad).find("quantization_config.kv_cache_quant_algo is \"INT8\"; nvfp4 reads null or \"FP8\""),
            std::string::npos)
      << open_error(bad);
  // No scales at all with kv_cache_quant_algo FP8: opens, scale 1 in the engine.
  rewrite(dir_ / "q", bad, [&](auto& t) {
    for (int l = 0; l < 2; ++l)
      for (const auto& n : nvfp4::io::kv_cache_scale_names(l)) t.erase(n);
  });
  const HfModel none = HfModel::open(bad.string());
  EXPECT_FALSE(none.kv_cache_scales().has_value());
  nvfp4::infer::EngineOptions o;
  o.kv_cache = KvCache::fp8;
  o.max_context = 8;
  EXPECT_EQ(nvfp4::infer::make_cpu_engine(none, o)->kv_v_scales(), (std::vector<float>{1.0f, 1.0f}));
}

TEST_F(PtqKvScales, WritersRefuseWhatTheyCannotExpress) {
  nvfp4::io::QuantConfig c;
  c.format = QuantFormat::compressed_tensors;
  c.kv_cache_fp8 = true;
  EXPECT_NE(error_of([&] { nvfp4::io::quantization_config_json(c); }).find("use --format modelopt"), std::string::npos);
  EXPECT_NE(error_of([] { nvfp4::io::kv_cache_scale_tensors({{1.0f, 0.0f}, {1.0f, 1.0f}}); })
                .find("model.layers.1.self_attn.k_proj.k_scale is 0.000000; a KV cache scale is finite and positive"),
            std::string::npos);
  const auto cfg = nvfp4::test::tiny_config("llama");
  nvfp4::test::write_tiny_hf_model(dir_ / "src", "llama", cfg, 304);
  nvfp4::ptq::ExportOptions eo;
  eo.config.w4a4 = false;
  eo.config.kv_cache_fp8 = true;
  EXPECT_NE(error_of([&] { nvfp4::ptq::write_quantized_folder((dir_ / "src").string(), (dir_ / "o").string(), {}, eo); })
                .find("needs its k_scale / v_scale"),
            std::string::npos);
  eo.kv_scales = nvfp4::io::KvCacheScales{{1.0f}, {1.0f}};
  EXPECT_NE(error_of([&] { nvfp4::ptq::write_quantized_folder((dir_ / "src").string(), (dir_ / "o").string(), {}, eo); })
                .find("FP8 KV cache scales for 1 layers; the model has 2"),
            std::string::npos);
}

TEST_F(PtqKvScales, QuantizeCliWritesAndEvalRunsTheScales) {
  auto c = nvfp4::test::tiny_config("llama");
  c.vocab = 257;
  c.seq_len = 128;
  nvfp4::test::write_tiny_hf_model(dir_ / "m", "llama", c, 305);
  std::ofstream(dir_ / "m" / "nvfp4_tokenizer.json") << nvfp4::io::ByteTokenizer().describe() << "\n";
  std::ofstream(dir_ / "a.txt") << "calibration text for the key and value scales, a sentence or two of it, no more.";
  const std::string m = (dir_ / "m").string(), a = (dir_ / "a.txt").string(), q = (dir_ / "q").string();
  auto r = nvfp4::test::run_cli("quantize " + m + " " + q + " --calib " + a +
                                " --scheme w4a16 --kv-cache fp8 --device cpu --window 64 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  ASSERT_EQ(j.at("kv_cache").size(), 2u);
  EXPECT_EQ(j.at("kv_cache")[0].at("k_scale").get<float>(), j.at("kv_cache")[0].at("k_amax").get<float>() / 448.0f);
  r = nvfp4::test::run_cli("eval " + q + " --text " + a + " --device cpu --kv-cache fp8 --reference-model " + q + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto e = nlohmann::json::parse(r.output);
  EXPECT_EQ(e.at("precision"), "w4a16 (modelopt checkpoint), fp8 KV cache (scales from the checkpoint)");
  EXPECT_GT(e.at("kl_mean").get<double>(), 0.0);
  EXPECT_LT(e.at("kl_mean").get<double>(), 1e-2);
  r = nvfp4::test::run_cli("generate " + q + " --prompt hi --max-tokens 3 --device cpu --kv-cache fp8");
  EXPECT_EQ(r.status, 0) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir_ / "ct").string() + " --calib " + a +
                           " --format compressed-tensors --kv-cache fp8 --device cpu");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--kv-cache fp8 is written in ModelOpt checkpoints only"), std::string::npos) << r.output;
}

}  // namespace

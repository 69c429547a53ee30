// NVFP4 checkpoints loaded back (src/infer/hf_model.cpp, the engines): a tiny model quantized and
// written in both formats and both schemes is opened as a model — the stored codes, block scales
// and factors read back bit for bit, decoded from the format's definition (written out here, not
// taken from the reader), the engine running exactly those weights (W4A16: the same logits as the
// decoded weights in FP32; W4A4: the activations quantized with the stored input factors) — and
// every malformed or inconsistent checkpoint refused naming the tensor or field.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "../infer/tiny_hf_model.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/ptq_export.hpp"
#include "nvfp4/quantize_model.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"  // io::read_input_text
#include "checkpoint_rewrite.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using nvfp4::infer::HfModel;
using nvfp4::infer::Precision;
using nvfp4::io::QuantFormat;
using nvfp4::test::error_of;
constexpr char kPrefix[] = "nvfp4_import_";
using PtqImport = nvfp4::test::ScratchDirTest<kPrefix>;

// E2M1 by its table and E4M3 from its bit fields (bias 7, subnormals below exponent 1).
float e2m1(uint8_t code) {
  static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  return (code & 8) ? -mag[code & 7] : mag[code & 7];
}
float e4m3(uint8_t bits) {
  const int e = (bits >> 3) & 15, m = bits & 7;
  const float v = e == 0 ? std::ldexp(m / 8.0f, -6) : std::ldexp(1.0f + m / 8.0f, e - 7);
  return (bits & 0x80) ? -v : v;
}

struct Quantized {
  nvfp4::ptq::QuantizeModelResult result;
  fs::path dir;
};

// The tiny Qwen3-style model (q/k norms, head_dim != d_model / heads) quantized with `o` and
// written to dir / name in format f.
Quantized quantize_tiny(const fs::path& dir, const std::string& name, QuantFormat f, bool w4a4,
                        std::vector<std::string> keep = {"model.layers.1.mlp.down_proj"}) {
  const auto c = nvfp4::test::tiny_config("qwen3");
  if (!fs::exists(dir / "src")) nvfp4::test::write_tiny_hf_model(dir / "src", "qwen3", c, 201);
  const auto m = HfModel::open((dir / "src").string());
  nvfp4::ptq::QuantizeModelOptions o;
  o.window = 40;
  o.keep_bf16 = std::move(keep);
  o.w4a4 = w4a4;
  Quantized q{nvfp4::ptq::quantize_model(m, nvfp4::test::some_tokens(80, c.vocab, 202), o), dir / name};
  nvfp4::ptq::ExportOptions eo;
  eo.config.format = f;
  eo.config.w4a4 = w4a4;
  eo.config.ignore = q.result.kept;
  nvfp4::ptq::write_quantized_folder((dir / "src").string(), q.dir.string(), q.result.layers, eo);
  return q;
}

size_t spec_of(const HfModel& m, const std::string& name) {
  for (size_t i = 0; i < m.specs().size(); ++i) {
    if (m.specs()[i].name == name) return i;
  }
  ADD_FAILURE() << "no parameter " << name;
  return 0;
}

TEST_F(PtqImport, StoredLayersReadBackBitForBit) {
  for (const QuantFormat f : {QuantFormat::modelopt, QuantFormat::compressed_tensors}) {
    for (const bool w4a4 : {true, false}) {
      const std::string name = std::string(nvfp4::io::quant_format_name(f)) + (w4a4 ? "-w4a4" : "-w4a16");
      SCOPED_TRACE(name);
      const Quantized q = quantize_tiny(dir_, name, f, w4a4);
      const HfModel m = HfModel::open(q.dir.string()), src = HfModel::open((dir_ / "src").string());
      ASSERT_TRUE(m.quantization().has_value());
      EXPECT_EQ(m.quantization()->format, f);
      EXPECT_EQ(m.quantization()->w4a4, w4a4);
      size_t stored = 0;
      for (size_t i = 0; i < m.specs().size(); ++i) stored += m.stored_nvfp4(i);
      EXPECT_EQ(stored, q.result.layers.size());
      for (const auto& l : q.result.layers) {
        const size_t i = spec_of(m, l.module + ".weight");
        ASSERT_TRUE(m.stored_nvfp4(i)) << l.module;
        EXPECT_EQ(m.stored_dtype(i), nvfp4::DType::U8);
        const nvfp4::io::Nvfp4Linear r = m.read_nvfp4(i);
        EXPECT_EQ(r.packed, l.packed) << l.module;
        EXPECT_EQ(r.scales, l.scales) << l.module;
        // Each format stores one form of each factor exactly.
        if (f == QuantFormat::modelopt) {
          EXPECT_EQ(r.weight_decode, l.weight_decode);
          if (w4a4) {
            EXPECT_EQ(*r.input_decode, *l.input_decode);
          }
        } else {
          EXPECT_EQ(r.weight_encode, l.weight_encode);
          if (w4a4) {
            EXPECT_EQ(*r.input_encode, *l.input_encode);
          }
        }
        EXPECT_EQ(r.w4a4(), w4a4);
        // Decoded: element 2j in the low nibble, a scale per 16 values, the decode factor last.
        std::vector<float> got(static_cast<size_t>(l.out * l.in));
        m.read_f32(i, got);
        for (int64_t o = 0; o < l.out; ++o) {
          for (int64_t k = 0; k < l.in; ++k) {
            const uint8_t byte = l.packed[static_cast<size_t>(o * l.in / 2 + k / 2)];
            const float want = e2m1(k % 2 ? byte >> 4 : byte & 15) * e4m3(l.scales[static_cast<size_t>(o * l.in / 16 + k / 16)]) *
                               r.weight_decode;
            ASSERT_EQ(got[static_cast<size_t>(o * l.in + k)], want) << l.module << " [" << o << ", " << k << "]";
          }
        }
        // The decoded weight is the source's up to NVFP4's error.
        std::vector<float> orig(got.size());
        src.read_f32(i, orig);
        double num = 0, den = 0;
        for (size_t k = 0; k < got.size(); ++k) num += (got[k] - orig[k]) * (got[k] - orig[k]), den += orig[k] * orig[k];
        EXPECT_LT(std::sqrt(num / den), 0.2) << l.module;
        EXPECT_GT(num, 0.0) << l.module;
      }
      // Everything else as the source stored it (the kept layer, norms, embeddings, head).
      for (size_t i = 0; i < m.specs().size(); ++i) {
        if (m.stored_nvfp4(i)) continue;
        std::vector<float> a(static_cast<size_t>(m.specs()[i].numel)), b(a.size());
        m.read_f32(i, a);
        src.read_f32(i, b);
        EXPECT_EQ(a, b) << m.specs()[i].name;
      }
      EXPECT_FALSE(m.stored_nvfp4(spec_of(m, "model.layers.1.mlp.down_proj.weight")));
      EXPECT_LT(m.stored_bytes(), src.stored_bytes() / 2);
      EXPECT_NE(error_of([&] { m.read_nvfp4(spec_of(m, "model.norm.weight")); }).find("is not stored as NVFP4"),
                std::string::npos);
    }
  }
}

// The logits of `tokens` (every position) from a CPU engine over `m` at precision p.
std::vector<float> cpu_logits(const HfModel& m, Precision p, const std::vector<int32_t>& tokens,
                              nvfp4::infer::LinearInputObserver* observer = nullptr) {
  nvfp4::infer::EngineOptions o;
  o.precision = p;
  o.max_context = 64;
  o.observer = observer;
  auto e = nvfp4::infer::make_cpu_engine(m, o);
  return nvfp4::test::run_chunk(*e, 0, tokens, true);
}

// A float copy of a quantized folder: every parameter as read_f32 gives it (stored layers
// decoded), F32, config.json without its quantization_config.
void write_decoded_copy(const HfModel& m, const fs::path& out) {
  fs::create_directories(out);
  const std::vector<float> all = m.read_all_f32();
  std::vector<nvfp4::io::TensorRef> refs;
  for (const auto& s : m.specs()) {
    refs.push_back({s.name, nvfp4::DType::F32, s.shape,
                    {reinterpret_cast<const uint8_t*>(all.data() + s.offset), static_cast<size_t>(s.numel) * 4}});
  }
  nvfp4::io::write_file((out / "model.safetensors").string(), refs);
  auto config = nlohmann::json::parse(nvfp4::io::read_input_text(m.dir() + "/config.json"));
  config.erase("quantization_config");
  std::ofstream(out / "config.json") << config.dump(2);
}

TEST_F(PtqImport, EngineRunsTheStoredWeights) {
  const auto tokens = nvfp4::test::some_tokens(24, nvfp4::test::tiny_config("qwen3").vocab, 203);
  // W4A16: the engine's logits are those of the decoded weights in FP32, bit for bit, whatever
  // --precision asks short of w4a4 (the stored layers run as stored; the rest unquantized).
  for (const QuantFormat f : {QuantFormat::modelopt, QuantFormat::compressed_tensors}) {
    const Quantized q = quantize_tiny(dir_, std::string(nvfp4::io::quant_format_name(f)) + "-w4a16", f, false);
    const HfModel m = HfModel::open(q.dir.string());
    write_decoded_copy(m, dir_ / "decoded");
    const HfModel d = HfModel::open((dir_ / "decoded").string());
    ASSERT_FALSE(d.quantization().has_value());
    const auto want = cpu_logits(d, Precision::fp32, tokens);
    EXPECT_EQ(cpu_logits(m, Precision::fp32, tokens), want);
    EXPECT_EQ(cpu_logits(m, Precision::w4a16, tokens), want);
    EXPECT_NE(cpu_logits(HfModel::open((dir_ / "src").string()), Precision::fp32, tokens), want);
    nvfp4::infer::EngineOptions o;
    auto e = nvfp4::infer::make_cpu_engine(m, o);
    for (const auto& l : e->linear_plan()) {
      const bool kept = l.name == "lm_head" || l.name == "model.layers.1.mlp.down_proj";
      EXPECT_EQ(l.precision, kept ? Precision::fp32 : Precision::w4a16) << l.name;
    }
    fs::remove_all(dir_ / "decoded");
  }

  // W4A4: each layer's input rows quantized with the checkpoint's stored factors (not their own
  // amax), times the decoded weight: layer by layer, from the rows the engine saw.
  struct Rows final : nvfp4::infer::LinearInputObserver {
    std::map<size_t, std::vector<float>> in;
    void observe(size_t i, const float* rows, int64_t N, int64_t C) override { in[i].assign(rows, rows + N * C); }
  };
  for (const QuantFormat f : {QuantFormat::modelopt, QuantFormat::compressed_tensors}) {
    SCOPED_TRACE(nvfp4::io::quant_format_name(f));
    const Quantized q = quantize_tiny(dir_, std::string(nvfp4::io::quant_format_name(f)) + "-w4a4", f, true);
    const HfModel m = HfModel::open(q.dir.string());
    nvfp4::infer::EngineOptions o;
    o.max_context = 64;
    Rows rows;
    o.observer = &rows;
    auto e = nvfp4::infer::make_cpu_engine(m, o);
    const size_t layer = 7 + 3;  // model.layers.1.self_attn.o_proj
    ASSERT_EQ(e->linear_plan()[layer].name, "model.layers.1.self_attn.o_proj");
    EXPECT_EQ(e->linear_plan()[layer].precision, Precision::w4a4);
    std::vector<float> out;
    e->capture_linear_output(layer, &out);
    nvfp4::test::run_chunk(*e, 0, tokens, true);
    const nvfp4::io::Nvfp4Linear w = m.read_nvfp4(spec_of(m, "model.layers.1.self_attn.o_proj.weight"));
    std::vector<float> wd(static_cast<size_t>(w.out * w.in));
    m.read_f32(spec_of(m, "model.layers.1.self_attn.o_proj.weight"), wd);
    const std::vector<float>& x = rows.in.at(layer);
    const int64_t N = static_cast<int64_t>(tokens.size());
    auto expected = [&](const nvfp4::fmt::Nvfp4InputScale& s) {
      std::vector<float> xq(x.size()), factor(static_cast<size_t>(N)), y(static_cast<size_t>(N * w.out));
      nvfp4::cpu::nvfp4_quantize_rows(xq.data(), factor.data(), nullptr, x.data(), N, w.in, s, true);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < w.in; ++k) xq[static_cast<size_t>(n * w.in + k)] *= factor[static_cast<size_t>(n)];
      nvfp4::cpu::matmul_forward(y.data(), xq.data(), wd.data(), N, w.in, w.out);
      return y;
    };
    EXPECT_EQ(out, expected({0.0f, *w.input_encode, *w.input_decode}));
    EXPECT_NE(out, expected({})) << "the rows' own amax gives other activations";
    // The stored ModelOpt factor is amax / 2688: its encode is the FP32 reciprocal, as vLLM takes it.
    if (f == QuantFormat::modelopt) {
      EXPECT_EQ(*w.input_encode, 1.0f / *w.input_decode);
    }
    // --precision w4a16 on a W4A4 checkpoint: the weights as stored, the activations unquantized.
    EXPECT_EQ(cpu_logits(m, Precision::w4a16, tokens), [&] {
      write_decoded_copy(m, dir_ / "decoded");
      const auto r = cpu_logits(HfModel::open((dir_ / "decoded").string()), Precision::fp32, tokens);
      fs::remove_all(dir_ / "decoded");
      return r;
    }());
  }
}

TEST_F(PtqImport, PrecisionsAStoredLayerCannotRunAreRefused) {
  const Quantized q = quantize_tiny(dir_, "mo", QuantFormat::modelopt, true);
  const HfModel m = HfModel::open(q.dir.string());
  nvfp4::infer::EngineOptions o;
  o.precision = Precision::fp8;
  EXPECT_NE(error_of([&] { nvfp4::infer::make_cpu_engine(m, o); }).find("is an NVFP4 checkpoint; its quantized layers run "
                                                                       "at w4a16 or w4a4"),
            std::string::npos);
  o.precision = Precision::w4a4;
  o.keep_bf16 = {"*.q_proj"};
  EXPECT_EQ(error_of([&] { nvfp4::infer::make_cpu_engine(m, o); }),
            "--keep-bf16 *.q_proj: model.layers.0.self_attn.q_proj is stored as NVFP4 in " + q.dir.string() +
                " (a quantized checkpoint): it runs at w4a16 or w4a4, not fp32 (measure the unquantized model for "
                "that)");
  o.keep_bf16 = {"model.layers.1.mlp.down_proj"};  // the layer the checkpoint kept: fine
  auto e = nvfp4::infer::make_cpu_engine(m, o);
  std::vector<Precision> p;
  for (const auto& l : e->linear_plan()) p.push_back(l.precision);
  p[0] = Precision::fp32;
  EXPECT_NE(error_of([&] { e->set_linear_precisions(p); }).find("model.layers.0.self_attn.q_proj is stored as NVFP4"),
            std::string::npos);
  p[0] = Precision::w4a16;
  e->set_linear_precisions(p);
  EXPECT_EQ(e->linear_plan()[0].precision, Precision::w4a16);
}

// ---- malformed and inconsistent checkpoints --------------------------------------------------------

// A copy of folder `from` at `to` with its tensors passed through `edit` (name -> bytes, dtype,
// shape; erase to drop) and config.json through `config`.
using Tensor = nvfp4::test::RawTensor;
void rewrite(const fs::path& from, const fs::path& to, const std::function<void(std::map<std::string, Tensor>&)>& edit,
             const std::function<void(nlohmann::json&)>& config = {}) {
  nvfp4::test::rewrite_checkpoint(from, to, edit, config, /*copy_hf_quant_config=*/true);
}

std::string open_error(const fs::path& dir) {
  return error_of([&] { HfModel::open(dir.string()); });
}

TEST_F(PtqImport, MalformedCheckpointsNameTheTensorOrField) {
  const Quantized mo = quantize_tiny(dir_, "mo", QuantFormat::modelopt, true);
  const Quantized ct = quantize_tiny(dir_, "ct", QuantFormat::compressed_tensors, true);
  const fs::path bad = dir_ / "bad";
  const std::string q = "model.layers.0.self_attn.q_proj";
  const auto contains = [](const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                             : ::testing::AssertionFailure() << "\"" << part << "\" not in: " << s;
  };

  rewrite(mo.dir, bad, [&](auto& t) { t.erase(q + ".weight_scale"); });
  EXPECT_TRUE(contains(open_error(bad), "NVFP4 layer " + q + ": the checkpoint has no tensor " + q + ".weight_scale"));
  rewrite(mo.dir, bad, [&](auto& t) { t[q + ".weight_scale"].bytes[3] |= 0x80; });
  EXPECT_TRUE(contains(open_error(bad), q));
  EXPECT_TRUE(contains(open_error(bad), "negative"));
  rewrite(mo.dir, bad, [&](auto& t) { t[q + ".weight_scale"].bytes[5] = 0x7F; });
  EXPECT_TRUE(contains(open_error(bad), "NaN"));
  rewrite(mo.dir, bad, [&](auto& t) {
    float v = -1.0f;
    std::memcpy(t[q + ".weight_scale_2"].bytes.data(), &v, 4);
  });
  EXPECT_TRUE(contains(open_error(bad), q));
  rewrite(mo.dir, bad, [&](auto& t) { t[q + ".weight_scale"].shape = {t[q + ".weight_scale"].shape[0] / 2, 8}; });
  EXPECT_TRUE(contains(open_error(bad), "tensor " + q + ".weight_scale (modelopt)"));
  rewrite(mo.dir, bad, [&](auto& t) { t.erase(q + ".input_scale"); });
  EXPECT_TRUE(contains(open_error(bad), "NVFP4 layer " + q + " has no " + q + ".input_scale, which the config's W4A4 scheme needs"));
  rewrite(ct.dir, bad, [&](auto& t) { t.erase(q + ".weight_global_scale"); });
  EXPECT_TRUE(contains(open_error(bad), q + ".weight_global_scale"));
  // Codes whose shape disagrees with config.json.
  rewrite(mo.dir, bad, [&](auto& t) {
    Tensor& w = t[q + ".weight"];
    w.shape[0] -= 16;
    w.bytes.resize(static_cast<size_t>(w.shape[0] * w.shape[1]));
    Tensor& s = t[q + ".weight_scale"];
    s.shape[0] -= 16;
    s.bytes.resize(static_cast<size_t>(s.shape[0] * s.shape[1]));
  });
  EXPECT_TRUE(contains(open_error(bad), "NVFP4 layer " + q + " is 112 x 64; config.json implies 128 x 64"));

  // The config and the weights disagree.
  rewrite(mo.dir, bad, [](auto&) {}, [&](nlohmann::json& j) { j["quantization_config"]["ignore"].push_back(q); });
  EXPECT_TRUE(contains(open_error(bad), "NVFP4 layer " + q + " is stored quantized, but the quantization config's ignore list "
                                       "names it (\"" + q + "\")"));
  rewrite(mo.dir, bad, [](auto&) {}, [&](nlohmann::json& j) { j["quantization_config"]["ignore"] = {"lm_head"}; });
  EXPECT_TRUE(contains(open_error(bad), "tensor model.layers.1.mlp.down_proj.weight is stored unquantized, but the "
                                       "quantization config's ignore list does not name model.layers.1.mlp.down_proj"));
  rewrite(mo.dir, bad, [](auto&) {}, [&](nlohmann::json& j) { j["quantization_config"]["ignore"] = {"lm_head", "re:.*layers\\.1\\.mlp\\.down_proj$"}; });
  EXPECT_NO_THROW(HfModel::open(bad.string())) << "a compressed-tensors style re: pattern";
  rewrite(mo.dir, bad, [](auto&) {}, [&](nlohmann::json& j) { j["quantization_config"]["quant_algo"] = "W4A16_NVFP4"; });
  EXPECT_TRUE(contains(open_error(bad), "NVFP4 layer " + q + " has " + q + ".input_scale, but the config says weight-only"));
  rewrite(mo.dir, bad, [](auto&) {}, [&](nlohmann::json& j) { j["quantization_config"]["kv_cache_scheme"] = {{"num_bits", 8}}; });
  EXPECT_TRUE(contains(open_error(bad), "quantization_config.kv_cache_scheme is {\"num_bits\":8}; nvfp4 reads a quantized "
                                       "KV cache only as ModelOpt declares it"));
  rewrite(mo.dir, bad, [](auto&) {}, [&](nlohmann::json& j) { j.erase("quantization_config"); });
  fs::remove(bad / "hf_quant_config.json");
  EXPECT_TRUE(contains(open_error(bad), "tensor " + q + ".weight is U8; nvfp4 loads BF16, F16 and F32 weights, and NVFP4 "
                                       "linear layers of a checkpoint whose config.json declares them"));

  // An older ModelOpt folder: hf_quant_config.json alone declares the quantization.
  rewrite(mo.dir, bad, [](auto&) {}, [&](nlohmann::json& j) { j.erase("quantization_config"); });
  const HfModel older = HfModel::open(bad.string());
  ASSERT_TRUE(older.quantization().has_value());
  EXPECT_EQ(older.quantization()->format, QuantFormat::modelopt);
  EXPECT_TRUE(older.quantization()->w4a4);
  auto hq = nlohmann::json::parse(nvfp4::io::read_input_text((bad / "hf_quant_config.json").string()));
  hq["quantization"]["kv_cache_quant_algo"] = "FP8";  // an FP8 KV cache without scales: read, scale 1
  std::ofstream(bad / "hf_quant_config.json") << hq.dump();
  EXPECT_TRUE(HfModel::open(bad.string()).quantization()->kv_cache_fp8);
  EXPECT_FALSE(HfModel::open(bad.string()).kv_cache_scales().has_value());
  hq["quantization"]["kv_cache_quant_algo"] = "INT8";
  std::ofstream(bad / "hf_quant_config.json") << hq.dump();
  EXPECT_TRUE(contains(open_error(bad), "hf_quant_config.json: quantization.kv_cache_quant_algo is \"INT8\""));
  hq["quantization"]["kv_cache_quant_algo"] = nullptr;
  hq["quantization"]["group_size"] = 32;
  std::ofstream(bad / "hf_quant_config.json") << hq.dump();
  EXPECT_TRUE(contains(open_error(bad), "hf_quant_config.json: quantization.group_size is 32; NVFP4 blocks are 16 values"));
  hq["quantization"]["group_size"] = 16;
  hq["quantization"]["quant_algo"] = "FP8";
  std::ofstream(bad / "hf_quant_config.json") << hq.dump();
  EXPECT_TRUE(contains(open_error(bad), "quantization.quant_algo is \"FP8\"; nvfp4 reads NVFP4 and W4A16_NVFP4"));

  // A decode factor so large that the decoded weight overflows FP32: named when read.
  rewrite(mo.dir, bad, [&](auto& t) {
    float v = 3e38f;
    std::memcpy(t[q + ".weight_scale_2"].bytes.data(), &v, 4);
  });
  const HfModel huge = HfModel::open(bad.string());
  std::vector<float> w(static_cast<size_t>(128 * 64));
  EXPECT_TRUE(contains(error_of([&] { huge.read_f32(spec_of(huge, q + ".weight"), w); }),
                       "tensor " + q + ".weight holds"));
}

// The CLI: generate and eval run a checkpoint at its own scheme; eval's KL against the model it
// was made from needs --reference-model; per-layer sensitivity and re-quantizing are refused.
TEST_F(PtqImport, CliRunsCheckpointsAgainstTheirSource) {
  const Quantized mo = quantize_tiny(dir_, "mo", QuantFormat::modelopt, true);
  std::ofstream(dir_ / "ids.jsonl") << "[1, 5, 9, 13, 2, 7, 30, 31, 40, 2]\n[3, 3, 8, 60, 61, 62]\n";
  const std::string m = mo.dir.string(), ids = " --ids " + (dir_ / "ids.jsonl").string();
  auto r = nvfp4::test::run_cli("eval " + m + ids + " --device cpu --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("precision"), "w4a4 (modelopt checkpoint)");
  EXPECT_TRUE(j.contains("fallback_rate")) << "the activations are quantized at run time: the guard counts rows";
  EXPECT_EQ(j.at("tokens"), 9 + 5);
  r = nvfp4::test::run_cli("eval " + m + ids + " --device cpu --json --max-tokens 12");  // 9 of line 1, 3 of line 2
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).at("tokens"), 12);
  r = nvfp4::test::run_cli("eval " + m + ids + " --device cpu --reference fp32");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("give --reference-model DIR (the folder it was quantized from)"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("eval " + m + ids + " --device cpu --reference-model " + (dir_ / "src").string() + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("reference"), "fp32 of " + (dir_ / "src").string());
  EXPECT_GT(j.at("kl_mean").get<double>(), 0.0);
  EXPECT_LT(j.at("kl_mean").get<double>(), 1.0);
  r = nvfp4::test::run_cli("eval " + m + ids + " --device cpu --per-layer --precision w4a4");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("every stored layer is quantized already"), std::string::npos) << r.output;
  auto other = nvfp4::test::tiny_config("llama");
  nvfp4::test::write_tiny_hf_model(dir_ / "llama", "llama", other, 5);
  r = nvfp4::test::run_cli("eval " + m + ids + " --device cpu --reference-model " + (dir_ / "llama").string());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("its architecture differs from"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir_ / "again").string() + " --calib " + (dir_ / "ids.jsonl").string());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("is already an NVFP4 checkpoint (modelopt): quantize the unquantized model it was made from"),
            std::string::npos)
      << r.output;
  r = nvfp4::test::run_cli("eval " + m + ids + " --device cpu --precision fp8");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("its quantized layers run at w4a16 or w4a4"), std::string::npos) << r.output;
}

}  // namespace

// Quantized model folders (src/ptq/export.cpp): a tiny model's block projections quantized and
// written in both formats, then read back — the quantized layers bit for bit, every other tensor
// byte for byte, config.json with the original fields and the quantization_config, ModelOpt's
// hf_quant_config.json, the tokenizer copied — and the writes it must refuse.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../infer/tiny_hf_model.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/ptq_export.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using nvfp4::io::QuantFormat;

std::string slurp(const fs::path& p) { return nvfp4::io::read_input_text(p.string()); }

using nvfp4::test::error_of;
constexpr char kPrefix[] = "nvfp4_ptq_export_";

class PtqExportTest : public nvfp4::test::ScratchDirTest<kPrefix> {
 protected:
  void SetUp() override {
    ScratchDirTest::SetUp();
    const auto c = nvfp4::test::tiny_config("qwen2");
    nvfp4::test::write_tiny_hf_model(dir_ / "src", "qwen2", c, 71);
    std::ofstream(dir_ / "src" / "tokenizer_config.json") << "{\"eos_token\": \"x\"}\n";
    const auto ck = nvfp4::io::Checkpoint::open((dir_ / "src").string());
    for (int l = 0; l < c.n_layer; ++l) {
      for (const char* p : {"self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"}) {
        const std::string m = "model.layers." + std::to_string(l) + "." + p;
        const auto t = ck.load(m + ".weight");
        const auto w = t.to_f32();
        const auto q = nvfp4::ptq::quantize_weight(w, t.shape[0], t.shape[1], nvfp4::ptq::ScaleRule::four_over_six);
        layers_.push_back(nvfp4::ptq::checkpoint_layer(m, q, 3.5f));
      }
    }
  }
  std::vector<nvfp4::io::Nvfp4Linear> layers_;
};

TEST_F(PtqExportTest, BothFormatsReadBackExactly) {
  for (QuantFormat f : {QuantFormat::modelopt, QuantFormat::compressed_tensors}) {
    SCOPED_TRACE(std::string(nvfp4::io::quant_format_name(f)));
    nvfp4::ptq::ExportOptions o;
    o.config.format = f;
    o.config.ignore = {"lm_head"};
    o.metadata["scale_rule"] = "4over6";
    o.max_shard_bytes = 20000;  // several shards and an index
    const fs::path out = dir_ / std::string(nvfp4::io::quant_format_name(f));
    nvfp4::ptq::write_quantized_folder((dir_ / "src").string(), out.string(), layers_, o);
    EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
    const auto ck = nvfp4::io::Checkpoint::open(out.string());
    EXPECT_EQ(ck.metadata().at("scale_rule"), "4over6");
    for (const auto& want : layers_) {
      const auto got = nvfp4::io::read_nvfp4_linear(ck, want.module, f);
      EXPECT_EQ(got.packed, want.packed) << want.module;
      EXPECT_EQ(got.scales, want.scales) << want.module;
      EXPECT_EQ(f == QuantFormat::modelopt ? got.weight_decode : got.weight_encode,
                f == QuantFormat::modelopt ? want.weight_decode : want.weight_encode);
      // The BF16 weight is gone: ModelOpt's .weight is the packed codes, compressed-tensors has none.
      const auto names = ck.names();
      if (f == QuantFormat::modelopt) EXPECT_EQ(ck.info(want.module + ".weight").dtype, nvfp4::DType::U8);
      else EXPECT_FALSE(std::ranges::binary_search(names, want.module + ".weight")) << want.module;
    }
    // Everything else unchanged, byte for byte.
    const auto src = nvfp4::io::Checkpoint::open((dir_ / "src").string());
    for (const auto& name : src.names()) {
      const bool quantized = std::any_of(layers_.begin(), layers_.end(), [&](const auto& l) { return name == l.module + ".weight"; });
      if (quantized) continue;
      ASSERT_TRUE(std::ranges::binary_search(ck.names(), name)) << name;  // (a sorted copy)
      EXPECT_TRUE(std::ranges::equal(ck.bytes(name), src.bytes(name))) << name;
    }
    const auto config = nlohmann::json::parse(slurp(out / "config.json"));
    const auto original = nlohmann::json::parse(slurp(dir_ / "src" / "config.json"));
    for (const auto& [k, v] : original.items()) EXPECT_EQ(config.at(k), v) << k;
    const auto qc = nvfp4::io::read_quantization_config(slurp(out / "config.json"), "config.json");
    ASSERT_TRUE(qc.has_value());
    EXPECT_EQ(qc->format, f);
    EXPECT_TRUE(qc->w4a4);
    EXPECT_EQ(fs::exists(out / "hf_quant_config.json"), f == QuantFormat::modelopt);
    EXPECT_EQ(slurp(out / "tokenizer_config.json"), slurp(dir_ / "src" / "tokenizer_config.json"));
  }
}

TEST_F(PtqExportTest, RefusesWhatWouldLoseOrMixData) {
  nvfp4::ptq::ExportOptions o;
  const std::string src = (dir_ / "src").string();
  EXPECT_NE(error_of([&] { nvfp4::ptq::write_quantized_folder(src, src, layers_, o); }).find("is the model folder itself"),
            std::string::npos);
  nvfp4::ptq::write_quantized_folder(src, (dir_ / "a").string(), layers_, o);
  EXPECT_NE(error_of([&] { nvfp4::ptq::write_quantized_folder(src, (dir_ / "a").string(), layers_, o); })
                .find("already holds a model"),
            std::string::npos);
  EXPECT_NE(error_of([&] { nvfp4::ptq::write_quantized_folder((dir_ / "a").string(), (dir_ / "b").string(), {}, o); })
                .find("already has a quantization_config"),
            std::string::npos);
  auto twice = layers_;
  twice.push_back(layers_[0]);
  EXPECT_NE(error_of([&] { nvfp4::ptq::write_quantized_folder(src, (dir_ / "c").string(), twice, o); }).find("given twice"),
            std::string::npos);
  auto ghost = layers_;
  ghost[0].module = "model.layers.9.self_attn.q_proj";
  EXPECT_NE(error_of([&] { nvfp4::ptq::write_quantized_folder(src, (dir_ / "d").string(), ghost, o); })
                .find("the model has no tensor model.layers.9.self_attn.q_proj.weight"),
            std::string::npos);
  o.config.w4a4 = false;
  EXPECT_NE(error_of([&] { nvfp4::ptq::write_quantized_folder(src, (dir_ / "e").string(), layers_, o); })
                .find("has an input scale, but the scheme is W4A16"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "e" / "config.json"));
}

}  // namespace

// ModelOpt and compressed-tensors NVFP4 layers (src/io/nvfp4_checkpoint.cpp): what is written is
// checked field by field against the published layouts, spelled out here from the formats'
// documentation (../shared/docs/interop.md) rather than taken from the writer; what is written
// reads back bit for bit; malformed layers and configs are refused with the tensor or field named.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"
#include "nvfp4/nvfp4_checkpoint.hpp"
#include "nvfp4/safetensors.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using nvfp4::io::Nvfp4Linear;
using nvfp4::io::QuantConfig;
using nvfp4::io::QuantFormat;

constexpr char kPrefix[] = "nvfp4_ckpt_test_";
using Nvfp4CheckpointTest = nvfp4::test::ScratchDirTest<kPrefix>;
using nvfp4::test::error_of;

// A layer of out x in with known codes: element (r, c) has code (r * 7 + c) % 16, scale bytes
// from a fixed generator (never NaN or negative).
Nvfp4Linear layer(const std::string& module, int64_t out, int64_t in, bool w4a4) {
  Nvfp4Linear l;
  l.module = module;
  l.out = out;
  l.in = in;
  l.packed.assign(static_cast<size_t>(out * in / 2), 0);
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t c = 0; c < in; ++c) {
      const uint8_t code = static_cast<uint8_t>((r * 7 + c) % 16);
      uint8_t& b = l.packed[static_cast<size_t>((r * in + c) / 2)];
      b |= c % 2 == 0 ? code : static_cast<uint8_t>(code << 4);
    }
  }
  std::mt19937 rng(static_cast<uint32_t>(out * 131 + in));
  for (int64_t i = 0; i < out * in / 16; ++i) l.scales.push_back(static_cast<uint8_t>(rng() % 0x7E + 1));
  l.weight_decode = 0.0123f;
  l.weight_encode = 1.0f / l.weight_decode;
  if (w4a4) {
    l.input_decode = 0.75f;
    l.input_encode = 1.0f / 0.75f;
  }
  return l;
}

void write(const fs::path& path, const std::vector<Nvfp4Linear>& layers, QuantFormat f) {
  std::vector<nvfp4::io::OwnedTensor> owned;
  for (const auto& l : layers) {
    for (auto& t : nvfp4::io::nvfp4_linear_tensors(l, f)) owned.push_back(std::move(t));
  }
  std::vector<nvfp4::io::TensorRef> refs;
  for (const auto& t : owned) refs.push_back(t.ref());
  nvfp4::io::write_file(path.string(), refs);
}

float f32_at(std::span<const uint8_t> b) {
  float v;
  std::memcpy(&v, b.data(), 4);
  return v;
}

TEST_F(Nvfp4CheckpointTest, ModelOptLayoutAsPublished) {
  const auto l = layer("model.layers.0.self_attn.q_proj", 3, 32, true);
  write(dir_ / "m.safetensors", {l}, QuantFormat::modelopt);
  const auto f = nvfp4::io::SafetensorsFile::open((dir_ / "m.safetensors").string());
  const auto& w = f.at("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(nvfp4::dtype_name(w.dtype), "U8");
  EXPECT_EQ(w.shape, (std::vector<int64_t>{3, 16}));
  // Element 2j in the low nibble: row 1 starts with codes 7, 8 -> byte 0x87.
  EXPECT_EQ(f.bytes(w)[16], 0x87);
  const auto& s = f.at("model.layers.0.self_attn.q_proj.weight_scale");
  EXPECT_EQ(nvfp4::dtype_name(s.dtype), "F8_E4M3");
  EXPECT_EQ(s.shape, (std::vector<int64_t>{3, 2}));
  const auto& s2 = f.at("model.layers.0.self_attn.q_proj.weight_scale_2");
  EXPECT_EQ(nvfp4::dtype_name(s2.dtype), "F32");
  EXPECT_TRUE(s2.shape.empty()) << "a 0-d scalar";
  EXPECT_EQ(f32_at(f.bytes(s2)), 0.0123f) << "the DECODE factor";
  const auto& is = f.at("model.layers.0.self_attn.q_proj.input_scale");
  EXPECT_TRUE(is.shape.empty());
  EXPECT_EQ(f32_at(f.bytes(is)), 0.75f);
  EXPECT_EQ(f.tensors().size(), 4u);
}

TEST_F(Nvfp4CheckpointTest, CompressedTensorsLayoutAsPublished) {
  const auto l = layer("model.layers.0.mlp.down_proj", 2, 48, true);
  write(dir_ / "c.safetensors", {l}, QuantFormat::compressed_tensors);
  const auto f = nvfp4::io::SafetensorsFile::open((dir_ / "c.safetensors").string());
  const auto& w = f.at("model.layers.0.mlp.down_proj.weight_packed");
  EXPECT_EQ(nvfp4::dtype_name(w.dtype), "U8");
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 24}));
  const auto& s = f.at("model.layers.0.mlp.down_proj.weight_scale");
  EXPECT_EQ(nvfp4::dtype_name(s.dtype), "F8_E4M3");
  EXPECT_EQ(s.shape, (std::vector<int64_t>{2, 3}));
  // The same bytes as ModelOpt's for the same layer.
  write(dir_ / "m.safetensors", {l}, QuantFormat::modelopt);
  const auto m = nvfp4::io::SafetensorsFile::open((dir_ / "m.safetensors").string());
  EXPECT_TRUE(std::ranges::equal(f.bytes(w), m.bytes(m.at("model.layers.0.mlp.down_proj.weight"))));
  EXPECT_TRUE(std::ranges::equal(f.bytes(s), m.bytes(m.at("model.layers.0.mlp.down_proj.weight_scale"))));
  const auto& g = f.at("model.layers.0.mlp.down_proj.weight_global_scale");
  EXPECT_EQ(g.shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(f32_at(f.bytes(g)), 1.0f / 0.0123f) << "the ENCODE factor, the reciprocal of ModelOpt's";
  const auto& ig = f.at("model.layers.0.mlp.down_proj.input_global_scale");
  EXPECT_EQ(ig.shape, (std::vector<int64_t>{1}));
  EXPECT_EQ(f32_at(f.bytes(ig)), 1.0f / 0.75f);
}

TEST_F(Nvfp4CheckpointTest, WrittenLayersReadBackBitForBit) {
  for (QuantFormat fmt : {QuantFormat::modelopt, QuantFormat::compressed_tensors}) {
    const std::vector<Nvfp4Linear> layers = {layer("a.q_proj", 5, 64, true), layer("a.k_proj", 4, 64, false)};
    const fs::path p = dir_ / (std::string(nvfp4::io::quant_format_name(fmt)) + ".safetensors");
    write(p, layers, fmt);
    const auto ck = nvfp4::io::Checkpoint::open(p.string());
    for (const auto& want : layers) {
      const Nvfp4Linear got = nvfp4::io::read_nvfp4_linear(ck, want.module, fmt);
      EXPECT_EQ(got.out, want.out);
      EXPECT_EQ(got.in, want.in);
      EXPECT_EQ(got.packed, want.packed);
      EXPECT_EQ(got.scales, want.scales);
      // The stored form exactly; the other one its reciprocal.
      if (fmt == QuantFormat::modelopt) {
        EXPECT_EQ(got.weight_decode, want.weight_decode);
        EXPECT_EQ(got.weight_encode, 1.0f / want.weight_decode);
      } else {
        EXPECT_EQ(got.weight_encode, want.weight_encode);
        EXPECT_EQ(got.weight_decode, 1.0f / want.weight_encode);
      }
      EXPECT_EQ(got.w4a4(), want.w4a4());
    }
  }
}

TEST_F(Nvfp4CheckpointTest, MalformedLayersNameTheTensor) {
  auto l = layer("x.o_proj", 2, 32, false);
  l.scales[3] = 0x7F;
  EXPECT_NE(error_of([&] { nvfp4::io::nvfp4_linear_tensors(l, QuantFormat::modelopt); }).find("block scale 3 (row 1) is NaN"),
            std::string::npos);
  l = layer("x.o_proj", 2, 24, false);
  l.packed.resize(24);
  l.scales.resize(3);
  EXPECT_NE(error_of([&] { nvfp4::io::check_nvfp4_linear(l); }).find("multiple of 16"), std::string::npos);
  l = layer("x.o_proj", 2, 32, false);
  l.weight_decode = -1;
  EXPECT_NE(error_of([&] { nvfp4::io::check_nvfp4_linear(l); }).find("not finite and positive"), std::string::npos);

  // Files: a missing scale, a wrong shape, a wrong dtype.
  const auto good = layer("x.o_proj", 2, 32, true);
  auto tensors = nvfp4::io::nvfp4_linear_tensors(good, QuantFormat::modelopt);
  const auto write_without = [&](const fs::path& p, const std::string& drop, auto&& edit) {
    std::vector<nvfp4::io::TensorRef> refs;
    auto copy = tensors;
    for (auto& t : copy) edit(t);
    for (const auto& t : copy) {
      if (t.name != drop) refs.push_back(t.ref());
    }
    nvfp4::io::write_file(p.string(), refs);
    return nvfp4::io::Checkpoint::open(p.string());
  };
  const auto none = [](nvfp4::io::OwnedTensor&) {};
  auto ck = write_without(dir_ / "a.safetensors", "x.o_proj.weight_scale", none);
  EXPECT_NE(error_of([&] { nvfp4::io::read_nvfp4_linear(ck, "x.o_proj", QuantFormat::modelopt); })
                .find("no tensor x.o_proj.weight_scale (modelopt)"),
            std::string::npos);
  ck = write_without(dir_ / "b.safetensors", "", [](nvfp4::io::OwnedTensor& t) {
    if (t.name == "x.o_proj.weight_scale") t.shape = {1, 4};
  });
  EXPECT_NE(error_of([&] { nvfp4::io::read_nvfp4_linear(ck, "x.o_proj", QuantFormat::modelopt); }).find("F8_E4M3 [2, 2]"),
            std::string::npos);
  ck = write_without(dir_ / "c.safetensors", "", [](nvfp4::io::OwnedTensor& t) {
    if (t.name == "x.o_proj.input_scale") t.dtype = nvfp4::DType::I32;
  });
  EXPECT_NE(error_of([&] { nvfp4::io::read_nvfp4_linear(ck, "x.o_proj", QuantFormat::modelopt); })
                .find("input_scale (modelopt) is I32; expected F32 or BF16"),
            std::string::npos);
  // BF16 scalars (some ModelOpt checkpoints) are read.
  ck = write_without(dir_ / "d.safetensors", "", [](nvfp4::io::OwnedTensor& t) {
    if (t.name == "x.o_proj.weight_scale_2") t = {t.name, nvfp4::DType::BF16, {}, {0x80, 0x3F}};  // 1.0
  });
  EXPECT_EQ(nvfp4::io::read_nvfp4_linear(ck, "x.o_proj", QuantFormat::modelopt).weight_decode, 1.0f);
}

TEST(Nvfp4CheckpointConfig, ModelOptConfigsAsVllmReadsThem) {
  QuantConfig c;
  c.ignore = {"lm_head", "model.layers.0.mlp.down_proj"};
  c.producer_version = "0.3.0";
  const auto hq = nlohmann::json::parse(nvfp4::io::hf_quant_config_json(c));
  EXPECT_EQ(hq.at("producer").at("name"), "nvfp4");
  const auto& q = hq.at("quantization");
  EXPECT_EQ(q.at("quant_algo"), "NVFP4");
  EXPECT_EQ(q.at("group_size"), 16);
  EXPECT_TRUE(q.contains("kv_cache_quant_algo") && q.at("kv_cache_quant_algo").is_null());
  EXPECT_EQ(q.at("exclude_modules"), nlohmann::json(c.ignore));
  const auto qc = nlohmann::json::parse(nvfp4::io::quantization_config_json(c));
  EXPECT_EQ(qc.at("quant_method"), "modelopt");  // without it vLLM loads the model unquantized
  EXPECT_EQ(qc.at("quant_algo"), "NVFP4");
  EXPECT_EQ(qc.at("ignore"), nlohmann::json(c.ignore));
  const auto& g = qc.at("config_groups").at("group_0");
  EXPECT_EQ(g.at("weights").at("num_bits"), 4);
  EXPECT_EQ(g.at("weights").at("group_size"), 16);
  EXPECT_EQ(g.at("input_activations").at("type"), "float");
  c.w4a4 = false;
  EXPECT_EQ(nlohmann::json::parse(nvfp4::io::hf_quant_config_json(c)).at("quantization").at("quant_algo"), "W4A16_NVFP4");
  EXPECT_FALSE(nlohmann::json::parse(nvfp4::io::quantization_config_json(c)).at("config_groups").at("group_0").contains(
      "input_activations"));
}

TEST(Nvfp4CheckpointConfig, CompressedTensorsConfigAsPublished) {
  QuantConfig c;
  c.format = QuantFormat::compressed_tensors;
  c.ignore = {"lm_head"};
  const auto q = nlohmann::json::parse(nvfp4::io::quantization_config_json(c));
  EXPECT_EQ(q.at("quant_method"), "compressed-tensors");
  EXPECT_EQ(q.at("format"), "nvfp4-pack-quantized");
  EXPECT_EQ(q.at("quantization_status"), "compressed");
  const auto& g = q.at("config_groups").at("group_0");
  EXPECT_EQ(g.at("targets"), nlohmann::json::array({"Linear"}));
  const auto& w = g.at("weights");
  EXPECT_EQ(w.at("num_bits"), 4);
  EXPECT_EQ(w.at("type"), "float");
  EXPECT_EQ(w.at("strategy"), "tensor_group");
  EXPECT_EQ(w.at("group_size"), 16);
  EXPECT_EQ(w.at("symmetric"), true);
  EXPECT_EQ(w.at("dynamic"), false);
  EXPECT_EQ(g.at("input_activations").at("dynamic"), "local");
  EXPECT_EQ(q.at("ignore"), nlohmann::json::array({"lm_head"}));
}

TEST(Nvfp4CheckpointConfig, ConfigsReadBackAndForeignOnesAreRefused) {
  for (QuantFormat f : {QuantFormat::modelopt, QuantFormat::compressed_tensors}) {
    for (bool w4a4 : {true, false}) {
      QuantConfig c;
      c.format = f;
      c.w4a4 = w4a4;
      c.ignore = {"lm_head", "model.layers.1.*"};
      const std::string config = "{\"architectures\": [\"LlamaForCausalLM\"], \"quantization_config\": " +
                                 nvfp4::io::quantization_config_json(c) + "}";
      const auto got = nvfp4::io::read_quantization_config(config, "config.json");
      ASSERT_TRUE(got.has_value());
      EXPECT_EQ(got->format, f);
      EXPECT_EQ(got->w4a4, w4a4);
      EXPECT_EQ(got->ignore, c.ignore);
    }
  }
  EXPECT_FALSE(nvfp4::io::read_quantization_config("{\"architectures\": []}", "config.json").has_value());
  EXPECT_NE(error_of([] {
              nvfp4::io::read_quantization_config(R"({"quantization_config": {"quant_method": "gptq", "bits": 4}})",
                                                  "m/config.json");
            }).find("m/config.json: quantization_config.quant_method is \"gptq\""),
            std::string::npos);
  EXPECT_NE(error_of([] {
              nvfp4::io::read_quantization_config(R"({"quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8"}})",
                                                  "config.json");
            }).find("quant_algo is \"FP8\""),
            std::string::npos);
  EXPECT_NE(error_of([] {
              nvfp4::io::read_quantization_config(
                  R"({"quantization_config": {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
                      "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "float", "group_size": 32}}}}})",
                  "config.json");
            }).find("is not NVFP4 (4-bit float, group size 16)"),
            std::string::npos);
  EXPECT_NE(error_of([] { nvfp4::io::read_quantization_config("{\"quantization_config\": ", "config.json"); }).find("not valid JSON"),
            std::string::npos);
}

}  // namespace

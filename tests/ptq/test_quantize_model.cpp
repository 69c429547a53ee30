// Model-level PTQ (src/ptq/quantize_model.cpp) on a tiny model: every block projection quantized,
// fused siblings sharing their tensor scales (q/k/v, gate/up: weight and input), --keep-bf16
// honoured, GPTQ using the calibration Hessians, and the result written as a checkpoint.
#include <gtest/gtest.h>

#include <filesystem>

#include "../infer/tiny_hf_model.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/ptq_export.hpp"
#include "nvfp4/quantize_model.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
constexpr char kPrefix[] = "nvfp4_quantize_model_";
using PtqQuantizeModel = nvfp4::test::ScratchDirTest<kPrefix>;

TEST_F(PtqQuantizeModel, SiblingsShareScalesAndKeptLayersStayOut) {
  const fs::path& dir = dir_;
  const auto c = nvfp4::test::tiny_config("qwen3");
  nvfp4::test::write_tiny_hf_model(dir / "src", "qwen3", c, 81);
  const auto m = nvfp4::infer::HfModel::open((dir / "src").string());
  const auto calib = nvfp4::test::some_tokens(100, c.vocab, 82);
  nvfp4::ptq::QuantizeModelOptions o;
  o.window = 40;
  o.keep_bf16 = {"model.layers.1.mlp.down_proj"};
  size_t calls = 0;
  const auto rtn = nvfp4::ptq::quantize_model(m, calib, o, [&](size_t, size_t total, const std::string&) {
    ++calls;
    EXPECT_EQ(total, static_cast<size_t>(7 * c.n_layer));
  });
  EXPECT_EQ(calls, static_cast<size_t>(7 * c.n_layer));
  ASSERT_EQ(rtn.layers.size(), static_cast<size_t>(7 * c.n_layer - 1));
  EXPECT_EQ(rtn.kept, (std::vector<std::string>{"model.layers.1.mlp.down_proj", "lm_head"}));
  EXPECT_EQ(rtn.calib_tokens, 100);
  for (int l = 0; l < c.n_layer; ++l) {
    const auto& q = rtn.layers[static_cast<size_t>(7 * l)];
    for (int k : {1, 2}) {
      const auto& s = rtn.layers[static_cast<size_t>(7 * l + k)];
      EXPECT_EQ(s.weight_decode, q.weight_decode) << s.module;
      EXPECT_EQ(*s.input_decode, *q.input_decode) << s.module;
    }
    const auto& gate = rtn.layers[static_cast<size_t>(7 * l + 4)], &up = rtn.layers[static_cast<size_t>(7 * l + 5)];
    EXPECT_EQ(gate.weight_decode, up.weight_decode);
    EXPECT_EQ(*gate.input_decode, *up.input_decode);
    EXPECT_NE(q.weight_decode, rtn.layers[static_cast<size_t>(7 * l + 3)].weight_decode) << "o_proj has its own";
  }
  for (const auto& r : rtn.report) {
    if (!r.quantized) continue;
    EXPECT_EQ(r.calib_rows, 100);
    EXPECT_GT(r.weight_rel_error, 0.0);
    EXPECT_LT(r.weight_rel_error, 0.2);
  }
  // GPTQ changes codes (it moves error onto later columns) and still shares the scales.
  o.gptq = true;
  const auto g = nvfp4::ptq::quantize_model(m, calib, o);
  ASSERT_EQ(g.layers.size(), rtn.layers.size());
  size_t differ = 0;
  for (size_t i = 0; i < g.layers.size(); ++i) {
    differ += g.layers[i].packed != rtn.layers[i].packed;
    EXPECT_EQ(g.layers[i].weight_decode, rtn.layers[i].weight_decode);
  }
  EXPECT_EQ(differ, g.layers.size());
  // Written as a checkpoint.
  nvfp4::ptq::ExportOptions eo;
  eo.config.ignore = g.kept;
  nvfp4::ptq::write_quantized_folder((dir / "src").string(), (dir / "out").string(), g.layers, eo);
  const auto ck = nvfp4::io::Checkpoint::open((dir / "out").string());
  EXPECT_EQ(nvfp4::io::read_nvfp4_linear(ck, g.layers[3].module, nvfp4::io::QuantFormat::modelopt).packed,
            g.layers[3].packed);
  // Held-out saturation: on the calibration tokens themselves with the max as the input amax no
  // block is above it; with the median as the input amax, most blocks are.
  o.gptq = false;
  o.holdout = calib;
  const auto self = nvfp4::ptq::quantize_model(m, calib, o);
  EXPECT_GT(self.holdout_blocks, 0);
  EXPECT_EQ(self.holdout_saturated, 0);
  o.act_percentile = 50;
  const auto median = nvfp4::ptq::quantize_model(m, calib, o);
  EXPECT_EQ(median.holdout_blocks, self.holdout_blocks);
  EXPECT_GT(median.holdout_saturated, median.holdout_blocks / 2);
  for (const auto& rep : median.report) {
    if (rep.quantized) {  // 100 rows of input-size / 16 blocks
      EXPECT_GT(rep.holdout_blocks, 0) << rep.module;
      EXPECT_EQ(rep.holdout_blocks % 100, 0) << rep.module;
    }
  }
  o.holdout.clear();
  // Bad options.
  o.act_percentile = 0;
  EXPECT_THROW(nvfp4::ptq::quantize_model(m, calib, o), nvfp4::Error);
  o.act_percentile = 100;
  o.keep_bf16 = {"nothing.matches"};
  EXPECT_THROW(nvfp4::ptq::quantize_model(m, calib, o), nvfp4::Error);
}

}  // namespace

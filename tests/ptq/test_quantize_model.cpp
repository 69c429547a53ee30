// Model-level PTQ (src/ptq/quantize_model.cpp) on a tiny model: every block projection quantized,
// fused siblings sharing their tensor scales (q/k/v, gate/up: weight and input), --keep-bf16
// honoured, GPTQ using the calibration Hessians, and the result written as a checkpoint.
#include <gtest/gtest.h>

#include <filesystem>

#include "../infer/tiny_hf_model.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/evaluate.hpp"
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

// A --keep-bf16 pattern naming one member of a fused group keeps the whole group: vLLM refuses a
// q/k/v or gate/up whose members differ in precision.
TEST_F(PtqQuantizeModel, KeepingOneSiblingKeepsItsGroup) {
  const auto c = nvfp4::test::tiny_config("llama");
  nvfp4::test::write_tiny_hf_model(dir_ / "src", "llama", c, 85);
  const auto m = nvfp4::infer::HfModel::open((dir_ / "src").string());
  nvfp4::ptq::QuantizeModelOptions o;
  o.window = 40;
  o.keep_bf16 = {"model.layers.0.self_attn.k_proj", "model.layers.1.mlp.up_proj"};
  const auto r = nvfp4::ptq::quantize_model(m, nvfp4::test::some_tokens(60, c.vocab, 86), o);
  EXPECT_EQ(r.kept, (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                              "model.layers.0.self_attn.v_proj", "model.layers.1.mlp.gate_proj",
                                              "model.layers.1.mlp.up_proj", "lm_head"}));
  EXPECT_EQ(r.report[0].why_not, "kept with its fused sibling model.layers.0.self_attn.k_proj (--keep-bf16)");
  EXPECT_EQ(r.report[1].why_not, "kept by --keep-bf16");
  EXPECT_EQ(r.layers.size(), static_cast<size_t>(14 - 5));
}

// Per-layer sensitivity on held-out tokens: each layer's KL is that of the model with only that
// layer at its NVFP4 weights as quantized here (GPTQ's, not a fresh round to nearest), computed
// here from two engines' logits; the fallback rules keep whole groups, the auto rule every group
// above its threshold and only those, the budget rule within its share of the weights; the model
// after the fallback is no further from the unquantized one than before.
TEST_F(PtqQuantizeModel, SensitivityAndFallback) {
  const auto c = nvfp4::test::tiny_config("qwen2");
  nvfp4::test::write_tiny_hf_model(dir_ / "src", "qwen2", c, 87);
  const auto m = nvfp4::infer::HfModel::open((dir_ / "src").string());
  const auto calib = nvfp4::test::some_tokens(120, c.vocab, 88);
  nvfp4::ptq::QuantizeModelOptions o;
  o.window = 40;
  o.gptq = true;
  o.sensitivity_tokens = nvfp4::test::some_tokens(31, c.vocab, 89);  // one window: 30 scored tokens
  const auto r = nvfp4::ptq::quantize_model(m, calib, o);
  ASSERT_TRUE(r.before.has_value());
  EXPECT_EQ(r.sensitivity_scored, 30);
  EXPECT_EQ(r.before->kl, r.after->kl);
  EXPECT_GT(r.before->kl, 0.0);
  EXPECT_EQ(r.layers.size(), 14u);

  // Layer 3 (o_proj of block 0) alone, its GPTQ weights, against the unquantized model.
  nvfp4::infer::EngineOptions eo;
  eo.max_context = 40;
  const auto base = nvfp4::infer::make_cpu_engine(m, eo);
  const auto want_base = nvfp4::test::run_chunk(*base, 0, o.sensitivity_tokens, true);
  const auto one = nvfp4::infer::HfModel::open_with_layers((dir_ / "src").string(), {r.layers[3]}, true);
  const auto e1 = nvfp4::infer::make_cpu_engine(one, eo);
  EXPECT_EQ(e1->linear_plan()[3].precision, nvfp4::infer::Precision::w4a4);
  EXPECT_EQ(e1->linear_plan()[2].precision, nvfp4::infer::Precision::fp32);
  const auto q1 = nvfp4::test::run_chunk(*e1, 0, o.sensitivity_tokens, true);
  double kl = 0;
  const size_t V = static_cast<size_t>(c.vocab);
  for (size_t p = 0; p < 30; ++p) {
    kl += nvfp4::infer::kl_divergence(std::span<const float>(want_base).subspan(p * V, V),
                                      std::span<const float>(q1).subspan(p * V, V));
  }
  EXPECT_NEAR(r.report[3].kl, kl / 30, 1e-12 * (1 + kl));
  EXPECT_GT(r.report[3].output_rel_error, 0.0);
  EXPECT_LT(r.report[3].output_rel_error, 0.5);

  // Groups by their largest member's KL.
  std::vector<double> group_kl;
  for (size_t l = 0; l < 2; ++l) {
    const size_t b = 7 * l;
    group_kl.push_back(std::max({r.report[b].kl, r.report[b + 1].kl, r.report[b + 2].kl}));
    group_kl.push_back(r.report[b + 3].kl);
    group_kl.push_back(std::max(r.report[b + 4].kl, r.report[b + 5].kl));
    group_kl.push_back(r.report[b + 6].kl);
  }
  std::vector<double> sorted = group_kl;
  std::sort(sorted.begin(), sorted.end());
  ASSERT_LT(sorted[3], sorted[4]);
  o.auto_fallback_kl = (sorted[3] + sorted[4]) / 2;  // the upper half of the 8 groups
  const auto a = nvfp4::ptq::quantize_model(m, calib, o);
  const size_t members[] = {3, 1, 2, 1};  // q/k/v, o, gate/up, down
  size_t fell = 0, g = 0;
  for (size_t l = 0; l < 2; ++l) {
    size_t at = 7 * l;
    for (size_t k = 0; k < 4; ++k, ++g) {
      const bool falls = group_kl[g] > o.auto_fallback_kl;
      for (size_t i = at; i < at + members[k]; ++i) {
        EXPECT_EQ(a.report[i].fallback, falls) << a.report[i].module;
        EXPECT_EQ(a.report[i].quantized, !falls) << a.report[i].module;
        fell += falls;
      }
      at += members[k];
    }
  }
  EXPECT_EQ(a.layers.size(), 14u - fell);
  EXPECT_EQ(a.kept.size(), fell + 1);
  EXPECT_LE(a.after->kl, a.before->kl);
  EXPECT_EQ(a.before->kl, r.before->kl);
  EXPECT_GT(a.fallback_weights, 0);

  o.auto_fallback_kl = 0;
  o.bf16_budget = 0.3;
  const auto b = nvfp4::ptq::quantize_model(m, calib, o);
  EXPECT_GT(b.fallback_weights, 0);
  EXPECT_LE(static_cast<double>(b.fallback_weights), 0.3 * static_cast<double>(b.block_weights));
  EXPECT_EQ(b.block_weights, 2 * (64 * 64 * 2 + 32 * 64 * 2 + 96 * 64 * 3));
  int64_t kept_weights = 0;
  for (size_t i = 0; i < 14; ++i) {
    if (b.report[i].fallback) kept_weights += m.specs()[static_cast<size_t>(nvfp4::model::param_index(c).layers[i / 7].weight(static_cast<nvfp4::model::LinearKind>(i % 7)))].numel;
  }
  EXPECT_EQ(kept_weights, b.fallback_weights);
  EXPECT_LE(b.after->kl, b.before->kl);

  // Bad options.
  o.auto_fallback_kl = 0.1;
  EXPECT_NE(nvfp4::test::error_of([&] { nvfp4::ptq::quantize_model(m, calib, o); }).find("not both"), std::string::npos);
  o.bf16_budget = 0;
  o.sensitivity_tokens.clear();
  EXPECT_NE(nvfp4::test::error_of([&] { nvfp4::ptq::quantize_model(m, calib, o); }).find("need the per-layer sensitivity"),
            std::string::npos);
}

}  // namespace

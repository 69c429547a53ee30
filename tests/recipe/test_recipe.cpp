// Precision recipes as data: presets follow docs/numerics.md §5, every switch changes only what it
// names, JSON round-trips, validation explains, and the per-operand decision follows the
// BF16-layer and late-switch rules.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/recipe.hpp"
#include "support/test_support.hpp"

namespace {

using namespace nvfp4::recipe;
using nvfp4::BlockShape;
using nvfp4::Format;
using nvfp4::Rounding;

TEST(Recipe, Nvfp4PresetIsThePapersTable) {
  const Recipe r = preset("nvfp4", 12);
  // fprop: X 1x16 RNE, W 16x16 RNE
  EXPECT_EQ(r.fprop.a, (OperandQuant{true, Format::nvfp4, {1, 16}, Rounding::rne, false}));
  EXPECT_EQ(r.fprop.b, (OperandQuant{true, Format::nvfp4, {16, 16}, Rounding::rne, false}));
  // dgrad: dY 1x16 SR, W^T (the exact transpose of the 16x16 copy) RNE
  EXPECT_EQ(r.dgrad.a, (OperandQuant{true, Format::nvfp4, {1, 16}, Rounding::stochastic, false}));
  EXPECT_EQ(r.dgrad.b, (OperandQuant{true, Format::nvfp4, {16, 16}, Rounding::rne, false}));
  // wgrad: dY^T RHT + SR, X^T RHT + RNE
  EXPECT_EQ(r.wgrad.a, (OperandQuant{true, Format::nvfp4, {1, 16}, Rounding::stochastic, true}));
  EXPECT_EQ(r.wgrad.b, (OperandQuant{true, Format::nvfp4, {1, 16}, Rounding::rne, true}));
  EXPECT_EQ(r.bf16_first, 1);
  EXPECT_EQ(r.bf16_last, 2);
  int first = 0, last = 0;
  default_bf16_blocks(62, first, last);  // the paper's 12B model: first 2, last 8 of 62
  EXPECT_EQ(first, 2);
  EXPECT_EQ(last, 8);
  EXPECT_NO_THROW(validate(r, 12));
}

TEST(Recipe, EveryPresetValidatesAndRoundTripsThroughJson) {
  for (const char* name : {"bf16", "fp8", "fp8-block", "nvfp4", "mxfp4", "mxfp4-ocp"}) {
    SCOPED_TRACE(name);
    const Recipe r = preset(name, 8);
    EXPECT_NO_THROW(validate(r, 8));
    EXPECT_EQ(from_json(to_json(r)), r);
    EXPECT_NE(describe(r).find(std::string("recipe ") + name), std::string::npos);
    EXPECT_EQ(r.quantizes_anything(), std::string(name) != "bf16");
  }
  EXPECT_EQ(preset("fp8", 8).dgrad.a.format, Format::fp8_e5m2);  // gradients in E5M2
  EXPECT_EQ(preset("fp8-block", 8).fprop.b.block, (BlockShape{128, 128}));
  EXPECT_EQ(preset("mxfp4-ocp", 8).fprop.a.format, Format::mxfp4_ocp);
  const std::string e = nvfp4::test::error_of([] { preset("nvfp8", 8); });
  EXPECT_NE(e.find("nvfp8"), std::string::npos) << e;
  EXPECT_NE(e.find("nvfp4"), std::string::npos) << e;  // lists the valid ones
}

// Each switch changes exactly the field it names: undo that field by hand and the recipe equals
// the preset again (apart from the name).
TEST(Recipe, EachSwitchChangesOnlyWhatItNames) {
  const Recipe base = preset("nvfp4", 12);
  auto same_but_name = [&](Recipe r) {
    r.name = base.name;
    return r == base;
  };
  {
    Switches s;
    s.no_2d = true;
    Recipe r = apply(base, s);
    EXPECT_EQ(r.fprop.b.block, (BlockShape{1, 16}));
    EXPECT_EQ(r.dgrad.b.block, (BlockShape{1, 16}));
    r.fprop.b.block = r.dgrad.b.block = BlockShape{16, 16};
    EXPECT_TRUE(same_but_name(r));
  }
  {
    Switches s;
    s.no_rht = true;
    Recipe r = apply(base, s);
    EXPECT_FALSE(r.wgrad.a.rht || r.wgrad.b.rht);
    r.wgrad.a.rht = r.wgrad.b.rht = true;
    EXPECT_TRUE(same_but_name(r));
  }
  {
    Switches s;
    s.no_sr = true;
    Recipe r = apply(base, s);
    EXPECT_EQ(r.dgrad.a.rounding, Rounding::rne);
    EXPECT_EQ(r.wgrad.a.rounding, Rounding::rne);
    r.dgrad.a.rounding = r.wgrad.a.rounding = Rounding::stochastic;
    EXPECT_TRUE(same_but_name(r));
  }
  {
    Switches s;
    s.bf16_blocks = parse_bf16_blocks("0-0");
    Recipe r = apply(base, s);
    EXPECT_EQ(r.bf16_first + r.bf16_last, 0);
    r.bf16_first = 1;
    r.bf16_last = 2;
    EXPECT_TRUE(same_but_name(r));
  }
  {
    Switches s;
    s.switch_bf16_at = 0.82;
    s.switch_forward_only = true;
    Recipe r = apply(base, s);
    EXPECT_EQ(r.switch_bf16_at, 0.82);
    EXPECT_TRUE(r.switch_forward_only);
    EXPECT_EQ(r.name, "nvfp4:switch-fwd=0.82");
    r.switch_bf16_at = -1;
    r.switch_forward_only = false;
    EXPECT_TRUE(same_but_name(r));
  }
}

TEST(Recipe, ARecipesNameIsItsSpecAndParsesBack) {
  // One grammar for BF16 blocks and switches: what `compare --recipes` and `train --recipe`
  // read is what recipes are named (run folders, reports, checkpoints).
  for (const char* spec : {"bf16", "nvfp4", "nvfp4:no-rht", "nvfp4:no-2d:no-sr:bf16=0-0",
                           "mxfp4:bf16=2-3:switch=0.8", "nvfp4:bf16-layer=model.layers.3.mlp.down_proj:switch-fwd=0.5",
                           "fp8-block"}) {
    SCOPED_TRACE(spec);
    const Recipe r = parse(spec, 8);
    EXPECT_EQ(r.name, spec);
    EXPECT_EQ(parse(r.name, 8), r);
  }
  const Recipe r = parse("nvfp4:no-rht:bf16=2-1:bf16-layer=model.layers.3.mlp.down_proj:switch=0.25", 8);
  EXPECT_FALSE(r.wgrad.a.rht);
  EXPECT_EQ(r.bf16_first, 2);
  EXPECT_EQ(r.bf16_last, 1);
  EXPECT_EQ(r.bf16_layers, std::vector<std::string>{"model.layers.3.mlp.down_proj"});
  EXPECT_EQ(r.switch_bf16_at, 0.25);
  EXPECT_FALSE(r.switch_forward_only);
  // Switches applied to a parsed recipe extend its spec in the same grammar.
  Switches s;
  s.no_sr = true;
  s.bf16_blocks = std::make_pair(0, 1);
  EXPECT_EQ(apply(parse("nvfp4:no-rht", 8), s).name, "nvfp4:no-rht:no-sr:bf16=0-1");
}

TEST(Recipe, BadSettingsAreExplained) {
  auto expect = [](auto fn, const std::string& needle) {
    const std::string e = nvfp4::test::error_of(fn);
    EXPECT_NE(e.find(needle), std::string::npos) << e;
  };
  expect([] { parse_bf16_blocks("first:1,last:2"); }, "expected FIRST-LAST");
  expect([] { parse_bf16_blocks("1-x"); }, "expected FIRST-LAST");
  expect([] { parse_bf16_blocks("-1-2"); }, "expected FIRST-LAST");
  // Too large for an int: an error, not a wrapped or thrown-through std::out_of_range.
  expect([] { parse_bf16_blocks("99999999999-0"); }, "expected FIRST-LAST");
  expect([] { parse("nvfp4:bf16=99999999999-1", 8); }, "recipe \"nvfp4:bf16=99999999999-1\"");
  expect([] { parse("nvfp4:no-rth", 8); }, "unknown switch \"no-rth\"");
  expect([] { parse("nvfp4:switch=nan", 8); }, "not a fraction in [0, 1)");
  expect([] { parse("nvfp4:switch=1", 8); }, "not a fraction in [0, 1)");
  expect([] { parse("nvfp5", 8); }, "nvfp5 is not known");
  expect([] { parse("", 8); }, "empty");
  expect([] {
    Switches s;
    s.bf16_blocks = std::make_pair(5, 4);
    validate(apply(preset("nvfp4", 8), s), 8);
  }, "exceed the model's 8 blocks");
  expect([] {
    Recipe r = preset("fp8", 8);
    r.wgrad.a.rht = true;  // FP8 has no RHT
    validate(r, 8);
  }, "wgrad operand dY^T");
  expect([] {
    Recipe r = preset("fp8", 8);
    r.dgrad.a.rounding = Rounding::stochastic;
    validate(r, 8);
  }, "stochastic rounding");
  expect([] {
    Switches s;
    s.switch_forward_only = true;
    apply(preset("nvfp4", 8), s);
  }, "--switch-bf16-at");
  expect([] { from_json(R"({"name": "x"})"); }, "missing");
  expect([] {
    std::string j = to_json(preset("nvfp4", 8));
    j.insert(1, R"("extra": 1, )");
    from_json(j);
  }, "unknown key \"extra\"");
}

TEST(Recipe, OperandDecisionFollowsLayerAndSwitchRules) {
  Switches s;
  s.bf16_layers = {"model.layers.4.mlp.down_proj"};
  s.switch_bf16_at = 0.8;
  s.switch_forward_only = true;
  const Recipe r = apply(preset("nvfp4", 8), s);  // BF16 blocks: first 1, last 2 -> quantized 1..5
  auto qz = [&](int layer, const char* linear, Gemm g, Operand o, double progress) {
    return operand_quant(r, 8, layer, linear, g, o, progress).has_value();
  };
  EXPECT_FALSE(qz(0, "self_attn.q_proj", Gemm::fprop, Operand::a, 0.0));  // first block
  EXPECT_TRUE(qz(1, "self_attn.q_proj", Gemm::fprop, Operand::a, 0.0));
  EXPECT_TRUE(qz(5, "mlp.up_proj", Gemm::wgrad, Operand::b, 0.0));
  EXPECT_FALSE(qz(6, "mlp.up_proj", Gemm::fprop, Operand::a, 0.0));       // last two blocks
  EXPECT_FALSE(qz(8, "lm_head", Gemm::fprop, Operand::b, 0.0));           // LM head
  EXPECT_FALSE(qz(4, "mlp.down_proj", Gemm::dgrad, Operand::a, 0.0));     // listed by name
  EXPECT_TRUE(qz(4, "mlp.up_proj", Gemm::dgrad, Operand::a, 0.0));
  // Late switch, forward only: fprop goes BF16 at 80% of the tokens, the gradients stay.
  EXPECT_TRUE(qz(2, "mlp.up_proj", Gemm::fprop, Operand::a, 0.79));
  EXPECT_FALSE(qz(2, "mlp.up_proj", Gemm::fprop, Operand::a, 0.80));
  EXPECT_TRUE(qz(2, "mlp.up_proj", Gemm::dgrad, Operand::a, 0.90));
  EXPECT_TRUE(qz(2, "mlp.up_proj", Gemm::wgrad, Operand::a, 0.90));
  // The whole-pass switch takes the gradients along.
  Switches all;
  all.switch_bf16_at = 0.5;
  const Recipe w = apply(preset("nvfp4", 8), all);
  EXPECT_FALSE(operand_quant(w, 8, 2, "mlp.up_proj", Gemm::wgrad, Operand::a, 0.5).has_value());
  // The returned settings are the recipe's.
  const auto got = operand_quant(r, 8, 3, "self_attn.o_proj", Gemm::wgrad, Operand::a, 0.1);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->rht);
  EXPECT_EQ(got->rounding, Rounding::stochastic);
}

}  // namespace

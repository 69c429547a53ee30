// The quantization plan: a recipe resolved once against the model's linear layers. Every
// operand is the recipe's rule for that layer (BF16 blocks, names, the late switch), SR roles
// are 3 x kind + tensor, producer-amax slots are shared exactly by the operands that read one
// tensor, and a recipe that would quantize nothing is refused.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/plan.hpp"
#include "support/test_support.hpp"
#include "support/tiny_corpus.hpp"

namespace {

using namespace nvfp4::recipe;
using nvfp4::model::LinearId;
using nvfp4::model::LinearKind;
using nvfp4::model::linear_index;
using nvfp4::model::linear_name;
using nvfp4::model::resolve_plan;

constexpr Gemm kGemms[] = {Gemm::fprop, Gemm::dgrad, Gemm::wgrad};
constexpr Operand kOperands[] = {Operand::a, Operand::b};

TEST(Plan, ListsEveryLinearLayerInTheModelsOrder) {
  const Plan p = resolve_plan(preset("bf16", 3), 3);
  ASSERT_EQ(p.size(), 3u * 7 + 1);
  for (int l = 0; l < 3; ++l) {
    for (int k = 0; k < 7; ++k) {
      const LinearId id{l, static_cast<LinearKind>(k)};
      EXPECT_EQ(p.linear(linear_index(id)).name, "model.layers." + std::to_string(l) + "." + linear_name(id.kind));
    }
  }
  EXPECT_EQ(p.linear(linear_index({3, LinearKind::lm_head})).name, "lm_head");
  EXPECT_EQ(p.quantized_linears(), 0);
  EXPECT_EQ(p.amax_slots(), 0);
}

TEST(Plan, EveryOperandIsTheRecipesRuleForItsLayer) {
  constexpr int L = 8;
  for (const char* name : {"fp8", "fp8-block", "nvfp4", "mxfp4", "mxfp4-ocp"}) {
    SCOPED_TRACE(name);
    Recipe r = preset(name, L);
    r.bf16_layers = {"model.layers.4.mlp.down_proj"};
    r.switch_bf16_at = 0.75;
    r.switch_forward_only = std::string(name) == "nvfp4";
    const Plan p = resolve_plan(r, L);
    for (int l = 0; l <= L; ++l) {
      for (int k = 0; k < (l < L ? 7 : 1); ++k) {
        const LinearId id{l, l < L ? static_cast<LinearKind>(k) : LinearKind::lm_head};
        for (int phase = 0; phase < 2; ++phase) {
          for (Gemm g : kGemms) {
            for (Operand o : kOperands) {
              const OperandPlan& op = p.operand(linear_index(id), phase, g, o);
              const auto want = operand_quant(r, L, l, linear_name(id.kind), g, o, phase ? 0.75 : 0.0);
              ASSERT_EQ(op.quantized, want.has_value()) << l << " " << linear_name(id.kind) << " phase " << phase;
              if (want) {
                EXPECT_EQ(op.quant, *want);
              }
              EXPECT_EQ(op.tensor, operand_tensor(g, o));
              EXPECT_EQ(op.sr_role, 3u * static_cast<uint32_t>(id.kind) + static_cast<uint32_t>(op.tensor));
              EXPECT_EQ(op.column, g == Gemm::wgrad || (g == Gemm::dgrad && o == Operand::b));
            }
          }
        }
      }
    }
    EXPECT_EQ(p.phase(0.0), 0);
    EXPECT_EQ(p.phase(0.7499), 0);
    EXPECT_EQ(p.phase(0.75), 1);
  }
}

TEST(Plan, ProducerAmaxSlotsAreSharedByTheReadersOfOneTensor) {
  constexpr int L = 3;
  const Plan p = resolve_plan(preset("fp8", L), L);  // FP8 current scaling: no BF16 blocks
  std::set<int> slots;
  for (int l = 0; l < L; ++l) {
    auto op = [&](LinearKind k, Gemm g, Operand o) -> const OperandPlan& {
      return p.operand(linear_index({l, k}), 0, g, o);
    };
    // X: fprop's row-wise and wgrad's column-wise copies read one slot; q, k, v share their
    // input, gate and up theirs; o and down have their own.
    const int qkv = op(LinearKind::q, Gemm::fprop, Operand::a).amax_slot;
    for (LinearKind k : {LinearKind::q, LinearKind::k, LinearKind::v}) {
      EXPECT_EQ(op(k, Gemm::fprop, Operand::a).amax_slot, qkv);
      EXPECT_EQ(op(k, Gemm::wgrad, Operand::b).amax_slot, qkv);
    }
    const int gu = op(LinearKind::gate, Gemm::fprop, Operand::a).amax_slot;
    EXPECT_EQ(op(LinearKind::up, Gemm::fprop, Operand::a).amax_slot, gu);
    std::set<int> layer_slots{qkv, gu, op(LinearKind::o, Gemm::fprop, Operand::a).amax_slot,
                              op(LinearKind::down, Gemm::fprop, Operand::a).amax_slot};
    // dY: one per layer, read by dgrad (row-wise) and wgrad (column-wise).
    for (int k = 0; k < 7; ++k) {
      const auto kind = static_cast<LinearKind>(k);
      EXPECT_EQ(op(kind, Gemm::dgrad, Operand::a).amax, AmaxSource::producer);
      EXPECT_EQ(op(kind, Gemm::dgrad, Operand::a).amax_slot, op(kind, Gemm::wgrad, Operand::a).amax_slot);
      layer_slots.insert(op(kind, Gemm::dgrad, Operand::a).amax_slot);
      // Weights come from the FP32 masters: their quantizer finds the amax.
      EXPECT_EQ(op(kind, Gemm::fprop, Operand::b).amax, AmaxSource::quantizer);
      EXPECT_EQ(op(kind, Gemm::fprop, Operand::b).amax_slot, -1);
    }
    EXPECT_EQ(layer_slots.size(), 4u + 7u) << "layer " << l;
    for (int s : layer_slots) {
      EXPECT_GE(s, 0);
      EXPECT_TRUE(slots.insert(s).second) << "slot " << s << " reused across layers";
    }
  }
  EXPECT_EQ(p.amax_slots(), static_cast<int>(slots.size()));
  EXPECT_EQ(*slots.rbegin(), p.amax_slots() - 1);
  // The LM head stays BF16.
  const auto& head = p.linear(linear_index({L, LinearKind::lm_head}));
  EXPECT_FALSE(head.quantized());
}

TEST(Plan, AmaxSourcesFollowTheFormat) {
  const Plan nv = resolve_plan(preset("nvfp4", 8), 8);
  const OperandPlan& x = nv.operand(linear_index({3, LinearKind::up}), 0, Gemm::fprop, Operand::a);
  EXPECT_EQ(x.amax, AmaxSource::quantizer);  // NVFP4's FP32 tensor scale: the quantizer's amax
  EXPECT_EQ(x.amax_slot, -1);
  const Plan mx = resolve_plan(preset("mxfp4", 8), 8);
  EXPECT_EQ(mx.operand(linear_index({3, LinearKind::up}), 0, Gemm::fprop, Operand::a).amax, AmaxSource::none);
  const Plan blk = resolve_plan(preset("fp8-block", 8), 8);
  EXPECT_EQ(blk.operand(linear_index({3, LinearKind::up}), 0, Gemm::fprop, Operand::a).amax, AmaxSource::none);
  EXPECT_EQ(nv.amax_slots() + mx.amax_slots() + blk.amax_slots(), 0);
}

TEST(Plan, ARecipeThatQuantizesNoLayerIsAnErrorNamingWhy) {
  // The tiny preset's 2 blocks under the paper's BF16 rule (first 1, last 1 of 2): nothing
  // left to quantize — before the plan, this trained all-BF16 under the name "nvfp4".
  try {
    (void)resolve_plan(preset("nvfp4", 2), 2);
    FAIL() << "expected an error";
  } catch (const nvfp4::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("quantizes no linear layer"), std::string::npos) << m;
    EXPECT_NE(m.find("2-block"), std::string::npos) << m;
    EXPECT_NE(m.find("--bf16-layers"), std::string::npos) << m;
  }
  Recipe named = preset("fp8", 1);
  for (int k = 0; k < 7; ++k) named.bf16_layers.push_back(std::string("model.layers.0.") + linear_name(LinearKind(k)));
  EXPECT_THROW((void)resolve_plan(named, 1), nvfp4::Error);
  // One quantized layer is enough; BF16 quantizes nothing by definition and is fine.
  EXPECT_EQ(resolve_plan(preset("nvfp4", 4), 4).quantized_linears(), 7);
  EXPECT_NO_THROW((void)resolve_plan(preset("bf16", 2), 2));
}

TEST(Plan, TrainingARecipeThatQuantizesNothingStopsBeforeAnyWork) {
  // `--preset tiny --recipe nvfp4` used to train all-BF16 under the name nvfp4, exit 0.
  const std::string out = (std::filesystem::temp_directory_path() / ("nvfp4_plan_cli_" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(out);
  const auto r = nvfp4::test::run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + out +
                                      " --preset tiny --recipe nvfp4 --steps 2 --no-progress");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("quantizes no linear layer of this 2-block model"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(out) / "metrics.jsonl"));
  // The same model with fewer BF16 blocks trains, and prints its plan.
  const auto ok = nvfp4::test::run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + out +
                                       " --preset tiny --recipe nvfp4:bf16=0-1 --steps 2 --no-progress");
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_NE(ok.output.find("plan: recipe nvfp4:bf16=0-1 over 15 linear layers of 2 blocks, 7 quantized"),
            std::string::npos)
      << ok.output;
  std::filesystem::remove_all(out);
}

TEST(Plan, DescribeAndJsonSayWhatEachLayerDoes) {
  const Plan p = resolve_plan(preset("nvfp4", 6), 6);
  const std::string d = p.describe();
  EXPECT_NE(d.find("recipe nvfp4 over 43 linear layers of 6 blocks, 21 quantized"), std::string::npos) << d;
  EXPECT_NE(d.find("  every linear layer of blocks 1-3:\n    fprop  X nvfp4 1x16; W nvfp4 16x16\n"), std::string::npos) << d;
  EXPECT_NE(d.find("  every linear layer of blocks 0, 4-5; the LM head:\n    fprop  X bf16"), std::string::npos) << d;
  Recipe named = preset("fp8", 2);
  named.bf16_layers = {"model.layers.1.mlp.down_proj"};
  const std::string n = resolve_plan(named, 2).describe();
  EXPECT_NE(n.find("  mlp.down_proj in block 0; mlp.gate_proj, mlp.up_proj, self_attn.k_proj, self_attn.o_proj, "
                   "self_attn.q_proj, self_attn.v_proj in blocks 0-1:\n"),
            std::string::npos)
      << n;
  EXPECT_NE(n.find("  mlp.down_proj in block 1; the LM head:\n"), std::string::npos) << n;
  EXPECT_NE(n.find("X fp8-e4m3 tensor (amax from its producer)"), std::string::npos) << n;
  EXPECT_NE(d.find("nvfp4 16x16"), std::string::npos) << d;
  const auto j = nlohmann::json::parse(p.to_json());
  EXPECT_EQ(j.at("layers").size(), p.size());
  EXPECT_EQ(j.at("layers")[7 + 6].at("name"), "model.layers.1.mlp.down_proj");
  EXPECT_EQ(j.at("layers")[7 + 6].at("gemms").at("wgrad").at("a").at("rounding"), "sr");
  EXPECT_EQ(j.at("layers")[0].at("gemms").at("fprop").at("a"), "bf16");
  EXPECT_FALSE(j.at("layers")[0].contains("after_switch"));
}

}  // namespace

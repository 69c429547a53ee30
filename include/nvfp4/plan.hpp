// A recipe resolved against a model's linear layers: the quantization plan (architecture.md:
// recipe -> plan -> model). Resolved and validated once, before the first step; training (CPU
// and CUDA), checkpoints and their metadata read it, and nothing on the hot path builds a
// string or asks the recipe again.
//
// For every linear layer, every GEMM (fprop, dgrad, wgrad) and both operands, the plan says:
//   - BF16, or the quantizer settings (format, block, rounding, RHT) and which copy (row-wise
//     or the column-wise transpose) the GEMM reads;
//   - the tensor the operand quantizes (X, W or dY) and its stochastic-rounding role, so the
//     CPU and CUDA layers draw the same random bits;
//   - where the operand's per-tensor amax comes from: the quantizer's own pass, or the kernel
//     that writes the tensor (FP8 current scaling: the "producer amax"), in which case the plan
//     names the amax slot that producer fills and every operand reading the tensor reads —
//     one slot for q, k and v's shared input, one per layer for each output gradient.
// A recipe with a late switch to BF16 resolves into two phases: before and after the switch.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/quantize.hpp"
#include "nvfp4/recipe.hpp"

namespace nvfp4::recipe {

// The tensor an operand quantizes: fprop (X, W), dgrad (dY, W^T), wgrad (dY^T, X^T).
enum class Tensor : uint8_t { x = 0, w = 1, dy = 2 };
Tensor operand_tensor(Gemm g, Operand o);
// Whether the GEMM reads the column-wise copy (the transpose) of its tensor: W^T, dY^T, X^T.
bool operand_column(Gemm g, Operand o);

// Where a quantized operand's per-tensor amax comes from.
enum class AmaxSource : uint8_t {
  none,       // BF16, or a format without an amax-derived tensor scale (MXFP4, FP8 blocks)
  quantizer,  // the quantizer finds max |x| itself (NVFP4's tensor scale; FP8 weights)
  producer,   // the kernel writing the tensor folds max |x| into the plan's amax slot
};
const char* amax_source_name(AmaxSource a);  // "none", "quantizer", "producer"

// One operand of one GEMM of one linear layer.
struct OperandPlan {
  bool quantized = false;  // false: BF16 (the operand rounded to BF16)
  OperandQuant quant;      // when quantized
  Tensor tensor = Tensor::x;
  bool column = false;     // the column-wise copy (the transpose) of the tensor
  uint32_t sr_role = 0;    // SrKey::role: 3 x the linear's kind + tensor (the column copy: | 128)
  AmaxSource amax = AmaxSource::none;
  int amax_slot = -1;      // producer: the slot the producer fills (Plan::amax_slots() of them)
  bool operator==(const OperandPlan&) const = default;

  // The quantizer settings of this operand for a tensor (rows, cols) it was made from, keyed
  // for SR by (seed, step, layer). Only for quantized operands.
  QuantizeOptions options(uint64_t seed, uint32_t step, uint32_t layer) const;
};

struct GemmPlan {
  OperandPlan a, b;
  bool operator==(const GemmPlan&) const = default;
};

// A linear layer as the model names it; the model lists its layers in a fixed order.
struct LinearRef {
  int layer = 0;           // block index 0 .. n_layer - 1; n_layer for the LM head
  std::string name;        // within the block, e.g. "self_attn.q_proj"; "lm_head"
  uint32_t kind = 0;       // the SR role base (model::LinearKind)
  int input_group = 0;     // linears of one block reading the same input X share a number (q, k, v)
};

struct LinearPlan {
  int layer = 0;
  std::string name;        // HF's full name: "model.layers.3.self_attn.q_proj", "lm_head"
  std::string label;       // for messages: "layer 3 self_attn.q_proj"
  GemmPlan gemm[3];        // [phase 0]: before the late BF16 switch
  GemmPlan switched[3];    // [phase 1]: from the switch on (the same as gemm without a switch)
  bool quantized() const;  // any operand of phase 0 quantized
};

class Plan {
 public:
  Plan() = default;
  // Resolves and validates r (recipe::validate) for a model of n_layer blocks whose linear
  // layers are `linears`. Throws nvfp4::Error naming the recipe and reason — also when the
  // recipe quantizes some GEMM but none of these layers (every one is a BF16 block or the LM
  // head): training "under nvfp4" that is all BF16 would be silent garbage.
  static Plan resolve(const Recipe& r, int n_layer, std::span<const LinearRef> linears);

  const Recipe& recipe() const { return recipe_; }
  int n_layer() const { return n_layer_; }
  size_t size() const { return linears_.size(); }
  const LinearPlan& linear(size_t i) const { return linears_[i]; }

  // 0 before the late switch to BF16, 1 from it on (progress: fraction of the run's tokens).
  int phase(double progress) const {
    return recipe_.switch_bf16_at >= 0 && progress >= recipe_.switch_bf16_at ? 1 : 0;
  }
  const OperandPlan& operand(size_t linear, int phase, Gemm g, Operand o) const {
    const GemmPlan& gp = (phase ? linears_[linear].switched : linears_[linear].gemm)[static_cast<int>(g)];
    return o == Operand::a ? gp.a : gp.b;
  }
  int amax_slots() const { return amax_slots_; }
  int quantized_linears() const;  // layers with any quantized operand (phase 0)

  // Per layer and GEMM, what each operand is, for printing at the start of a run.
  std::string describe() const;
  // The whole plan as JSON (stored in checkpoints and exported files' metadata).
  std::string to_json() const;

 private:
  Recipe recipe_;
  int n_layer_ = 0;
  std::vector<LinearPlan> linears_;
  int amax_slots_ = 0;
};

}  // namespace nvfp4::recipe

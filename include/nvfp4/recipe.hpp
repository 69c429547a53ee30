// Precision recipes as data (docs/numerics.md §5, architecture.md principle 3): for each GEMM of a
// linear layer — fprop Y = X·Wᵀ, dgrad dX = dY·W, wgrad dW = dYᵀ·X — how each of its two
// operands is quantized; which linear layers stay in BF16; and a late switch to BF16. Model
// code asks the recipe what to do with an operand; kernels only ever see the resulting
// quantizer settings (QuantizeOptions), never a recipe.
//
// Operands, per GEMM, each contiguous along the GEMM's contraction dimension ("TN"):
//   fprop  a = X (N, C) row-wise           b = W (OC, C) row-wise
//   dgrad  a = dY (N, OC) row-wise         b = W's column-wise copy (C, OC)
//   wgrad  a = dY's column-wise copy (OC, N)   b = X's column-wise copy (C, N)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/quantize.hpp"

namespace nvfp4::recipe {

enum class Gemm : uint8_t { fprop, dgrad, wgrad };
enum class Operand : uint8_t { a, b };
const char* gemm_name(Gemm g);        // "fprop", "dgrad", "wgrad"
const char* operand_name(Gemm g, Operand o);  // "X", "W", "dY", "W^T", "dY^T", "X^T"

// How one operand is held for its GEMM. quantized = false: BF16 (the operand rounded to
// BF16, as a BF16 GEMM reads it).
struct OperandQuant {
  bool quantized = false;
  Format format = Format::nvfp4;
  BlockShape block{1, 16};
  Rounding rounding = Rounding::rne;
  bool rht = false;  // the RHT along the contraction dimension (wgrad operands): 16-point for
                     // NVFP4, 32-point for MXFP4
  bool operator==(const OperandQuant&) const = default;
};

struct GemmQuant {
  OperandQuant a, b;
  bool operator==(const GemmQuant&) const = default;
};

struct Recipe {
  std::string name = "bf16";  // the preset it was made from, with the switches applied after it
  GemmQuant fprop, dgrad, wgrad;
  // Linear layers (transformer blocks) kept in BF16: the first N and the last M blocks, plus
  // any listed by name ("model.layers.3.mlp.down_proj"). The LM head is always BF16.
  int bf16_first = 0, bf16_last = 0;
  std::vector<std::string> bf16_layers;
  // From this fraction of the run's training tokens on, compute in BF16 (< 0: never); with
  // switch_forward_only, only fprop switches (the gradients stay quantized).
  double switch_bf16_at = -1.0;
  bool switch_forward_only = false;
  bool operator==(const Recipe&) const = default;

  const GemmQuant& gemm(Gemm g) const;
  GemmQuant& gemm(Gemm g);
  bool quantizes_anything() const;
};

// Presets: "bf16"; "fp8" (E4M3 forward, E5M2 gradients, per-tensor current scaling);
// "fp8-block" (E4M3, 1x128 activations and gradients, 128x128 weights); "nvfp4" (the paper's
// recipe: 16x16 weights, RHT on both wgrad operands, SR on gradients, first and last blocks in
// BF16 scaled to the depth); "mxfp4" (round-up scale rule and a 32-point RHT on both wgrad
// operands: the paper's comparison variant) and "mxfp4-ocp" (the same with OCP's scale rule),
// both with the NVFP4 recipe's SR and BF16 blocks. n_layer sizes the BF16 blocks.
Recipe preset(std::string_view name, int n_layer);
std::string preset_names();  // "bf16, fp8, fp8-block, nvfp4, mxfp4, mxfp4-ocp"

// The paper's BF16 blocks scaled to a model of n_layer blocks: first 1 and last 2 for small
// models (<= 16 blocks), else about 3% first and 13% last (2 and 8 of 62 in the paper).
void default_bf16_blocks(int n_layer, int& first, int& last);

// Ablation switches, applied to a preset in this order; each changes only what it names.
struct Switches {
  bool no_2d = false;   // weights 1x16 instead of 16x16 (NVFP4)
  bool no_rht = false;  // no RHT on any operand
  bool no_sr = false;   // round to nearest even everywhere
  std::optional<std::pair<int, int>> bf16_blocks;  // the first and last blocks kept in BF16
  std::vector<std::string> bf16_layers;            // linear layers kept in BF16, by HF name
  double switch_bf16_at = -1.0;
  bool switch_forward_only = false;
};
// The preset with the switches applied; its name becomes the recipe's spec (see parse).
Recipe apply(Recipe r, const Switches& s);

// The one grammar of a recipe, on the command line (`train --recipe`, `compare --recipes`), in
// run folders and reports: PRESET[:SWITCH]... with the switches
//   no-2d, no-rht, no-sr          as in Switches
//   bf16=F-L                      the first F and last L blocks in BF16 (bf16=0-0: none)
//   bf16-layer=NAME               that linear layer in BF16 (model.layers.3.mlp.down_proj)
//   switch=F, switch-fwd=F        BF16 from fraction F of the tokens on (fprop only)
// e.g. "nvfp4:no-rht:bf16=1-2:switch=0.8". A recipe's name is its spec: parse(r.name) == r.
// Validated for n_layer blocks; nvfp4::Error naming the item and the bad part otherwise.
Recipe parse(std::string_view spec, int n_layer);
// "1-2" -> {1, 2} (the F-L of bf16=F-L and of `train --bf16-layers`); nvfp4::Error otherwise.
std::pair<int, int> parse_bf16_blocks(std::string_view text);

// Checks every setting against the format traits (block shapes, RHT and SR support);
// throws nvfp4::Error naming the GEMM, operand and setting.
void validate(const Recipe& r, int n_layer);

// One line per GEMM and the layer rules, for printing at the start of a run.
std::string describe(const Recipe& r);
std::string to_json(const Recipe& r);             // every field
Recipe from_json(std::string_view json);         // inverse; unknown keys are an error

// The quantizer settings of an operand: its copy of the (rows, cols) tensor it comes from —
// the row-wise copy, or with column = true the column-wise copy (the transpose) — keyed for SR.
QuantizeOptions quantize_options(const OperandQuant& q, bool column, SrKey key);

// What the model does with one operand of one GEMM of the linear layer `layer` (0-based block
// index; n_layer for the LM head) named `linear` (e.g. "self_attn.q_proj"), at token fraction
// `progress` of the run: its quantizer (nullopt: BF16).
std::optional<OperandQuant> operand_quant(const Recipe& r, int n_layer, int layer, std::string_view linear, Gemm g,
                                          Operand o, double progress);

}  // namespace nvfp4::recipe

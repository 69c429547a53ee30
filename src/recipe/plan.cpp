// The quantization plan (see include/nvfp4/plan.hpp): a recipe resolved once against a model's
// linear layers.
#include "nvfp4/plan.hpp"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nvfp4/error.hpp"

namespace nvfp4::recipe {

namespace {

constexpr Gemm kGemms[] = {Gemm::fprop, Gemm::dgrad, Gemm::wgrad};
constexpr Operand kOperands[] = {Operand::a, Operand::b};

AmaxSource amax_source(const OperandQuant& q, Tensor t) {
  // A scale of one per tensor is max |x| of the stored tensor; the kernel that writes an
  // activation or a gradient can fold it (weights are quantized from their FP32 masters, which
  // no kernel of the step writes: their quantizer finds it, in one multi-tensor pass).
  if (q.block.per_tensor()) return t == Tensor::w ? AmaxSource::quantizer : AmaxSource::producer;
  return format_traits(q.format).tensor_scale_from_amax ? AmaxSource::quantizer : AmaxSource::none;
}

std::string operand_text(const OperandPlan& p) {
  if (!p.quantized) return "bf16";
  std::string s = std::string(format_traits(p.quant.format).name) + " " + block_name(p.quant.block);
  if (p.quant.rounding == Rounding::stochastic) s += " SR";
  if (p.quant.rht) s += " RHT";
  if (p.amax == AmaxSource::producer) s += " (amax from its producer)";
  return s;
}

// "1-3, 5" from sorted block numbers.
std::string ranges(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += std::to_string(v[i]) + (j > i ? "-" + std::to_string(v[j]) : "");
    i = j + 1;
  }
  return s;
}

}  // namespace

Tensor operand_tensor(Gemm g, Operand o) {
  switch (g) {
    case Gemm::fprop: return o == Operand::a ? Tensor::x : Tensor::w;
    case Gemm::dgrad: return o == Operand::a ? Tensor::dy : Tensor::w;
    case Gemm::wgrad: return o == Operand::a ? Tensor::dy : Tensor::x;
  }
  return Tensor::x;
}

bool operand_column(Gemm g, Operand o) { return g == Gemm::wgrad || (g == Gemm::dgrad && o == Operand::b); }

const char* amax_source_name(AmaxSource a) {
  static constexpr const char* kNames[] = {"none", "quantizer", "producer"};
  return kNames[static_cast<int>(a)];
}

QuantizeOptions OperandPlan::options(uint64_t seed, uint32_t step, uint32_t layer) const {
  return quantize_options(quant, column, SrKey{seed, step, layer, sr_role});
}

bool LinearPlan::quantized() const {
  for (const GemmPlan& g : gemm)
    if (g.a.quantized || g.b.quantized) return true;
  return false;
}

Plan Plan::resolve(const Recipe& r, int n_layer, std::span<const LinearRef> linears) {
  validate(r, n_layer);
  Plan p;
  p.recipe_ = r;
  p.n_layer_ = n_layer;
  // Producer-amax slots: one per (block, input group) for X, one per layer for dY.
  std::map<std::pair<int, int>, int> x_slot;
  std::map<size_t, int> dy_slot;
  for (size_t i = 0; i < linears.size(); ++i) {
    const LinearRef& ref = linears[i];
    if (ref.layer < 0 || ref.layer > n_layer) {
      throw Error("plan: linear layer " + ref.name + " has block index " + std::to_string(ref.layer) +
                  " outside 0.." + std::to_string(n_layer));
    }
    LinearPlan lp;
    lp.layer = ref.layer;
    lp.name = ref.layer < n_layer ? "model.layers." + std::to_string(ref.layer) + "." + ref.name : ref.name;
    lp.label = ref.layer < n_layer ? "layer " + std::to_string(ref.layer) + " " + ref.name : ref.name;
    for (int phase = 0; phase < 2; ++phase) {
      for (Gemm g : kGemms) {
        for (Operand o : kOperands) {
          OperandPlan op;
          op.tensor = operand_tensor(g, o);
          op.column = operand_column(g, o);
          op.sr_role = 3u * ref.kind + static_cast<uint32_t>(op.tensor);
          // Phase 0 is before the switch (progress -1: never switched), phase 1 at it.
          const double progress = phase == 1 && r.switch_bf16_at >= 0 ? r.switch_bf16_at : -1.0;
          if (const auto q = operand_quant(r, n_layer, ref.layer, ref.name, g, o, progress)) {
            op.quantized = true;
            op.quant = *q;
            op.amax = amax_source(*q, op.tensor);
            if (op.amax == AmaxSource::producer) {
              op.amax_slot = op.tensor == Tensor::x
                                 ? x_slot.try_emplace({ref.layer, ref.input_group}, p.amax_slots_).first->second
                                 : dy_slot.try_emplace(i, p.amax_slots_).first->second;
              if (op.amax_slot == p.amax_slots_) ++p.amax_slots_;
            }
          }
          GemmPlan& gp = (phase ? lp.switched : lp.gemm)[static_cast<int>(g)];
          (o == Operand::a ? gp.a : gp.b) = op;
        }
      }
    }
    p.linears_.push_back(std::move(lp));
  }
  if (r.quantizes_anything() && p.quantized_linears() == 0) {
    throw Error("recipe " + r.name + " quantizes no linear layer of this " + std::to_string(n_layer) +
                "-block model: blocks first " + std::to_string(r.bf16_first) + " and last " +
                std::to_string(r.bf16_last) +
                " stay in BF16 and the LM head always does, which leaves none; train a deeper model (--layers) or "
                "keep fewer blocks in BF16 (e.g. --bf16-layers 0-0)");
  }
  return p;
}

int Plan::quantized_linears() const {
  return static_cast<int>(std::count_if(linears_.begin(), linears_.end(), [](const LinearPlan& l) { return l.quantized(); }));
}

std::string Plan::describe() const {
  // Layers with the same operands are listed together: "self_attn.q_proj in blocks 1-5".
  std::vector<std::string> signatures;
  std::map<std::string, std::map<std::string, std::vector<int>>> groups;  // signature -> name -> blocks
  for (const LinearPlan& l : linears_) {
    std::string sig;
    for (Gemm g : kGemms) {
      sig += std::string("    ") + gemm_name(g) + "  " + operand_name(g, Operand::a) + " " +
             operand_text(l.gemm[int(g)].a) + "; " + operand_name(g, Operand::b) + " " + operand_text(l.gemm[int(g)].b) +
             "\n";
    }
    if (!groups.count(sig)) signatures.push_back(sig);
    const size_t dot = l.name.rfind(".self_attn."), mlp = l.name.rfind(".mlp.");
    const std::string short_name = l.layer < n_layer_ ? l.name.substr(std::min(dot, mlp) + 1) : l.name;
    groups[sig][short_name].push_back(l.layer);
  }
  std::ostringstream s;
  s << "plan: recipe " << recipe_.name << " over " << linears_.size() << " linear layers of " << n_layer_
    << " blocks, " << quantized_linears() << " quantized\n";
  // Per signature: the layers' names by block range ("every linear layer of blocks 1-3").
  const size_t kinds = static_cast<size_t>(
      std::count_if(linears_.begin(), linears_.end(), [](const LinearPlan& l) { return l.layer == 0; }));
  for (const std::string& sig : signatures) {
    std::map<std::string, std::vector<std::string>> by_range;  // "1-3" -> names
    std::vector<std::string> order;
    bool head = false;
    for (const auto& [name, blocks] : groups[sig]) {
      if (name == "lm_head") {
        head = true;
        continue;
      }
      const std::string rg = ranges(blocks);
      if (!by_range.count(rg)) order.push_back(rg);
      by_range[rg].push_back(name);
    }
    std::vector<std::string> parts;
    for (const std::string& rg : order) {
      const auto& names = by_range[rg];
      const bool plural = rg.find_first_of("-,") != std::string::npos;
      std::string who;
      if (names.size() == kinds) {
        who = "every linear layer of block" + std::string(plural ? "s " : " ") + rg;
      } else {
        for (const auto& n : names) who += (who.empty() ? "" : ", ") + n;
        who += " in block" + std::string(plural ? "s " : " ") + rg;
      }
      parts.push_back(who);
    }
    if (head) parts.push_back("the LM head");
    s << " ";
    for (size_t i = 0; i < parts.size(); ++i) s << (i ? "; " : " ") << parts[i];
    s << ":\n" << sig;
  }
  if (recipe_.switch_bf16_at >= 0) {
    s << "  from " << recipe_.switch_bf16_at * 100 << "% of the tokens on: BF16"
      << (recipe_.switch_forward_only ? " in fprop (gradients stay quantized)" : " everywhere") << "\n";
  }
  std::string out = s.str();
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string Plan::to_json() const {
  using nlohmann::ordered_json;
  ordered_json j;
  j["recipe"] = ordered_json::parse(recipe::to_json(recipe_));
  j["n_layer"] = n_layer_;
  j["amax_slots"] = amax_slots_;
  ordered_json layers = ordered_json::array();
  auto operand_json = [](const OperandPlan& p) {
    ordered_json o;
    if (!p.quantized) return ordered_json("bf16");
    o["format"] = std::string(format_traits(p.quant.format).name);
    o["block"] = block_name(p.quant.block);
    o["rounding"] = p.quant.rounding == Rounding::stochastic ? "sr" : "rne";
    o["rht"] = p.quant.rht;
    o["copy"] = p.column ? "column" : "row";
    o["sr_role"] = p.sr_role;
    o["amax"] = amax_source_name(p.amax);
    if (p.amax_slot >= 0) o["amax_slot"] = p.amax_slot;
    return o;
  };
  for (const LinearPlan& l : linears_) {
    ordered_json lj;
    lj["name"] = l.name;
    for (int phase = 0; phase < (recipe_.switch_bf16_at >= 0 ? 2 : 1); ++phase) {
      ordered_json gj;
      for (Gemm g : kGemms) {
        const GemmPlan& gp = (phase ? l.switched : l.gemm)[int(g)];
        gj[gemm_name(g)] = {{"a", operand_json(gp.a)}, {"b", operand_json(gp.b)}};
      }
      lj[phase ? "after_switch" : "gemms"] = gj;
    }
    layers.push_back(lj);
  }
  j["layers"] = layers;
  return j.dump();
}

}  // namespace nvfp4::recipe

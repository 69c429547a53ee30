// Precision recipes (see include/nvfp4/recipe.hpp): presets, switches, validation, text and
// JSON forms, and the per-operand decision the model asks for.
#include "nvfp4/recipe.hpp"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nvfp4/error.hpp"

namespace nvfp4::recipe {

namespace {

using nlohmann::ordered_json;

OperandQuant q(Format f, BlockShape b, Rounding r = Rounding::rne, bool rht = false) {
  return OperandQuant{true, f, b, r, rht};
}

constexpr Gemm kGemms[] = {Gemm::fprop, Gemm::dgrad, Gemm::wgrad};

std::string operand_text(const OperandQuant& o) {
  if (!o.quantized) return "bf16";
  std::string s = std::string(format_traits(o.format).name) + " " + block_name(o.block);
  if (o.rounding == Rounding::stochastic) s += " SR";
  if (o.rht) s += " RHT";
  return s;
}

ordered_json operand_json(const OperandQuant& o) {
  ordered_json j;
  j["quantized"] = o.quantized;
  j["format"] = std::string(format_traits(o.format).name);
  j["block"] = block_name(o.block);
  j["rounding"] = o.rounding == Rounding::stochastic ? "sr" : "rne";
  j["rht"] = o.rht;
  return j;
}

OperandQuant operand_from_json(const nlohmann::json& j, const std::string& where) {
  auto need = [&](const char* key) -> const nlohmann::json& {
    if (!j.contains(key)) throw Error("recipe JSON: " + where + " has no \"" + key + "\"");
    return j.at(key);
  };
  OperandQuant o;
  o.quantized = need("quantized").get<bool>();
  const auto f = parse_format(need("format").get<std::string>());
  if (!f) throw Error("recipe JSON: " + where + ": unknown format " + need("format").dump());
  o.format = *f;
  const auto b = parse_block(need("block").get<std::string>());
  if (!b) throw Error("recipe JSON: " + where + ": unknown block " + need("block").dump());
  o.block = *b;
  const std::string r = need("rounding").get<std::string>();
  if (r != "rne" && r != "sr") throw Error("recipe JSON: " + where + ": rounding must be \"rne\" or \"sr\"");
  o.rounding = r == "sr" ? Rounding::stochastic : Rounding::rne;
  o.rht = need("rht").get<bool>();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k != "quantized" && k != "format" && k != "block" && k != "rounding" && k != "rht") {
      throw Error("recipe JSON: " + where + ": unknown key \"" + k + "\"");
    }
  }
  return o;
}

}  // namespace

const char* gemm_name(Gemm g) {
  static constexpr const char* kNames[] = {"fprop", "dgrad", "wgrad"};
  return kNames[static_cast<int>(g)];
}

const char* operand_name(Gemm g, Operand o) {
  static const char* names[3][2] = {{"X", "W"}, {"dY", "W^T"}, {"dY^T", "X^T"}};
  return names[static_cast<int>(g)][static_cast<int>(o)];
}

const GemmQuant& Recipe::gemm(Gemm g) const { return g == Gemm::fprop ? fprop : (g == Gemm::dgrad ? dgrad : wgrad); }
GemmQuant& Recipe::gemm(Gemm g) { return g == Gemm::fprop ? fprop : (g == Gemm::dgrad ? dgrad : wgrad); }

bool Recipe::quantizes_anything() const {
  for (Gemm g : kGemms)
    if (gemm(g).a.quantized || gemm(g).b.quantized) return true;
  return false;
}

void default_bf16_blocks(int n_layer, int& first, int& last) {
  if (n_layer <= 16) {
    first = std::min(1, n_layer);
    last = std::min(2, n_layer - first);
    return;
  }
  // The paper: first 2 and last 8 of 62 blocks.
  first = std::max(1, static_cast<int>(std::lround(n_layer * 2.0 / 62.0)));
  last = std::max(2, static_cast<int>(std::lround(n_layer * 8.0 / 62.0)));
}

Recipe preset(std::string_view name, int n_layer) {
  Recipe r;
  r.name = std::string(name);
  if (name == "bf16") return r;
  if (name == "fp8") {
    const OperandQuant e4 = q(Format::fp8_e4m3, {0, 0}), e5 = q(Format::fp8_e5m2, {0, 0});
    r.fprop = {e4, e4};
    r.dgrad = {e5, e4};
    r.wgrad = {e5, e4};
    return r;
  }
  if (name == "fp8-block") {
    const OperandQuant act = q(Format::fp8_e4m3, {1, 128}), w = q(Format::fp8_e4m3, {128, 128});
    r.fprop = {act, w};
    r.dgrad = {act, w};
    r.wgrad = {act, act};
    return r;
  }
  if (name == "nvfp4") {
    r.fprop = {q(Format::nvfp4, {1, 16}), q(Format::nvfp4, {16, 16})};
    r.dgrad = {q(Format::nvfp4, {1, 16}, Rounding::stochastic), q(Format::nvfp4, {16, 16})};
    r.wgrad = {q(Format::nvfp4, {1, 16}, Rounding::stochastic, true), q(Format::nvfp4, {1, 16}, Rounding::rne, true)};
    default_bf16_blocks(n_layer, r.bf16_first, r.bf16_last);
    return r;
  }
  if (name == "mxfp4" || name == "mxfp4-ocp") {
    const Format f = name == "mxfp4" ? Format::mxfp4 : Format::mxfp4_ocp;
    r.fprop = {q(f, {1, 32}), q(f, {1, 32})};
    r.dgrad = {q(f, {1, 32}, Rounding::stochastic), q(f, {1, 32})};
    // The paper's MXFP4 comparison: a 32-point RHT on both wgrad operands.
    r.wgrad = {q(f, {1, 32}, Rounding::stochastic, true), q(f, {1, 32}, Rounding::rne, true)};
    default_bf16_blocks(n_layer, r.bf16_first, r.bf16_last);
    return r;
  }
  throw Error("--recipe " + std::string(name) + " is not known; use one of: " + preset_names());
}

std::string preset_names() { return "bf16, fp8, fp8-block, nvfp4, mxfp4, mxfp4-ocp"; }

namespace {

// A non-negative decimal integer that fits an int (no sign, no spaces); nullopt otherwise.
std::optional<int> parse_count(std::string_view t) {
  if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  return std::stoi(std::string(t));
}

// "0.8" -> 0.8: a finite decimal fraction in [0, 1); nullopt otherwise.
std::optional<double> parse_fraction(std::string_view t) {
  const std::string v(t);
  char* end = nullptr;
  const double f = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(f) || f < 0 || f >= 1) return std::nullopt;
  return f;
}

std::string fraction_text(double f) {
  std::ostringstream s;
  s << f;
  return s.str();
}

}  // namespace

std::pair<int, int> parse_bf16_blocks(std::string_view text) {
  // "F-L": the first F and the last L blocks.
  const size_t dash = text.find('-');
  const auto first = dash == std::string_view::npos ? std::nullopt : parse_count(text.substr(0, dash));
  const auto last = dash == std::string_view::npos ? std::nullopt : parse_count(text.substr(dash + 1));
  if (!first || !last) {
    throw Error("BF16 blocks \"" + std::string(text) +
                "\": expected FIRST-LAST, two block counts (e.g. 1-2: the first block and the last two; 0-0: none)");
  }
  return {*first, *last};
}

Recipe parse(std::string_view spec, int n_layer) {
  std::vector<std::string> parts;
  {
    std::stringstream ss{std::string(spec)};
    for (std::string p; std::getline(ss, p, ':');) parts.push_back(p);
  }
  const std::string item(spec);
  if (parts.empty() || parts[0].empty()) throw Error("recipe \"" + item + "\": empty; use one of: " + preset_names());
  Switches s;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    const size_t eq = p.find('=');
    const std::string key = p.substr(0, eq), value = eq == std::string::npos ? "" : p.substr(eq + 1);
    if (p == "no-2d") s.no_2d = true;
    else if (p == "no-rht") s.no_rht = true;
    else if (p == "no-sr") s.no_sr = true;
    else if (key == "bf16" && eq != std::string::npos) {
      try {
        s.bf16_blocks = parse_bf16_blocks(value);
      } catch (const Error& e) {
        throw Error("recipe \"" + item + "\": " + e.what());
      }
    } else if (key == "bf16-layer" && !value.empty()) {
      s.bf16_layers.push_back(value);
    } else if ((key == "switch" || key == "switch-fwd") && eq != std::string::npos) {
      const auto f = parse_fraction(value);
      if (!f) throw Error("recipe \"" + item + "\": \"" + value + "\" is not a fraction in [0, 1)");
      s.switch_bf16_at = *f;
      s.switch_forward_only = key == "switch-fwd";
    } else {
      throw Error("recipe \"" + item + "\": unknown switch \"" + p +
                  "\" (use no-2d, no-rht, no-sr, bf16=FIRST-LAST, bf16-layer=NAME, switch=F, switch-fwd=F)");
    }
  }
  Recipe r = apply(preset(parts[0], n_layer), s);
  validate(r, n_layer);
  return r;
}

Recipe apply(Recipe r, const Switches& s) {
  // The name is the recipe's spec (parse() reads it back): preset, then the switches in order.
  for (Gemm g : kGemms) {
    for (OperandQuant* o : {&r.gemm(g).a, &r.gemm(g).b}) {
      if (s.no_2d && o->quantized && o->block == BlockShape{16, 16}) o->block = BlockShape{1, 16};
      if (s.no_rht) o->rht = false;
      if (s.no_sr) o->rounding = Rounding::rne;
    }
  }
  if (s.no_2d) r.name += ":no-2d";
  if (s.no_rht) r.name += ":no-rht";
  if (s.no_sr) r.name += ":no-sr";
  if (s.bf16_blocks) {
    r.bf16_first = s.bf16_blocks->first;
    r.bf16_last = s.bf16_blocks->second;
    r.name += ":bf16=" + std::to_string(r.bf16_first) + "-" + std::to_string(r.bf16_last);
  }
  for (const auto& l : s.bf16_layers) {
    r.bf16_layers.push_back(l);
    r.name += ":bf16-layer=" + l;
  }
  if (s.switch_bf16_at >= 0) {
    r.switch_bf16_at = s.switch_bf16_at;
    r.switch_forward_only = s.switch_forward_only;
    r.name += (s.switch_forward_only ? ":switch-fwd=" : ":switch=") + fraction_text(s.switch_bf16_at);
  } else if (s.switch_forward_only) {
    throw Error("--switch-forward-only needs --switch-bf16-at FRACTION");
  }
  return r;
}

void validate(const Recipe& r, int n_layer) {
  for (Gemm g : kGemms) {
    for (Operand op : {Operand::a, Operand::b}) {
      const OperandQuant& o = op == Operand::a ? r.gemm(g).a : r.gemm(g).b;
      if (!o.quantized) continue;
      const std::string where = std::string("recipe ") + r.name + ": " + gemm_name(g) + " operand " + operand_name(g, op);
      const FormatTraits& t = format_traits(o.format);
      if (std::find(t.blocks.begin(), t.blocks.end(), o.block) == t.blocks.end()) {
        throw Error(where + ": block " + block_name(o.block) + " is not available for " + std::string(t.name));
      }
      if (o.rht && (!t.supports_rht || o.block.rows != 1)) {
        throw Error(where + ": the RHT applies to nvfp4 1x16 (16-point) and mxfp4 1x32 (32-point) operands only");
      }
      if (o.rounding == Rounding::stochastic && !t.supports_sr) {
        throw Error(where + ": stochastic rounding is defined for the FP4 formats only");
      }
    }
  }
  if (r.bf16_first < 0 || r.bf16_last < 0 || r.bf16_first + r.bf16_last > n_layer) {
    throw Error("recipe " + r.name + ": BF16 blocks first " + std::to_string(r.bf16_first) + " + last " +
                std::to_string(r.bf16_last) + " exceed the model's " + std::to_string(n_layer) + " blocks");
  }
  if (r.switch_bf16_at >= 1.0 || (r.switch_bf16_at < 0 && r.switch_bf16_at != -1.0)) {
    throw Error("recipe " + r.name + ": --switch-bf16-at must be a fraction in [0, 1)");
  }
}

std::string describe(const Recipe& r) {
  std::string s = "recipe " + r.name + ":\n";
  for (Gemm g : kGemms) {
    s += std::string("  ") + gemm_name(g) + "  " + operand_name(g, Operand::a) + " " + operand_text(r.gemm(g).a) +
         "; " + operand_name(g, Operand::b) + " " + operand_text(r.gemm(g).b) + "\n";
  }
  s += "  BF16 blocks: first " + std::to_string(r.bf16_first) + ", last " + std::to_string(r.bf16_last) +
       "; the LM head always";
  for (const auto& l : r.bf16_layers) s += "; " + l;
  if (r.switch_bf16_at >= 0) {
    std::ostringstream f;
    f << r.switch_bf16_at * 100;
    s += "\n  switch to BF16 at " + f.str() + "% of the tokens" + (r.switch_forward_only ? " (forward only)" : "");
  }
  return s;
}

std::string to_json(const Recipe& r) {
  ordered_json j;
  j["name"] = r.name;
  for (Gemm g : kGemms) j[gemm_name(g)] = {{"a", operand_json(r.gemm(g).a)}, {"b", operand_json(r.gemm(g).b)}};
  j["bf16_first"] = r.bf16_first;
  j["bf16_last"] = r.bf16_last;
  j["bf16_layers"] = r.bf16_layers;
  j["switch_bf16_at"] = r.switch_bf16_at;
  j["switch_forward_only"] = r.switch_forward_only;
  return j.dump();
}

Recipe from_json(std::string_view text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("recipe JSON: not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw Error("recipe JSON: expected an object");
  Recipe r;
  const char* keys[] = {"name", "fprop", "dgrad", "wgrad", "bf16_first", "bf16_last", "bf16_layers", "switch_bf16_at",
                        "switch_forward_only"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find_if(std::begin(keys), std::end(keys), [&](const char* k) { return it.key() == k; }) == std::end(keys)) {
      throw Error("recipe JSON: unknown key \"" + it.key() + "\"");
    }
  }
  for (const char* k : keys) {
    if (!j.contains(k)) throw Error(std::string("recipe JSON: missing \"") + k + "\"");
  }
  try {
    r.name = j.at("name").get<std::string>();
    for (Gemm g : kGemms) {
      const auto& gj = j.at(gemm_name(g));
      r.gemm(g).a = operand_from_json(gj.at("a"), std::string(gemm_name(g)) + ".a");
      r.gemm(g).b = operand_from_json(gj.at("b"), std::string(gemm_name(g)) + ".b");
    }
    r.bf16_first = j.at("bf16_first").get<int>();
    r.bf16_last = j.at("bf16_last").get<int>();
    r.bf16_layers = j.at("bf16_layers").get<std::vector<std::string>>();
    r.switch_bf16_at = j.at("switch_bf16_at").get<double>();
    r.switch_forward_only = j.at("switch_forward_only").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("recipe JSON: ") + e.what());
  }
  return r;
}

QuantizeOptions quantize_options(const OperandQuant& q, bool column, SrKey key) {
  QuantizeOptions o;
  o.format = q.format;
  o.block = q.block;
  o.rowwise = !column;
  o.columnwise = column;
  o.rht = q.rht;
  o.rounding = q.rounding;
  o.sr_key = key;
  return o;
}

std::optional<OperandQuant> operand_quant(const Recipe& r, int n_layer, int layer, std::string_view linear, Gemm g,
                                          Operand o, double progress) {
  if (layer >= n_layer || linear == "lm_head") return std::nullopt;  // the LM head stays BF16
  if (layer < r.bf16_first || layer >= n_layer - r.bf16_last) return std::nullopt;
  const std::string full = "model.layers." + std::to_string(layer) + "." + std::string(linear);
  if (std::find(r.bf16_layers.begin(), r.bf16_layers.end(), full) != r.bf16_layers.end()) return std::nullopt;
  if (r.switch_bf16_at >= 0 && progress >= r.switch_bf16_at && (!r.switch_forward_only || g == Gemm::fprop)) {
    return std::nullopt;
  }
  const OperandQuant& q = o == Operand::a ? r.gemm(g).a : r.gemm(g).b;
  if (!q.quantized) return std::nullopt;
  return q;
}

}  // namespace nvfp4::recipe

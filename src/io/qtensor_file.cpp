#include "nvfp4/qtensor_file.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "format/scalar.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::io {

namespace {

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

void add_copy(std::vector<std::pair<std::string, Tensor>>& out, const std::string& prefix, const QuantizedCopy& c,
              const FormatTraits& t) {
  if (t.packed_fp4) {
    out.emplace_back(prefix + ".q", Tensor::from_bytes(DType::U8, {c.rows, c.cols / 2}, c.codes));
    out.emplace_back(prefix + "." + std::string(t.scale_tensor),
                     Tensor::from_bytes(*t.scale_dtype, {c.scale_rows, c.scale_cols}, c.scales));
    if (t.per_copy_f32 > 0) out.emplace_back(prefix + ".amax", Tensor::from_f32({c.amax}, {1}));
    return;
  }
  out.emplace_back(prefix + ".q", Tensor::from_bytes(t.code_dtype, {c.rows, c.cols}, c.codes));
  const bool per_tensor = c.scale_inv.size() == 1 && c.scale_rows == 1 && c.scale_cols == 1;
  out.emplace_back(prefix + "." + std::string(t.scale_tensor), Tensor::from_f32(c.scale_inv, per_tensor ? std::vector<int64_t>{1}
                                                                                    : std::vector<int64_t>{c.scale_rows, c.scale_cols}));
  out.emplace_back(prefix + ".amax", Tensor::from_f32({c.amax}, {1}));
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr const char* kNotFromAQuantizer = " (the file is damaged or was not written by a quantizer)";

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

class GroupReader {
 public:
  GroupReader(const Checkpoint& ckpt, const std::string& file, const std::string& base)
      : ckpt_(ckpt), file_(file), base_(base) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(file_ + ": quantized tensor '" + base_ + "': " + what);
  }

  bool has(const std::string& suffix) const {
    const auto names = ckpt_.names();
    return std::binary_search(names.begin(), names.end(), base_ + suffix);
  }

  const TensorInfo& need(const std::string& suffix, DType dtype) const {
    if (!has(suffix)) fail("'" + base_ + suffix + "' is missing; the group is incomplete");
    const TensorInfo& t = ckpt_.info(base_ + suffix);
    if (t.dtype != dtype) {
      fail("'" + base_ + suffix + "' has dtype " + std::string(dtype_name(t.dtype)) + ", expected " +
           std::string(dtype_name(dtype)));
    }
    return t;
  }

  std::vector<uint8_t> bytes(const std::string& suffix) const {
    const auto b = ckpt_.bytes(base_ + suffix);
    return {b.begin(), b.end()};
  }

  float scalar(const std::string& suffix) const {
    const TensorInfo& t = need(suffix, DType::F32);
    if (t.numel() != 1) fail("'" + base_ + suffix + "' should hold one FP32 value, has shape " + shape_to_string(t.shape));
    float f;
    std::memcpy(&f, ckpt_.bytes(base_ + suffix).data(), 4);
    return f;
  }

  // The per-tensor amax of a copy: a finite number >= 0 (NaN, Inf or a negative amax would
  // decode to NaN, Inf or sign-flipped values).
  float amax(const std::string& suffix) const {
    const float a = scalar(suffix);
    if (!(a >= 0) || !std::isfinite(a)) {
      fail("'" + base_ + suffix + "' is " + number(a) + "; an amax must be finite and >= 0" + kNotFromAQuantizer);
    }
    return a;
  }

  // Block scales a quantizer never writes: the E4M3 NaN (0x7F, 0xFF) and negative E4M3 values
  // (they would flip the sign of the block), the E8M0 NaN (0xFF). `dtype` is the stored scale
  // dtype: F8_E4M3, or U8 / F8_E8M0 for E8M0 exponents (the golden file stores them as U8).
  void check_scale_bytes(const std::string& suffix, const std::vector<uint8_t>& scales, DType dtype) const {
    const bool e4m3 = dtype == DType::F8_E4M3;
    for (size_t i = 0; i < scales.size(); ++i) {
      const uint8_t b = scales[i];
      std::string bad;
      if (e4m3 && (b & 0x7F) == 0x7F) bad = "the E4M3 NaN";
      else if (e4m3 && b > 0x80) bad = "the negative E4M3 scale " + number(fmt::e4m3_decode(b));
      else if (!e4m3 && b == 0xFF) bad = "the E8M0 NaN";
      if (bad.empty()) continue;
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", b);
      fail("'" + base_ + suffix + "' holds " + bad + " (" + hex + ") at index " + std::to_string(i) +
           "; block scales are finite and >= 0" + kNotFromAQuantizer);
    }
  }

  // One copy ("row" or "col"); fills rows/cols/codes/scales/amax, checking shapes and values.
  QuantizedCopy copy(const std::string& which, QuantizeOptions& o, bool recorded) const {
    const std::string p = "." + which;
    QuantizedCopy c;
    const TensorInfo& q = ckpt_.info(base_ + p + ".q");
    if (q.shape.size() != 2) fail("'" + base_ + p + ".q' is not 2-D: " + shape_to_string(q.shape));
    const FormatTraits& t = format_traits(o.format);
    if (t.packed_fp4) {
      need(p + ".q", DType::U8);
      c.rows = q.shape[0];
      c.cols = 2 * q.shape[1];
      const int64_t bc = t.default_block.cols;  // a scale per bc values of a row (16x16 tiles: per row too)
      const std::string s_name = p + "." + std::string(t.scale_tensor);
      const TensorInfo& s = need(s_name, *t.scale_dtype);
      if (s.shape != std::vector<int64_t>{c.rows, c.cols / bc}) {
        fail("'" + base_ + s_name + "' has shape " + shape_to_string(s.shape) + ", expected " +
             shape_to_string({c.rows, c.cols / bc}) + " for codes of shape " + shape_to_string(q.shape));
      }
      c.scale_rows = s.shape[0];
      c.scale_cols = s.shape[1];
      c.scales = bytes(s_name);
      check_scale_bytes(s_name, c.scales, *t.scale_dtype);
      if (t.per_copy_f32 > 0) c.amax = amax(p + ".amax");
    } else {
      need(p + ".q", t.code_dtype);
      c.rows = q.shape[0];
      c.cols = q.shape[1];
      const TensorInfo& s = need(p + ".scale_inv", DType::F32);
      if (!recorded) {
        if (s.numel() == 1 && s.shape.size() == 1) o.block = BlockShape{0, 0};
        else if (s.shape.size() == 2 && s.shape[0] == c.rows && c.rows != ceil_div(c.rows, 128)) o.block = BlockShape{1, 128};
        else o.block = BlockShape{128, 128};
      }
      const BlockShape b = o.block.value_or(BlockShape{0, 0});
      const std::vector<int64_t> want =
          b.per_tensor() ? std::vector<int64_t>{1} : std::vector<int64_t>{ceil_div(c.rows, b.rows), ceil_div(c.cols, b.cols)};
      if (s.shape != want) {
        fail("'" + base_ + p + ".scale_inv' has shape " + shape_to_string(s.shape) + ", expected " + shape_to_string(want) +
             " for " + block_name(b) + " blocks");
      }
      c.scale_rows = b.per_tensor() ? 1 : want[0];
      c.scale_cols = b.per_tensor() ? 1 : want[1];
      c.scale_inv = ckpt_.load(base_ + p + ".scale_inv").to_f32();
      for (size_t i = 0; i < c.scale_inv.size(); ++i) {
        if (!(c.scale_inv[i] >= 0) || !std::isfinite(c.scale_inv[i])) {
          fail("'" + base_ + p + ".scale_inv' holds " + number(c.scale_inv[i]) + " at index " + std::to_string(i) +
               "; scale_inv must be finite and >= 0" + kNotFromAQuantizer);
        }
      }
      c.amax = amax(p + ".amax");
    }
    c.codes = bytes(p + ".q");
    return c;
  }

 private:
  const Checkpoint& ckpt_;
  std::string file_;
  std::string base_;
};

nlohmann::json record_json(const QuantizedTensor& q) {
  const QuantizeOptions& o = q.options;
  nlohmann::json j;
  j["format"] = format_traits(o.format).name;
  j["block"] = block_name(o.block.value_or(format_traits(o.format).default_block));
  j["rowwise"] = o.rowwise;
  j["columnwise"] = o.columnwise;
  j["rht"] = o.rht;
  if (o.rht) j["rht_sign_mask"] = o.rht_sign_mask;
  j["rounding"] = o.rounding == Rounding::stochastic ? "stochastic" : "rne";
  if (o.rounding == Rounding::stochastic) {
    j["sr_seed"] = o.sr_key.seed;
    j["sr_step"] = o.sr_key.step;
    j["sr_layer"] = o.sr_key.layer;
    j["sr_role"] = o.sr_key.role;
  }
  j["shape"] = {q.M, q.K};
  j["input_dtype"] = dtype_name(q.input_dtype);
  return j;
}

QuantizeOptions options_from_record(const nlohmann::json& j) {
  QuantizeOptions o;
  const std::string f = j.at("format").get<std::string>();
  const auto format = parse_format(f);
  if (!format) throw Error("unknown format '" + f + "'");
  o.format = *format;
  const std::string b = j.at("block").get<std::string>();
  o.block = parse_block(b);
  if (!o.block) throw Error("unknown block '" + b + "'");
  o.rowwise = j.value("rowwise", true);
  o.columnwise = j.value("columnwise", false);
  o.rht = j.value("rht", false);
  o.rht_sign_mask = j.value("rht_sign_mask", kTeRhtSignMask);
  o.rounding = j.value("rounding", "rne") == "stochastic" ? Rounding::stochastic : Rounding::rne;
  o.sr_key.seed = j.value("sr_seed", uint64_t{0});
  o.sr_key.step = j.value("sr_step", 0u);
  o.sr_key.layer = j.value("sr_layer", 0u);
  o.sr_key.role = j.value("sr_role", 0u);
  return o;
}

}  // namespace

std::string quantization_record(const QuantizedTensor& q) { return record_json(q).dump(); }

std::map<std::string, std::string> quantized_file_metadata(
    const std::vector<std::pair<std::string, std::string>>& records, const std::string& producer) {
  nlohmann::json rec = nlohmann::json::object();
  for (const auto& [name, r] : records) rec[name] = nlohmann::json::parse(r);
  return {{kFormatVersionKey, "1"}, {"nvfp4.producer", producer}, {kQuantMetadataKey, rec.dump()}};
}

std::vector<std::pair<std::string, Tensor>> quantized_tensors(const std::string& name, const QuantizedTensor& q) {
  std::vector<std::pair<std::string, Tensor>> out;
  const FormatTraits& t = format_traits(q.options.format);
  if (q.row) add_copy(out, name + ".row", *q.row, t);
  if (q.col) add_copy(out, name + ".col", *q.col, t);
  if (q.options.rht && !q.col_rht_input.empty()) {
    const auto& v = q.col_rht_input;
    if (q.input_dtype == DType::BF16 || q.input_dtype == DType::F16) {
      std::vector<uint8_t> b(v.size() * 2);
      for (size_t i = 0; i < v.size(); ++i) {
        const uint16_t h = q.input_dtype == DType::BF16 ? fmt::bf16_encode(v[i]) : fmt::fp16_encode(v[i]);
        std::memcpy(b.data() + 2 * i, &h, 2);
      }
      out.emplace_back(name + ".col.x", Tensor::from_bytes(q.input_dtype, {q.K, q.M}, std::move(b)));
    } else {
      out.emplace_back(name + ".col.x", Tensor::from_bytes(DType::F32, {q.K, q.M}, f32_bytes(v)));
    }
  }
  return out;
}

std::vector<QuantizedEntry> read_quantized(const Checkpoint& ckpt, const std::string& file) {
  nlohmann::json recorded = nlohmann::json::object();
  const auto& md = ckpt.metadata();
  if (const auto it = md.find(kQuantMetadataKey); it != md.end()) {
    try {
      recorded = nlohmann::json::parse(it->second);
    } catch (const std::exception& e) {
      throw Error(file + ": metadata '" + kQuantMetadataKey + "' is not valid JSON: " + e.what());
    }
  }
  std::set<std::string> bases;
  for (const auto& n : ckpt.names()) {
    if (ends_with(n, ".row.q") || ends_with(n, ".col.q")) bases.insert(n.substr(0, n.size() - 6));
  }
  std::vector<QuantizedEntry> out;
  for (const auto& base : bases) {
    GroupReader g(ckpt, file, base);
    QuantizedEntry e;
    e.name = base;
    QuantizeOptions o;
    e.options_recorded = recorded.contains(base);
    const bool has_row = g.has(".row.q"), has_col = g.has(".col.q");
    if (e.options_recorded) {
      try {
        o = options_from_record(recorded.at(base));
      } catch (const std::exception& ex) {
        g.fail(std::string("its '") + kQuantMetadataKey + "' record is malformed: " + ex.what());
      }
      if (const auto d = recorded.at(base).find("input_dtype"); d != recorded.at(base).end() && d->is_string()) {
        if (const auto dt = parse_dtype(d->get<std::string>())) e.tensor.input_dtype = *dt;
      }
    } else {
      const std::string which = has_row ? ".row" : ".col";
      const DType qd = ckpt.info(base + which + ".q").dtype;
      // The first format of the table whose code dtype (FP8) or scale tensor (FP4) is there:
      // U8 codes with ".s" are NVFP4, with ".e8m0" MXFP4 (the round-up rule: NVIDIA's files).
      const FormatTraits* found = nullptr;
      for (const FormatTraits& t : format_table()) {
        if (t.packed_fp4 ? qd == DType::U8 && g.has(which + "." + std::string(t.scale_tensor)) : qd == t.code_dtype) {
          found = &t;
          break;
        }
      }
      if (!found) g.fail("cannot tell its format: no '" + which + ".s' (NVFP4) or '" + which + ".e8m0' (MXFP4) next to U8 codes");
      o.format = found->format;
      o.block = std::nullopt;
      o.rht = g.has(".col.x");
      const FormatTraits& ft = format_traits(o.format);
      if (has_row && std::find(ft.blocks.begin(), ft.blocks.end(), BlockShape{16, 16}) != ft.blocks.end()) {
        // A 16x16 tile scale is replicated over 16 rows: detect it (only exact replication counts).
        const std::string s_name = base + ".row." + std::string(ft.scale_tensor);
        const TensorInfo& s = ckpt.info(s_name);
        const auto sb = ckpt.bytes(s_name);
        // A scale matrix whose rows are all equal (all-zero tensors, say) tells nothing: 1x16.
        bool tiled = s.shape.size() == 2 && s.shape[0] % 16 == 0 && s.shape[0] >= 16;
        bool all_rows_equal = true;
        for (int64_t r = 0; tiled && r < s.shape[0]; ++r) {
          tiled = std::memcmp(sb.data() + r * s.shape[1], sb.data() + (r / 16 * 16) * s.shape[1], s.shape[1]) == 0;
          all_rows_equal = all_rows_equal && std::memcmp(sb.data() + r * s.shape[1], sb.data(), s.shape[1]) == 0;
        }
        tiled = tiled && !all_rows_equal;
        o.block = tiled && !o.rht ? BlockShape{16, 16} : BlockShape{1, 16};
      }
    }
    o.rowwise = has_row;
    o.columnwise = has_col;
    if (has_row) e.tensor.row = g.copy("row", o, e.options_recorded);
    if (has_col) e.tensor.col = g.copy("col", o, e.options_recorded);
    if (!o.block) o.block = format_traits(o.format).default_block;
    e.tensor.M = has_row ? e.tensor.row->rows : e.tensor.col->cols;
    e.tensor.K = has_row ? e.tensor.row->cols : e.tensor.col->rows;
    if (has_row && has_col && (e.tensor.col->rows != e.tensor.K || e.tensor.col->cols != e.tensor.M)) {
      g.fail("the column-wise copy [" + std::to_string(e.tensor.col->rows) + ", " + std::to_string(e.tensor.col->cols) +
             "] is not the transpose of the row-wise copy [" + std::to_string(e.tensor.M) + ", " + std::to_string(e.tensor.K) + "]");
    }
    if (g.has(".col.x")) {
      const Tensor x = ckpt.load(base + ".col.x");
      if (x.shape != std::vector<int64_t>{e.tensor.K, e.tensor.M}) {
        g.fail("'" + base + ".col.x' has shape " + x.shape_string() + ", expected " + shape_to_string({e.tensor.K, e.tensor.M}));
      }
      e.tensor.col_rht_input = x.to_f32();
      if (!e.options_recorded) e.tensor.input_dtype = x.dtype;
    }
    e.tensor.options = o;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace nvfp4::io

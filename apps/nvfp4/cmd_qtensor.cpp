// nvfp4 qtensor IN.safetensors OUT.safetensors: quantize every 2-D floating-point tensor.
//
// Output names, dtypes, shapes and layouts are those of NVIDIA's golden file
// (../shared/golden/README.md), so the output of this command on the golden inputs can be
// compared with it byte for byte:
//   NVFP4:  T.row.q U8 [M, K/2], T.row.s F8_E4M3 [M, K/16], T.row.amax F32 [1]
//           T.col.q U8 [K, M/2], T.col.s F8_E4M3 [K, M/16], T.col.amax F32 [1]
//           T.col.x [K, M] (the post-RHT column-wise input, input dtype) with --rht
//   MXFP4:  T.row.q U8 [M, K/2], T.row.e8m0 U8 [M, K/32]  (T.col.* likewise)
//   FP8:    T.row.q F8_* [M, K], T.row.scale_inv F32 [1] or [blocks], T.row.amax F32 [1]
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/qtensor_file.hpp"

namespace nvfp4::cli {

namespace {

struct QtensorArgs {
  std::string input, output;
  std::string format = "nvfp4";
  std::string block;
  std::string rht_signs = "te";
  bool columnwise = false, no_rowwise = false, rht = false, sr = false, skip_incompatible = false, json = false;
  uint64_t seed = 0;
  std::vector<std::string> only;
};

// "te" (TE's vector), "none" (all +), or 16 characters of '+' / '-' (element 0 first).
uint16_t parse_rht_signs(const std::string& s) {
  if (s == "te") return kTeRhtSignMask;
  if (s == "none") return 0;
  if (s.size() != 16 || s.find_first_not_of("+-") != std::string::npos) {
    throw Error("--rht-signs " + s + " is not 'te', 'none' or 16 characters of '+' and '-' (element 0 first)");
  }
  uint16_t m = 0;
  for (int i = 0; i < 16; ++i) m |= static_cast<uint16_t>(s[i] == '-') << i;
  return m;
}

void run_qtensor(const QtensorArgs& a) {
  QuantizeOptions o;
  const auto format = parse_format(a.format);
  if (!format) throw Error("--format " + a.format + " is not a known format; use one of " + format_names(", "));
  o.format = *format;
  if (!a.block.empty()) {
    o.block = parse_block(a.block);
    if (!o.block) throw Error("--block " + a.block + " is not a block shape; write ROWSxCOLS (e.g. 1x16, 16x16) or 'tensor'");
  }
  o.rowwise = !a.no_rowwise;
  o.columnwise = a.columnwise;
  o.rht = a.rht;
  o.rht_sign_mask = parse_rht_signs(a.rht_signs);
  if (a.sr) {
    o.rounding = Rounding::stochastic;
    o.sr_key.seed = a.seed;
  }
  const FormatTraits& t = format_traits(o.format);

  const io::Checkpoint in = io::Checkpoint::open(a.input);
  io::refuse_output_over_input(a.output, input_files(in, a.input));
  std::vector<std::string> names = in.names();
  if (!a.only.empty()) {
    for (const auto& n : a.only) {
      if (std::find(names.begin(), names.end(), n) == names.end()) {
        throw Error(a.input + ": --tensor " + n + " is not in the file; `nvfp4 inspect " + a.input + "` lists its tensors");
      }
    }
    names = a.only;
  }

  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<std::pair<std::string, std::string>> records;
  nlohmann::json report = nlohmann::json::array();
  std::vector<std::string> skipped;
  Table table({"tensor", "shape", "dtype", "amax", "SQNR dB", "bytes in", "bytes out"});
  for (const auto& name : names) {
    std::string why;
    auto m = load_matrix(in, name, &why);
    if (!m) {
      skipped.push_back(name + " (" + why + ")");
      continue;
    }
    QuantizedTensor q;
    try {
      q = quantize(m->values, m->rows, m->cols, o, m->dtype);
    } catch (const NonFiniteError& e) {
      throw Error(a.input + ": tensor '" + name + "': " + e.what());
    } catch (const Error& e) {
      if (a.skip_incompatible) {
        skipped.push_back(name + " (" + e.what() + ")");
        continue;
      }
      throw Error(a.input + ": tensor '" + name + "' [" + std::to_string(m->rows) + ", " +
                  std::to_string(m->cols) + "]: " + e.what() + " (--skip-incompatible leaves such tensors out)");
    }
    size_t bytes_out = 0;
    for (auto& tensor : io::quantized_tensors(name, q)) {
      bytes_out += tensor.second.nbytes();
      out.push_back(std::move(tensor));
    }
    const auto& copy = q.row ? *q.row : *q.col;
    const double sqnr = q.row ? error_stats(m->values, dequantize(*q.row, q.options)).sqnr_db : NAN;
    const size_t bytes_in = in.info(name).nbytes();
    records.emplace_back(name, io::quantization_record(q));
    table.add({name, "[" + std::to_string(m->rows) + ", " + std::to_string(m->cols) + "]",
               std::string(dtype_name(m->dtype)), general(copy.amax), fixed(sqnr, 2), human_bytes(bytes_in),
               human_bytes(static_cast<double>(bytes_out))});
    report.push_back({{"tensor", name}, {"quantization", nlohmann::json::parse(records.back().second)}, {"shape", {m->rows, m->cols}}, {"dtype", dtype_name(m->dtype)},
                      {"amax", copy.amax}, {"sqnr_db", std::isfinite(sqnr) ? nlohmann::json(sqnr) : nlohmann::json()},
                      {"bytes_in", bytes_in}, {"bytes_out", bytes_out}});
  }
  if (out.empty()) {
    throw Error(a.input + ": no 2-D floating-point tensor to quantize" +
                (skipped.empty() ? std::string() : " (skipped: " + skipped.front() + (skipped.size() > 1 ? ", ..." : "") + ")"));
  }
  io::write_file(a.output, out, io::quantized_file_metadata(records, std::string("nvfp4 ") + NVFP4_VERSION + " qtensor"));

  if (a.json) {
    std::cout << json_text(nlohmann::json{{"output", a.output}, {"format", t.name}, {"tensors", report}, {"skipped", skipped}})
              << "\n";
    return;
  }
  table.print();
  for (const auto& s : skipped) std::cout << "skipped " << s << "\n";
  std::cout << "wrote " << out.size() << " tensors to " << a.output << " (" << t.name << ", block "
            << block_name(o.block.value_or(t.default_block)) << (o.columnwise ? ", row + column-wise" : "")
            << (o.rht ? ", RHT" : "") << (a.sr ? ", stochastic rounding" : "") << ")\n";
}

}  // namespace

void register_qtensor(CLI::App& app) {
  const auto [c, args] = add_command<QtensorArgs>(app,
      "qtensor", "Quantize every 2-D floating-point tensor of a safetensors file");
  add_input_output(c, "input", args->input, "Input .safetensors file (or sharded checkpoint index / folder)", "output",
                   args->output, "Output .safetensors file (written atomically)");
  c->add_option("--format", args->format, "Format: " + format_names(", "))->default_val("nvfp4");
  c->add_option("--block", args->block,
                "Block shape: 1x16 or 16x16 (nvfp4), 1x32 (mxfp4), tensor, 1x128 or 128x128 (fp8); default per format");
  c->add_flag("--columnwise", args->columnwise, "Also write the column-wise (transposed) copy T.col.*");
  c->add_flag("--no-rowwise", args->no_rowwise, "Leave out the row-wise copy (needs --columnwise)");
  c->add_flag("--rht", args->rht, "Random Hadamard transform on the column-wise copy: 16-point (nvfp4, 1x16), 32-point (mxfp4)");
  c->add_option("--rht-signs", args->rht_signs,
                 "RHT sign vector: te (TE's + + + - + - - - - - - + - + - -), none, or 16 characters of +/-")
      ->default_val("te");
  c->add_flag("--sr", args->sr, "Stochastic rounding (FP4 formats), keyed by --seed");
  c->add_option("--seed", args->seed, "Seed of the stochastic-rounding stream")->default_val(0)->transform(any_seed());
  c->add_option("--tensor", args->only, "Quantize only these tensors (repeatable)");
  c->add_flag("--skip-incompatible", args->skip_incompatible,
              "Leave out tensors whose shape the format cannot take instead of failing");
  c->add_flag("--json", args->json, "Print a JSON summary instead of the table");
  c->callback([args] { run_qtensor(*args); });
}

}  // namespace nvfp4::cli

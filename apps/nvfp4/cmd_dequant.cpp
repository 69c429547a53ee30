// nvfp4 dequant IN OUT: turn every quantized tensor group of IN (as written by `nvfp4 qtensor`,
// or NVIDIA's golden file) back into a plain F32 or BF16 tensor T of its logical shape [M, K].
#include <cmath>
#include <cstring>
#include <iostream>

#include "common.hpp"
#include "format/scalar.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/qtensor_file.hpp"

namespace nvfp4::cli {

namespace {

struct DequantArgs {
  std::string input, output, dtype = "f32", copy = "auto";
  bool json = false;
};

void run_dequant(const DequantArgs& a) {
  if (a.dtype != "f32" && a.dtype != "bf16") throw Error("--dtype " + a.dtype + " is not supported; use f32 or bf16");
  if (a.copy != "auto" && a.copy != "row" && a.copy != "col") throw Error("--copy must be auto, row or col");
  const io::Checkpoint in = io::Checkpoint::open(a.input);
  io::refuse_output_over_input(a.output, input_files(in, a.input));
  const auto entries = io::read_quantized(in, a.input);
  if (entries.empty()) {
    throw Error(a.input + ": no quantized tensors found (expected groups such as T.row.q + T.row.s); "
                          "`nvfp4 qtensor` writes them");
  }
  std::vector<std::pair<std::string, Tensor>> out;
  Table table({"tensor", "format", "block", "from", "shape"});
  nlohmann::json report = nlohmann::json::array();
  for (const auto& e : entries) {
    const QuantizedTensor& q = e.tensor;
    const bool use_col = a.copy == "col" || (a.copy == "auto" && !q.row);
    if (use_col && !q.col) throw Error(a.input + ": tensor '" + e.name + "' has no column-wise copy (--copy col)");
    if (!use_col && !q.row) throw Error(a.input + ": tensor '" + e.name + "' has no row-wise copy (--copy row)");
    const std::vector<float> x = dequantize_as_input(q, use_col);
    // Scales that pass read_quantized()'s checks can still overflow FP32 together with a code
    // (an E8M0 2^127 times 6): such a value is an error, never an Inf in the output.
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::isfinite(x[i])) continue;
      throw Error(a.input + ": quantized tensor '" + e.name + "': element " + std::to_string(i) + " [" +
                  std::to_string(int64_t(i) / q.K) + ", " + std::to_string(int64_t(i) % q.K) + "] dequantizes to " +
                  (std::isnan(x[i]) ? "NaN" : "Inf") + " (its block scale overflows FP32); the file is damaged or "
                  "was not written by a quantizer");
    }
    out.emplace_back(e.name, a.dtype == "bf16" ? Tensor::from_f32_as_bf16(x, {q.M, q.K}) : Tensor::from_f32(x, {q.M, q.K}));
    const std::string fmt_name(format_traits(q.options.format).name);
    table.add({e.name, fmt_name, block_name(*q.options.block), use_col ? (q.options.rht ? "col (RHT undone)" : "col") : "row",
               "[" + std::to_string(q.M) + ", " + std::to_string(q.K) + "]"});
    report.push_back({{"tensor", e.name}, {"format", fmt_name}, {"block", block_name(*q.options.block)},
                      {"copy", use_col ? "col" : "row"}, {"shape", {q.M, q.K}}});
  }
  io::write_file(a.output, out, {{"nvfp4.producer", std::string("nvfp4 ") + NVFP4_VERSION + " dequant"}});
  if (a.json) {
    std::cout << json_text(nlohmann::json{{"output", a.output}, {"tensors", report}}) << "\n";
    return;
  }
  table.print();
  std::cout << "wrote " << out.size() << " " << (a.dtype == "bf16" ? "BF16" : "F32") << " tensors to " << a.output << "\n";
}

}  // namespace

void register_dequant(CLI::App& app) {
  const auto [c, args] = add_command<DequantArgs>(app,
      "dequant", "Dequantize the quantized tensors of a file back to F32 or BF16");
  add_input_output(c, "input", args->input, "File written by `nvfp4 qtensor` (or any file in its naming)", "output",
                   args->output, "Output .safetensors file (written atomically)");
  c->add_option("--dtype", args->dtype, "Output dtype: f32 or bf16")->default_val("f32");
  c->add_option("--copy", args->copy, "Which copy to decode: auto (row-wise if present), row, or col (RHT undone)")
      ->default_val("auto");
  c->add_flag("--json", args->json, "Print a JSON summary instead of the table");
  c->callback([args] { run_dequant(*args); });
}

}  // namespace nvfp4::cli

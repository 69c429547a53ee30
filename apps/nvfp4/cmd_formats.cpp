// nvfp4 formats [FILE]: what each registered format costs a tensor.
//
// For every format of the traits table and every block shape it supports: quantization
// error (SQNR, relative RMS error, max error) on the user's 2-D tensors or, without a file,
// on Gaussian, Laplace and heavy-tailed data with outliers; storage in bits per value; and
// single-core CPU quantization throughput. The one-screen answer to "what does NVFP4 cost my
// tensors compared with MXFP4 and FP8".
#include <iostream>

#include "common.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::cli {

namespace {

struct FormatsArgs {
  std::string file;
  int64_t rows = 1024, cols = 4096;
  uint64_t seed = 1;
  int repeats = 3;
  bool json = false;
};

struct Variant {
  Format format;
  BlockShape block;
};

std::vector<Variant> all_variants() {
  std::vector<Variant> v;
  for (const auto& t : format_table())
    for (const auto& b : t.blocks) v.push_back({t.format, b});
  return v;
}

std::string variant_name(const Variant& v) {
  return std::string(format_traits(v.format).name) + " " + block_name(v.block);
}

struct Row {
  std::string data, variant;
  bool ok = false;
  std::string why;
  FormatCost cost;
};

Row measure(const std::string& data_name, const std::vector<float>& x, int64_t rows, int64_t cols, const Variant& v,
            int repeats) {
  Row r;
  r.data = data_name;
  r.variant = variant_name(v);
  QuantizeOptions o;
  o.format = v.format;
  o.block = v.block;
  try {
    r.cost = measure_format(x, rows, cols, o, repeats);
    r.ok = true;
  } catch (const NonFiniteError& e) {
    throw Error("tensor '" + data_name + "': " + e.what());
  } catch (const Error& e) {
    r.why = e.what();
  }
  return r;
}

void run_formats(const FormatsArgs& a) {
  cpu::set_num_threads(1);  // the throughput column is per core (the quantizer runs OpenMP otherwise)
  if (a.rows > (int64_t{1} << 30) / a.cols) {  // each is in [1, 2^30]: the quotient cannot overflow
    throw Error("--rows " + std::to_string(a.rows) + " x --cols " + std::to_string(a.cols) +
                " is more than 2^30 values; make the synthetic tensors smaller");
  }
  std::vector<Row> rows;
  const auto variants = all_variants();
  if (a.file.empty()) {
    for (const std::string_view kind : synthetic_kinds()) {
      const auto x = synthetic_tensor(kind, a.rows * a.cols, a.seed);
      for (const auto& v : variants) {
        rows.push_back(measure(std::string(kind), x, a.rows, a.cols, v, kind == "gaussian" ? a.repeats : 0));
      }
    }
  } else {
    const io::Checkpoint ck = io::Checkpoint::open(a.file);
    int used = 0;
    for (const auto& name : ck.names()) {
      auto m = load_matrix(ck, name);
      if (!m) continue;
      ++used;
      for (const auto& v : variants) rows.push_back(measure(name, m->values, m->rows, m->cols, v, a.repeats));
    }
    if (used == 0) throw Error(a.file + ": no 2-D floating-point tensors (F64/F32/F16/BF16) to measure");
  }

  if (a.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows) {
      nlohmann::json e{{"data", r.data}, {"format", r.variant}, {"ok", r.ok}};
      if (!r.ok) e["why"] = r.why;
      else {
        e["sqnr_db"] = r.cost.error.sqnr_db;
        e["rel_rms"] = r.cost.error.rel_rms;
        e["max_abs_error"] = r.cost.error.max_abs;
        e["bits_per_value"] = r.cost.bits_per_value;
        if (r.cost.cpu_gbps > 0) e["cpu_gbps"] = r.cost.cpu_gbps;
      }
      j.push_back(e);
    }
    std::cout << json_text(nlohmann::json{{"rows", a.rows}, {"cols", a.cols}, {"seed", a.seed}, {"results", j}}) << "\n";
    return;
  }
  std::cout << "Quantization error and cost per format"
            << (a.file.empty() ? " on " + std::to_string(a.rows) + "x" + std::to_string(a.cols) + " synthetic tensors (seed " +
                                     std::to_string(a.seed) + ")"
                               : " on the 2-D tensors of " + a.file)
            << "\nCPU GB/s: FP32 input quantized per second, one core, median of " << a.repeats << " runs\n\n";
  Table t({"data", "format", "bits/value", "SQNR dB", "rel RMS", "max abs err", "CPU GB/s"});
  for (const auto& r : rows) {
    if (!r.ok) {
      t.add({r.data, r.variant, "-", "n/a: " + r.why.substr(0, 60)});
      continue;
    }
    const FormatCost& c = r.cost;
    t.add({r.data, r.variant, fixed(c.bits_per_value, 2), fixed(c.error.sqnr_db, 2), fixed(c.error.rel_rms, 4),
           fixed(c.error.max_abs, 4), c.cpu_gbps > 0 ? fixed(c.cpu_gbps, 2) : ""});
  }
  t.print();
}

}  // namespace

void register_formats(CLI::App& app) {
  const auto [c, args] = add_command<FormatsArgs>(app,
      "formats", "Compare every format's error and speed on your tensors or standard data");
  c->add_option("file", args->file, "Optional .safetensors file: measure on its 2-D floating-point tensors");
  c->add_option("--rows", args->rows, "Rows of the synthetic tensors (rows x cols <= 2^30)")
      ->default_val(1024)
      ->transform(integer_in(1, int64_t{1} << 30));
  c->add_option("--cols", args->cols, "Columns of the synthetic tensors")
      ->default_val(4096)
      ->transform(integer_in(1, int64_t{1} << 30));
  c->add_option("--seed", args->seed, "Seed of the synthetic data")->default_val(1)->transform(any_seed());
  c->add_option("--repeats", args->repeats, "Timed runs per format (the median is reported)")
      ->default_val(3)
      ->transform(integer_in(1, 1000));
  c->add_flag("--json", args->json, "Print JSON instead of the table");
  c->callback([args] { run_formats(*args); });
}

}  // namespace nvfp4::cli

// nvfp4 inspect FILE: tensors, dtypes, shapes, metadata; for quantized tensors, the scale
// statistics that tell whether a format fits the data (zero / saturated / subnormal block
// scales, the range of scales actually used).
#include <iostream>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/qtensor_file.hpp"
#include "nvfp4/quantize.hpp"

namespace nvfp4::cli {

namespace {

struct InspectArgs {
  std::string file;
  bool json = false;
};

void run_inspect(const InspectArgs& a) {
  const io::Checkpoint ck = io::Checkpoint::open(a.file);
  const auto names = ck.names();
  const auto quantized = io::read_quantized(ck, a.file);

  nlohmann::json j;
  j["file"] = a.file;
  j["shards"] = ck.shards().size();
  j["metadata"] = ck.metadata();
  uint64_t total = 0;
  Table tensors({"tensor", "dtype", "shape", "bytes"});
  for (const auto& n : names) {
    const auto& info = ck.info(n);
    total += info.nbytes();
    tensors.add({n, std::string(dtype_name(info.dtype)), shape_to_string(info.shape), human_bytes(static_cast<double>(info.nbytes()))});
    j["tensors"].push_back({{"name", n}, {"dtype", dtype_name(info.dtype)}, {"shape", info.shape}, {"bytes", info.nbytes()}});
  }
  j["total_bytes"] = total;

  Table qt({"quantized tensor", "format", "block", "copy", "shape", "amax", "scales", "zero", "at max", "subnormal",
            "scale min", "scale max"});
  for (const auto& e : quantized) {
    const QuantizedTensor& q = e.tensor;
    for (int which = 0; which < 2; ++which) {
      const auto& copy = which == 0 ? q.row : q.col;
      if (!copy) continue;
      const ScaleStats s = scale_stats(*copy, q.options.format);
      const std::string name = which == 0 ? "row" : (q.options.rht ? "col+RHT" : "col");
      const std::string fname(format_traits(q.options.format).name);
      qt.add({e.name, fname, block_name(*q.options.block), name,
              "[" + std::to_string(copy->rows) + ", " + std::to_string(copy->cols) + "]",
              format_traits(q.options.format).per_copy_f32 == 0 ? "-" : general(copy->amax),
              std::to_string(s.count), std::to_string(s.zero), std::to_string(s.saturated), std::to_string(s.subnormal),
              s.zero == s.count ? "-" : general(s.min_nonzero), general(s.max)});
      j["quantized"].push_back({{"tensor", e.name}, {"format", fname}, {"block", block_name(*q.options.block)},
                                {"copy", name}, {"shape", {copy->rows, copy->cols}}, {"amax", copy->amax},
                                {"options_recorded", e.options_recorded},
                                {"scales", {{"count", s.count}, {"zero", s.zero}, {"saturated", s.saturated},
                                            {"subnormal", s.subnormal},
                                            {"min_nonzero", s.zero == s.count ? nlohmann::json() : nlohmann::json(s.min_nonzero)},
                                            {"max", s.max}, {"mean", s.mean}}}});
    }
  }
  if (a.json) {
    std::cout << json_text(j) << "\n";
    return;
  }
  std::cout << a.file << ": " << names.size() << " tensors, " << human_bytes(static_cast<double>(total)) << " of data";
  if (ck.shards().size() > 1) std::cout << " in " << ck.shards().size() << " shards";
  std::cout << "\n\n";
  tensors.print();
  if (!ck.metadata().empty()) {
    std::cout << "\nmetadata:\n";
    for (const auto& [k, v] : ck.metadata()) {
      std::cout << "  " << k << ": " << (v.size() > 100 ? v.substr(0, 97) + "... (" + std::to_string(v.size()) + " chars; --json shows all)" : v)
                << "\n";
    }
  }
  if (!quantized.empty()) {
    std::cout << "\n";
    qt.print();
  }
}

}  // namespace

void register_inspect(CLI::App& app) {
  const auto [c, args] = add_command<InspectArgs>(app,
      "inspect", "List tensors, dtypes, shapes, metadata and quantization scale statistics");
  c->add_option("file", args->file, ".safetensors file, sharded index .json, or checkpoint folder")->required();
  c->add_flag("--json", args->json, "Print JSON instead of tables");
  c->callback([args] { run_inspect(*args); });
}

}  // namespace nvfp4::cli

// Shared pieces of the `nvfp4` subcommands: loading matrices from files, tables, JSON output.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nvfp4/quantize.hpp"
#include "nvfp4/safetensors.hpp"

namespace nvfp4::train {
struct CompareReport;
}

namespace nvfp4::cli {

// Each subcommand registers its options and its action on the app.
void register_qtensor(CLI::App& app);
void register_dequant(CLI::App& app);
void register_inspect(CLI::App& app);
void register_formats(CLI::App& app);
void register_data(CLI::App& app);
void register_train(CLI::App& app);
void register_sample(CLI::App& app);
void register_export_hf(CLI::App& app);
void register_compare(CLI::App& app);
void register_report(CLI::App& app);

// Writes text to path atomically (io::write_file_atomic: temporary file, then rename).
void write_text_file(const std::string& path, const std::string& text);

// What compare and report write: out_dir/report.html and out_dir/summary.json (atomically),
// then the summary table and both paths on stdout — or, with json, the summary JSON.
void write_comparison(const train::CompareReport& report, const std::string& out_dir, bool json);

// A 2-D floating-point tensor widened to FP32.
struct Matrix {
  std::string name;
  int64_t rows = 0, cols = 0;
  DType dtype = DType::F32;
  std::vector<float> values;
};

// The tensor as a matrix if it is 2-D and floating point (F64, F32, F16, BF16); nullopt
// otherwise, with the reason in *why_not when given.
std::optional<Matrix> load_matrix(const io::Checkpoint& ckpt, const std::string& name, std::string* why_not = nullptr);

// A plain text table: columns right-aligned except the first, printed to stdout.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

std::string fixed(double v, int decimals);  // "12.34"; "inf" / "nan" spelled out
std::string general(double v, int digits = 5);  // "%g": 4.4688, 9.8885e+29
std::string human_bytes(double bytes);      // "1.5 MiB"

}  // namespace nvfp4::cli

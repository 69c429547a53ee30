// Reading training folders back for `nvfp4 report` (see src/train/report.hpp).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nvfp4/error.hpp"
#include "train/report.hpp"

namespace nvfp4::train {

namespace {

namespace fs = std::filesystem;

bool is_run_folder(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p / "run.json", ec) && fs::is_regular_file(p / "metrics.jsonl", ec);
}

double number_or(const nlohmann::json& j, const char* key, double fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw Error(std::string("\"") + key + "\" is not a number");
  return it->get<double>();
}

}  // namespace

RunFolder read_run_folder(const std::string& dir) {
  RunFolder out;
  out.path = dir;
  const fs::path run_path = fs::path(dir) / "run.json", metrics_path = fs::path(dir) / "metrics.jsonl";
  std::ifstream rf(run_path);
  if (!rf) throw Error(run_path.string() + ": cannot be read (is " + dir + " a training folder?)");
  nlohmann::json run;
  try {
    run = nlohmann::json::parse(rf);
    for (const char* key : {"precision", "seed", "model"}) {
      if (!run.is_object() || !run.contains(key)) {
        throw Error(run_path.string() + ": has no \"" + key + "\"; every run.json that nvfp4 train writes has it. "
                    "Restore the file (the run's checkpoints hold it as metadata 'nvfp4.run') or leave " + dir +
                    " out of the report");
      }
    }
    const auto& prec = run.at("precision");
    out.run.recipe = prec.is_object() ? prec.at("name").get<std::string>() : prec.get<std::string>();
    out.run.seed = run.at("seed").get<uint64_t>();
    out.model_json = run.at("model").dump();
    out.data_dir = run.value("data_dir", std::string());
  } catch (const nlohmann::json::exception& e) {
    throw Error(run_path.string() + ": not a run description written by nvfp4 train (" + e.what() + ")");
  }
  std::ifstream mf(metrics_path);
  if (!mf) throw Error(metrics_path.string() + ": cannot be read");
  std::string line;
  int64_t line_no = 0;
  double device_mem = 0, host_mem = 0;
  while (std::getline(mf, line)) {
    ++line_no;
    if (line.empty()) continue;
    const std::string where = metrics_path.string() + ":" + std::to_string(line_no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      if (mf.peek() == EOF) break;  // a torn last line (a killed run): ignore it
      throw Error(where + ": not a JSON object");
    }
    if (!j.is_object() || !j.contains("step")) continue;  // a header record
    try {
      if (j.value("event", std::string()) == "divergence") {
        out.run.diverged = true;
        out.run.divergence = j.value("message", std::string("diverged"));
        continue;
      }
      if (!j.contains("loss")) continue;  // not a step record
      ReportPoint p;
      p.step = j.at("step").get<int64_t>();
      p.tokens = static_cast<int64_t>(number_or(j, "tokens", 0));
      p.loss = number_or(j, "loss", 0);
      p.val_loss = number_or(j, "val_loss", -1);
      p.grad_norm = number_or(j, "grad_norm", 0);
      p.tokens_per_s = number_or(j, "tokens_per_s", 0);
      device_mem = std::max(device_mem, number_or(j, "device_mem_bytes", 0));
      host_mem = std::max(host_mem, number_or(j, "peak_mem_bytes", 0));
      out.run.history.push_back(p);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": " + e.what());
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
  }
  // As `nvfp4 compare` reports a run it trains: GPU memory for a CUDA run, else the process's.
  out.run.peak_memory_bytes = static_cast<int64_t>(device_mem > 0 ? device_mem : host_mem);
  return out;
}

std::vector<std::string> find_run_folders(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) throw Error(path + ": not a folder");
  std::vector<std::string> out;
  if (is_run_folder(path)) return {path};
  for (const auto& a : fs::directory_iterator(path, ec)) {
    if (!a.is_directory()) continue;
    if (is_run_folder(a.path())) {
      out.push_back(a.path().string());
      continue;
    }
    for (const auto& b : fs::directory_iterator(a.path(), ec)) {
      if (b.is_directory() && is_run_folder(b.path())) out.push_back(b.path().string());
    }
  }
  if (out.empty()) throw Error(path + ": holds no training folder (run.json + metrics.jsonl)");
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace nvfp4::train

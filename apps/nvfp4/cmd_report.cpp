// nvfp4 report FOLDER... --out DIR: draw training runs that already exist — folders written by
// `nvfp4 train` or `nvfp4 compare`, possibly by several invocations on several machines — into
// one comparison report: DIR/report.html, DIR/summary.json and the summary table, exactly as
// `nvfp4 compare` writes them. The runs must be of one model configuration.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <map>
#include <set>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/safetensors.hpp"
#include "train/report.hpp"

namespace nvfp4::cli {

namespace {

namespace fs = std::filesystem;

struct ReportCommand {
  std::vector<std::string> inputs;
  std::string out_dir;
  std::string baseline = "bf16";
  std::string title;
  bool json = false;
};

// unigram_val_loss from a compare folder's summary.json, when there is one.
double unigram_of(const std::string& folder) {
  std::ifstream f(fs::path(folder) / "summary.json");
  if (!f) return 0.0;
  try {
    const auto j = nlohmann::json::parse(f);
    return j.value("unigram_val_loss", 0.0);
  } catch (const nlohmann::json::exception&) {
    return 0.0;  // not ours, or damaged: the report just omits the unigram line
  }
}

void run(const ReportCommand& a) {
  io::require_output_folder("--out", a.out_dir);
  train::CompareReport rep;
  rep.baseline = a.baseline;
  std::string model;
  std::string model_from;
  std::set<std::string> data;
  std::map<fs::path, std::string> seen;  // a run named twice (A A, A and A's parent, a link) counts once
  for (const auto& in : a.inputs) {
    if (rep.unigram_val_loss <= 0) rep.unigram_val_loss = unigram_of(in);
    for (const auto& dir : train::find_run_folders(in)) {
      std::error_code ec;
      fs::path real = fs::canonical(dir, ec);
      if (ec) real = fs::absolute(dir).lexically_normal();
      const auto [it, fresh] = seen.emplace(real, dir);
      if (!fresh) {
        std::cerr << "  " << dir << ": the same run as " << it->second << ", counted once\n";
        continue;
      }
      train::RunFolder f = train::read_run_folder(dir);
      if (model.empty()) {
        model = f.model_json;
        model_from = dir;
      } else if (f.model_json != model) {
        throw Error("runs of different models cannot share a report: " + dir + " has " + f.model_json + ", " +
                    model_from + " has " + model);
      }
      data.insert(f.data_dir);
      std::cerr << "  " << dir << ": " << f.run.recipe << ", seed " << f.run.seed << ", " << f.run.history.size()
                << " steps" << (f.run.diverged ? " (diverged)" : "") << "\n";
      rep.runs.push_back(std::move(f.run));
    }
  }
  rep.title = a.title.empty() ? "nvfp4 report: " + std::to_string(rep.runs.size()) + " runs" : a.title;
  rep.model_description = model;
  for (const auto& d : data) rep.data_description += (rep.data_description.empty() ? "" : ", ") + d;
  std::string cmd = "nvfp4 report";
  for (const auto& in : a.inputs) cmd += " " + in;
  rep.command = cmd + " --out " + a.out_dir;
  write_comparison(rep, a.out_dir, a.json);
}

}  // namespace

void write_comparison(const train::CompareReport& rep, const std::string& out_dir, bool json) {
  fs::create_directories(out_dir);
  const fs::path html = fs::path(out_dir) / "report.html", js = fs::path(out_dir) / "summary.json";
  io::write_text_file_atomic(html.string(), train::render_html(rep));
  io::write_text_file_atomic(js.string(), train::summary_json(rep) + "\n");
  if (json) {
    std::cout << train::summary_json(rep) << "\n";
  } else {
    std::cout << train::summary_table(rep) << "report: " << html.string() << "\nsummary: " << js.string() << "\n";
  }
}

void register_report(CLI::App& app) {
  const auto [c, a] = add_command<ReportCommand>(app,
      "report", "Draw existing training runs (folders of nvfp4 train / compare) into one comparison report");
  c->add_option("folders", a->inputs, "Training folders, or folders holding them (e.g. compare outputs)")->required();
  c->add_option("--out", a->out_dir, "Folder for report.html and summary.json")->required();
  c->add_option("--baseline", a->baseline, "Recipe the gaps are measured against")->capture_default_str();
  c->add_option("--title", a->title, "Report title");
  c->add_flag("--json", a->json, "Print the summary as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli

// The report of `nvfp4 compare`: several training runs (recipes x seeds) side by side, as one
// self-contained HTML page, a JSON summary for machines and a plain-text table for the terminal.
//
// The HTML page has no external resources (no scripts, fonts, style sheets or image files): CSS is
// inline and the charts are SVG drawn here. Top to bottom: the header (title, model, data,
// command), (1) training loss vs tokens (raw points faint, an exponential moving average on top),
// (2) validation loss vs tokens, (3) the relative validation-loss gap to the baseline vs tokens,
// (4) the gradient norm vs tokens (log y axis), the summary table, and the divergence events.
// Each recipe has one colour in every chart; seeds of one recipe share it and are drawn thinner.
//
// What this deliberately is not: an interactive plotting library. Non-finite values (NaN, inf)
// are skipped point by point (a line breaks there), never written into the SVG; a constant
// series gets a small non-zero axis range; an empty report still renders (charts say "no data").
//
// This file depends on nothing of the trainer: the caller converts train::StepRecord (or the
// records of a metrics.jsonl file) into ReportPoints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nvfp4::train {

// One optimizer step of a run, as the report needs it.
struct ReportPoint {
  int64_t step = 0;          // 1-based optimizer steps completed (StepRecord::step)
  int64_t tokens = 0;        // training tokens consumed so far
  double loss = 0;           // training loss of the step (nats)
  double val_loss = -1;      // < 0: not validated at this step
  double grad_norm = 0;      // global gradient norm before clipping
  double tokens_per_s = 0;   // throughput of the step
};

// One training run of one recipe and seed.
struct RecipeRun {
  std::string recipe;        // display name, e.g. "nvfp4" or "nvfp4 --no-rht"
  uint64_t seed = 1;
  std::vector<ReportPoint> history;  // in step order; a diverged run stops early
  bool diverged = false;
  std::string divergence;    // the trainer's message (step, layer, tensor)
  int64_t peak_memory_bytes = 0;
};

struct CompareReport {
  std::string title, model_description, data_description, command;
  std::string baseline = "bf16";   // the recipe gaps are measured against
  double unigram_val_loss = 0;     // <= 0 or non-finite: not shown
  double ema_factor = 0.9;         // training-loss smoothing: ema = f * ema + (1 - f) * loss; [0, 1)
  std::vector<RecipeRun> runs;     // several seeds per recipe allowed, any order
};

// One row of the summary: the runs of one recipe.
//   final val loss of a run: its last finite validation loss. Diverged runs are left out of
//     final_val_mean / final_val_spread / gap_percent (their last validation is from an earlier
//     point of training, not comparable); they count in seeds and diverged_runs.
//   final_val_spread: half the range over those runs, (max - min) / 2 (0 for one run).
//   gap_percent: (final_val_mean - baseline's final_val_mean) / baseline's * 100; NaN for the
//     baseline itself, when there is no baseline run, or when either mean is NaN.
//   tokens_per_s_mean: per run, the mean over steps of the finite positive tokens_per_s (the first
//     step is skipped when there are more: it carries the warm-up), then the mean over runs.
//   peak_memory_bytes: the largest over the runs.
// Values with no data are NaN (JSON: null).
struct RecipeSummary {
  std::string recipe;
  int seeds = 0;
  double final_val_mean = 0, final_val_spread = 0, gap_percent = 0, tokens_per_s_mean = 0;
  int64_t peak_memory_bytes = 0;
  int diverged_runs = 0;
};

// One row per recipe, in first-appearance order of the recipes in report.runs.
std::vector<RecipeSummary> summarize(const CompareReport& report);

// The whole HTML page (UTF-8). Throws nvfp4::Error for an ema_factor outside [0, 1).
std::string render_html(const CompareReport& report);

// {"baseline": ..., "unigram_val_loss": ..., "spread": "half_range", "recipes": [{RecipeSummary
// fields by name}]}; NaN values are null.
std::string summary_json(const CompareReport& report);

// The summary as an aligned plain-text table for the terminal, one line per recipe.
std::string summary_table(const CompareReport& report);

// ---- the report of `nvfp4 quantize --report` (docs/ptq.md) ----------------------------------------

// One linear layer of the model as the sensitivity pass measured it (kl, rel_error NaN: not
// measured, e.g. a layer --keep-bf16 kept).
struct PtqLayerPoint {
  std::string name;
  double kl = 0, rel_error = 0;
  bool fallback = false;  // measured, then kept in BF16 by the fallback rule
};
// The whole model on the held-out tokens.
struct PtqQualityRow {
  std::string what;  // "unquantized", "every layer quantized", "after the fallback"
  double ppl = 0, kl = 0, top1 = 0;  // kl, top1 NaN for the unquantized row
};
struct PtqReport {
  std::string title, model_description, command, calibration, sensitivity, fallback_rule;
  double threshold = 0;  // --auto-fallback's KL (0: none)
  std::vector<PtqLayerPoint> layers;  // in the model's order
  std::vector<PtqQualityRow> quality;
};
// A self-contained HTML page (the compare report's style and SVG charts): the header, the quality
// table (before and after the fallback), the per-layer KL (log scale; fallback layers marked, the
// threshold dashed), the per-layer relative output error, and the table of every layer.
std::string render_ptq_html(const PtqReport& report);

}  // namespace nvfp4::train

namespace nvfp4::train {

// ---- runs read back from disk (`nvfp4 report`) ------------------------------------------------

// A training folder written by `nvfp4 train` or `nvfp4 compare`: run.json (the options; its
// "precision" is the recipe) and metrics.jsonl (a record per step with loss, tokens, grad_norm,
// tokens_per_s and, when validated, val_loss; divergence events).
struct RunFolder {
  std::string path;
  RecipeRun run;           // recipe = the recipe's name ("fp32" without one), seed from run.json
  std::string model_json;  // run.json "model", compact JSON
  std::string data_dir;    // run.json "data_dir"
};

// Reads one folder. Throws nvfp4::Error naming the file (and the line or key) when a file is
// missing, is not JSON, run.json lacks "precision", "seed" or "model", or a step record lacks a
// number it needs. peak_memory_bytes: the largest "device_mem_bytes" (a CUDA run), else the
// largest "peak_mem_bytes" — what `nvfp4 compare` reports for a run it trains.
RunFolder read_run_folder(const std::string& dir);

// The training folders at `path` or below it (up to two levels: a compare folder holds one per
// run), sorted by path. Throws nvfp4::Error naming `path` when it holds none.
std::vector<std::string> find_run_folders(const std::string& path);

}  // namespace nvfp4::train

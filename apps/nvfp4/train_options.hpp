// Options shared by `nvfp4 train` and `nvfp4 compare`: data, model, optimizer, schedule,
// validation and checkpoint settings, and how they resolve into train::TrainOptions.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "train/trainer.hpp"

namespace nvfp4::cli {

struct TrainArgs {
  train::TrainOptions o;
  std::string preset = "small", config_file, schedule = "cosine";
  // Model overrides: not given keeps the preset's (or --config's) value.
  std::optional<int> layers, d_model, heads, kv_heads, ffn, seq_len, vocab;
  double lr = 3e-3, min_lr_fraction = 0.1, decay_fraction = 0.2;
  std::optional<int64_t> warmup;  // not given: 10% of --steps, at most 1000
  bool no_progress = false;
};

// Registers the shared options on subcommand c (out_help: what --out holds for it).
void add_train_options(CLI::App* c, TrainArgs& a, const std::string& out_help);

// Model (preset, config file, overrides), schedule, device and progress resolved into a.o.
void resolve_train_options(TrainArgs& a);

// The resolved configuration as printed at the start of a run.
std::string describe_train_options(const train::TrainOptions& o);

}  // namespace nvfp4::cli

// nvfp4 train --data DIR --out DIR: pretrain a Llama-style model from scratch on token shards
// written by `nvfp4 data`. The loop is train::train() (src/train/trainer.hpp); this file maps
// options onto it, prints the resolved configuration first and a loss table last.
#include <cmath>
#include <iostream>
#include <optional>

#include "common.hpp"
#include "train_options.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"
#include "train/trainer.hpp"

namespace nvfp4::cli {

namespace {

struct TrainCommand {
  TrainArgs t;
  bool json = false;
  std::string recipe, bf16_layers;
  recipe::Switches switches;
  std::optional<double> switch_bf16_at;  // not given: no late switch
};

void run(TrainCommand& a) {
  resolve_train_options(a.t);
  train::TrainOptions& o = a.t.o;
  if (!a.bf16_layers.empty()) {
    try {
      a.switches.bf16_blocks = recipe::parse_bf16_blocks(a.bf16_layers);
    } catch (const Error& e) {
      throw Error(std::string("--bf16-layers: ") + e.what());
    }
  }
  if (a.switch_bf16_at) a.switches.switch_bf16_at = *a.switch_bf16_at;
  const bool any_switch = a.switches.no_2d || a.switches.no_rht || a.switches.no_sr || a.switches.bf16_blocks ||
                          a.switch_bf16_at || a.switches.switch_forward_only;
  if (!a.recipe.empty()) {
    try {
      o.recipe = recipe::apply(recipe::parse(a.recipe, o.model.n_layer), a.switches);
    } catch (const Error& e) {
      throw Error(std::string("--recipe: ") + e.what());
    }
    recipe::validate(*o.recipe, o.model.n_layer);
  } else if (any_switch) {
    throw Error("--no-2d, --no-rht, --no-sr, --bf16-layers and --switch-bf16-at modify a recipe: add --recipe NAME");
  }
  // The plan (the recipe resolved against this model's layers) is what trains: printed here, so
  // a recipe that would quantize no layer stops before any work.
  const std::string precision =
      o.recipe ? model::resolve_plan(*o.recipe, o.model.n_layer).describe()
      : o.device == "cuda" ? std::string("precision bf16 (no recipe: BF16 GEMMs and activations, FP32 master weights)")
                           : std::string("precision fp32 (no recipe)");

  std::cerr << "nvfp4 train: " << describe_train_options(o) << "  " << precision << "\n";

  const train::TrainResult r = train::train(o);

  if (a.json) {
    nlohmann::ordered_json j;
    j["steps"] = r.history.empty() ? 0 : r.history.back().step;
    j["final_loss"] = r.history.empty() ? NAN : r.history.back().loss;
    double val = NAN;
    for (const auto& h : r.history)
      if (h.val_loss >= 0) val = h.val_loss;
    j["final_val_loss"] = val;
    j["unigram_val_loss"] = r.unigram_val_loss;
    j["metrics"] = r.metrics_path;
    j["checkpoint"] = r.last_checkpoint;
    j["diverged"] = r.diverged;
    if (r.diverged) j["divergence"] = r.divergence;
    j["peak_rss_bytes"] = r.peak_rss_bytes;
    std::cout << json_text(j) << "\n";
  } else {
    Table t({"step", "tokens", "loss", "val loss", "lr", "grad norm", "tok/s"});
    const size_t n = r.history.size();
    for (size_t i = 0; i < n; ++i) {
      const auto& h = r.history[i];
      // About ten rows: every validation, and the last step.
      if (h.val_loss < 0 && i + 1 != n) continue;
      t.add({std::to_string(h.step), std::to_string(h.tokens), fixed(h.loss, 4), h.val_loss >= 0 ? fixed(h.val_loss, 4) : "",
             general(h.lr, 3), fixed(h.grad_norm, 3), fixed(h.tokens_per_s, 0)});
    }
    t.print();
    std::cout << "unigram baseline (val): " << fixed(r.unigram_val_loss, 4) << " nats/token\n"
              << "metrics: " << r.metrics_path << "\n";
    if (!r.last_checkpoint.empty()) std::cout << "checkpoint: " << r.last_checkpoint << "\n";
    std::cout << "peak memory: " << human_bytes(static_cast<double>(r.peak_rss_bytes)) << "\n";
  }
  if (r.diverged) throw Error(r.divergence);
}

}  // namespace

void register_train(CLI::App& app) {
  const auto [c, a] = add_command<TrainCommand>(app,
      "train", "Pretrain a Llama-style model on token shards from `nvfp4 data`");
  add_train_options(c, a->t, "Folder for metrics.jsonl, run.json and checkpoints");
  c->add_option("--recipe", a->recipe,
                "Precision recipe: " + recipe::preset_names() +
                    ", optionally with :switches (e.g. nvfp4:no-rht:bf16=1-2; see docs/recipes.md) (default: none, FP32)");
  c->add_flag("--no-2d", a->switches.no_2d, "Recipe switch: weights in 1x16 blocks instead of 16x16");
  c->add_flag("--no-rht", a->switches.no_rht, "Recipe switch: no Hadamard transform on the wgrad operands");
  c->add_flag("--no-sr", a->switches.no_sr, "Recipe switch: round to nearest even instead of stochastic rounding");
  c->add_option("--bf16-layers", a->bf16_layers, "Recipe switch: blocks kept in BF16, FIRST-LAST (e.g. 1-2; 0-0: none)");
  c->add_option("--switch-bf16-at", a->switch_bf16_at, "Recipe switch: BF16 from this fraction of the tokens on")
      ->transform(real_in(0, 1, false, true));
  c->add_flag("--switch-forward-only", a->switches.switch_forward_only, "Recipe switch: the late switch covers fprop only");
  c->add_flag("--json", a->json, "Print the summary as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli

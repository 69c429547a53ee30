// nvfp4 train --data DIR --out DIR: pretrain a Llama-style model from scratch on token shards
// written by `nvfp4 data`. The loop is train::train() (src/train/trainer.hpp); this file maps
// options onto it, prints the resolved configuration first and a loss table last.
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "train/trainer.hpp"

namespace nvfp4::cli {

namespace {

struct TrainArgs {
  train::TrainOptions o;
  std::string preset = "small", config_file, schedule = "cosine";
  int layers = 0, d_model = 0, heads = 0, kv_heads = 0, ffn = -1, seq_len = 0, vocab = 0;
  double lr = 3e-3, min_lr_fraction = 0.1, decay_fraction = 0.2;
  int64_t warmup = -1;
  bool no_progress = false, json = false;
  std::string recipe, bf16_layers;
  recipe::Switches switches;
};

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error("--config " + path + ": cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void run(TrainArgs& a) {
  train::TrainOptions& o = a.o;
  o.model = a.config_file.empty() ? train::model_preset(a.preset) : model::ModelConfig::from_json(read_text(a.config_file));
  if (a.layers) o.model.n_layer = a.layers;
  if (a.d_model) o.model.d_model = a.d_model;
  if (a.heads) o.model.n_head = a.heads;
  if (a.kv_heads) o.model.n_kv_head = a.kv_heads;
  else if (a.heads) o.model.n_kv_head = a.heads;
  if (a.ffn >= 0) o.model.d_ffn = a.ffn;
  if (a.seq_len) o.model.seq_len = a.seq_len;
  if (a.vocab) o.model.vocab = a.vocab;
  o.model.validate();
  const int64_t warmup = a.warmup >= 0 ? a.warmup : std::min<int64_t>(o.steps / 10, 1000);
  o.schedule = train::parse_schedule(a.schedule, a.lr, warmup, o.steps, a.min_lr_fraction, a.decay_fraction);
  o.progress = !a.no_progress;
  o.device = train::resolve_device(o.device);
  if (!a.bf16_layers.empty()) a.switches.bf16_blocks = recipe::parse_bf16_blocks(a.bf16_layers);
  const bool any_switch = a.switches.no_2d || a.switches.no_rht || a.switches.no_sr || a.switches.bf16_blocks ||
                          a.switches.switch_bf16_at >= 0 || a.switches.switch_forward_only;
  if (!a.recipe.empty()) {
    o.recipe = recipe::apply(recipe::preset(a.recipe, o.model.n_layer), a.switches);
    recipe::validate(*o.recipe, o.model.n_layer);
  } else if (any_switch) {
    throw Error("--no-2d, --no-rht, --no-sr, --bf16-layers and --switch-bf16-at modify a recipe: add --recipe NAME");
  }

  const int64_t tokens_per_step = int64_t(o.batch) * o.model.seq_len * o.grad_accum;
  std::cerr << "nvfp4 train: " << o.device << ", model " << o.model.to_json() << "\n"
            << "  " << o.model.num_params() << " parameters, " << tokens_per_step << " tokens per step ("
            << o.batch << " x " << o.model.seq_len << " x " << o.grad_accum << "), " << o.steps << " steps = "
            << tokens_per_step * o.steps << " tokens\n"
            << "  schedule " << train::describe(o.schedule) << ", AdamW betas " << o.beta1 << "/" << o.beta2
            << ", weight decay " << o.weight_decay << ", clip " << o.grad_clip << "\n"
            << "  " << (o.recipe ? recipe::describe(*o.recipe) : std::string("precision fp32 (no recipe)")) << "\n"
            << "  data " << o.data_dir << ", out " << o.out_dir << (o.resume ? " (resume)" : "") << "\n";

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
    std::cout << j.dump(2) << "\n";
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
  auto a = std::make_shared<TrainArgs>();
  CLI::App* c = app.add_subcommand("train", "Pretrain a Llama-style model on token shards from `nvfp4 data`");
  c->add_option("--data", a->o.data_dir, "Folder written by `nvfp4 data` (manifest.json + shards)")->required();
  c->add_option("--out", a->o.out_dir, "Folder for metrics.jsonl, run.json and checkpoints")->required();
  c->add_option("--device", a->o.device, "cpu | cuda | auto (cuda when a GPU is present)")->capture_default_str();
  c->add_option("--preset", a->preset, "Model size: " + train::model_preset_names())->capture_default_str();
  c->add_option("--config", a->config_file, "Model config JSON (overrides --preset)");
  c->add_option("--layers", a->layers, "Override: number of layers");
  c->add_option("--d-model", a->d_model, "Override: model width (multiple of 16)");
  c->add_option("--heads", a->heads, "Override: attention heads");
  c->add_option("--kv-heads", a->kv_heads, "Override: key/value heads (grouped-query attention)");
  c->add_option("--ffn", a->ffn, "Override: MLP width (0: 8/3 d_model rounded to 64)");
  c->add_option("--seq-len", a->seq_len, "Override: sequence length");
  c->add_option("--vocab", a->vocab, "Override: vocabulary size (>= the tokenizer's)");
  c->add_option("--recipe", a->recipe, "Precision recipe: " + recipe::preset_names() + " (default: none, FP32)");
  c->add_flag("--no-2d", a->switches.no_2d, "Recipe switch: weights in 1x16 blocks instead of 16x16");
  c->add_flag("--no-rht", a->switches.no_rht, "Recipe switch: no Hadamard transform on the wgrad operands");
  c->add_flag("--no-sr", a->switches.no_sr, "Recipe switch: round to nearest even instead of stochastic rounding");
  c->add_option("--bf16-layers", a->bf16_layers, "Recipe switch: blocks kept in BF16, first:N,last:M");
  c->add_option("--switch-bf16-at", a->switches.switch_bf16_at, "Recipe switch: BF16 from this fraction of the tokens on");
  c->add_flag("--switch-forward-only", a->switches.switch_forward_only, "Recipe switch: the late switch covers fprop only");
  c->add_option("--batch", a->o.batch, "Sequences per micro-batch")->capture_default_str();
  c->add_option("--grad-accum", a->o.grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  c->add_option("--steps", a->o.steps, "Optimizer steps")->capture_default_str();
  c->add_option("--lr", a->lr, "Peak learning rate")->capture_default_str();
  c->add_option("--warmup", a->warmup, "Warmup steps (default: 10% of --steps, at most 1000)");
  c->add_option("--schedule", a->schedule, "cosine | wsd | constant")->capture_default_str();
  c->add_option("--min-lr-frac", a->min_lr_fraction, "Final lr as a fraction of the peak")->capture_default_str();
  c->add_option("--decay-frac", a->decay_fraction, "wsd: fraction of steps in the final decay")->capture_default_str();
  c->add_option("--weight-decay", a->o.weight_decay, "AdamW decoupled weight decay (matrices)")->capture_default_str();
  c->add_option("--beta1", a->o.beta1, "AdamW beta1")->capture_default_str();
  c->add_option("--beta2", a->o.beta2, "AdamW beta2")->capture_default_str();
  c->add_option("--grad-clip", a->o.grad_clip, "Clip the global gradient norm (0: off)")->capture_default_str();
  c->add_option("--val-every", a->o.val_every, "Validate every N steps (and at the end)")->capture_default_str();
  c->add_option("--val-batches", a->o.val_batches, "Micro-batches per validation")->capture_default_str();
  c->add_option("--ckpt-every", a->o.ckpt_every, "Checkpoint every N steps (and at the end)")->capture_default_str();
  c->add_option("--keep-checkpoints", a->o.keep_checkpoints, "Checkpoints kept")->capture_default_str();
  c->add_option("--seed", a->o.seed, "Initialization seed")->capture_default_str();
  c->add_flag("--resume", a->o.resume, "Continue from the newest checkpoint in --out");
  c->add_option("--spike-factor", a->o.spike_factor, "Divergence: loss above this x its running mean")
      ->capture_default_str();
  c->add_option("--threads", a->o.threads, "CPU threads (0: all cores)")->capture_default_str();
  c->add_flag("--no-progress", a->no_progress, "No progress bar");
  c->add_flag("--json", a->json, "Print the summary as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli

// Options shared by `nvfp4 train` and `nvfp4 compare` (see train_options.hpp).
#include "train_options.hpp"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/output_paths.hpp"
#include "nvfp4/token_shards.hpp"

namespace nvfp4::cli {

namespace {

// The model of a --config file; errors name the file (a folder reads as an empty file).
model::ModelConfig model_config_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error("--config " + path + " is a folder; give a model config JSON file");
  std::ifstream f(path);
  if (!f) throw Error("--config " + path + ": cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return model::ModelConfig::from_json(ss.str());
  } catch (const Error& e) {
    throw Error("--config " + path + ": " + e.what());
  }
}

// A numeric option whose default is shown in --help and whose value must pass `check`.
template <typename T>
CLI::Option* number(CLI::App* c, const std::string& name, T& value, const std::string& help, const CLI::Validator& check) {
  return c->add_option(name, value, help)->capture_default_str()->transform(check);
}

}  // namespace

void add_train_options(CLI::App* c, TrainArgs& a, const std::string& out_help) {
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
  constexpr int64_t kMaxInt64 = std::numeric_limits<int64_t>::max();
  const double inf = std::numeric_limits<double>::infinity();
  c->add_option("--data", a.o.data_dir, "Folder written by `nvfp4 data` (manifest.json + shards)")->required();
  c->add_option("--out", a.o.out_dir, out_help)->required();
  c->add_option("--device", a.o.device, "cpu | cuda | auto (cuda when a GPU is present)")->capture_default_str();
  c->add_option("--preset", a.preset, "Model size: " + train::model_preset_names())->capture_default_str();
  c->add_option("--config", a.config_file, "Model config JSON (overrides --preset)");
  c->add_option("--layers", a.layers, "Override: number of layers")->transform(integer_in(1, 1024));
  c->add_option("--d-model", a.d_model, "Override: model width (multiple of 16)")->transform(integer_in(16, 65536));
  c->add_option("--heads", a.heads, "Override: attention heads")->transform(integer_in(1, 1024));
  c->add_option("--kv-heads", a.kv_heads, "Override: key/value heads (grouped-query attention)")
      ->transform(integer_in(1, 1024));
  c->add_option("--ffn", a.ffn, "Override: MLP width (0: 8/3 d_model rounded to 64)")->transform(integer_in(0, 1 << 20));
  c->add_option("--seq-len", a.seq_len, "Override: sequence length")->transform(integer_in(1, 1 << 20));
  c->add_option("--vocab", a.vocab, "Override: vocabulary size (>= the tokenizer's; default: the larger of the preset's and the data's)")->transform(integer_in(2, 1 << 24));
  number(c, "--batch", a.o.batch, "Sequences per micro-batch", integer_in(1, 1 << 20));
  number(c, "--grad-accum", a.o.grad_accum, "Micro-batches per optimizer step", integer_in(1, 1 << 20));
  number(c, "--steps", a.o.steps, "Optimizer steps", integer_in(1, kMaxInt64));
  number(c, "--lr", a.lr, "Peak learning rate", real_in(0, inf, true, true));
  c->add_option("--warmup", a.warmup, "Warmup steps (default: 10% of --steps, at most 1000)")
      ->transform(integer_in(0, kMaxInt64));
  c->add_option("--schedule", a.schedule, "cosine | wsd | constant")->capture_default_str();
  number(c, "--min-lr-frac", a.min_lr_fraction, "Final lr as a fraction of the peak", real_in(0, 1));
  number(c, "--decay-frac", a.decay_fraction, "wsd: fraction of steps in the final decay", real_in(0, 1));
  number(c, "--weight-decay", a.o.weight_decay, "AdamW decoupled weight decay (matrices)", real_in(0, inf, false, true));
  number(c, "--beta1", a.o.beta1, "AdamW beta1", real_in(0, 1, false, true));
  number(c, "--beta2", a.o.beta2, "AdamW beta2", real_in(0, 1, false, true));
  number(c, "--grad-clip", a.o.grad_clip, "Clip the global gradient norm (0: off)", real_in(0, inf, false, true));
  number(c, "--val-every", a.o.val_every, "Validate every N steps (and at the end)", integer_in(0, kMaxInt64));
  number(c, "--val-batches", a.o.val_batches, "Micro-batches per validation", integer_in(1, kMaxInt64));
  number(c, "--ckpt-every", a.o.ckpt_every, "Checkpoint every N steps (and at the end)", integer_in(0, kMaxInt64));
  number(c, "--keep-checkpoints", a.o.keep_checkpoints, "Checkpoints kept", integer_in(1, kMaxInt));
  number(c, "--seed", a.o.seed, "Initialization seed", any_seed());
  c->add_flag("--resume", a.o.resume, "Continue from the newest checkpoint in --out");
  number(c, "--spike-factor", a.o.spike_factor, "Divergence: loss above this x its running mean", real_in(1, inf, true, true));
  number(c, "--threads", a.o.threads, "CPU threads (0: all cores)", integer_in(0, 4096));
  c->add_flag("--no-progress", a.no_progress, "No progress bar");
}

void resolve_train_options(TrainArgs& a) {
  train::TrainOptions& o = a.o;
  io::require_output_folder("--out", o.out_dir);
  o.model = a.config_file.empty() ? train::model_preset(a.preset) : model_config_file(a.config_file);
  if (a.layers) o.model.n_layer = *a.layers;
  if (a.d_model) o.model.d_model = *a.d_model;
  if (a.heads) o.model.n_head = *a.heads;
  if (a.kv_heads) o.model.n_kv_head = *a.kv_heads;
  else if (a.heads) o.model.n_kv_head = *a.heads;
  if (a.ffn) o.model.d_ffn = *a.ffn;
  if (a.seq_len) o.model.seq_len = *a.seq_len;
  if (a.vocab) {
    o.model.vocab = *a.vocab;
    o.vocab_explicit = true;
  }
  o.model.validate();
  // The data's vocabulary sizes the model before anything is printed (its parameter count too).
  train::fit_vocab_to_data(o, io::open_token_dataset(o.data_dir).vocab_size);
  // Every token count the run prints or records must fit in 64 bits: batch x seq_len x
  // grad_accum tokens per step, times --steps.
  int64_t tokens = 0;
  if (__builtin_mul_overflow(int64_t{o.batch} * o.model.seq_len, int64_t{o.grad_accum}, &tokens) ||
      __builtin_mul_overflow(tokens, o.steps, &tokens)) {
    throw Error("--steps " + std::to_string(o.steps) + " x --batch " + std::to_string(o.batch) + " x seq_len " +
                std::to_string(o.model.seq_len) + " x --grad-accum " + std::to_string(o.grad_accum) +
                " tokens is more than a 64-bit count holds; give fewer --steps");
  }
  const int64_t warmup = a.warmup ? *a.warmup : std::min<int64_t>(o.steps / 10, 1000);
  o.schedule = train::parse_schedule(a.schedule, a.lr, warmup, o.steps, a.min_lr_fraction, a.decay_fraction);
  o.progress = !a.no_progress;
  o.device = train::resolve_device(o.device);
}

std::string describe_train_options(const train::TrainOptions& o) {
  const int64_t tokens_per_step = int64_t(o.batch) * o.model.seq_len * o.grad_accum;
  std::ostringstream s;
  s << o.device << ", model " << o.model.to_json() << "\n"
    << "  " << o.model.num_params() << " parameters, " << tokens_per_step << " tokens per step (" << o.batch << " x "
    << o.model.seq_len << " x " << o.grad_accum << "), " << o.steps << " steps = " << tokens_per_step * o.steps
    << " tokens\n"
    << "  schedule " << train::describe(o.schedule) << ", AdamW betas " << o.beta1 << "/" << o.beta2
    << ", weight decay " << o.weight_decay << ", clip " << o.grad_clip << "\n"
    << "  data " << o.data_dir << ", out " << o.out_dir << (o.resume ? " (resume)" : "") << "\n";
  return s.str();
}

}  // namespace nvfp4::cli

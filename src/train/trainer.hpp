// The training loop: data, model, AdamW, schedule, validation, metrics, checkpoints, resume,
// divergence detection. One function, `train()`, driven by TrainOptions (the CLI fills them).
//
// Determinism: the data order is the loader's (a position saved in every checkpoint), the
// optimizer state is saved whole, and every reduction runs in a fixed order, so a run resumed
// from a checkpoint continues with exactly the losses the uninterrupted run has.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <optional>

#include "nvfp4/model.hpp"
#include "nvfp4/recipe.hpp"
#include "nvfp4/tokenizer.hpp"
#include "train/schedule.hpp"

namespace nvfp4::train {

struct TrainOptions {
  std::string data_dir;          // a folder written by `nvfp4 data` (manifest.json + shards)
  std::string out_dir;           // metrics.jsonl, ckpt_*.safetensors, run.json
  std::string device = "cpu";    // cpu | cuda | auto (cuda when a GPU is present)
  model::ModelConfig model;      // vocab is checked against the data's tokenizer
  // false: a vocabulary smaller than the data's tokenizer's grows to it (a BPE dataset sizes the
  // model's embedding); true (--vocab given): it is an error instead.
  bool vocab_explicit = false;
  // The precision recipe of the linear layers; none: plain FP32 (CPU) / BF16 (CUDA) GEMMs.
  std::optional<recipe::Recipe> recipe;
  int batch = 8;                 // sequences per micro-batch (B)
  int grad_accum = 1;            // micro-batches per optimizer step
  int64_t steps = 100;           // optimizer steps of the whole run
  LrSchedule schedule;           // total_steps is set to `steps`
  double weight_decay = 0.1;     // decoupled, matrices only (ParamSpec::decay)
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;        // clip the global gradient norm to this (0: off)
  int64_t val_every = 50;        // validate every N steps and at the end (0: only at the end)
  int64_t val_batches = 8;       // micro-batches of validation data per validation
  int64_t ckpt_every = 0;        // checkpoint every N steps (0: only at the end)
  int keep_checkpoints = 2;      // older ones are pruned (the newest is never deleted)
  uint64_t seed = 1;             // parameter init and the stochastic-rounding stream
  bool resume = false;           // continue from the newest checkpoint in out_dir
  // Divergence, checked at every step from the first (docs/model.md, "Divergence"): a
  // non-finite or all-zero gradient, a loss above spike_factor x its running mean, a loss above
  // loss_ceiling_factor x max(the first loss, ln vocab) (worse than a uniform guess), or a weight
  // above weight_growth_factor x the largest initial |w| (or non-finite).
  double spike_factor = 4.0;
  double loss_ceiling_factor = 2.0;
  double weight_growth_factor = 1000.0;
  int threads = 0;               // CPU threads for the reference ops (0: all cores)
  bool progress = true;          // progress bar on stderr
};

struct StepRecord {
  int64_t step = 0;        // 1-based: optimizer steps completed
  int64_t tokens = 0;      // training tokens consumed so far
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, step_ms = 0;
  double val_loss = -1;    // < 0: not validated at this step
};

struct TrainResult {
  std::vector<StepRecord> history;  // this invocation's steps
  double unigram_val_loss = 0;      // entropy of the training data's token distribution, in nats
  std::string metrics_path, last_checkpoint;
  bool diverged = false;
  std::string divergence;           // the message, naming step, layer and tensor
  int64_t peak_rss_bytes = 0;
  int64_t device_bytes = 0;         // allocated on the GPU by the model (cuda)
  std::string device;               // where it ran
};

// Runs (or resumes) a training run. Throws nvfp4::Error for bad options or data; a divergence is
// not an exception: it returns with diverged = true. A checkpoint is written only for a state
// that passed the checks (its next step's loss and gradients, its weights; the last state's
// validation loss), so the checkpoints left are good ones, and the message names the newest.
// --resume reads the newest checkpoint; one that is damaged (unreadable, bad CRC, non-finite
// values, broken metadata) is reported on stderr as a warning and the one before it is used.
TrainResult train(const TrainOptions& options);

// Sizes options.model.vocab for data whose tokens go up to data_vocab (the tokenizer's vocabulary
// sizes the embedding and the LM head) unless --vocab was given; an explicit vocab too small for
// the data is an error naming data_dir.
void fit_vocab_to_data(TrainOptions& options, int32_t data_vocab);

// "auto" -> "cuda" when this build has CUDA and a device is present, else "cpu"; others unchanged.
std::string resolve_device(const std::string& device);

// The model and tokenizer a checkpoint holds: infer::load_checkpoint_model and
// infer::load_checkpoint_tokenizer (include/nvfp4/checkpoint_model.hpp).

// Model presets for the CLI ("tiny", "small", "gpt2-small"), vocab and seq_len included.
model::ModelConfig model_preset(const std::string& name);
std::string model_preset_names();

}  // namespace nvfp4::train

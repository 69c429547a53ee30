// Evaluation of a model under an engine (nvfp4/engine.hpp): perplexity over a sliding window,
// and — against a second engine at a reference precision — the KL divergence of the next-token
// distributions, top-1 agreement, and per-layer sensitivity (one linear layer quantized at a time).
// `nvfp4 eval` parses options and prints; PTQ (issue 16) calls the same functions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nvfp4/engine.hpp"

namespace nvfp4::infer {

// One text to score: its ids, and the bytes of the text its scored tokens (all but the first)
// spell (-1: unknown, e.g. ids without a tokenizer), and where it came from for messages (a
// file, "FILE line N"; empty: "document <index>").
struct EvalDocument {
  std::vector<int32_t> ids;
  int64_t bytes = -1;
  std::string name;
};

// A window of one document run as a fresh sequence: tokens [begin, end), of which those at
// positions [score_from, end) are scored (each predicted from the tokens before it in the window).
struct EvalWindow {
  size_t doc = 0;
  int64_t begin = 0, end = 0, score_from = 0;
};
// Sliding-window perplexity: every token after a document's first is scored exactly once. The
// first window is the first ctx tokens (scoring all but the first); each next window ends stride
// tokens further (at most ctx - 1) and starts ctx tokens before its end, so its new tokens have
// at least ctx - stride tokens of context (stride = ctx: one token of overlap, nearly disjoint
// windows — Hugging Face's disjoint windows would leave each window's first token unscored).
// ctx >= 2, 1 <= stride <= ctx. Documents of one token score nothing.
std::vector<EvalWindow> sliding_windows(std::span<const EvalDocument> docs, int ctx, int stride);

struct EvalOptions {
  int ctx = 0;     // 0: the engine's context
  int stride = 0;  // 0: ctx (ctx - 1 new tokens per window, one token of overlap)
  bool per_layer = false;
  int64_t per_layer_tokens = 512;  // scored tokens each per-layer run covers (the first windows)
  double flag_kl = 0.05;           // a per-layer KL above this is flagged
  // Called as work is done: (done, total, what) — "windows" or "layers".
  std::function<void(int64_t, int64_t, const std::string&)> progress;
};

struct LayerSensitivity {
  std::string name;       // Hugging Face module name
  double kl_mean = 0;     // vs the engine's unquantized model, only this layer quantized
  double rel_error = 0;   // ||y_q - y|| / ||y|| of this layer's output on the same tokens
  bool flagged = false;   // kl_mean > flag_kl
};

struct EvalResult {
  int64_t tokens = 0;      // scored
  int64_t windows = 0;
  double nll = 0;          // mean negative log-likelihood, nats per scored token
  double ppl = 0;          // exp(nll)
  std::optional<double> bits_per_byte;  // nll sum / ln 2 / bytes, when every document's bytes are known
  int64_t bytes = 0;
  std::optional<double> kl_mean;        // with a reference: mean KL(reference || engine), nats
  std::optional<double> top1_agree;     // fraction of scored positions whose argmax agree
  std::optional<double> reference_nll;
  std::vector<LayerSensitivity> per_layer;
  Precision per_layer_precision = Precision::fp32;
  Precision per_layer_base = Precision::fp32;
  GuardStats guard;
  double seconds = 0;
};

// Scores `docs` with `engine`; with `reference` (another engine over the same model) the same
// windows through it too. Per-layer sensitivity quantizes one of `engine`'s quantized layers at a
// time, every other layer at its device's unquantized precision (fp32 CPU, bf16 CUDA), and
// restores the engine's plan afterwards. Throws nvfp4::Error for bad options or documents (checked
// before anything runs: --per-layer with no quantized layer too), and, naming the document and
// the token, for logits that are NaN or infinite (the activations overflow): never a NaN result.
EvalResult evaluate(Engine& engine, Engine* reference, std::span<const EvalDocument> docs, const EvalOptions& o);

// Per scored position: negative log-likelihood of `target` under `logits` (V), and with
// reference logits the KL divergence KL(P_ref || P) and whether the argmaxes agree. In double,
// max-subtracted. Exposed for tests.
double token_nll(std::span<const float> logits, int32_t target);
double kl_divergence(std::span<const float> reference_logits, std::span<const float> logits);

}  // namespace nvfp4::infer

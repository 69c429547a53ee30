// Text generation with an inference engine (nvfp4/engine.hpp): prefill, then one decode step per
// token with the KV cache, a batch of sequences at once, and the latency a user sees — time to
// first token, inter-token latency percentiles, tokens per second. `nvfp4 generate` prints it;
// a server (issue 19) drives the same engine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nvfp4/engine.hpp"
#include "nvfp4/sampling.hpp"

namespace nvfp4::infer {

class HfModel;

// Percentiles of a sample of durations (seconds), by linear interpolation between the closest
// ranks (numpy's default); all zero for an empty sample.
struct Latency {
  int64_t count = 0;
  double mean = 0, p50 = 0, p95 = 0, p99 = 0, max = 0;
};
Latency latency_of(std::vector<double> seconds);

struct GenerateOptions {
  int max_tokens = 64;
  int batch = 1;                   // sequences of the same prompt; sequence i samples with seed + i
  SamplingOptions sampling;
  std::vector<std::string> stop;   // stop strings: the text ends before the first one
  bool stop_at_eos = true;         // the model's end-of-text ids end a sequence
};

struct GeneratedSequence {
  std::vector<int32_t> tokens;  // generated (the stop string's tokens included; the eos id not)
  std::string text;             // decoded, cut before a stop string
  std::string finish_reason;    // "stop" (eos or a stop string) or "length"
};

struct GenerateResult {
  std::vector<GeneratedSequence> sequences;
  int prompt_tokens = 0;
  double ttft_s = 0;           // start to the first token of every sequence (prefill + sampling)
  Latency inter_token;         // per decode step (one token for each running sequence)
  double decode_tokens_per_s = 0;  // generated tokens after the first / decode time
  double total_s = 0;
  int64_t generated_tokens = 0;
  GuardStats guard;
  int64_t memory_bytes = 0;    // the engine's
};

// Checks what does not depend on a model: max_tokens and batch >= 1, the sampling options
// (validate(SamplingOptions)), no empty stop string. Throws nvfp4::Error naming the option.
void validate(const GenerateOptions& o);

// Runs `prompt` (ids from model.encode_prompt) through `engine`, whose max_sequences must be at
// least o.batch and whose context must hold prompt + max_tokens. Throws nvfp4::Error naming the
// option that does not fit, and when the model's logits turn NaN or infinite (its activations
// overflow): a token sampled from them would be garbage.
GenerateResult generate(Engine& engine, const HfModel& model, const std::string& prompt, const GenerateOptions& o);

}  // namespace nvfp4::infer

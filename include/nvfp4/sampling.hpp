// Text generation with a model: choosing the next token from logits (temperature, top-k,
// seeded) and the generation loop. `nvfp4 sample` parses options and prints; the work is here,
// where a server or an evaluation harness can call it too.
//
// What it is: the CPU reference model run over the last seq_len tokens for every new token
// (no KV cache), and a sampler that is fully determined by its seed: the same seed, logits and
// options give the same tokens on every machine (no std:: distributions, whose output is
// implementation-defined; ties broken by the smaller token id).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "nvfp4/model.hpp"
#include "nvfp4/tokenizer.hpp"

namespace nvfp4::infer {

struct SamplingOptions {
  double temperature = 0.8;  // softmax temperature; 0: greedy (argmax)
  int top_k = 40;            // sample among the k largest logits; 0: all
  uint64_t seed = 1;         // the random stream
  double top_p = 1.0;        // nucleus: sample among the most likely tokens holding top_p of the mass; 1: off
};

// Throws nvfp4::Error naming the option (--temperature, --top-k, --top-p) when a value is out of
// range: temperature must be finite and >= 0, top_k >= 0, top_p in (0, 1].
void validate(const SamplingOptions& o);

// The index drawn from softmax(logits / temperature) restricted to the top_k largest logits and
// then to the shortest most-likely prefix holding top_p of their probability (renormalized), with
// u in [0, 1) the one uniform draw this choice uses; temperature 0 returns the argmax.
// Ties are broken by the smaller index, so the result is fully determined by its arguments.
int32_t choose_token(std::span<const float> logits, double temperature, int top_k, double u, double top_p = 1.0);

// choose_token() fed by a seeded stream: one draw per call.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o);
  int32_t next(std::span<const float> logits);
  // The next uniform draw in [0, 1): 53 random bits of a 64-bit Mersenne twister.
  double uniform();

 private:
  SamplingOptions o_;
  std::mt19937_64 rng_;
};

struct Generation {
  std::vector<int32_t> tokens;  // generated, without the context; stops before end-of-text
  double seconds = 0;           // wall time of the loop
};

// Up to max_tokens new tokens after `context`, each chosen from the model's logits of the
// last position over the first `vocab_limit` ids (the tokenizer's; the model's vocabulary may
// be padded beyond it). Stops early when `stop_token` is chosen (it is not returned).
Generation generate(model::CpuModel& m, std::vector<int32_t> context, int max_tokens, int32_t stop_token,
                    int32_t vocab_limit, const SamplingOptions& o);

struct TextGeneration {
  std::string completion;       // the generated tokens decoded: bytes, not necessarily UTF-8
  std::vector<int32_t> tokens;  // the generated tokens
  double seconds = 0;
};

// The completion of `prompt` (any bytes) by a model trained on documents that start with
// end-of-text: the context is [end-of-text] + the prompt's tokens, and generation stops at the
// next end-of-text.
TextGeneration complete(model::CpuModel& m, const io::Tokenizer& tok, const std::string& prompt, int max_tokens,
                        const SamplingOptions& o);

}  // namespace nvfp4::infer

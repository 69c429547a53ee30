// Generation with an engine (include/nvfp4/generate.hpp).
#include "nvfp4/generate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"

namespace nvfp4::infer {

Latency latency_of(std::vector<double> s) {
  Latency l;
  if (s.empty()) return l;
  std::sort(s.begin(), s.end());
  l.count = static_cast<int64_t>(s.size());
  double sum = 0;
  for (double x : s) sum += x;
  l.mean = sum / static_cast<double>(s.size());
  auto pct = [&](double p) {
    const double r = p / 100.0 * static_cast<double>(s.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(r)), hi = std::min(lo + 1, s.size() - 1);
    return s[lo] + (s[hi] - s[lo]) * (r - static_cast<double>(lo));
  };
  l.p50 = pct(50), l.p95 = pct(95), l.p99 = pct(99), l.max = s.back();
  return l;
}

void validate(const GenerateOptions& o) {
  if (o.max_tokens < 1) throw Error("--max-tokens " + std::to_string(o.max_tokens) + " must be >= 1");
  if (o.batch < 1) throw Error("--batch " + std::to_string(o.batch) + " must be >= 1");
  validate(o.sampling);
  for (const auto& s : o.stop) {
    if (s.empty()) throw Error("--stop: an empty stop string would end every generation at once");
  }
}

GenerateResult generate(Engine& engine, const HfModel& model, const std::string& prompt, const GenerateOptions& o) {
  validate(o);
  if (o.batch > engine.max_sequences()) {
    throw Error("--batch " + std::to_string(o.batch) + " must be in [1, " + std::to_string(engine.max_sequences()) + "]");
  }
  const std::vector<int32_t> ids = model.encode_prompt(prompt);
  if (ids.empty()) throw Error("generate: the prompt has no tokens");
  if (static_cast<int64_t>(ids.size()) + o.max_tokens > engine.max_context()) {
    throw Error("generate: the prompt's " + std::to_string(ids.size()) + " tokens + --max-tokens " +
                std::to_string(o.max_tokens) + " exceed the context of " + std::to_string(engine.max_context()) +
                " tokens");
  }
  const std::vector<int32_t> eos = o.stop_at_eos ? model.eos_ids() : std::vector<int32_t>{};
  const int B = o.batch;
  const int32_t V = engine.config().vocab;
  const int32_t vocab_limit = model.has_tokenizer() ? std::min(V, model.tokenizer().vocab_size()) : V;
  std::vector<Sampler> samplers;
  for (int i = 0; i < B; ++i) {
    SamplingOptions s = o.sampling;
    s.seed += static_cast<uint64_t>(i);
    samplers.emplace_back(s);
  }
  for (int i = 0; i < B; ++i) engine.reset(i);
  engine.reset_guard_stats();

  GenerateResult r;
  r.prompt_tokens = static_cast<int>(ids.size());
  r.sequences.resize(static_cast<size_t>(B));
  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<int32_t> next(static_cast<size_t>(B));
  std::vector<float> logits;
  std::vector<SeqChunk> chunks;
  std::vector<int> running;  // slot of each chunk
  std::vector<bool> cut(static_cast<size_t>(B), false);  // text ended by a stop string

  // Takes the token sampled for slot i: ends the sequence on eos, a stop string or the length.
  auto take = [&](int i, int32_t t) {
    GeneratedSequence& s = r.sequences[i];
    if (std::find(eos.begin(), eos.end(), t) != eos.end()) {
      done[i] = true;
      s.finish_reason = "stop";
      return;
    }
    s.tokens.push_back(t);
    ++r.generated_tokens;
    // The text so far only when a stop string may end it (decoding is off the decode step's path
    // otherwise: every sequence is decoded once at the end).
    if (!o.stop.empty() && model.has_tokenizer()) {
      s.text = model.tokenizer().decode(s.tokens);
      for (const auto& stop : o.stop) {
        const size_t at = s.text.find(stop);
        if (at != std::string::npos) {
          s.text.resize(at);
          cut[i] = true;
          done[i] = true;
          s.finish_reason = "stop";
          return;
        }
      }
    }
    if (static_cast<int>(s.tokens.size()) == o.max_tokens) {
      done[i] = true;
      s.finish_reason = "length";
    }
  };
  auto sample_all = [&]() {
    for (size_t c = 0; c < running.size(); ++c) {
      const int i = running[c];
      const std::span<const float> row(logits.data() + c * V, static_cast<size_t>(vocab_limit));
      if (!std::all_of(row.begin(), row.end(), [](float x) { return std::isfinite(x); })) {
        throw Error("generate: the model's logits for generated token " + std::to_string(r.sequences[i].tokens.size()) +
                    " of sequence " + std::to_string(i) + " are NaN or infinite: its activations overflow (try another "
                    "--precision, keep the overflowing layers unquantized with --keep-bf16, or check the model's weights)");
      }
      take(i, samplers[i].next(row));
    }
  };

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  for (int i = 0; i < B; ++i) {
    chunks.push_back({i, ids, false});
    running.push_back(i);
  }
  engine.forward(chunks, logits);
  sample_all();
  const auto t1 = clock::now();
  r.ttft_s = std::chrono::duration<double>(t1 - t0).count();
  std::vector<double> steps;
  int64_t decoded = 0;
  for (;;) {
    chunks.clear();
    running.clear();
    for (int i = 0; i < B; ++i) {
      if (done[i]) continue;
      next[i] = r.sequences[i].tokens.back();
      chunks.push_back({i, std::span<const int32_t>(&next[i], 1), false});
      running.push_back(i);
    }
    if (chunks.empty()) break;
    const auto s0 = clock::now();
    engine.forward(chunks, logits);
    sample_all();
    steps.push_back(std::chrono::duration<double>(clock::now() - s0).count());
    decoded += static_cast<int64_t>(running.size());
  }
  r.total_s = std::chrono::duration<double>(clock::now() - t0).count();
  for (int i = 0; i < B; ++i) {
    if (!cut[i] && model.has_tokenizer()) r.sequences[i].text = model.tokenizer().decode(r.sequences[i].tokens);
  }
  r.inter_token = latency_of(steps);
  double decode_s = 0;
  for (double s : steps) decode_s += s;
  r.decode_tokens_per_s = decode_s > 0 ? static_cast<double>(decoded) / decode_s : 0.0;
  r.guard = engine.guard_stats();
  r.memory_bytes = engine.memory_bytes();
  return r;
}

}  // namespace nvfp4::infer

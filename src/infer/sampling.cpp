#include "nvfp4/sampling.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "nvfp4/error.hpp"

namespace nvfp4::infer {

void validate(const SamplingOptions& o) {
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) {
    throw Error("--temperature " + std::to_string(o.temperature) + " must be a finite number >= 0 (0: greedy)");
  }
  if (o.top_k < 0) throw Error("--top-k " + std::to_string(o.top_k) + " must be >= 0 (0: all tokens)");
  if (!(o.top_p > 0 && o.top_p <= 1)) throw Error("--top-p " + std::to_string(o.top_p) + " must be in (0, 1] (1: off)");
}

int32_t choose_token(std::span<const float> logits, double temperature, int top_k, double u, double top_p) {
  if (logits.empty()) throw Error("choose_token: no logits to choose from");
  std::vector<int32_t> idx(logits.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
  const size_t k = top_k > 0 ? std::min<size_t>(size_t(top_k), idx.size()) : idx.size();
  // Ties broken by the smaller id: the order is fully determined.
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  if (temperature <= 0) return idx[0];
  std::vector<double> p(k);
  double sum = 0;
  for (size_t i = 0; i < k; ++i) sum += p[i] = std::exp((logits[idx[i]] - logits[idx[0]]) / temperature);
  // Nucleus: the shortest prefix (by probability, descending) holding top_p of the mass.
  size_t keep = k;
  if (top_p < 1) {
    double mass = 0;
    for (size_t i = 0; i < k; ++i) {
      mass += p[i] / sum;
      if (mass >= top_p) {
        keep = i + 1;
        break;
      }
    }
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += p[i];
  }
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i] / sum;
    if (u < acc) return idx[i];
  }
  return idx[keep - 1];
}

Sampler::Sampler(const SamplingOptions& o) : o_(o), rng_(o.seed) { validate(o); }

double Sampler::uniform() {
  // NOTE: 53 random bits -> [0, 1) by hand: std::uniform_real_distribution is implementation-defined.
  return static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0);
}

int32_t Sampler::next(std::span<const float> logits) {
  // One draw per token even when greedy, so a stream's n-th draw belongs to its n-th token.
  const double u = uniform();
  return choose_token(logits, o_.temperature, o_.top_k, u, o_.top_p);
}

Generation generate(model::CpuModel& m, std::vector<int32_t> seq, int max_tokens, int32_t stop_token,
                    int32_t vocab_limit, const SamplingOptions& o) {
  if (max_tokens < 1) throw Error("--tokens " + std::to_string(max_tokens) + " must be >= 1");
  if (seq.empty()) throw Error("generate: the context is empty; it needs at least one token");
  Sampler sampler(o);
  const int T = m.config().seq_len, V = m.config().vocab;
  const size_t context_len = seq.size();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < max_tokens; ++i) {
    const size_t start = seq.size() > size_t(T) ? seq.size() - T : 0;
    const int n = static_cast<int>(seq.size() - start);
    m.forward(seq.data() + start, nullptr, 1, n);
    const auto logits = m.logits().subspan(size_t(n - 1) * V, V);  // (V): the last position's
    const int32_t next = sampler.next(logits.subspan(0, std::min<int32_t>(V, vocab_limit)));
    if (next == stop_token) break;
    seq.push_back(next);
  }
  Generation g;
  g.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g.tokens.assign(seq.begin() + static_cast<std::ptrdiff_t>(context_len), seq.end());
  return g;
}

TextGeneration complete(model::CpuModel& m, const io::Tokenizer& tok, const std::string& prompt, int max_tokens,
                        const SamplingOptions& o) {
  std::vector<int32_t> context = {tok.eot_token()};  // documents start with end-of-text in training
  tok.encode_append(prompt, context);
  Generation g = generate(m, std::move(context), max_tokens, tok.eot_token(), tok.vocab_size(), o);
  TextGeneration t;
  t.completion = tok.decode(g.tokens);
  t.tokens = std::move(g.tokens);
  t.seconds = g.seconds;
  return t;
}

}  // namespace nvfp4::infer

// nvfp4 sample CKPT --prompt TEXT: generate text with a trained checkpoint (CPU reference
// model, no KV cache: each new token runs the model over the last seq_len tokens).
#include <chrono>
#include <cmath>
#include <iostream>
#include <random>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/tokenizer.hpp"
#include "train/trainer.hpp"

namespace nvfp4::cli {

namespace {

struct SampleArgs {
  std::string checkpoint, prompt;
  int tokens = 200;
  double temperature = 0.8;
  int top_k = 40;
  uint64_t seed = 1;
  bool json = false;
};

// Index drawn from softmax(logits / temperature) over the top_k largest logits; temperature 0
// is greedy. u in [0, 1) is the one uniform draw this choice uses.
int32_t choose(std::span<const float> logits, double temperature, int top_k, double u) {
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
  double acc = 0;
  for (size_t i = 0; i < k; ++i) {
    acc += p[i] / sum;
    if (u < acc) return idx[i];
  }
  return idx[k - 1];
}

void run(const SampleArgs& a) {
  if (a.tokens < 1) throw Error("--tokens must be >= 1");
  if (a.temperature < 0) throw Error("--temperature must be >= 0 (0: greedy)");
  model::CpuModel m = train::load_checkpoint_model(a.checkpoint);
  const auto tok = train::load_checkpoint_tokenizer(a.checkpoint);
  std::vector<int32_t> seq = {tok->eot_token()};  // documents start with end-of-text in training
  tok->encode_append(a.prompt, seq);
  const size_t prompt_len = seq.size();
  const int T = m.config().seq_len, V = m.config().vocab;
  std::mt19937_64 rng(a.seed);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < a.tokens; ++i) {
    const size_t start = seq.size() > size_t(T) ? seq.size() - T : 0;
    const int n = static_cast<int>(seq.size() - start);
    m.forward(seq.data() + start, nullptr, 1, n);
    const auto logits = m.logits().subspan(size_t(n - 1) * V, V);
    // NOTE: 53 random bits -> [0, 1) by hand: std::uniform_real_distribution is implementation-defined.
    const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
    const int32_t next = choose(logits.subspan(0, std::min<int>(V, tok->vocab_size())), a.temperature, a.top_k, u);
    if (next == tok->eot_token()) break;
    seq.push_back(next);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<int32_t> generated(seq.begin() + prompt_len, seq.end());
  const std::string text = tok->decode(generated);
  if (a.json) {
    nlohmann::ordered_json j;
    j["prompt"] = a.prompt;
    j["completion"] = text;
    j["tokens"] = generated.size();
    j["tokens_per_s"] = generated.size() / secs;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << a.prompt << text << "\n";
    std::cerr << "(" << generated.size() << " tokens, " << fixed(generated.size() / secs, 1) << " tokens/s)\n";
  }
}

}  // namespace

void register_sample(CLI::App& app) {
  auto a = std::make_shared<SampleArgs>();
  CLI::App* c = app.add_subcommand("sample", "Generate text with a checkpoint from `nvfp4 train`");
  c->add_option("checkpoint", a->checkpoint, "ckpt_*.safetensors written by nvfp4 train")->required();
  c->add_option("--prompt", a->prompt, "Text to continue")->capture_default_str();
  c->add_option("--tokens", a->tokens, "Tokens to generate at most (stops at end-of-text)")->capture_default_str();
  c->add_option("--temperature", a->temperature, "Softmax temperature (0: greedy)")->capture_default_str();
  c->add_option("--top-k", a->top_k, "Sample among the k most likely tokens (0: all)")->capture_default_str();
  c->add_option("--seed", a->seed, "Sampling seed")->capture_default_str();
  c->add_flag("--json", a->json, "Print the result as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli

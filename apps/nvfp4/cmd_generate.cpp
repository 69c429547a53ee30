// nvfp4 generate MODEL --prompt TEXT: text from a Hugging Face model folder with the inference
// engine (nvfp4/engine.hpp, nvfp4/generate.hpp), and the latency a user sees. This file parses
// options and prints.
#include <sys/resource.h>

#include <algorithm>
#include <iostream>
#include <limits>

#include "common.hpp"
#include "infer_options.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/generate.hpp"

namespace nvfp4::cli {

namespace {

struct GenerateArgs {
  EngineArgs engine;
  std::string prompt;
  infer::GenerateOptions o;
  bool max_tokens_given = false;  // else the default, cut to what the context leaves after the prompt
  bool json = false;
};

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // Linux: KiB
}

void run(GenerateArgs& a) {
  // Options first: a typo is an error before a large model loads.
  infer::validate(a.o);
  const std::string device = engine_device(a.engine);
  engine_precision(a.engine, device);
  const infer::HfModel model = infer::HfModel::open(a.engine.model);
  const int prompt_len = static_cast<int>(model.encode_prompt(a.prompt).size());
  const int limit = model.config().seq_len, room = limit - prompt_len;
  if (room < 1) {
    throw Error("--prompt: its " + std::to_string(prompt_len) + " tokens leave no room to generate within the model's " +
                "max_position_embeddings of " + std::to_string(limit) + " (shorten the prompt)");
  }
  if (!a.max_tokens_given) {
    a.o.max_tokens = std::min(a.o.max_tokens, room);
  } else if (a.o.max_tokens > room) {
    throw Error("--max-tokens " + std::to_string(a.o.max_tokens) + ": the prompt's " + std::to_string(prompt_len) +
                " tokens + " + std::to_string(a.o.max_tokens) + " exceed the model's max_position_embeddings of " +
                std::to_string(limit) + "; give --max-tokens " + std::to_string(room) + " or less");
  }
  const auto engine =
      infer::make_engine(model, engine_options(a.engine, device, a.o.batch, prompt_len + a.o.max_tokens), device);
  const infer::GenerateResult r = infer::generate(*engine, model, a.prompt, a.o);
  const double ms = 1000.0;
  if (a.json) {
    nlohmann::ordered_json j;
    j["model"] = a.engine.model;
    j["device"] = device;
    j["precision"] = run_precision_text(*engine, model, engine_precision(a.engine, device));
    j["prompt"] = a.prompt;
    j["prompt_tokens"] = r.prompt_tokens;
    auto seqs = nlohmann::ordered_json::array();
    for (const auto& s : r.sequences) {
      seqs.push_back({{"text", s.text}, {"tokens", s.tokens.size()}, {"finish_reason", s.finish_reason}});
    }
    j["completions"] = seqs;
    j["generated_tokens"] = r.generated_tokens;
    j["ttft_ms"] = r.ttft_s * ms;
    j["itl_ms"] = {{"p50", r.inter_token.p50 * ms}, {"p95", r.inter_token.p95 * ms}, {"p99", r.inter_token.p99 * ms},
                   {"mean", r.inter_token.mean * ms}, {"steps", r.inter_token.count}};
    j["decode_tokens_per_s"] = r.decode_tokens_per_s;
    j["total_s"] = r.total_s;
    j["engine_memory_bytes"] = r.memory_bytes;
    j["peak_rss_bytes"] = peak_rss_bytes();
    j["fallback_rate"] = r.guard.rate();
    j["fallback_rows"] = r.guard.total_fallbacks();
    std::cout << json_text(j) << "\n";
    return;
  }
  for (size_t i = 0; i < r.sequences.size(); ++i) {
    if (r.sequences.size() > 1) std::cout << "--- sequence " << i << " (" << r.sequences[i].finish_reason << ")\n";
    std::cout << a.prompt << r.sequences[i].text << "\n";
  }
  std::cerr << r.prompt_tokens << " prompt tokens, " << r.generated_tokens << " generated on " << device << " ("
            << run_precision_text(*engine, model, engine_precision(a.engine, device)) << "): TTFT " << fixed(r.ttft_s * ms, 1)
            << " ms, inter-token p50 " << fixed(r.inter_token.p50 * ms, 2) << " / p95 " << fixed(r.inter_token.p95 * ms, 2)
            << " / p99 " << fixed(r.inter_token.p99 * ms, 2) << " ms, " << fixed(r.decode_tokens_per_s, 1)
            << " tokens/s, engine memory " << human_bytes(static_cast<double>(r.memory_bytes)) << ", peak RSS "
            << human_bytes(static_cast<double>(peak_rss_bytes()));
  if (r.guard.total_rows() > 0) std::cerr << ", fallback rate " << general(r.guard.rate() * 100, 4) << " %";
  std::cerr << "\n";
}

}  // namespace

void register_generate(CLI::App& app) {
  const auto [c, a] = add_command<GenerateArgs>(app, "generate", "Generate text with a Hugging Face model folder");
  add_engine_options(c, a->engine);
  c->add_option("--prompt", a->prompt, "Text to continue")->required();
  c->add_option("--max-tokens", a->o.max_tokens,
                "Tokens to generate at most (by default no more than max_position_embeddings leaves after the prompt)")
      ->capture_default_str()
      ->transform(integer_in(1, 1 << 20));
  c->add_option("--batch", a->o.batch, "Sequences of the prompt run together (sequence i samples with seed + i)")
      ->capture_default_str()
      ->transform(integer_in(1, 4096));
  c->add_option("--temperature", a->o.sampling.temperature, "Softmax temperature (0: greedy)")
      ->capture_default_str()
      ->transform(real_in(0, std::numeric_limits<double>::infinity(), false, true));
  c->add_option("--top-k", a->o.sampling.top_k, "Sample among the k most likely tokens (0: all)")
      ->capture_default_str()
      ->transform(integer_in(0, std::numeric_limits<int>::max()));
  c->add_option("--top-p", a->o.sampling.top_p, "Nucleus: the most likely tokens holding this much probability (1: off)")
      ->capture_default_str()
      ->transform(real_in(0, 1, true, false));
  c->add_option("--seed", a->o.sampling.seed, "Sampling seed")->capture_default_str()->transform(any_seed());
  c->add_option("--stop", a->o.stop, "Stop strings: the text ends before the first one");
  c->add_flag("--json", a->json, "Print the result as JSON");
  c->callback([a, c] {
    a->max_tokens_given = c->count("--max-tokens") > 0;
    run(*a);
  });
}

}  // namespace nvfp4::cli

// nvfp4 sample CKPT --prompt TEXT: generate text with a trained checkpoint. The sampler and the
// generation loop are infer::complete() (nvfp4/sampling.hpp); this file parses options and
// prints. Text is bytes: a byte-level model may stop inside a UTF-8 sequence, and a prompt
// need not be UTF-8. Without --json the bytes are written as they are; in --json, sequences
// that are not UTF-8 become U+FFFD.
#include <iostream>
#include <limits>

#include "common.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/sampling.hpp"
#include "nvfp4/tokenizer.hpp"
#include "nvfp4/checkpoint_model.hpp"

namespace nvfp4::cli {

namespace {

struct SampleArgs {
  std::string checkpoint, prompt;
  int tokens = 200;
  infer::SamplingOptions sampling;
  bool json = false;
};

void run(const SampleArgs& a) {
  infer::validate(a.sampling);
  model::CpuModel m = infer::load_checkpoint_model(a.checkpoint);
  const auto tok = infer::load_checkpoint_tokenizer(a.checkpoint);
  const infer::TextGeneration g = infer::complete(m, *tok, a.prompt, a.tokens, a.sampling);
  if (a.json) {
    nlohmann::ordered_json j;
    j["prompt"] = a.prompt;
    j["completion"] = g.completion;
    j["tokens"] = g.tokens.size();
    j["tokens_per_s"] = g.tokens.size() / g.seconds;
    std::cout << json_text(j) << "\n";
  } else {
    std::cout << a.prompt << g.completion << "\n";
    std::cerr << "(" << g.tokens.size() << " tokens, " << fixed(g.tokens.size() / g.seconds, 1) << " tokens/s)\n";
  }
}

}  // namespace

void register_sample(CLI::App& app) {
  const auto [c, a] = add_command<SampleArgs>(app, "sample", "Generate text with a checkpoint from `nvfp4 train`");
  c->add_option("checkpoint", a->checkpoint, "ckpt_*.safetensors written by nvfp4 train")->required();
  c->add_option("--prompt", a->prompt, "Text to continue (any bytes)")->capture_default_str();
  c->add_option("--tokens", a->tokens, "Tokens to generate at most (stops at end-of-text)")
      ->capture_default_str()
      ->transform(integer_in(1, 1 << 20));
  c->add_option("--temperature", a->sampling.temperature, "Softmax temperature (0: greedy)")
      ->capture_default_str()
      ->transform(real_in(0, std::numeric_limits<double>::infinity(), false, true));
  c->add_option("--top-k", a->sampling.top_k, "Sample among the k most likely tokens (0: all)")
      ->capture_default_str()
      ->transform(integer_in(0, std::numeric_limits<int>::max()));
  c->add_option("--seed", a->sampling.seed, "Sampling seed")->capture_default_str()->transform(any_seed());
  c->add_flag("--json", a->json, "Print the result as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli

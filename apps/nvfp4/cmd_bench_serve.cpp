// nvfp4 bench-serve URL: load on an OpenAI-compatible server (nvfp4/bench_serve.hpp) and the
// latency and throughput it gives. This file parses options and prints.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "common.hpp"
#include "nvfp4/bench_serve.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::cli {

namespace {

struct BenchServeArgs {
  serve::BenchServeOptions o;
  bool json = false;
};

// Requests done on stderr: one rewritten line on a terminal, a line every few seconds in a log.
class Progress {
 public:
  void operator()(int64_t done, int64_t failed, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    const bool end = done == total;
    if (!end && std::chrono::duration<double>(now - last_).count() < (tty_ ? 0.2 : 5.0)) return;
    last_ = now;
    std::fprintf(stderr, "%srequests: %lld/%lld done, %lld failed, %.1f s%s", tty_ ? "\r" : "",
                 static_cast<long long>(done), static_cast<long long>(total), static_cast<long long>(failed),
                 std::chrono::duration<double>(now - start_).count(), tty_ && !end ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool tty_ = ::isatty(2) != 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_ = start_;
};

void print_table(const serve::BenchServeResult& r) {
  std::cout << "bench-serve " << r.base_url << "  model " << r.model << "  " << r.endpoint << "\n"
            << "concurrency " << r.concurrency << ", " << r.requests << " requests of " << r.prompt_tokens
            << (r.chat ? " prompt words" : " prompt tokens") << " -> " << r.output_tokens << " output tokens\n\n";
  if (r.failed > 0) {
    std::cout << "FAILED: " << r.failed << " of " << r.requests << " requests\n";
    for (const auto& e : r.errors) std::cout << "  " << e.count << " x " << e.message << "\n";
    if (r.other_reasons > 0) std::cout << "  " << r.other_reasons << " x other reasons\n";
    std::cout << "\n";
  }
  Table t({"", "value"});
  t.add({"requests ok", std::to_string(r.completed)});
  t.add({"requests failed", std::to_string(r.failed)});
  t.add({"duration (s)", fixed(r.duration_s, 2)});
  t.add({"requests/s", fixed(r.request_throughput, 2)});
  t.add({"output tokens/s", fixed(r.output_tokens_per_s, 1)});
  t.add({"total tokens/s", fixed(r.total_tokens_per_s, 1)});
  t.add({"prompt tokens", std::to_string(r.total_prompt_tokens)});
  t.add({"output tokens", std::to_string(r.total_output_tokens)});
  t.print();
  std::cout << "\n";
  Table l({"latency (ms)", "p50", "p95", "p99", "mean", "count"});
  for (const auto& [name, lat] : {std::pair{"TTFT", r.ttft}, std::pair{"ITL", r.itl}, std::pair{"E2E", r.e2e}}) {
    l.add({name, fixed(lat.p50 * 1e3, 2), fixed(lat.p95 * 1e3, 2), fixed(lat.p99 * 1e3, 2), fixed(lat.mean * 1e3, 2),
           std::to_string(lat.count)});
  }
  l.print();
  if (r.without_usage > 0) {
    std::cout << "note: " << r.without_usage << " completed requests had no usage chunk; their output is counted "
              << "as events with text\n";
  }
  if (r.other_output_length > 0) {
    std::cout << "note: " << r.other_output_length << " completed requests did not generate exactly "
              << r.output_tokens << " tokens (does the server honour min_tokens and ignore_eos?)\n";
  }
}

void run(BenchServeArgs& a) {
  Progress progress;
  a.o.progress = [&](int64_t done, int64_t failed, int64_t total) { progress(done, failed, total); };
  const serve::BenchServeResult r = serve::bench_serve(a.o);
  if (a.json) {
    std::cout << json_text(serve::to_json(r)) << "\n";
  } else {
    print_table(r);
  }
  std::cout.flush();
  if (r.completed == 0) {
    throw Error("bench-serve: all " + std::to_string(r.failed) + " requests failed" +
                (r.errors.empty() ? std::string() : "; the most frequent reason: " + r.errors.front().message));
  }
}

}  // namespace

void register_bench_serve(CLI::App& app) {
  const auto [c, a] = add_command<BenchServeArgs>(
      app, "bench-serve", "Measure an OpenAI-compatible server: TTFT, inter-token and end-to-end latency, throughput");
  c->add_option("URL", a->o.url, "The server, http://HOST:PORT (a trailing /v1 is accepted; https is not supported)")
      ->required();
  c->add_option("--concurrency", a->o.concurrency, "Clients sending at once, each its next request when its last ends")
      ->capture_default_str()
      ->transform(integer_in(1, 4096));
  c->add_option("--requests", a->o.requests, "Requests in all")->capture_default_str()->transform(integer_in(1, 100'000'000));
  c->add_option("--prompt-tokens", a->o.prompt_tokens, "Prompt length in tokens (sent as token ids; --chat: words)")
      ->capture_default_str()
      ->transform(integer_in(1, 100'000'000));
  c->add_option("--output-tokens", a->o.output_tokens,
                "Tokens each request generates (max_tokens = min_tokens, ignore_eos)")
      ->capture_default_str()
      ->transform(integer_in(1, 100'000'000));
  c->add_option("--vocab", a->o.vocab, "Prompt token ids are drawn uniformly from [0, vocab)")
      ->capture_default_str()
      ->transform(integer_in(1, 2147483647));
  c->add_option("--model", a->o.model, "Model name to request (default: the first one GET /v1/models lists)");
  c->add_option("--api-key", a->o.api_key, "Sent as Authorization: Bearer KEY");
  c->add_flag("--chat", a->o.chat, "POST /v1/chat/completions with a text prompt of 'tok' words instead");
  c->add_option("--seed", a->o.seed, "Seed of the prompts' token ids")->capture_default_str()->transform(any_seed());
  c->add_option("--timeout", a->o.timeout_s, "Seconds a request may take before it counts as failed")
      ->capture_default_str()
      ->transform(real_in(0, 1e7, true, false));
  c->add_flag("--json", a->json, "Print the result as JSON");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli

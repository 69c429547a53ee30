// A load generator for OpenAI-compatible servers (`nvfp4 serve`, vLLM, ...): `concurrency`
// clients send `requests` streaming completions of exactly `prompt_tokens` prompt tokens and
// `output_tokens` generated ones, and it reports what a user of the server sees — time to first
// token, inter-token latency, end-to-end latency (percentiles) — and the throughput of the run.
// `nvfp4 bench-serve` prints it; docs/serve.md says what is sent and how each number is taken.
//
// What it is not: a traffic model. Every client sends its next request the moment its last one
// ends (a closed loop; no Poisson arrivals, no request-rate target) and every request has the
// same shape. It contacts only the host of `url`, follows no redirects, and stops after
// `requests` requests; a failed request is counted with its reason, never retried.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "nvfp4/generate.hpp"  // infer::Latency

namespace nvfp4::serve {

struct BenchServeOptions {
  // "http://host[:port]" with an optional path prefix; a trailing "/v1" or "/" is accepted
  // ("http://127.0.0.1:8000/v1/"). https is an error: the HTTP client here speaks plain HTTP only.
  std::string url;
  int concurrency = 1;      // clients sending at once, each one request at a time (at most `requests` run)
  int requests = 16;        // requests in all
  // Prompt length, exact: the prompt goes to /v1/completions as a list of token ids, drawn
  // uniformly from [0, vocab) (every byte-level tokenizer has at least 256 ids). Request i's
  // prompt depends only on (seed, i): the same run sends the same prompts.
  int prompt_tokens = 128;
  int vocab = 256;
  // Tokens generated per request, exactly: sent as max_tokens and min_tokens with ignore_eos
  // (vLLM's extensions, which `nvfp4 serve` honours too), greedy (temperature 0).
  int output_tokens = 128;
  std::string model;        // empty: the first id GET /v1/models lists
  std::string api_key;      // sent as "Authorization: Bearer <key>" when not empty
  // POST /v1/chat/completions instead, with a text prompt of `prompt_tokens` words "tok" (its
  // token count is approximate: the server's tokenizer and chat template decide it).
  bool chat = false;
  uint64_t seed = 1;
  double timeout_s = 600;   // per request, from sending it to its last byte
  // Called after each request ends, from the clients' threads but never two at once.
  std::function<void(int64_t done, int64_t failed, int64_t total)> progress;
};

// A reason requests failed and how many failed for it.
struct BenchServeError {
  std::string message;  // "HTTP 500: <the server's error message>", "timed out after 600 s", ...
  int64_t count = 0;
};

struct BenchServeResult {
  // The run, as resolved: the API root the requests went to ("http://127.0.0.1:8000/v1"), the
  // model, the endpoint path and the options echoed.
  std::string base_url, model, endpoint;
  int concurrency = 0, requests = 0, prompt_tokens = 0, output_tokens = 0, vocab = 0;
  bool chat = false;
  uint64_t seed = 0;

  int64_t completed = 0, failed = 0;
  std::vector<BenchServeError> errors;  // the 5 most frequent reasons, most frequent first
  int64_t other_reasons = 0;            // failures whose reason is not among those 5

  double duration_s = 0;           // from the first request sent to the last one ended
  double request_throughput = 0;   // completed requests / duration_s
  double output_tokens_per_s = 0;  // total_output_tokens / duration_s
  double total_tokens_per_s = 0;   // (total_prompt_tokens + total_output_tokens) / duration_s
  // Over completed requests, as the server's usage chunk reports them. A request whose stream
  // has no usage counts its content events as output and the prompt it was sent (chat: the
  // word count) as prompt; `without_usage` says how many did.
  int64_t total_prompt_tokens = 0, total_output_tokens = 0;
  int64_t without_usage = 0;
  // Completed requests that generated another number of tokens than output_tokens (a server
  // that ignores min_tokens / ignore_eos stops at its end-of-text token).
  int64_t other_output_length = 0;

  // Seconds, over completed requests. ttft: sending to the first event with text; itl: the gaps
  // between successive events with text, pooled over requests (one gap per event: a server
  // that sends several tokens per event shows fewer, longer gaps); e2e: sending to [DONE].
  infer::Latency ttft, itl, e2e;
};

// Checks the options (an nvfp4::Error naming the option: --concurrency, --requests, ...) and the
// URL, asks GET /v1/models for the model (an nvfp4::Error naming the URL and what to do when the
// server cannot be reached or does not answer 200), then runs the requests. Failed requests are
// counted in the result, never thrown.
BenchServeResult bench_serve(const BenchServeOptions& o);

// The result for --json: latencies in milliseconds ("ttft_ms": {p50, p95, p99, mean, max, count}).
nlohmann::ordered_json to_json(const BenchServeResult& r);

}  // namespace nvfp4::serve

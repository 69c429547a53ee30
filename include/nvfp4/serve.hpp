// `nvfp4 serve`: an OpenAI-compatible HTTP server over the inference engine with continuous
// batching (nvfp4/batcher.hpp), as vLLM's `vllm serve` exposes one:
//   GET  /v1/models                the one model served
//   POST /v1/completions           prompt as text or token ids; stream (server-sent events) or not
//   POST /v1/chat/completions      messages rendered with the model's chat template
//   GET  /health                   200 while serving, 503 while shutting down
//   GET  /metrics                  Prometheus text: TTFT, inter-token and end-to-end latency
//                                  histograms, tokens, running/waiting requests, KV cache use,
//                                  tokens/s, the w4a4 outlier guard's fallback rate (per layer too)
// and one JSON line per request on the log stream.
//
// Safety: binds 127.0.0.1 unless told otherwise; with an API key, /v1/* needs
// `Authorization: Bearer KEY` (401 otherwise); bodies over max_body_bytes get 413; malformed JSON,
// wrong types and out-of-range fields get 400 naming the field; a prompt beyond the context gets
// 400; a full waiting queue 429; shutting down 503 — never a crash. A streaming client that goes
// away cancels its request (its slot and KV blocks are freed at the next engine step).
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "nvfp4/engine.hpp"

namespace nvfp4::infer {
class HfModel;
}

namespace nvfp4::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                    // 0: any free port (start() returns it)
  std::string model_name;             // the id /v1/models lists and requests may name; empty: the folder's name
  std::string api_key;                // empty: no authentication
  std::string chat_template_file;     // a Jinja file replacing tokenizer_config.json's chat_template
  int max_queue = 256;                // waiting requests; more get 429
  int max_step_tokens = 2048;         // tokens per engine step (decodes + prefill chunks)
  int64_t max_body_bytes = 8 << 20;   // request bodies; larger get 413
  double request_timeout_s = 600;     // per request, queueing included
  int http_threads = 0;               // 0: max sequences + max_queue + 8, at most 1024
  std::ostream* log = nullptr;        // one JSON line per request; nullptr: none
};

// Canary A/B (`--canary`): a second model — another precision or checkpoint of the same model,
// with the same vocabulary — shadows a fraction of the traffic. Each chosen request that finishes
// normally is run again on the canary, teacher-forced over the tokens the primary returned (so
// both models see the same contexts): the canary's greedy choice at each position is compared
// with the primary's token (top-1 agreement), the next-token distributions of the first
// `kl_tokens` positions give KL(primary || canary), and the canary's time over the primary's (both
// without queueing) the latency ratio. Reported in /metrics (nvfp4_canary_*) and one JSON log line
// per comparison. The client's response never waits for the canary.
struct CanaryOptions {
  const infer::HfModel* model = nullptr;  // must outlive the server
  infer::Engine* engine = nullptr;        // must outlive the server
  std::string name;                       // how logs and metrics name it
  double fraction = 0.1;                  // of the requests, chosen evenly (every 1/fraction-th)
  int kl_tokens = 16;                     // positions whose distributions are compared
};

class Server {
 public:
  // `model` and `engine` must outlive the server. Checks the options and renders a one-message
  // conversation with the chat template (when the model has one): a template that cannot render
  // is an nvfp4::Error now, not at the first request.
  Server(const infer::HfModel& model, infer::Engine& engine, const ServeOptions& o,
         const CanaryOptions* canary = nullptr);
  ~Server();  // shutdown(0)
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving on background threads; returns the port. Throws nvfp4::Error naming
  // host:port when it cannot bind.
  int start();
  // Stops accepting requests (new ones get 503), lets those in flight finish for `grace_s`
  // seconds, cancels the rest, then stops listening. Safe to call more than once.
  void shutdown(double grace_s);
  // Blocks until the server has stopped listening.
  void wait();

  const std::string& model_name() const;
  std::string metrics_text() const;  // what GET /metrics returns

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nvfp4::serve

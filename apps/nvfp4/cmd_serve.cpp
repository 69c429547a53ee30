// nvfp4 serve MODEL: an OpenAI-compatible server (nvfp4/serve.hpp) over the inference engine.
// This file parses options, loads the model, and turns SIGINT / SIGTERM into a graceful shutdown.
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <thread>

#include "common.hpp"
#include "infer_options.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/serve.hpp"

namespace nvfp4::cli {

namespace {

struct ServeArgs {
  EngineArgs engine;
  serve::ServeOptions o;
  int max_batch = 16;
  int max_context = 0;
  int kv_blocks = 0;
  int kv_block_size = 16;
  double shutdown_grace = 30;
  std::string log_file;
  bool json = false;
  std::string canary;
  std::string canary_precision;
  serve::CanaryOptions canary_o;
};

// SIGINT and SIGTERM write their number into a pipe (all a handler may safely do; it runs on
// whichever thread the kernel picks, the math library's included); one thread reads it and shuts
// the server down.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  (void)!write(g_signal_pipe[1], &b, 1);
}

void run(ServeArgs& a) {
  if (pipe(g_signal_pipe) != 0) throw Error("serve: cannot create the signal pipe");
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hangs up mid-write must not end the server

  const std::string device = engine_device(a.engine);
  engine_precision(a.engine, device);
  std::unique_ptr<std::ofstream> log_file;
  if (!a.log_file.empty()) {
    log_file = std::make_unique<std::ofstream>(a.log_file, std::ios::app);
    if (!*log_file) throw Error("--log " + a.log_file + ": cannot open the file for appending");
    a.o.log = log_file.get();
  } else {
    a.o.log = &std::cerr;
  }
  const infer::HfModel model = infer::HfModel::open(a.engine.model);
  if (a.max_context > model.config().seq_len) {
    throw Error("--max-context " + std::to_string(a.max_context) + " exceeds the model's max_position_embeddings of " +
                std::to_string(model.config().seq_len));
  }
  // 0: the engine's default (max_position_embeddings, at most 4096).
  infer::EngineOptions eo = engine_options(a.engine, device, a.max_batch, a.max_context);
  eo.kv_blocks = a.kv_blocks;
  eo.kv_block_size = a.kv_block_size;
  std::cerr << "loading " << a.engine.model << " on " << device << "...\n";
  const auto engine = infer::make_engine(model, eo, device);
  // The canary: the second folder (or the same one) at its own precision, on the same device.
  std::optional<infer::HfModel> canary_model;
  std::unique_ptr<infer::Engine> canary_engine;
  const serve::CanaryOptions* canary = nullptr;
  if (!a.canary.empty()) {
    canary_model.emplace(infer::HfModel::open(a.canary));
    EngineArgs ca;
    ca.device = a.engine.device;
    ca.precision = a.canary_precision;
    infer::EngineOptions co = engine_options(ca, device, a.max_batch, engine->max_context());
    co.kv_blocks = a.kv_blocks;
    co.kv_block_size = a.kv_block_size;
    std::cerr << "loading the canary " << a.canary << "...\n";
    canary_engine = infer::make_engine(*canary_model, co, device);
    a.canary_o.model = &*canary_model;
    a.canary_o.engine = canary_engine.get();
    a.canary_o.name = a.canary + " (" + run_precision_text(*canary_engine, *canary_model, engine_precision(ca, device)) + ")";
    canary = &a.canary_o;
  }
  serve::Server server(model, *engine, a.o, canary);
  const int port = server.start();
  const std::string precision = run_precision_text(*engine, model, engine_precision(a.engine, device));
  const std::string url = "http://" + a.o.host + ":" + std::to_string(port);
  if (a.json) {
    nlohmann::ordered_json j;
    j["listening"] = url;
    j["model"] = server.model_name();
    j["precision"] = precision;
    j["device"] = device;
    j["max_batch"] = a.max_batch;
    j["max_context"] = engine->max_context();
    j["kv_blocks"] = engine->kv_blocks();
    j["kv_block_size"] = engine->kv_block_size();
    if (canary) j["canary"] = {{"model", a.canary_o.name}, {"fraction", a.canary_o.fraction}};
    std::cout << json_text(j) << std::endl;
  }
  std::cerr << "nvfp4 serve: " << server.model_name() << " (" << precision << ", " << device << ", " << a.max_batch
            << " sequences of up to " << engine->max_context() << " tokens, " << engine->kv_blocks() << " KV blocks of "
            << engine->kv_block_size() << ")";
  if (canary) std::cerr << ", canary " << a.canary_o.name << " on " << a.canary_o.fraction * 100 << " % of requests";
  std::cerr << ", listening on " << url << std::endl;

  // The first signal: requests in flight may finish for --shutdown-grace seconds. A second one
  // cancels them now.
  std::thread graceful;
  std::thread waiter([&] {
    for (int n = 0; n < 2; ++n) {
      unsigned char sig = 0;
      while (read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
      }
      if (sig == 0) return;  // the pipe was closed: the server stopped by itself
      if (n == 0) {
        std::cerr << "nvfp4 serve: signal " << static_cast<int>(sig) << ": finishing requests in flight (up to "
                  << a.shutdown_grace << " s; signal again to cancel them), then stopping" << std::endl;
        graceful = std::thread([&] { server.shutdown(a.shutdown_grace); });
      } else {
        std::cerr << "nvfp4 serve: second signal: cancelling requests in flight" << std::endl;
        server.shutdown(0);
      }
    }
  });
  server.wait();
  const unsigned char end = 0;
  (void)!write(g_signal_pipe[1], &end, 1);  // wakes the waiter if no second signal came
  waiter.join();
  if (graceful.joinable()) graceful.join();
  std::cerr << "nvfp4 serve: stopped" << std::endl;
}

}  // namespace

void register_serve(CLI::App& app) {
  const auto [c, a] = add_command<ServeArgs>(
      app, "serve", "Serve a Hugging Face model folder over an OpenAI-compatible HTTP API (continuous batching)");
  add_engine_options(c, a->engine);
  c->add_option("--host", a->o.host, "Address to listen on (127.0.0.1: this machine only)")->capture_default_str();
  c->add_option("--port", a->o.port, "Port (0: any free port, printed at start)")
      ->capture_default_str()
      ->transform(integer_in(0, 65535));
  c->add_option("--served-model-name", a->o.model_name, "The model id clients send (default: the folder's name)");
  c->add_option("--api-key", a->o.api_key, "Require 'Authorization: Bearer KEY' on /v1/* requests");
  c->add_option("--chat-template", a->o.chat_template_file,
                "A Jinja chat template file used instead of tokenizer_config.json's chat_template");
  c->add_option("--max-batch", a->max_batch, "Sequences run together (KV cache slots)")
      ->capture_default_str()
      ->transform(integer_in(1, 4096));
  c->add_option("--max-queue", a->o.max_queue, "Requests that may wait for a slot; more get 429")
      ->capture_default_str()
      ->transform(integer_in(1, 1 << 20));
  c->add_option("--max-tokens", a->o.max_step_tokens,
                "Tokens one engine step runs at most: decodes plus prompt chunks (chunked prefill)")
      ->capture_default_str()
      ->transform(integer_in(1, 1 << 20));
  c->add_option("--max-context", a->max_context, "Tokens per sequence, prompt + output (default: max_position_embeddings, at most 4096)")
      ->transform(integer_in(1, 1 << 24));
  c->add_option("--kv-blocks", a->kv_blocks,
                "KV cache blocks shared by all sequences (0: enough for every sequence at full context)")
      ->capture_default_str()
      ->transform(integer_in(0, 1 << 24));
  c->add_option("--kv-block-size", a->kv_block_size, "Positions per KV cache block")
      ->capture_default_str()
      ->transform(integer_in(1, 4096));
  c->add_option("--max-body", a->o.max_body_bytes, "Largest request body in bytes; larger get 413")
      ->capture_default_str()
      ->transform(integer_in(1024, int64_t{1} << 32));
  c->add_option("--timeout", a->o.request_timeout_s, "Seconds a request may take, queueing included")
      ->capture_default_str()
      ->transform(real_in(0, 1e7, true));
  c->add_option("--shutdown-grace", a->shutdown_grace, "Seconds requests in flight may finish after SIGTERM / SIGINT")
      ->capture_default_str()
      ->transform(real_in(0, 1e6));
  c->add_option("--canary", a->canary,
                "Canary A/B: a second model folder (the same model at another precision or checkpoint) that shadows "
                "--canary-fraction of the requests, teacher-forced over the served tokens: agreement, KL, latency ratio");
  c->add_option("--canary-precision", a->canary_precision, "The canary's --precision (default: the device's unquantized)");
  c->add_option("--canary-fraction", a->canary_o.fraction, "Share of requests the canary shadows")
      ->capture_default_str()
      ->transform(real_in(0, 1, true));
  c->add_option("--canary-kl-tokens", a->canary_o.kl_tokens, "First generated positions whose distributions are compared")
      ->capture_default_str()
      ->transform(integer_in(1, 4096));
  c->add_option("--log", a->log_file, "Append one JSON line per request to this file (default: stderr)");
  c->add_flag("--json", a->json, "Print the address and settings as one JSON line on stdout once listening");
  c->callback([a] { run(*a); });
}

}  // namespace nvfp4::cli

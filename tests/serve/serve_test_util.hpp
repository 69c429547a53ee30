// What the server tests share: a tiny byte-level model folder, a server on a free loopback port,
// and an HTTP client that reads server-sent events as they arrive.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "../infer/tiny_hf_model.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/serve.hpp"
#include "nvfp4/tokenizer.hpp"

namespace nvfp4::test {

// A Llama-style byte-level model (vocab 257: bytes + end-of-text 256, context 128) with random
// weights; `chat_template` (if not empty) goes into tokenizer_config.json.
inline void write_byte_model(const std::filesystem::path& dir, uint64_t seed, const std::string& chat_template = "") {
  auto c = tiny_config("llama");
  c.vocab = 257;
  c.seq_len = 128;
  write_tiny_hf_model(dir, "llama", c, seed);
  std::ofstream(dir / "nvfp4_tokenizer.json") << io::ByteTokenizer().describe() << "\n";
  if (!chat_template.empty()) {
    nlohmann::json cfg = {{"chat_template", chat_template}, {"bos_token", "<s>"}, {"eos_token", "</s>"}};
    std::ofstream(dir / "tokenizer_config.json") << cfg.dump();
  }
}

// A model, a CPU engine and a server on 127.0.0.1 at a free port.
struct TestServer {
  std::unique_ptr<infer::HfModel> model;
  std::unique_ptr<infer::Engine> engine;
  std::unique_ptr<serve::Server> server;
  std::ostringstream log;
  int port = 0;

  TestServer(const std::filesystem::path& dir, serve::ServeOptions o, int sequences = 4, int kv_blocks = 0) {
    model = std::make_unique<infer::HfModel>(infer::HfModel::open(dir.string()));
    infer::EngineOptions eo;
    eo.max_sequences = sequences;
    eo.max_context = 128;
    eo.kv_blocks = kv_blocks;
    engine = infer::make_cpu_engine(*model, eo);
    o.host = "127.0.0.1";
    o.port = 0;
    o.log = &log;
    server = std::make_unique<serve::Server>(*model, *engine, o);
    port = server->start();
  }
  ~TestServer() {
    server->shutdown(0);
    server.reset();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    return c;
  }
};

struct SseResult {
  int status = -1;
  std::string body;                         // everything received
  std::vector<nlohmann::json> events;       // parsed data: events (not [DONE])
  bool done = false;                        // saw data: [DONE]
};

// POSTs `body` to `path` and splits the response into server-sent events. `stop_after` > 0 closes
// the connection after that many events (a client that goes away).
inline SseResult post_stream(int port, const std::string& path, const std::string& body, int stop_after = 0,
                             const httplib::Headers& headers = {}) {
  SseResult r;
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = headers;
  req.set_header("Content-Type", "application/json");
  req.body = body;
  std::string pending;
  int events = 0;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    r.body.append(data, n);
    pending.append(data, n);
    size_t at;
    while ((at = pending.find("\n\n")) != std::string::npos) {
      const std::string ev = pending.substr(0, at);
      pending.erase(0, at + 2);
      if (ev.rfind("data: ", 0) != 0) continue;
      const std::string payload = ev.substr(6);
      if (payload == "[DONE]") {
        r.done = true;
      } else {
        r.events.push_back(nlohmann::json::parse(payload));
      }
      ++events;
      if (stop_after > 0 && events >= stop_after) return false;
    }
    return true;
  };
  const auto res = c.send(req);
  if (res) {
    r.status = res->status;
  } else {
    r.body += "[client error: " + httplib::to_string(res.error()) + "]";
  }
  return r;
}

}  // namespace nvfp4::test

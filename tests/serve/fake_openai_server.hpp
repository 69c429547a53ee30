// A fake OpenAI-compatible server for the bench-serve tests: httplib::Server on 127.0.0.1 (a
// free port) with GET /v1/models and a streaming POST /v1/completions (and chat/completions)
// that checks the fields bench-serve sends, then streams `output_tokens` events with known
// delays, a usage chunk and [DONE] — or fails the way a `behaviour` says, per request in the
// order requests arrive.
#pragma once

#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace nvfp4::test {

enum class FakeBehaviour {
  ok,
  http500,       // {"error": {"message": "fake internal error"}}, status 500
  http401,       // {"error": {"message": "fake: invalid API key"}}, status 401
  error_event,   // a few events, then an error event and [DONE]
  close_mid,     // half the events, then the connection closes (no final chunk)
  no_usage,      // the events and [DONE] without the usage chunk
  no_done,       // the events and the usage chunk; the stream ends without [DONE]
  stall,         // sends nothing for 5 s (or until the server stops)
  not_stream,    // a whole completion as one JSON body (a server that ignores "stream": true)
};

struct FakeConfig {
  std::string model = "fake-model";
  int prompt_tokens = 8, output_tokens = 6, vocab = 256;  // what requests must ask for
  int first_delay_ms = 20;  // before the first event
  int gap_ms = 5;           // between events
  std::string api_key;      // required as a Bearer token when not empty
  std::function<FakeBehaviour(int arrival)> behaviour = [](int) { return FakeBehaviour::ok; };
};

class FakeServer {
 public:
  explicit FakeServer(FakeConfig cfg) : cfg_(std::move(cfg)) {
    svr_.new_task_queue = [] { return new httplib::ThreadPool(32); };
    // NOTE: TCP_NODELAY, so each event leaves at once (Nagle would hold it for the last one's ACK).
    svr_.set_tcp_nodelay(true);
    svr_.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorized(req, res)) return;
      nlohmann::json j = {{"object", "list"}, {"data", {{{"id", cfg_.model}, {"object", "model"}}}}};
      res.set_content(j.dump(), "application/json");
    });
    const auto stream = [this](const httplib::Request& req, httplib::Response& res) { completion(req, res); };
    svr_.Post("/v1/completions", stream);
    svr_.Post("/v1/chat/completions", stream);
    port_ = svr_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
    while (!svr_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeServer() {
    stopping_ = true;
    svr_.stop();
    thread_.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int max_in_flight() const { return max_in_flight_; }
  int received() const { return arrivals_; }
  // What requests got wrong (empty when every field was as expected).
  std::vector<std::string> problems() const {
    std::lock_guard<std::mutex> lock(mu_);
    return problems_;
  }
  std::vector<std::vector<int>> prompts() const {  // the completions' prompts, in arrival order
    std::lock_guard<std::mutex> lock(mu_);
    return prompts_;
  }

 private:
  bool authorized(const httplib::Request& req, httplib::Response& res) {
    if (cfg_.api_key.empty() || req.get_header_value("Authorization") == "Bearer " + cfg_.api_key) return true;
    res.status = 401;
    res.set_content(R"({"error": {"message": "fake: invalid API key", "type": "invalid_request_error"}})",
                    "application/json");
    return false;
  }

  void problem(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    problems_.push_back(what);
  }

  void check(const nlohmann::json& j, bool chat) {
    if (j.value("model", "") != cfg_.model) problem("model");
    if (chat) {
      if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].size() != 1) problem("messages");
    } else if (!j.contains("prompt") || !j["prompt"].is_array() ||
               j["prompt"].size() != static_cast<size_t>(cfg_.prompt_tokens)) {
      problem("prompt length");
    } else {
      std::vector<int> ids;
      for (const auto& t : j["prompt"]) {
        if (!t.is_number_integer() || t.get<int>() < 0 || t.get<int>() >= cfg_.vocab) problem("prompt id");
        ids.push_back(t.is_number_integer() ? t.get<int>() : -1);
      }
      std::lock_guard<std::mutex> lock(mu_);
      prompts_.push_back(ids);
    }
    if (j.value("max_tokens", -1) != cfg_.output_tokens) problem("max_tokens");
    if (j.value("min_tokens", -1) != cfg_.output_tokens) problem("min_tokens");
    if (j.value("ignore_eos", false) != true) problem("ignore_eos");
    if (!j.contains("temperature") || j["temperature"] != 0) problem("temperature");
    if (j.value("stream", false) != true) problem("stream");
    if (!j.contains("stream_options") || j["stream_options"].value("include_usage", false) != true) {
      problem("stream_options");
    }
  }

  void completion(const httplib::Request& req, httplib::Response& res) {
    const int arrival = arrivals_++;
    if (!authorized(req, res)) return;
    const bool chat = req.path == "/v1/chat/completions";
    const auto j = nlohmann::json::parse(req.body, nullptr, false);
    if (!j.is_object()) {
      problem("body is not JSON");
      res.status = 400;
      return;
    }
    check(j, chat);
    const FakeBehaviour b = cfg_.behaviour(arrival);
    if (b == FakeBehaviour::http500 || b == FakeBehaviour::http401) {
      res.status = b == FakeBehaviour::http500 ? 500 : 401;
      const std::string msg = b == FakeBehaviour::http500 ? "fake internal error" : "fake: invalid API key";
      res.set_content(nlohmann::json{{"error", {{"message", msg}, {"type", "x"}, {"code", res.status}}}}.dump(),
                      "application/json");
      return;
    }
    if (b == FakeBehaviour::not_stream) {
      res.set_content(R"({"object": "text_completion", "choices": [{"index": 0, "text": " t t"}]})", "application/json");
      return;
    }
    const int now = ++in_flight_;
    for (int m = max_in_flight_; now > m && !max_in_flight_.compare_exchange_weak(m, now);) {
    }
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, b, chat](size_t, httplib::DataSink& sink) { return stream(sink, b, chat); },
        [this](bool) { --in_flight_; });
  }

  // The whole stream in one call (the server's worker thread sleeps between events). Returning
  // false without sink.done() makes the server drop the connection mid-response.
  bool stream(httplib::DataSink& sink, FakeBehaviour b, bool chat) {
    const auto sleep_ms = [this](int ms) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
      while (!stopping_ && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::min(std::chrono::milliseconds(10), std::chrono::milliseconds(ms)));
      }
    };
    const auto send = [&](const std::string& event) { return sink.write(event.data(), event.size()); };
    const auto event = [&](const nlohmann::json& j) { return "data: " + j.dump() + "\n\n"; };
    if (b == FakeBehaviour::stall) {
      sleep_ms(5000);
      return false;
    }
    sleep_ms(cfg_.first_delay_ms);
    send(": a comment line, as servers send to keep a connection open\n\n");
    const int n = cfg_.output_tokens;
    for (int k = 0; k < n; ++k) {
      if (k > 0) sleep_ms(cfg_.gap_ms);
      if (b == FakeBehaviour::close_mid && k == n / 2) return false;
      if (b == FakeBehaviour::error_event && k == 2) {
        send(event({{"error", {{"message", "fake overload"}, {"type", "x"}, {"code", 503}}}}));
        send("data: [DONE]\n\n");
        sink.done();
        return true;
      }
      nlohmann::json choice = {{"index", 0}, {"finish_reason", k + 1 == n ? nlohmann::json("length") : nlohmann::json()}};
      if (chat) {
        choice["delta"] = {{"content", " t"}};
      } else {
        choice["text"] = " t";
      }
      if (!send(event({{"id", "cmpl-1"}, {"object", "text_completion"}, {"choices", {choice}}}))) return false;
    }
    if (b != FakeBehaviour::no_usage) {
      send(event({{"id", "cmpl-1"}, {"choices", nlohmann::json::array()},
                  {"usage", {{"prompt_tokens", cfg_.prompt_tokens}, {"completion_tokens", n},
                             {"total_tokens", cfg_.prompt_tokens + n}}}}));
    }
    if (b != FakeBehaviour::no_done) send("data: [DONE]\n\n");
    sink.done();
    return true;
  }

  FakeConfig cfg_;
  httplib::Server svr_;
  std::thread thread_;
  int port_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> arrivals_{0}, in_flight_{0}, max_in_flight_{0};
  mutable std::mutex mu_;
  std::vector<std::string> problems_;
  std::vector<std::vector<int>> prompts_;
};

}  // namespace nvfp4::test

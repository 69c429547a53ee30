// The OpenAI-compatible server (include/nvfp4/serve.hpp): HTTP by cpp-httplib, requests parsed
// by openai_api.cpp, generation by the batcher, telemetry by metrics.cpp.
#include "nvfp4/serve.hpp"

#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "nvfp4/batcher.hpp"
#include "nvfp4/chat_template.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/evaluate.hpp"
#include "nvfp4/hf_model.hpp"
#include "serve/metrics.hpp"
#include "serve/openai_api.hpp"

namespace nvfp4::serve {

using json = nlohmann::json;
using clock = std::chrono::steady_clock;

namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string iso_time_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(error_body(e), "application/json");
}

ApiError api_error(int status, const std::string& type, const std::string& message, const std::string& code = "",
                   const std::string& param = "") {
  ApiError e;
  e.status = status;
  e.type = type;
  e.message = message;
  e.code = code;
  e.param = param;
  return e;
}

// Compares without an early exit (the key's length is not secret).
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char d = 0;
  for (size_t i = 0; i < a.size(); ++i) d |= static_cast<unsigned char>(a[i] ^ b[i]);
  return d == 0;
}

// cpp-httplib 0.11 listens with a backlog of 5 connections: a burst of clients connecting at once
// (64 streams opened together) overflows it while the accept thread waits for a core, and the
// kernel drops or resets the excess. listen() again on the bound socket raises the backlog (Linux
// updates it in place); the socket is found among this process's descriptors by its port.
void raise_listen_backlog(int port) {
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    const int fd = std::atoi(e.path().filename().c_str());
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    int type = 0, listening = 0;
    socklen_t tl = sizeof type, ll = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM) continue;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) != 0 || !listening) continue;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) continue;
    int p = -1;
    if (addr.ss_family == AF_INET) p = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) p = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    if (p == port) ::listen(fd, SOMAXCONN);
  }
}

}  // namespace

struct Server::Impl : infer::BatcherObserver {
  const infer::HfModel& model;
  infer::Engine& engine;
  ServeOptions o;
  std::string name;
  std::optional<io::ChatTemplate> chat;
  Metrics metrics;
  std::unique_ptr<infer::Batcher> batcher;
  httplib::Server http;
  std::thread listener;
  std::atomic<bool> shutting_down{false};
  std::atomic<bool> listening{false};
  int port = 0;
  int64_t started = unix_now();
  std::mutex mu;  // rng, log, throughput window, guard deltas
  std::mutex shutdown_mu;
  std::mt19937_64 rng{std::random_device{}()};
  std::deque<std::pair<clock::time_point, int>> sampled_window;  // (step end, tokens sampled)
  std::vector<int64_t> guard_rows_seen, guard_fallbacks_seen;

  // Canary A/B: the second model's batcher, the requests chosen for it, the running sums.
  struct CanaryJob {
    std::string id;
    std::vector<int32_t> prompt;
    infer::BatchRequestStats primary;
  };
  CanaryOptions canary;
  bool has_canary = false;
  std::unique_ptr<infer::Batcher> canary_batcher;
  std::atomic<uint64_t> canary_counter{0};
  std::mutex canary_mu;
  std::condition_variable canary_cv;
  std::deque<CanaryJob> canary_jobs;
  bool canary_stop = false;
  std::thread canary_thread;
  int64_t canary_tokens = 0, canary_agreed = 0, canary_kl_positions = 0;
  double canary_kl_sum = 0, canary_time = 0, canary_primary_time = 0;

  Impl(const infer::HfModel& m, infer::Engine& e, const ServeOptions& opt) : model(m), engine(e), o(opt) {}

  // ---- telemetry --------------------------------------------------------------------------------
  void register_metrics() {
    const auto lat = latency_buckets();
    metrics.counter("nvfp4_http_requests_total", "HTTP requests answered, by status code", "code");
    metrics.counter("nvfp4_request_success_total", "Generation requests finished, by finish reason", "finish_reason");
    metrics.counter("nvfp4_prompt_tokens_total", "Prompt tokens of finished requests");
    metrics.counter("nvfp4_generation_tokens_total", "Tokens generated by finished requests");
    metrics.histogram("nvfp4_time_to_first_token_seconds", "Submission to the first generated token", lat);
    metrics.histogram("nvfp4_inter_token_latency_seconds", "Gap between successive generated tokens of a request", lat);
    metrics.histogram("nvfp4_e2e_request_latency_seconds", "Submission to the last token", lat);
    metrics.histogram("nvfp4_request_queue_time_seconds", "Submission to admission into the running batch", lat);
    metrics.gauge("nvfp4_num_requests_running", "Requests in the running batch");
    metrics.gauge("nvfp4_num_requests_waiting", "Requests waiting for a slot or KV cache blocks");
    metrics.gauge("nvfp4_kv_cache_blocks_total", "KV cache blocks in the pool");
    metrics.gauge("nvfp4_kv_cache_blocks_used", "KV cache blocks holding positions of running requests");
    metrics.gauge("nvfp4_kv_cache_blocks_reserved", "KV cache blocks reserved for running requests' prompt + max_tokens");
    metrics.gauge("nvfp4_kv_cache_usage_ratio", "Used KV cache blocks / total");
    metrics.gauge("nvfp4_generation_tokens_per_second", "Tokens sampled per second over the last 10 seconds");
    metrics.counter("nvfp4_engine_steps_total", "Engine forward steps");
    metrics.counter("nvfp4_w4a4_quantized_rows_total", "Activation rows quantized to NVFP4 at run time, by linear layer",
                    "layer");
    metrics.counter("nvfp4_w4a4_fallback_rows_total",
                    "Of them, rows the outlier guard recomputed in w4a16, by linear layer", "layer");
    metrics.gauge("nvfp4_w4a4_fallback_rate", "Fallback rows / quantized rows, all layers, since the server started");
    if (!has_canary) return;
    metrics.counter("nvfp4_canary_requests_total",
                    "Requests chosen for the canary, by outcome (compared, skipped: its queue was full, failed)", "outcome");
    metrics.counter("nvfp4_canary_tokens_total", "Primary tokens the canary was teacher-forced over");
    metrics.counter("nvfp4_canary_agreed_tokens_total", "Of them, positions where the canary's greedy choice was the same");
    metrics.gauge("nvfp4_canary_token_agreement_ratio", "Agreed / compared tokens since the server started");
    metrics.gauge("nvfp4_canary_mean_kl", "Mean KL(primary || canary) of the next-token distributions, nats, since start");
    metrics.histogram("nvfp4_canary_request_kl", "Per request: mean KL(primary || canary) over its first positions, nats",
                      {1e-5, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0});
    metrics.gauge("nvfp4_canary_latency_ratio", "Canary time / primary time for the same requests (admission to end)");
  }

  // ---- canary -------------------------------------------------------------------------------------
  // Every 1/fraction-th request, evenly: request k is chosen when floor((k+1) f) > floor(k f).
  bool choose_canary() {
    if (!has_canary) return false;
    const uint64_t k = canary_counter++;
    return std::floor(static_cast<double>(k + 1) * canary.fraction) > std::floor(static_cast<double>(k) * canary.fraction);
  }

  void enqueue_canary(const std::string& id, const std::vector<int32_t>& prompt, const infer::BatchRequestStats& st) {
    if (st.tokens.empty()) return;  // nothing generated: nothing to compare
    {
      std::lock_guard<std::mutex> lock(canary_mu);
      canary_jobs.push_back({id, prompt, st});
    }
    canary_cv.notify_one();
  }

  void canary_loop() {
    for (;;) {
      CanaryJob job;
      {
        std::unique_lock<std::mutex> lock(canary_mu);
        canary_cv.wait(lock, [&] { return canary_stop || !canary_jobs.empty(); });
        if (canary_jobs.empty()) return;
        job = std::move(canary_jobs.front());
        canary_jobs.pop_front();
      }
      run_canary(job);
    }
  }

  void run_canary(const CanaryJob& job) {
    infer::BatchRequest r;
    r.prompt = job.prompt;
    r.forced = job.primary.tokens;
    r.sampling.temperature = 0;
    r.keep_logits = canary.kl_tokens;
    r.timeout_s = o.request_timeout_s;
    std::shared_ptr<infer::RequestStream> s;
    try {
      s = canary_batcher->submit(r);
    } catch (const infer::Rejected&) {
      metrics.add("nvfp4_canary_requests_total", 1, "skipped");
      return;
    }
    infer::BatchEvent e;
    while (true) {
      if (!s->next(e, std::chrono::milliseconds(200))) continue;
      if (e.kind != infer::BatchEvent::Kind::text) break;
    }
    const infer::BatchRequestStats& c = s->stats();
    if (e.kind == infer::BatchEvent::Kind::failed || e.finish_reason != "length") {
      metrics.add("nvfp4_canary_requests_total", 1, "failed");
      log_line({{"time", iso_time_now()}, {"canary", canary.name}, {"id", job.id}, {"error", e.finish_reason}});
      return;
    }
    const size_t n = std::min(job.primary.logits.size(), c.logits.size());
    double kl = 0;
    for (size_t i = 0; i < n; ++i) kl += infer::kl_divergence(job.primary.logits[i], c.logits[i]);
    const double mean_kl = n ? kl / static_cast<double>(n) : 0.0;
    const double primary_t = job.primary.e2e_s - job.primary.queue_s, canary_t = c.e2e_s - c.queue_s;
    const int64_t tokens = static_cast<int64_t>(job.primary.tokens.size());
    metrics.add("nvfp4_canary_requests_total", 1, "compared");
    metrics.add("nvfp4_canary_tokens_total", static_cast<double>(tokens));
    metrics.add("nvfp4_canary_agreed_tokens_total", c.forced_agreed);
    metrics.observe("nvfp4_canary_request_kl", mean_kl);
    {
      std::lock_guard<std::mutex> lock(canary_mu);
      canary_tokens += tokens;
      canary_agreed += c.forced_agreed;
      canary_kl_sum += kl;
      canary_kl_positions += static_cast<int64_t>(n);
      canary_time += canary_t;
      canary_primary_time += primary_t;
      metrics.set("nvfp4_canary_token_agreement_ratio", static_cast<double>(canary_agreed) / static_cast<double>(canary_tokens));
      metrics.set("nvfp4_canary_mean_kl", canary_kl_positions ? canary_kl_sum / static_cast<double>(canary_kl_positions) : 0.0);
      metrics.set("nvfp4_canary_latency_ratio", canary_primary_time > 0 ? canary_time / canary_primary_time : 0.0);
    }
    log_line({{"time", iso_time_now()},
              {"canary", canary.name},
              {"id", job.id},
              {"tokens", tokens},
              {"agreement", static_cast<double>(c.forced_agreed) / static_cast<double>(tokens)},
              {"mean_kl", mean_kl},
              {"kl_positions", n},
              {"latency_ratio", primary_t > 0 ? canary_t / primary_t : 0.0}});
  }

  void on_finished(const infer::BatchRequestStats& s) override {
    metrics.add("nvfp4_request_success_total", 1, s.finish_reason);
    metrics.add("nvfp4_prompt_tokens_total", s.prompt_tokens);
    metrics.add("nvfp4_generation_tokens_total", s.generated_tokens);
    if (s.generated_tokens > 0) metrics.observe("nvfp4_time_to_first_token_seconds", s.ttft_s);
    for (double x : s.itl_s) metrics.observe("nvfp4_inter_token_latency_seconds", x);
    metrics.observe("nvfp4_e2e_request_latency_seconds", s.e2e_s);
    metrics.observe("nvfp4_request_queue_time_seconds", s.queue_s);
  }

  void on_step(double, int, int, int sampled) override {
    metrics.add("nvfp4_engine_steps_total", 1);
    std::lock_guard<std::mutex> lock(mu);
    const auto now = clock::now();
    sampled_window.emplace_back(now, sampled);
    while (!sampled_window.empty() && now - sampled_window.front().first > std::chrono::seconds(10)) {
      sampled_window.pop_front();
    }
  }

  std::string render_metrics() {
    const infer::BatcherStats st = batcher->stats();
    metrics.set("nvfp4_num_requests_running", st.running);
    metrics.set("nvfp4_num_requests_waiting", st.waiting);
    metrics.set("nvfp4_kv_cache_blocks_total", st.kv_blocks);
    metrics.set("nvfp4_kv_cache_blocks_used", st.kv_blocks - st.kv_free_blocks);
    metrics.set("nvfp4_kv_cache_blocks_reserved", st.kv_reserved_blocks);
    metrics.set("nvfp4_kv_cache_usage_ratio",
                st.kv_blocks > 0 ? static_cast<double>(st.kv_blocks - st.kv_free_blocks) / st.kv_blocks : 0.0);
    std::lock_guard<std::mutex> lock(mu);
    const auto now = clock::now();
    int64_t sampled = 0;
    for (const auto& [t, n] : sampled_window) {
      if (now - t <= std::chrono::seconds(10)) sampled += n;
    }
    metrics.set("nvfp4_generation_tokens_per_second", static_cast<double>(sampled) / 10.0);
    // The guard's counts are totals since start: the counters grow by what is new.
    const auto& plan = engine.linear_plan();
    guard_rows_seen.resize(plan.size(), 0);
    guard_fallbacks_seen.resize(plan.size(), 0);
    for (size_t i = 0; i < plan.size() && i < st.guard.rows.size(); ++i) {
      if (plan[i].precision != infer::Precision::w4a4) continue;
      metrics.add("nvfp4_w4a4_quantized_rows_total", static_cast<double>(st.guard.rows[i] - guard_rows_seen[i]), plan[i].name);
      metrics.add("nvfp4_w4a4_fallback_rows_total",
                  static_cast<double>(st.guard.fallbacks[i] - guard_fallbacks_seen[i]), plan[i].name);
      guard_rows_seen[i] = st.guard.rows[i];
      guard_fallbacks_seen[i] = st.guard.fallbacks[i];
    }
    metrics.set("nvfp4_w4a4_fallback_rate", st.guard.rate());
    return metrics.render();
  }

  void log_line(const json& j) {
    if (!o.log) return;
    std::lock_guard<std::mutex> lock(mu);
    (*o.log) << dump(j) << "\n";
    o.log->flush();
  }

  // ---- generation ---------------------------------------------------------------------------------
  std::string new_id(bool chat_req) {
    std::lock_guard<std::mutex> lock(mu);
    static const char* hex = "0123456789abcdef";
    std::string id = chat_req ? "chatcmpl-" : "cmpl-";
    for (int i = 0; i < 24; ++i) id += hex[rng() & 15];
    return id;
  }

  uint64_t random_seed() {
    std::lock_guard<std::mutex> lock(mu);
    return rng();
  }

  // The request's prompt ids and the text echo would repeat; throws ApiError.
  std::vector<int32_t> prompt_ids(const ApiRequest& r, std::string& prompt_text) {
    if (r.chat) {
      if (!chat) {
        throw api_error(400, "invalid_request_error",
                        "the model has no chat template (tokenizer_config.json has no chat_template); use "
                        "/v1/completions, or start the server with --chat-template FILE",
                        "", "messages");
      }
      try {
        prompt_text = chat->render(r.messages, r.add_generation_prompt);
      } catch (const io::ChatTemplateRaised& e) {
        throw api_error(400, "invalid_request_error", "the chat template refused the messages: " + e.raised(), "",
                        "messages");
      } catch (const Error& e) {
        throw api_error(400, "invalid_request_error", std::string("the chat template refused the messages: ") + e.what(), "",
                        "messages");
      }
      return model.tokenizer().encode(prompt_text);
    }
    if (r.prompt_is_ids) {
      if (r.echo) prompt_text = model.tokenizer().decode(r.prompt_ids);
      return r.prompt_ids;
    }
    prompt_text = r.prompt_text;
    return model.encode_prompt(r.prompt_text);
  }

  void generate(const httplib::Request& req, httplib::Response& res, bool chat_req) {
    const auto t0 = clock::now();
    json log;
    log["time"] = iso_time_now();
    log["endpoint"] = req.path;
    log["client"] = req.remote_addr;
    auto fail = [&](const ApiError& e) {
      send_error(res, e);
      log["status"] = e.status;
      log["error"] = e.message;
      log["e2e_ms"] = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
      log_line(log);
    };
    ApiRequest r;
    std::vector<int32_t> ids;
    std::string prompt_text;
    try {
      r = chat_req ? parse_chat_request(req.body) : parse_completion_request(req.body);
      if (!r.model.empty() && r.model != name) {
        throw api_error(404, "invalid_request_error", "The model `" + r.model + "` does not exist; this server serves `" +
                        name + "`", "model_not_found", "model");
      }
      ids = prompt_ids(r, prompt_text);
    } catch (const ApiError& e) {
      fail(e);
      return;
    } catch (const Error& e) {
      fail(api_error(400, "invalid_request_error", e.what(), "", chat_req ? "messages" : "prompt"));
      return;
    }
    const int ctx = batcher->max_context();
    infer::BatchRequest b;
    b.prompt = ids;
    if (r.max_tokens) {
      b.max_tokens = *r.max_tokens;
    } else if (chat_req) {
      b.max_tokens = std::max(1, ctx - static_cast<int>(ids.size()));
    } else {
      b.max_tokens = 16;
    }
    b.min_tokens = r.min_tokens;
    b.ignore_eos = r.ignore_eos;
    b.sampling = r.sampling;
    if (!r.seed_given) b.sampling.seed = random_seed();
    b.stop = r.stop;
    b.timeout_s = o.request_timeout_s;
    const bool shadow = choose_canary();
    if (shadow) b.keep_logits = canary.kl_tokens;
    std::shared_ptr<infer::RequestStream> stream;
    try {
      stream = batcher->submit(std::move(b));
    } catch (const infer::Rejected& e) {
      using R = infer::Rejected::Reason;
      switch (e.reason()) {
        case R::queue_full: fail(api_error(429, "rate_limit_error", e.what(), "queue_full")); return;
        case R::shutting_down: fail(api_error(503, "service_unavailable", e.what(), "shutting_down")); return;
        case R::too_long:
          fail(api_error(400, "invalid_request_error",
                         std::string("This model's context is ") + std::to_string(ctx) + " tokens: " + e.what(),
                         "context_length_exceeded", r.max_tokens ? "max_tokens" : (chat_req ? "messages" : "prompt")));
          return;
        case R::invalid: fail(api_error(400, "invalid_request_error", e.what(), "", chat_req ? "messages" : "prompt")); return;
      }
    }
    const std::string id = new_id(chat_req);
    const int64_t created = unix_now();
    log["id"] = id;
    log["stream"] = r.stream;
    log["prompt_tokens"] = ids.size();
    const std::string echo = r.echo ? prompt_text : "";
    if (!r.stream) {
      std::string text = echo;
      infer::BatchEvent e;
      for (;;) {
        if (!stream->next(e, std::chrono::milliseconds(200))) continue;
        if (e.kind == infer::BatchEvent::Kind::text) {
          text += e.text;
          continue;
        }
        break;
      }
      finish_log(log, *stream);
      if (const auto err = final_error(e)) {
        fail(*err);
        return;
      }
      if (shadow) enqueue_canary(id, ids, stream->stats());
      const Usage u{static_cast<int>(ids.size()), stream->stats().generated_tokens};
      res.set_content(chat_req ? chat_body(id, created, name, text, e.finish_reason, u)
                               : completion_body(id, created, name, text, e.finish_reason, u),
                      "application/json");
      log["status"] = 200;
      log_line(log);
      return;
    }
    // Streaming: one event per text piece, the final chunk, usage if asked, [DONE].
    struct State {
      std::shared_ptr<infer::RequestStream> stream;
      bool role_sent = false, echo_sent = false, ended = false;
      json log;
    };
    auto st = std::make_shared<State>();
    st->stream = stream;
    st->log = log;
    const bool include_usage = r.include_usage;
    const int prompt_n = static_cast<int>(ids.size());
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, st, id, created, chat_req, echo, include_usage, prompt_n, shadow, ids](size_t, httplib::DataSink& sink) {
          auto write = [&](const std::string& s) { return sink.write(s.data(), s.size()); };
          if (st->ended) {
            sink.done();
            return true;
          }
          if (chat_req && !st->role_sent) {
            st->role_sent = true;
            if (!write(chat_chunk(id, created, name, "", "", true))) return false;
          }
          if (!echo.empty() && !st->echo_sent) {
            st->echo_sent = true;
            if (!write(completion_chunk(id, created, name, echo, ""))) return false;
          }
          infer::BatchEvent e;
          if (!st->stream->next(e, std::chrono::milliseconds(100))) return true;  // nothing yet: called again
          do {
            if (e.kind == infer::BatchEvent::Kind::text) {
              if (e.text.empty()) continue;
              const std::string c =
                  chat_req ? chat_chunk(id, created, name, e.text, "") : completion_chunk(id, created, name, e.text, "");
              if (!write(c)) return false;  // the client went away: the releaser cancels
              continue;
            }
            st->ended = true;
            finish_log(st->log, *st->stream);
            if (const auto err = final_error(e)) {
              write(sse(error_body(*err)));
              st->log["status"] = err->status;
              st->log["error"] = err->message;
            } else {
              write(chat_req ? chat_chunk(id, created, name, "", e.finish_reason)
                             : completion_chunk(id, created, name, "", e.finish_reason));
              st->log["status"] = 200;
              if (shadow) enqueue_canary(id, ids, st->stream->stats());
            }
            if (include_usage) {
              write(usage_chunk(chat_req, id, created, name, {prompt_n, st->stream->stats().generated_tokens}));
            }
            write(kSseDone);
            log_line(st->log);
            sink.done();
            return true;
          } while (st->stream->next(e, std::chrono::milliseconds(0)));
          return true;
        },
        [st](bool) {
          // The response ended: by the final event, or because the client disconnected.
          if (!st->ended) st->stream->cancel();
        });
  }

  // A final event that is no normal end, as the error the client gets; nullopt for stop / length.
  std::optional<ApiError> final_error(const infer::BatchEvent& e) const {
    if (e.kind == infer::BatchEvent::Kind::failed) return api_error(500, "server_error", e.finish_reason, "engine_error");
    if (e.finish_reason == "timeout") {
      return api_error(504, "timeout", "the request did not finish within the server's timeout of " +
                                           std::to_string(static_cast<int>(o.request_timeout_s)) + " s", "timeout");
    }
    if (e.finish_reason == "cancelled") {
      return api_error(503, "service_unavailable", "the request was cancelled: the server is shutting down", "cancelled");
    }
    return std::nullopt;
  }

  static void finish_log(json& log, const infer::RequestStream& s) {
    const auto& st = s.stats();
    log["completion_tokens"] = st.generated_tokens;
    log["finish_reason"] = st.finish_reason;
    log["queue_ms"] = st.queue_s * 1e3;
    log["ttft_ms"] = st.ttft_s * 1e3;
    if (!st.itl_s.empty()) {
      const infer::Latency l = infer::latency_of(st.itl_s);
      log["itl_ms"] = {{"mean", l.mean * 1e3}, {"p50", l.p50 * 1e3}, {"p99", l.p99 * 1e3}};
    }
    log["e2e_ms"] = st.e2e_s * 1e3;
    if (st.e2e_s > 0) log["tokens_per_s"] = st.generated_tokens / st.e2e_s;
  }

  // ---- HTTP ---------------------------------------------------------------------------------------
  void routes() {
    http.set_payload_max_length(static_cast<size_t>(o.max_body_bytes));
    // Each streamed token is a small write: without TCP_NODELAY, Nagle's algorithm holds it back
    // until the previous one is acknowledged, and clients see tokens bunched together.
    http.set_tcp_nodelay(true);
    const int threads = o.http_threads > 0 ? o.http_threads : std::min(1024, engine.max_sequences() + o.max_queue + 8);
    http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (o.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
      const std::string auth = req.get_header_value("Authorization");
      const std::string want = "Bearer " + o.api_key;
      if (same_secret(auth, want)) return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, api_error(401, "invalid_request_error",
                                auth.empty() ? "no API key: send the header 'Authorization: Bearer KEY'"
                                             : "incorrect API key in the Authorization header",
                                "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    });
    http.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
      metrics.add("nvfp4_http_requests_total", 1, std::to_string(res.status));
    });
    http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string msg;
      if (res.status == 404) msg = "no route " + req.method + " " + req.path + " (see GET /v1/models)";
      else if (res.status == 413) msg = "the request body exceeds the server's limit (--max-body)";
      else if (res.status == 405) msg = "method " + req.method + " is not allowed on " + req.path;
      else msg = "bad request (" + std::to_string(res.status) + ")";
      const int status = res.status;
      send_error(res, api_error(status, status == 404 ? "not_found_error" : "invalid_request_error", msg));
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, api_error(500, "server_error", "internal error: " + what));
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (shutting_down) {
        send_error(res, api_error(503, "service_unavailable", "shutting down", "shutting_down"));
        return;
      }
      res.set_content("", "text/plain");
    });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(render_metrics(), "text/plain; version=0.0.4; charset=utf-8");
    });
    auto model_card = [this] {
      return json{{"id", name},        {"object", "model"}, {"created", started},
                  {"owned_by", "nvfp4"}, {"root", model.dir()}, {"max_model_len", batcher->max_context()}};
    };
    http.Get("/v1/models", [model_card](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump(json{{"object", "list"}, {"data", json::array({model_card()})}}), "application/json");
    });
    http.Get(R"(/v1/models/(.+))", [this, model_card](const httplib::Request& req, httplib::Response& res) {
      if (req.matches[1] != name) {
        send_error(res, api_error(404, "invalid_request_error", "The model `" + std::string(req.matches[1]) +
                                  "` does not exist", "model_not_found", "model"));
        return;
      }
      res.set_content(dump(model_card()), "application/json");
    });
    http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, false); });
    http.Post("/v1/chat/completions",
              [this](const httplib::Request& req, httplib::Response& res) { generate(req, res, true); });
  }
};

Server::Server(const infer::HfModel& model, infer::Engine& engine, const ServeOptions& o, const CanaryOptions* canary)
    : impl_(std::make_unique<Impl>(model, engine, o)) {
  Impl& s = *impl_;
  if (canary) {
    if (!canary->model || !canary->engine) throw Error("--canary: no model or engine given");
    if (!(canary->fraction > 0 && canary->fraction <= 1)) {
      throw Error("--canary-fraction " + std::to_string(canary->fraction) + " must be in (0, 1]");
    }
    if (canary->kl_tokens < 1) throw Error("--canary-kl-tokens must be >= 1");
    if (canary->engine == &engine) throw Error("--canary: the canary needs an engine of its own");
    if (canary->engine->config().vocab != engine.config().vocab) {
      throw Error("--canary " + canary->model->dir() + ": its vocabulary (" + std::to_string(canary->engine->config().vocab) +
                  ") is not the served model's (" + std::to_string(engine.config().vocab) +
                  "); a canary must be the same model at another precision or checkpoint");
    }
    s.canary = *canary;
    s.has_canary = true;
  }
  if (o.port < 0 || o.port > 65535) throw Error("--port " + std::to_string(o.port) + " must be in [0, 65535]");
  if (o.max_queue < 1) throw Error("--max-queue " + std::to_string(o.max_queue) + " must be >= 1");
  if (o.max_step_tokens < 1) throw Error("--max-tokens " + std::to_string(o.max_step_tokens) + " must be >= 1");
  if (o.max_body_bytes < 1024) throw Error("--max-body " + std::to_string(o.max_body_bytes) + " must be >= 1024 bytes");
  if (!(o.request_timeout_s > 0)) throw Error("--timeout must be > 0 seconds");
  if (!model.has_tokenizer()) {
    throw Error(model.dir() + ": the model folder has no tokenizer (tokenizer.json); the server needs one to read prompts");
  }
  s.name = o.model_name.empty() ? std::filesystem::path(model.dir()).lexically_normal().filename().string() : o.model_name;
  if (s.name.empty()) s.name = std::filesystem::path(model.dir()).lexically_normal().parent_path().filename().string();
  if (!o.chat_template_file.empty()) {
    std::ifstream in(o.chat_template_file, std::ios::binary);
    if (!in) throw Error("--chat-template " + o.chat_template_file + ": cannot read the file");
    std::stringstream text;
    text << in.rdbuf();
    s.chat = io::ChatTemplate::parse(text.str(), o.chat_template_file);
  } else {
    // tokenizer_config.json's chat_template, or (newer models) a chat_template.jinja beside it.
    s.chat = io::ChatTemplate::from_model_folder(model.dir());
  }
  if (s.chat) {
    // A template that cannot render a plain conversation fails now, not at the first request.
    const std::vector<io::ChatMessage> probe = {{"user", "Hello"}};
    try {
      s.chat->render(probe, true);
    } catch (const Error& e) {
      throw Error("the chat template of " + model.dir() + " cannot render a one-message conversation: " + e.what() +
                  " (give a working one with --chat-template FILE)");
    }
  }
  s.register_metrics();
  s.batcher = std::make_unique<infer::Batcher>(engine, model, infer::BatcherOptions{o.max_queue, o.max_step_tokens}, &s);
  if (s.has_canary) {
    s.canary_batcher = std::make_unique<infer::Batcher>(*s.canary.engine, *s.canary.model,
                                                        infer::BatcherOptions{o.max_queue, o.max_step_tokens});
    s.canary_thread = std::thread([&s] { s.canary_loop(); });
  }
  s.routes();
}

Server::~Server() { shutdown(0); }

int Server::start() {
  Impl& s = *impl_;
  if (s.listening) return s.port;
  if (s.o.port == 0) {
    s.port = s.http.bind_to_any_port(s.o.host);
    if (s.port <= 0) throw Error("cannot bind " + s.o.host + " to any port");
  } else {
    if (!s.http.bind_to_port(s.o.host, s.o.port)) {
      throw Error("cannot bind " + s.o.host + ":" + std::to_string(s.o.port) +
                  " (in use, or not an address of this machine); choose another --port or --host");
    }
    s.port = s.o.port;
  }
  raise_listen_backlog(s.port);
  s.listening = true;
  s.listener = std::thread([&s] { s.http.listen_after_bind(); });
  return s.port;
}

void Server::shutdown(double grace_s) {
  Impl& s = *impl_;
  s.shutting_down = true;
  // The batcher's shutdown may run on several threads at once: a later call with a shorter grace
  // (a second Ctrl-C) cuts the first one short.
  if (s.batcher) s.batcher->shutdown(grace_s);
  std::lock_guard<std::mutex> lock(s.shutdown_mu);
  if (s.canary_thread.joinable()) {
    // Comparisons still queued are dropped; the one running is cancelled.
    {
      std::lock_guard<std::mutex> cl(s.canary_mu);
      s.canary_stop = true;
      s.canary_jobs.clear();
    }
    s.canary_cv.notify_all();
    s.canary_batcher->shutdown(0);
    s.canary_thread.join();
  }
  if (!s.listening) return;
  // Streams end with their final events; give their writers a moment to send them.
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  s.http.stop();
  if (s.listener.joinable()) s.listener.join();
  s.listening = false;
}

void Server::wait() {
  while (impl_->listening) std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

const std::string& Server::model_name() const { return impl_->name; }
std::string Server::metrics_text() const { return impl_->render_metrics(); }

}  // namespace nvfp4::serve

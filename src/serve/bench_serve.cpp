// A load generator for OpenAI-compatible servers (include/nvfp4/bench_serve.hpp): closed-loop
// clients over cpp-httplib, one thread and one keep-alive connection each, reading the streamed
// completions with SseParser and timing their events.
#include "nvfp4/bench_serve.hpp"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "nvfp4/error.hpp"
#include "serve/sse.hpp"

namespace nvfp4::serve {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// ---- the URL ---------------------------------------------------------------------------------

struct ServerUrl {
  std::string host;
  int port = 80;
  std::string api_root;  // path of the API, "/v1" or "/prefix/v1"
  std::string text() const {
    const bool ipv6 = host.find(':') != std::string::npos;
    return "http://" + (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port) + api_root;
  }
};

ServerUrl parse_url(const std::string& url) {
  const std::string hint = " (give the server's address as http://HOST:PORT, e.g. http://127.0.0.1:8000)";
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw Error("URL '" + url + "' has no scheme" + hint);
  std::string scheme = url.substr(0, scheme_end);
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](unsigned char c) { return std::tolower(c); });
  if (scheme == "https") {
    throw Error("URL '" + url + "': https is not supported (bench-serve speaks plain HTTP); run it on the "
                "server's host or behind a TLS-terminating proxy and give the http:// address");
  }
  if (scheme != "http") throw Error("URL '" + url + "': scheme '" + scheme + "' is not http" + hint);
  const std::string rest = url.substr(scheme_end + 3);
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash), path = slash == std::string::npos ? "" : rest.substr(slash);
  if (path.find_first_of("?#") != std::string::npos) throw Error("URL '" + url + "': a query or fragment is not allowed" + hint);
  if (authority.find('@') != std::string::npos) {
    throw Error("URL '" + url + "': user information in the URL is not supported; give a key with --api-key");
  }
  ServerUrl u;
  std::string port_text;
  if (!authority.empty() && authority[0] == '[') {  // [IPv6]:port
    const size_t close = authority.find(']');
    if (close == std::string::npos) throw Error("URL '" + url + "': unclosed '[' in the host" + hint);
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') throw Error("URL '" + url + "': unexpected text after the host" + hint);
      port_text = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.find(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  if (u.host.empty()) throw Error("URL '" + url + "' has no host" + hint);
  if (!port_text.empty() || authority.back() == ':') {
    const bool digits = !port_text.empty() && port_text.size() <= 5 &&
                        std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; });
    const int port = digits ? std::stoi(port_text) : 0;
    if (port < 1 || port > 65535) throw Error("URL '" + url + "': port '" + port_text + "' is not in [1, 65535]" + hint);
    u.port = port;
  }
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() >= 3 && path.compare(path.size() - 3, 3, "/v1") == 0) path.resize(path.size() - 3);
  u.api_root = path + "/v1";
  return u;
}

// ---- options ---------------------------------------------------------------------------------

void validate(const BenchServeOptions& o) {
  auto in_range = [](const char* name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) {
      throw Error(std::string(name) + " " + std::to_string(v) + " must be in [" + std::to_string(lo) + ", " +
                  std::to_string(hi) + "]");
    }
  };
  in_range("--concurrency", o.concurrency, 1, 4096);
  in_range("--requests", o.requests, 1, 100'000'000);
  in_range("--prompt-tokens", o.prompt_tokens, 1, 100'000'000);
  in_range("--output-tokens", o.output_tokens, 1, 100'000'000);
  in_range("--vocab", o.vocab, 1, std::numeric_limits<int32_t>::max());
  if (!(std::isfinite(o.timeout_s) && o.timeout_s > 0)) {
    throw Error("--timeout " + std::to_string(o.timeout_s) + " must be a finite number of seconds > 0");
  }
  for (char c : o.api_key) {
    if (c == '\r' || c == '\n') throw Error("--api-key: a line break in the key would end the HTTP header");
  }
}

// splitmix64: request i's generator seed from (seed, i), so prompts do not depend on which
// client sends which request.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::string request_body(const BenchServeOptions& o, const std::string& model, int64_t index) {
  nlohmann::json j;
  j["model"] = model;
  if (o.chat) {
    std::string text;
    for (int i = 0; i < o.prompt_tokens; ++i) text += i ? " tok" : "tok";
    j["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", text}}});
  } else {
    std::mt19937_64 rng(mix(o.seed ^ mix(static_cast<uint64_t>(index))));
    std::uniform_int_distribution<int32_t> id(0, o.vocab - 1);
    std::vector<int32_t> ids(static_cast<size_t>(o.prompt_tokens));
    for (auto& t : ids) t = id(rng);
    j["prompt"] = ids;
  }
  j["max_tokens"] = o.output_tokens;
  j["min_tokens"] = o.output_tokens;
  j["ignore_eos"] = true;
  j["temperature"] = 0;
  j["stream"] = true;
  j["stream_options"] = {{"include_usage", true}};
  return j.dump();
}

// ---- one request -----------------------------------------------------------------------------

// A message from a body: the OpenAI error ({"error": {"message"}}), vLLM's older top-level
// {"message"}, FastAPI's {"detail"}, else the body's start on one line.
std::string error_message(const std::string& body) {
  const auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object()) {
    const auto pick = [](const nlohmann::json& v) -> std::optional<std::string> {
      if (v.is_string()) return v.get<std::string>();
      if (v.is_object() && v.contains("message") && v["message"].is_string()) return v["message"].get<std::string>();
      return std::nullopt;
    };
    if (j.contains("error")) {
      if (auto m = pick(j["error"])) return *m;
    }
    if (auto m = pick(j)) return *m;
    if (j.contains("detail")) return j["detail"].is_string() ? j["detail"].get<std::string>() : j["detail"].dump();
  }
  // The start of the body on one line: runs of white space (an HTML page's indentation) as one space.
  std::string s;
  for (char c : body) {
    const bool space = c == '\n' || c == '\r' || c == '\t' || c == ' ';
    if (space && (s.empty() || s.back() == ' ')) continue;
    s += space ? ' ' : c;
    if (s.size() >= 160) {
      s += "...";
      break;
    }
  }
  return s.empty() ? "(empty body)" : s;
}

struct Outcome {
  bool ok = false;
  std::string error;
  double ttft_s = -1, e2e_s = 0;  // ttft_s < 0: no event carried text
  std::vector<double> itl_s;
  int64_t content_events = 0;
  int64_t prompt_tokens = -1, completion_tokens = -1;  // from the usage chunk; -1 when none came
};

// What the stream of one request says, event by event.
class StreamRecorder {
 public:
  StreamRecorder(bool chat, Clock::time_point sent) : chat_(chat), sent_(sent) {}

  void on_event(const std::string& data) {
    if (done_ || !error_.empty()) return;
    const auto now = Clock::now();
    ++events_;
    if (data == "[DONE]") {
      done_ = true;
      out_.e2e_s = seconds_between(sent_, now);
      return;
    }
    const auto j = nlohmann::json::parse(data, nullptr, false);
    if (!j.is_object()) {
      error_ = "an event is not a JSON object: " + data.substr(0, 80);
      return;
    }
    if (j.contains("error") || j.value("object", "") == "error") {
      error_ = "error event: " + error_message(data);
      return;
    }
    if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
      const auto& c = j["choices"][0];
      const nlohmann::json* text = nullptr;
      if (!chat_ && c.contains("text")) text = &c["text"];
      if (chat_ && c.contains("delta") && c["delta"].is_object() && c["delta"].contains("content")) {
        text = &c["delta"]["content"];
      }
      if (text && text->is_string() && !text->get_ref<const std::string&>().empty()) {
        if (out_.content_events == 0) {
          out_.ttft_s = seconds_between(sent_, now);
        } else {
          out_.itl_s.push_back(seconds_between(last_, now));
        }
        last_ = now;
        ++out_.content_events;
      }
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      const auto& u = j["usage"];
      if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer()) out_.prompt_tokens = u["prompt_tokens"];
      if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
        out_.completion_tokens = u["completion_tokens"];
      }
    }
  }

  bool failed() const { return !error_.empty(); }
  bool done() const { return done_; }
  int64_t events() const { return events_; }
  const std::string& error() const { return error_; }
  Outcome& outcome() { return out_; }

 private:
  bool chat_;
  Clock::time_point sent_, last_;
  bool done_ = false;
  int64_t events_ = 0;
  std::string error_;
  Outcome out_;
};

// A client's connection and the deadline of its request in flight, which the watchdog enforces
// by shutting the socket (a read blocked on a silent server returns at once).
struct Slot {
  std::unique_ptr<httplib::Client> client;
  std::mutex mu;
  bool in_flight = false;
  bool timed_out = false;
  Clock::time_point deadline;
};

std::string timeout_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

Outcome run_request(Slot& slot, const BenchServeOptions& o, const std::string& path, const std::string& body) {
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.set_header("Accept", "text/event-stream");
  req.set_header("Accept-Encoding", "identity");  // no compression: events arrive as they are sent
  if (!o.api_key.empty()) req.set_header("Authorization", "Bearer " + o.api_key);

  int status = 0;
  std::string content_type;
  std::string head;  // the body's first 64 KiB: a non-200 answer's error, or what a 200 that is no stream says
  const auto sent = Clock::now();
  const auto deadline = sent + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout_s));
  StreamRecorder rec(o.chat, sent);
  SseParser sse([&](const std::string& data) { rec.on_event(data); });
  std::string stream_error;
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    content_type = res.get_header_value("Content-Type");
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (Clock::now() > deadline) return false;
    constexpr size_t kHead = size_t{64} << 10;
    if (head.size() < kHead) head.append(data, std::min(n, kHead - head.size()));
    if (status != 200) return true;
    if (!sse.feed(std::string_view(data, n))) {
      stream_error = sse.error();
      return false;
    }
    // After an error event nothing matters; after [DONE] the rest is read (the connection stays
    // open for the client's next request).
    return !rec.failed();
  };
  {
    std::lock_guard<std::mutex> lock(slot.mu);
    slot.in_flight = true;
    slot.timed_out = false;
    slot.deadline = deadline;
  }
  const httplib::Result res = slot.client->send(req);
  bool timed_out;
  {
    std::lock_guard<std::mutex> lock(slot.mu);
    slot.in_flight = false;
    timed_out = slot.timed_out;
  }
  // Past the deadline, the content receiver stopped reading (or the watchdog shut the socket).
  timed_out = timed_out || (res.error() != httplib::Error::Success && Clock::now() > deadline);

  Outcome fail;
  if (rec.failed()) {
    fail.error = rec.error();
    return fail;
  }
  if (rec.done()) {  // [DONE] came; whatever the connection did afterwards does not matter
    Outcome out = std::move(rec.outcome());
    out.ok = true;
    return out;
  }
  if (!stream_error.empty()) {
    fail.error = stream_error;
  } else if (timed_out) {
    fail.error = "timed out after " + timeout_text(o.timeout_s) + " s (--timeout)";
  } else if (status == 0) {
    fail.error = "no response: " + httplib::to_string(res.error());
  } else if (status != 200) {
    fail.error = "HTTP " + std::to_string(status) + ": " + error_message(head);
  } else if (res.error() != httplib::Error::Success) {
    fail.error = "the stream broke before [DONE]: " + httplib::to_string(res.error());
  } else {
    sse.finish();  // a last event without its blank line
    if (rec.failed()) {
      fail.error = rec.error();
    } else if (rec.done()) {
      Outcome out = std::move(rec.outcome());
      out.ok = true;
      return out;
    } else if (rec.events() == 0 && content_type.rfind("text/event-stream", 0) != 0) {
      fail.error = "HTTP 200 but not an event stream (Content-Type '" + content_type + "'; does the server stream?): " +
                   error_message(head);
    } else {
      fail.error = "the stream ended without data: [DONE]";
    }
  }
  return fail;
}

// ---- the model -------------------------------------------------------------------------------

std::string resolve_model(const ServerUrl& u, const BenchServeOptions& o) {
  httplib::Client cli(u.host, u.port);
  const auto connect = std::chrono::duration<double>(std::min(o.timeout_s, 10.0));
  cli.set_connection_timeout(std::chrono::duration_cast<std::chrono::microseconds>(connect));
  cli.set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::duration<double>(o.timeout_s)));
  httplib::Headers headers{{"Accept-Encoding", "identity"}};
  if (!o.api_key.empty()) headers.emplace("Authorization", "Bearer " + o.api_key);
  const std::string where = u.text() + "/models";
  const auto res = cli.Get(u.api_root + "/models", headers);
  if (!res) {
    throw Error("cannot reach " + where + " (" + httplib::to_string(res.error()) +
                "); start the server first, or check the URL's host and port");
  }
  if (res->status != 200) {
    std::string hint = "; is it an OpenAI-compatible server (it must list its models at /v1/models)?";
    if (res->status == 401 || res->status == 403) hint = "; give the server's key with --api-key";
    throw Error("GET " + where + " answered HTTP " + std::to_string(res->status) + ": " + error_message(res->body) + hint);
  }
  const auto j = nlohmann::json::parse(res->body, nullptr, false);
  std::vector<std::string> ids;
  if (j.is_object() && j.contains("data") && j["data"].is_array()) {
    for (const auto& m : j["data"]) {
      if (m.is_object() && m.contains("id") && m["id"].is_string()) ids.push_back(m["id"]);
    }
  } else {
    throw Error("GET " + where + " did not answer a model list ({\"data\": [{\"id\": ...}]}): " + res->body.substr(0, 200));
  }
  if (o.model.empty()) {
    if (ids.empty()) throw Error("GET " + where + " lists no models; give one with --model");
    return ids.front();
  }
  if (std::find(ids.begin(), ids.end(), o.model) == ids.end()) {
    std::string list;
    for (const auto& id : ids) list += (list.empty() ? "" : ", ") + id;
    throw Error("--model " + o.model + ": the server at " + u.text() + " serves " + (list.empty() ? "no models" : list));
  }
  return o.model;
}

}  // namespace

// ---- the run ---------------------------------------------------------------------------------

BenchServeResult bench_serve(const BenchServeOptions& o) {
  validate(o);
  const ServerUrl u = parse_url(o.url);
  BenchServeResult r;
  r.base_url = u.text();
  r.model = resolve_model(u, o);
  r.endpoint = u.api_root + (o.chat ? "/chat/completions" : "/completions");
  r.concurrency = o.concurrency, r.requests = o.requests, r.prompt_tokens = o.prompt_tokens;
  r.output_tokens = o.output_tokens, r.vocab = o.vocab, r.chat = o.chat, r.seed = o.seed;

  const int clients = std::min(o.concurrency, o.requests);
  std::vector<Slot> slots(static_cast<size_t>(clients));
  const auto timeout = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::duration<double>(o.timeout_s));
  for (auto& s : slots) {
    s.client = std::make_unique<httplib::Client>(u.host, u.port);
    s.client->set_keep_alive(true);
    // NOTE: without TCP_NODELAY the request body, written after its headers, waits for the
    // server's delayed ACK of them (up to 40 ms on Linux) on a reused connection: added to TTFT.
    s.client->set_tcp_nodelay(true);
    s.client->set_connection_timeout(timeout);
    s.client->set_read_timeout(timeout);
    s.client->set_write_timeout(timeout);
  }

  std::atomic<int64_t> next{0};
  std::mutex mu;  // guards outcomes, done and the progress callback
  std::vector<Outcome> outcomes(static_cast<size_t>(o.requests));
  int64_t done = 0, failed = 0;

  // The watchdog: shuts the connection of a request past its deadline.
  std::mutex watch_mu;
  std::condition_variable watch_cv;
  bool finished = false;
  std::thread watchdog([&] {
    const auto tick = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(std::clamp(o.timeout_s / 20, 0.005, 0.1)));
    std::unique_lock<std::mutex> lock(watch_mu);
    while (!watch_cv.wait_for(lock, tick, [&] { return finished; })) {
      const auto now = Clock::now();
      for (auto& s : slots) {
        std::lock_guard<std::mutex> g(s.mu);
        if (s.in_flight && !s.timed_out && now > s.deadline) {
          s.timed_out = true;
          s.client->stop();
        }
      }
    }
  });

  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      for (int64_t i; (i = next.fetch_add(1)) < o.requests;) {
        const std::string body = request_body(o, r.model, i);
        Outcome out = run_request(slots[static_cast<size_t>(c)], o, r.endpoint, body);
        std::lock_guard<std::mutex> lock(mu);
        ++done;
        if (!out.ok) ++failed;
        outcomes[static_cast<size_t>(i)] = std::move(out);
        if (o.progress) o.progress(done, failed, o.requests);
      }
    });
  }
  for (auto& t : threads) t.join();
  r.duration_s = seconds_between(start, Clock::now());
  {
    std::lock_guard<std::mutex> lock(watch_mu);
    finished = true;
  }
  watch_cv.notify_all();
  watchdog.join();

  std::vector<double> ttft, itl, e2e;
  std::map<std::string, int64_t> reasons;
  std::vector<std::string> first_seen;  // reasons in the order they first failed a request
  for (const auto& out : outcomes) {
    if (!out.ok) {
      ++r.failed;
      if (reasons[out.error]++ == 0) first_seen.push_back(out.error);
      continue;
    }
    ++r.completed;
    if (out.ttft_s >= 0) ttft.push_back(out.ttft_s);
    itl.insert(itl.end(), out.itl_s.begin(), out.itl_s.end());
    e2e.push_back(out.e2e_s);
    const bool usage = out.completion_tokens >= 0;
    if (!usage) ++r.without_usage;
    const int64_t generated = usage ? out.completion_tokens : out.content_events;
    r.total_output_tokens += generated;
    r.total_prompt_tokens += out.prompt_tokens >= 0 ? out.prompt_tokens : o.prompt_tokens;
    if (generated != o.output_tokens) ++r.other_output_length;
  }
  std::stable_sort(first_seen.begin(), first_seen.end(),
                   [&](const std::string& a, const std::string& b) { return reasons[a] > reasons[b]; });
  for (const auto& m : first_seen) {
    if (r.errors.size() < 5) {
      r.errors.push_back({m, reasons[m]});
    } else {
      r.other_reasons += reasons[m];
    }
  }
  const double d = r.duration_s > 0 ? r.duration_s : 1.0;
  r.request_throughput = static_cast<double>(r.completed) / d;
  r.output_tokens_per_s = static_cast<double>(r.total_output_tokens) / d;
  r.total_tokens_per_s = static_cast<double>(r.total_prompt_tokens + r.total_output_tokens) / d;
  r.ttft = infer::latency_of(std::move(ttft));
  r.itl = infer::latency_of(std::move(itl));
  r.e2e = infer::latency_of(std::move(e2e));
  return r;
}

nlohmann::ordered_json to_json(const BenchServeResult& r) {
  const auto ms = [](const infer::Latency& l) {
    return nlohmann::ordered_json{{"p50", l.p50 * 1e3}, {"p95", l.p95 * 1e3}, {"p99", l.p99 * 1e3},
                                  {"mean", l.mean * 1e3}, {"max", l.max * 1e3},   {"count", l.count}};
  };
  nlohmann::ordered_json j;
  j["url"] = r.base_url;
  j["endpoint"] = r.endpoint;
  j["model"] = r.model;
  j["concurrency"] = r.concurrency;
  j["requests"] = r.requests;
  j["prompt_tokens"] = r.prompt_tokens;
  j["output_tokens"] = r.output_tokens;
  j["vocab"] = r.vocab;
  j["chat"] = r.chat;
  j["seed"] = r.seed;
  j["completed"] = r.completed;
  j["failed"] = r.failed;
  auto errors = nlohmann::ordered_json::array();
  for (const auto& e : r.errors) errors.push_back({{"message", e.message}, {"count", e.count}});
  j["errors"] = errors;
  j["other_errors"] = r.other_reasons;
  j["duration_s"] = r.duration_s;
  j["request_throughput"] = r.request_throughput;
  j["output_tokens_per_s"] = r.output_tokens_per_s;
  j["total_tokens_per_s"] = r.total_tokens_per_s;
  j["total_prompt_tokens"] = r.total_prompt_tokens;
  j["total_output_tokens"] = r.total_output_tokens;
  j["without_usage"] = r.without_usage;
  j["other_output_length"] = r.other_output_length;
  j["ttft_ms"] = ms(r.ttft);
  j["itl_ms"] = ms(r.itl);
  j["e2e_ms"] = ms(r.e2e);
  return j;
}

}  // namespace nvfp4::serve

// `nvfp4 serve` in process over the CPU engine and a byte-level model, spoken to over loopback
// HTTP: the OpenAI endpoints give the batcher's tokens (streamed or not), errors are OpenAI error
// objects with the right status, authentication, body limits, malformed input by the thousand,
// 64 concurrent streams, a client that hangs up, the metrics, and a graceful shutdown.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <thread>

#include "nvfp4/batcher.hpp"
#include "serve/openai_api.hpp"
#include "serve_test_util.hpp"
#include "support/test_support.hpp"

namespace {

using json = nlohmann::json;
using nvfp4::test::post_stream;
using nvfp4::test::TestServer;

constexpr char kPrefix[] = "nvfp4_server_test_";
using ServerTest = nvfp4::test::ScratchDirTest<kPrefix>;

json post_json(const TestServer& s, const std::string& path, const json& body, int* status = nullptr,
               const httplib::Headers& h = {}) {
  auto c = s.client();
  const auto res = c.Post(path.c_str(), h, body.dump(), "application/json");
  if (!res) {
    ADD_FAILURE() << "no response from " << path;
    return {};
  }
  if (status) *status = res->status;
  return json::parse(res->body);
}

// The text of a greedy completion computed by the batcher directly (what the server must return).
std::string greedy_text(TestServer& s, const std::vector<int32_t>& prompt, int max_tokens) {
  nvfp4::infer::EngineOptions eo;
  eo.max_context = 128;
  const auto e = nvfp4::infer::make_cpu_engine(*s.model, eo);
  nvfp4::infer::Batcher b(*e, *s.model, {});
  nvfp4::infer::BatchRequest r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  auto st = b.submit(r);
  std::string text;
  nvfp4::infer::BatchEvent ev;
  while (st->next(ev, std::chrono::seconds(30))) {
    if (ev.kind == nvfp4::infer::BatchEvent::Kind::text) text += ev.text;
  }
  return text;
}

TEST_F(ServerTest, CompletionsStreamedOrNotGiveTheBatchersText) {
  nvfp4::test::write_byte_model(dir_, 5);
  TestServer s(dir_, {});
  // /v1/models, /health
  auto c = s.client();
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["data"][0]["id"], s.server->model_name());
  EXPECT_EQ(m["data"][0]["max_model_len"], 128);
  EXPECT_EQ(c.Get("/health")->status, 200);

  const std::string want = greedy_text(s, s.model->encode_prompt("Hello"), 12);
  int status = 0;
  const json r = post_json(s, "/v1/completions",
                           {{"model", s.server->model_name()}, {"prompt", "Hello"}, {"max_tokens", 12}, {"temperature", 0}},
                           &status);
  ASSERT_EQ(status, 200) << r.dump();
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["usage"]["prompt_tokens"], 6);  // end-of-text + 5 bytes
  const int n = r["usage"]["completion_tokens"];
  EXPECT_GE(n, 1);
  EXPECT_LE(n, 12);
  EXPECT_EQ(r["usage"]["total_tokens"], 6 + n);
  // The text equals the batcher's (compared through JSON: invalid UTF-8 became U+FFFD in both).
  EXPECT_EQ(r["choices"][0]["text"], json::parse(nvfp4::serve::dump(json(want))));

  // Streamed: the pieces add up to the same text; the last chunk has the finish reason; usage; [DONE].
  const auto sr = post_stream(s.port, "/v1/completions",
                              json{{"prompt", "Hello"}, {"max_tokens", 12}, {"temperature", 0}, {"stream", true},
                                   {"stream_options", {{"include_usage", true}}}}.dump());
  ASSERT_EQ(sr.status, 200) << sr.body;
  ASSERT_TRUE(sr.done) << sr.body;
  ASSERT_GE(sr.events.size(), 2u);
  std::string text;
  for (size_t i = 0; i + 1 < sr.events.size(); ++i) {
    ASSERT_EQ(sr.events[i]["choices"].size(), 1u);
    text += sr.events[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(json(text), r["choices"][0]["text"]);
  EXPECT_EQ(sr.events[sr.events.size() - 2]["choices"][0]["finish_reason"], r["choices"][0]["finish_reason"]);
  EXPECT_EQ(sr.events.back()["choices"].size(), 0u);
  EXPECT_EQ(sr.events.back()["usage"], r["usage"]);

  // Token ids as the prompt, and echo.
  const json ids = post_json(s, "/v1/completions",
                             {{"prompt", json::array({256, 'H', 'e', 'l', 'l', 'o'})}, {"max_tokens", 12}, {"temperature", 0}},
                             &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(ids["choices"][0]["text"], r["choices"][0]["text"]);
  const json echo = post_json(s, "/v1/completions",
                              {{"prompt", "Hello"}, {"max_tokens", 12}, {"temperature", 0}, {"echo", true}}, &status);
  EXPECT_EQ(echo["choices"][0]["text"], json::parse(nvfp4::serve::dump(json("Hello" + want))));
  // A seed makes sampling repeat itself.
  const json sampled = {{"prompt", "Hi"}, {"max_tokens", 20}, {"temperature", 1.0}, {"seed", 7}, {"ignore_eos", true}};
  EXPECT_EQ(post_json(s, "/v1/completions", sampled)["choices"][0]["text"],
            post_json(s, "/v1/completions", sampled)["choices"][0]["text"]);
  const json exact = post_json(s, "/v1/completions", sampled);
  EXPECT_EQ(exact["usage"]["completion_tokens"], 20) << "ignore_eos generates max_tokens";
  // The log has one JSON line per request.
  std::istringstream lines(s.log.str());
  std::string line;
  int logged = 0;
  while (std::getline(lines, line)) {
    const json l = json::parse(line);
    EXPECT_TRUE(l.contains("status"));
    ++logged;
  }
  EXPECT_GE(logged, 6);
}

TEST_F(ServerTest, BadRequestsGetOpenAiErrorsNamingTheField) {
  nvfp4::test::write_byte_model(dir_, 5);
  nvfp4::serve::ServeOptions o;
  o.max_body_bytes = 4096;
  TestServer s(dir_, o);
  struct Case {
    std::string body;
    int status;
    std::string param;
  };
  const std::vector<Case> cases = {
      {"{not json", 400, ""},
      {"[1,2]", 400, ""},
      {R"({"max_tokens": 5})", 400, "prompt"},
      {R"({"prompt": 5})", 400, "prompt"},
      {R"({"prompt": "a", "max_tokens": "5"})", 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 0})", 400, "max_tokens"},
      {R"({"prompt": "a", "max_tokens": 1.5})", 400, "max_tokens"},
      {R"({"prompt": "a", "temperature": -1})", 400, "temperature"},
      {R"({"prompt": "a", "temperature": 1e999})", 400, ""},
      {R"({"prompt": "a", "top_p": 0})", 400, "top_p"},
      {R"({"prompt": "a", "n": 2})", 400, "n"},
      {R"({"prompt": "a", "logprobs": 3})", 400, "logprobs"},
      {R"({"prompt": "a", "stop": [""]})", 400, "stop"},
      {R"({"prompt": "a", "stop": 7})", 400, "stop"},
      {R"({"prompt": "a", "stream_options": {"include_usage": true}})", 400, "stream_options"},
      {R"({"prompt": "a", "presence_penalty": 1})", 400, "presence_penalty"},
      {R"({"prompt": [1, -3]})", 400, "prompt[1]"},
      {R"({"prompt": [1, 300]})", 400, "prompt"},
      {R"({"prompt": []})", 400, "prompt"},
      {R"({"prompt": "a", "max_tokens": 200})", 400, "max_tokens"},
      {R"({"prompt": "a", "model": "other"})", 404, "model"},
      {R"({"prompt": "a", "min_tokens": 9, "max_tokens": 3})", 400, "min_tokens"},
  };
  for (const auto& k : cases) {
    auto c = s.client();
    const auto res = c.Post("/v1/completions", k.body, "application/json");
    ASSERT_TRUE(res) << k.body;
    EXPECT_EQ(res->status, k.status) << k.body << " -> " << res->body;
    const json e = json::parse(res->body, nullptr, false);
    ASSERT_TRUE(e.is_object() && e.contains("error")) << res->body;
    EXPECT_FALSE(e["error"]["message"].get<std::string>().empty());
    if (!k.param.empty()) {
      EXPECT_EQ(e["error"]["param"], k.param) << k.body << " -> " << res->body;
    }
  }
  // The prompt beyond the context: the message says so.
  int status = 0;
  const json longp = post_json(s, "/v1/completions", {{"prompt", std::string(200, 'x')}, {"max_tokens", 1}}, &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(longp["error"]["code"], "context_length_exceeded");
  // Chat on a model without a template.
  const json chat = post_json(s, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}}, &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(chat["error"]["message"].get<std::string>().find("no chat template"), std::string::npos);
  // Unknown route, wrong method, oversized body: JSON errors too.
  auto c = s.client();
  auto r404 = c.Get("/v1/nothing");
  EXPECT_EQ(r404->status, 404);
  EXPECT_TRUE(json::parse(r404->body).contains("error"));
  auto big = c.Post("/v1/completions", std::string(10000, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
}

TEST_F(ServerTest, ApiKeyGuardsTheApiButNotHealthOrMetrics) {
  nvfp4::test::write_byte_model(dir_, 5);
  nvfp4::serve::ServeOptions o;
  o.api_key = "sk-test-123";
  TestServer s(dir_, o);
  int status = 0;
  const json body = {{"prompt", "a"}, {"max_tokens", 2}};
  const json none = post_json(s, "/v1/completions", body, &status);
  EXPECT_EQ(status, 401);
  EXPECT_EQ(none["error"]["code"], "invalid_api_key");
  post_json(s, "/v1/completions", body, &status, {{"Authorization", "Bearer sk-test-124"}});
  EXPECT_EQ(status, 401);
  post_json(s, "/v1/completions", body, &status, {{"Authorization", "Bearer sk-test-123"}});
  EXPECT_EQ(status, 200);
  auto c = s.client();
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  EXPECT_EQ(c.Get("/health")->status, 200);
  EXPECT_EQ(c.Get("/metrics")->status, 200);
}

TEST_F(ServerTest, AThousandMalformedRequestsLeaveTheServerServing) {
  nvfp4::test::write_byte_model(dir_, 5);
  TestServer s(dir_, {});
  std::mt19937_64 rng(11);
  const std::vector<std::string> seeds = {
      R"({"prompt": "a", "max_tokens": 3})", R"({"messages": [{"role": "user", "content": "x"}]})",
      R"({"prompt": [1, 2, 3], "stream": true})", R"({"prompt": "a", "stop": ["x", "y"], "top_k": 3})"};
  int served = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string b = seeds[rng() % seeds.size()];
    // Mutate: flip, insert, delete or truncate bytes.
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits && !b.empty(); ++k) {
      const size_t at = rng() % b.size();
      switch (rng() % 4) {
        case 0: b[at] = static_cast<char>(rng() & 0xFF); break;
        case 1: b.insert(at, 1, "{}[]\",:0-e\\"[rng() % 11]); break;
        case 2: b.erase(at, 1); break;
        default: b.resize(at); break;
      }
    }
    auto c = s.client();
    c.set_read_timeout(30, 0);
    const char* path = (i % 2) ? "/v1/chat/completions" : "/v1/completions";
    const auto res = c.Post(path, b, "application/json");
    ASSERT_TRUE(res) << "no answer to request " << i << ": " << b;
    ASSERT_TRUE(res->status == 200 || (res->status >= 400 && res->status < 500)) << res->status << " for " << b;
    if (res->status == 200) ++served;
  }
  // Raw bytes that are not HTTP at all.
  for (int i = 0; i < 50; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(s.port));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::string junk(1 + rng() % 300, '\0');
    for (auto& ch : junk) ch = static_cast<char>(rng() & 0xFF);
    if (i % 5 == 0) junk = "POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n{";
    (void)!write(fd, junk.data(), junk.size());
    shutdown(fd, SHUT_WR);
    char buf[512];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
  }
  int status = 0;
  const json ok = post_json(s, "/v1/completions", {{"prompt", "still"}, {"max_tokens", 3}}, &status);
  EXPECT_EQ(status, 200) << ok.dump();
  EXPECT_EQ(s.client().Get("/health")->status, 200);
  std::cout << served << " of the 1000 mutated requests were still valid\n";
}

TEST_F(ServerTest, SixtyFourConcurrentStreamsCompleteAndADisconnectFreesItsSlot) {
  nvfp4::test::write_byte_model(dir_, 5);
  nvfp4::serve::ServeOptions o;
  TestServer s(dir_, o, 8);
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 64; ++i) {
    clients.emplace_back([&, i] {
      const auto r = post_stream(s.port, "/v1/completions",
                                 json{{"prompt", "client " + std::to_string(i)}, {"max_tokens", 8}, {"stream", true},
                                      {"ignore_eos", true}, {"seed", i}}.dump());
      if (r.status == 200 && r.done && r.events.size() >= 2) {
        ++ok;
      } else {
        ADD_FAILURE() << "client " << i << ": status " << r.status << ", " << r.body.substr(0, 300);
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 64) << s.log.str().substr(0, 3000);

  // A client that reads two events of a long stream and hangs up: the request is cancelled.
  const auto cut = post_stream(s.port, "/v1/completions",
                               json{{"prompt", "long"}, {"max_tokens", 120}, {"stream", true}, {"ignore_eos", true}}.dump(), 2);
  EXPECT_EQ(cut.events.size(), 2u);
  bool cancelled = false;
  for (int i = 0; i < 200 && !cancelled; ++i) {
    const std::string m = s.server->metrics_text();
    cancelled = m.find("nvfp4_request_success_total{finish_reason=\"cancelled\"} 1") != std::string::npos &&
                m.find("nvfp4_num_requests_running 0") != std::string::npos;
    if (!cancelled) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(cancelled) << s.server->metrics_text();
  const std::string m = s.server->metrics_text();
  EXPECT_NE(m.find("nvfp4_request_success_total{finish_reason=\"length\"} 64"), std::string::npos) << m;
  EXPECT_NE(m.find("nvfp4_time_to_first_token_seconds_count 65"), std::string::npos) << m;
  EXPECT_NE(m.find("nvfp4_kv_cache_blocks_used 0"), std::string::npos) << m;
  EXPECT_NE(m.find("# TYPE nvfp4_inter_token_latency_seconds histogram"), std::string::npos);
}

TEST_F(ServerTest, ShutdownLetsRequestsInFlightFinishAndRefusesNewOnes) {
  nvfp4::test::write_byte_model(dir_, 5);
  TestServer s(dir_, {});
  std::thread inflight_client;
  nvfp4::test::SseResult inflight;
  inflight_client = std::thread([&] {
    inflight = post_stream(s.port, "/v1/completions",
                           json{{"prompt", "x"}, {"max_tokens", 100}, {"stream", true}, {"ignore_eos", true}}.dump());
  });
  // Wait until it runs.
  for (int i = 0; i < 500 && s.server->metrics_text().find("nvfp4_num_requests_running 1") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::thread stopper([&] { s.server->shutdown(30); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stopper.join();
  inflight_client.join();
  EXPECT_EQ(inflight.status, 200);
  EXPECT_TRUE(inflight.done);
  ASSERT_GE(inflight.events.size(), 2u);
  EXPECT_EQ(inflight.events.back()["choices"][0]["finish_reason"], "length") << inflight.body;
}

}  // namespace

namespace {

// Canary A/B: the same model as its own canary agrees on every token with zero KL; the same model
// with W4A4 weights and activations as the canary is measured as different.
TEST_F(ServerTest, CanaryReportsAgreementKlAndLatencyRatio) {
  nvfp4::test::write_byte_model(dir_, 5);
  const auto model = nvfp4::infer::HfModel::open(dir_.string());
  for (const auto precision : {nvfp4::infer::Precision::fp32, nvfp4::infer::Precision::w4a4}) {
    nvfp4::infer::EngineOptions eo;
    eo.max_sequences = 4;
    eo.max_context = 128;
    const auto primary = nvfp4::infer::make_cpu_engine(model, eo);
    eo.precision = precision;
    const auto shadow = nvfp4::infer::make_cpu_engine(model, eo);
    nvfp4::serve::CanaryOptions co;
    co.model = &model;
    co.engine = shadow.get();
    co.name = "canary";
    co.fraction = 0.5;
    co.kl_tokens = 8;
    std::ostringstream log;
    nvfp4::serve::ServeOptions o;
    o.port = 0;
    o.log = &log;
    nvfp4::serve::Server server(model, *primary, o, &co);
    const int port = server.start();
    httplib::Client c("127.0.0.1", port);
    for (int i = 0; i < 6; ++i) {
      const json body = {{"prompt", "req " + std::to_string(i)}, {"max_tokens", 12}, {"ignore_eos", true},
                         {"temperature", i % 2 ? 0.0 : 1.0}, {"seed", i}, {"stream", i % 3 == 0}};
      const auto res = c.Post("/v1/completions", body.dump(), "application/json");
      ASSERT_TRUE(res);
      ASSERT_EQ(res->status, 200) << res->body;
    }
    std::string m;
    for (int i = 0; i < 500; ++i) {
      m = server.metrics_text();
      if (m.find("nvfp4_canary_requests_total{outcome=\"compared\"} 3") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_NE(m.find("nvfp4_canary_requests_total{outcome=\"compared\"} 3"), std::string::npos) << m;
    EXPECT_NE(m.find("nvfp4_canary_tokens_total 36"), std::string::npos) << m;
    auto value = [&](const std::string& name) {
      const size_t at = m.find("\n" + name + " ");
      return at == std::string::npos ? -1.0 : std::stod(m.substr(at + name.size() + 2));
    };
    const double agreement = value("nvfp4_canary_token_agreement_ratio"), kl = value("nvfp4_canary_mean_kl");
    EXPECT_GT(value("nvfp4_canary_latency_ratio"), 0);
    if (precision == nvfp4::infer::Precision::fp32) {
      EXPECT_EQ(agreement, 1.0) << m;
      EXPECT_LT(kl, 1e-9) << m;
    } else {
      EXPECT_GT(kl, 1e-6) << m;
      EXPECT_GE(agreement, 0.0);
      EXPECT_LE(agreement, 1.0);
    }
    server.shutdown(0);
    int lines = 0;
    std::istringstream in(log.str());
    for (std::string line; std::getline(in, line);) {
      const json l = json::parse(line);
      if (l.contains("canary")) {
        ++lines;
        EXPECT_EQ(l["tokens"], 12);
        EXPECT_TRUE(l.contains("mean_kl") && l.contains("agreement") && l.contains("latency_ratio"));
      }
    }
    EXPECT_EQ(lines, 3);
  }
}

}  // namespace

namespace {

constexpr char kChatMl[] =
    "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('a system message must come first') }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// Chat: the messages rendered with the model's template, then generated as the completion of the
// rendered text's tokens would be; a template's raise_exception is the client's 400.
TEST_F(ServerTest, ChatCompletionsRenderTheModelsTemplate) {
  nvfp4::test::write_byte_model(dir_, 9, kChatMl);
  TestServer s(dir_, {});
  const std::string rendered = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                               "<|im_start|>assistant\n";
  json ids = json::array();
  for (unsigned char ch : rendered) ids.push_back(static_cast<int>(ch));
  int status = 0;
  const json want = post_json(s, "/v1/completions", {{"prompt", ids}, {"max_tokens", 10}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200) << want.dump();
  const json messages = {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}};
  const json got = post_json(s, "/v1/chat/completions", {{"messages", messages}, {"max_tokens", 10}, {"temperature", 0}}, &status);
  ASSERT_EQ(status, 200) << got.dump();
  EXPECT_EQ(got["object"], "chat.completion");
  EXPECT_EQ(got["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(got["choices"][0]["message"]["content"], want["choices"][0]["text"]);
  EXPECT_EQ(got["usage"]["prompt_tokens"], static_cast<int>(rendered.size()));
  // Streamed: a role delta first, then the same content.
  const auto sr = post_stream(s.port, "/v1/chat/completions",
                              json{{"messages", messages}, {"max_tokens", 10}, {"temperature", 0}, {"stream", true}}.dump());
  ASSERT_EQ(sr.status, 200);
  ASSERT_TRUE(sr.done);
  EXPECT_EQ(sr.events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (const auto& e : sr.events) {
    const auto& d = e["choices"][0]["delta"];
    if (d.contains("content")) text += d["content"].get<std::string>();
  }
  EXPECT_EQ(json(text), got["choices"][0]["message"]["content"]);
  EXPECT_EQ(sr.events.back()["choices"][0]["finish_reason"], got["choices"][0]["finish_reason"]);
  // The template refuses a late system message: 400 with its words.
  const json late = {{{"role", "user"}, {"content", "Hi"}}, {{"role", "system"}, {"content", "x"}}};
  const json refused = post_json(s, "/v1/chat/completions", {{"messages", late}}, &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(refused["error"]["message"].get<std::string>().find("a system message must come first"), std::string::npos)
      << refused.dump();
  EXPECT_EQ(refused["error"]["param"], "messages");
}

TEST_F(ServerTest, ATemplateThatCannotRenderFailsAtStart) {
  nvfp4::test::write_byte_model(dir_, 9, "{{ messages[0]['content'] + 5 }}");
  const auto model = nvfp4::infer::HfModel::open(dir_.string());
  nvfp4::infer::EngineOptions eo;
  eo.max_context = 128;
  const auto engine = nvfp4::infer::make_cpu_engine(model, eo);
  nvfp4::test::expect_error([&] { nvfp4::serve::Server server(model, *engine, {}); },
                            "cannot render a one-message conversation");
  // A syntax error names the template's file and place.
  nvfp4::test::write_byte_model(dir_, 9, "{% for m in messages %}{{ m.content }}");
  const auto model2 = nvfp4::infer::HfModel::open(dir_.string());
  const auto engine2 = nvfp4::infer::make_cpu_engine(model2, eo);
  nvfp4::test::expect_error([&] { nvfp4::serve::Server server(model2, *engine2, {}); }, "tokenizer_config.json");
  // chat_template.jinja beside a config without one is read too.
  std::filesystem::remove(dir_ / "tokenizer_config.json");
  std::ofstream(dir_ / "chat_template.jinja") << kChatMl;
  const auto model3 = nvfp4::infer::HfModel::open(dir_.string());
  const auto engine3 = nvfp4::infer::make_cpu_engine(model3, eo);
  nvfp4::serve::ServeOptions o;
  o.port = 0;
  nvfp4::serve::Server server(model3, *engine3, o);
  const int port = server.start();
  httplib::Client c("127.0.0.1", port);
  const auto res = c.Post("/v1/chat/completions",
                          json{{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"max_tokens", 2}}.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
}

}  // namespace

// nvfp4 bench-serve (include/nvfp4/bench_serve.hpp): the event-stream parser on awkwardly split
// input, then whole runs against a fake OpenAI-compatible server in this process
// (fake_openai_server.hpp): exact counts and token totals, latencies that follow the fake's
// delays, real concurrency, every way a request can fail, the errors for bad options and
// unreachable servers, and the CLI over the same fake.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nvfp4/bench_serve.hpp"
#include "serve/fake_openai_server.hpp"
#include "serve/sse.hpp"
#include "support/test_support.hpp"

namespace nvfp4::test {
namespace {

using serve::BenchServeOptions;
using serve::BenchServeResult;
using serve::SseParser;

// ---- the event-stream parser -------------------------------------------------------------------

std::vector<std::string> parse_in_pieces(const std::string& stream, const std::vector<size_t>& cuts) {
  std::vector<std::string> events;
  SseParser p([&](const std::string& d) { events.push_back(d); });
  size_t at = 0;
  for (size_t cut : cuts) {
    EXPECT_TRUE(p.feed(std::string_view(stream).substr(at, cut - at)));
    at = cut;
  }
  EXPECT_TRUE(p.feed(std::string_view(stream).substr(at)));
  p.finish();
  return events;
}

// A stream with every feature the parser handles: a byte-order mark, comments, "\r\n", "\r" and
// "\n" line endings, fields other than data, a data line without its space, an empty data value,
// an event of two data lines and one without data.
const std::string kStream =
    "\xEF\xBB\xBF: keep-alive comment\r\n\r\n"
    "data: {\"a\":1}\r\n\r\n"
    "event: message\nid: 7\nretry: 100\ndata:{\"b\":2}\n\n"
    "data: line one\rdata: line two\r\r"
    "id: 8\n\n"
    "data:\n\n"
    "data: [DONE]\n\n";
const std::vector<std::string> kEvents = {"{\"a\":1}", "{\"b\":2}", "line one\nline two", "", "[DONE]"};

TEST(Sse, WholeStream) { EXPECT_EQ(parse_in_pieces(kStream, {}), kEvents); }

TEST(Sse, EverySplitIntoTwoAndThreePieces) {
  for (size_t i = 0; i <= kStream.size(); ++i) {
    ASSERT_EQ(parse_in_pieces(kStream, {i}), kEvents) << "split at " << i;
    for (size_t j = i; j <= kStream.size(); j += 3) {
      ASSERT_EQ(parse_in_pieces(kStream, {i, j}), kEvents) << "split at " << i << ", " << j;
    }
  }
}

TEST(Sse, OneByteAtATime) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < kStream.size(); ++i) cuts.push_back(i);
  EXPECT_EQ(parse_in_pieces(kStream, cuts), kEvents);
}

TEST(Sse, CrLfSplitBetweenReadsIsOneLineBreak) {
  // "\r" ends one read and "\n" starts the next: one line break, not a line break and a blank line
  // (which would end the event early and split its two data lines into two events).
  std::vector<std::string> events;
  SseParser p([&](const std::string& d) { events.push_back(d); });
  EXPECT_TRUE(p.feed("data: x\r"));
  EXPECT_TRUE(p.feed("\ndata: y\r"));
  EXPECT_TRUE(p.feed("\n\r"));
  EXPECT_TRUE(p.feed("\n"));
  EXPECT_EQ(events, std::vector<std::string>{"x\ny"});
}

TEST(Sse, FinishDeliversAnEventWithoutItsBlankLine) {
  EXPECT_EQ(parse_in_pieces("data: a\n\ndata: [DONE]", {}), (std::vector<std::string>{"a", "[DONE]"}));
  EXPECT_EQ(parse_in_pieces("data: a\n\ndata: [DONE]\n", {}), (std::vector<std::string>{"a", "[DONE]"}));
  EXPECT_EQ(parse_in_pieces(": only a comment", {}), std::vector<std::string>{});
  EXPECT_EQ(parse_in_pieces("\xEF\xBB", {}), std::vector<std::string>{});  // a lone partial BOM: no event
}

TEST(Sse, AnOverlongLineIsAnError) {
  SseParser p([](const std::string&) {});
  const std::string chunk(1 << 20, 'x');
  bool ok = p.feed("data: ");
  for (size_t i = 0; ok && i <= SseParser::kMaxLineBytes / chunk.size(); ++i) ok = p.feed(chunk);
  EXPECT_FALSE(ok);
  EXPECT_NE(p.error().find("longer than"), std::string::npos) << p.error();
}

// ---- runs against the fake server ---------------------------------------------------------------

BenchServeOptions options_for(const FakeServer& s, const FakeConfig& c, int requests, int concurrency) {
  BenchServeOptions o;
  o.url = s.url();
  o.requests = requests;
  o.concurrency = concurrency;
  o.prompt_tokens = c.prompt_tokens;
  o.output_tokens = c.output_tokens;
  o.vocab = c.vocab;
  o.timeout_s = 10;
  return o;
}

TEST(BenchServe, CountsAndTokenTotalsAreExact) {
  FakeConfig c;
  c.prompt_tokens = 8, c.output_tokens = 6, c.vocab = 50, c.first_delay_ms = 5, c.gap_ms = 1;
  FakeServer s(c);
  BenchServeOptions o = options_for(s, c, 10, 3);
  int64_t progress_calls = 0, last_done = 0;
  o.progress = [&](int64_t done, int64_t failed, int64_t total) {
    ++progress_calls;
    EXPECT_EQ(done, last_done + 1);
    EXPECT_EQ(failed, 0);
    EXPECT_EQ(total, 10);
    last_done = done;
  };
  const BenchServeResult r = serve::bench_serve(o);
  EXPECT_TRUE(s.problems().empty()) << s.problems().front();
  EXPECT_EQ(s.received(), 10);
  EXPECT_EQ(progress_calls, 10);
  EXPECT_EQ(r.completed, 10);
  EXPECT_EQ(r.failed, 0);
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.model, "fake-model");  // the first (only) one /v1/models lists
  EXPECT_EQ(r.base_url, s.url() + "/v1");
  EXPECT_EQ(r.endpoint, "/v1/completions");
  EXPECT_EQ(r.total_prompt_tokens, 80);
  EXPECT_EQ(r.total_output_tokens, 60);
  EXPECT_EQ(r.without_usage, 0);
  EXPECT_EQ(r.other_output_length, 0);
  EXPECT_EQ(r.ttft.count, 10);
  EXPECT_EQ(r.itl.count, 10 * 5);  // one gap between each two of a request's 6 events
  EXPECT_EQ(r.e2e.count, 10);
  EXPECT_GT(r.duration_s, 0);
  EXPECT_DOUBLE_EQ(r.request_throughput, 10 / r.duration_s);
  EXPECT_DOUBLE_EQ(r.output_tokens_per_s, 60 / r.duration_s);
  EXPECT_DOUBLE_EQ(r.total_tokens_per_s, 140 / r.duration_s);
}

TEST(BenchServe, PromptsDependOnTheSeedOnly) {
  FakeConfig c;
  c.first_delay_ms = 0, c.gap_ms = 0, c.output_tokens = 2, c.vocab = 1000, c.prompt_tokens = 16;
  auto prompts = [&](uint64_t seed, int concurrency) {
    FakeServer s(c);
    BenchServeOptions o = options_for(s, c, 6, concurrency);
    o.seed = seed;
    serve::bench_serve(o);
    EXPECT_TRUE(s.problems().empty());
    auto p = s.prompts();
    std::sort(p.begin(), p.end());  // arrival order depends on the clients' timing; the set does not
    return p;
  };
  const auto a = prompts(7, 1);
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(prompts(7, 3), a);
  EXPECT_NE(prompts(8, 1), a);
  EXPECT_NE(a[0], a[1]);
}

TEST(BenchServe, LatenciesFollowTheServersDelays) {
  FakeConfig c;
  c.first_delay_ms = 60, c.gap_ms = 15, c.output_tokens = 6;
  FakeServer s(c);
  const BenchServeResult r = serve::bench_serve(options_for(s, c, 4, 1));
  ASSERT_EQ(r.completed, 4);
  // TTFT covers the fake's first-token delay; ITL its gap (the sleep may overshoot on a busy
  // machine, never undershoot).
  EXPECT_GE(r.ttft.p50, 0.060);
  EXPECT_GE(r.ttft.mean, 0.060);
  EXPECT_LT(r.ttft.p50, 0.060 + 0.040);
  EXPECT_EQ(r.itl.count, 4 * 5);
  EXPECT_GE(r.itl.p50, 0.015 * 0.9);
  EXPECT_LT(r.itl.p50, 0.015 + 0.015);
  EXPECT_GE(r.e2e.p50, 0.060 + 5 * 0.015);
  EXPECT_LE(r.ttft.max, r.e2e.max);
}

TEST(BenchServe, ConcurrencyPutsThatManyRequestsInFlight) {
  FakeConfig c;
  c.first_delay_ms = 80, c.gap_ms = 1, c.output_tokens = 3;
  {
    FakeServer s(c);
    const BenchServeResult r = serve::bench_serve(options_for(s, c, 12, 4));
    EXPECT_EQ(r.completed, 12);
    EXPECT_EQ(s.max_in_flight(), 4);
  }
  {
    FakeServer s(c);  // more clients than requests: only as many run as there are requests
    const BenchServeResult r = serve::bench_serve(options_for(s, c, 3, 8));
    EXPECT_EQ(r.completed, 3);
    EXPECT_EQ(s.max_in_flight(), 3);
    EXPECT_EQ(r.concurrency, 8);
  }
  {
    FakeServer s(c);
    serve::bench_serve(options_for(s, c, 3, 1));
    EXPECT_EQ(s.max_in_flight(), 1);
  }
}

// The result's count for a reason containing `needle` (0 when none does).
int64_t failures_with(const BenchServeResult& r, const std::string& needle) {
  int64_t n = 0;
  for (const auto& e : r.errors) {
    if (e.message.find(needle) != std::string::npos) n += e.count;
  }
  return n;
}

TEST(BenchServe, FailedRequestsAreCountedWithTheirReasons) {
  FakeConfig c;
  c.first_delay_ms = 2, c.gap_ms = 1, c.output_tokens = 6;
  c.behaviour = [](int arrival) {
    switch (arrival % 6) {
      case 1: return FakeBehaviour::http500;
      case 2: return FakeBehaviour::http401;
      case 3: return FakeBehaviour::error_event;
      case 4: return FakeBehaviour::close_mid;
      default: return FakeBehaviour::ok;
    }
  };
  FakeServer s(c);
  const BenchServeResult r = serve::bench_serve(options_for(s, c, 12, 2));
  EXPECT_EQ(r.completed, 4);
  EXPECT_EQ(r.failed, 8);
  EXPECT_EQ(failures_with(r, "HTTP 500: fake internal error"), 2);
  EXPECT_EQ(failures_with(r, "HTTP 401: fake: invalid API key"), 2);
  EXPECT_EQ(failures_with(r, "error event: fake overload"), 2);
  EXPECT_EQ(failures_with(r, "the stream broke before [DONE]"), 2);
  EXPECT_EQ(r.errors.size(), 4u);
  EXPECT_EQ(r.other_reasons, 0);
  // Only the completed requests count toward tokens and latencies.
  EXPECT_EQ(r.total_output_tokens, 4 * 6);
  EXPECT_EQ(r.e2e.count, 4);
  EXPECT_EQ(r.itl.count, 4 * 5);
}

TEST(BenchServe, AStreamWithoutUsageCountsItsEvents) {
  FakeConfig c;
  c.first_delay_ms = 1, c.gap_ms = 0, c.output_tokens = 5;
  c.behaviour = [](int) { return FakeBehaviour::no_usage; };
  FakeServer s(c);
  const BenchServeResult r = serve::bench_serve(options_for(s, c, 4, 2));
  EXPECT_EQ(r.completed, 4);
  EXPECT_EQ(r.without_usage, 4);
  EXPECT_EQ(r.total_output_tokens, 4 * 5);
  EXPECT_EQ(r.total_prompt_tokens, 4 * c.prompt_tokens);
}

TEST(BenchServe, AStreamWithoutDoneFails) {
  FakeConfig c;
  c.first_delay_ms = 1, c.gap_ms = 0;
  c.behaviour = [](int a) {
    return a == 0 ? FakeBehaviour::no_done : a == 1 ? FakeBehaviour::not_stream : FakeBehaviour::ok;
  };
  FakeServer s(c);
  const BenchServeResult r = serve::bench_serve(options_for(s, c, 4, 1));
  EXPECT_EQ(r.completed, 2);
  EXPECT_EQ(failures_with(r, "the stream ended without data: [DONE]"), 1);
  EXPECT_EQ(failures_with(r, "HTTP 200 but not an event stream (Content-Type 'application/json'"), 1);
}

TEST(BenchServe, ASilentServerTimesOut) {
  FakeConfig c;
  c.first_delay_ms = 1, c.gap_ms = 0;
  c.behaviour = [](int a) { return a == 0 ? FakeBehaviour::stall : FakeBehaviour::ok; };
  FakeServer s(c);
  BenchServeOptions o = options_for(s, c, 3, 1);
  o.timeout_s = 0.3;
  const auto t0 = std::chrono::steady_clock::now();
  const BenchServeResult r = serve::bench_serve(o);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.completed, 2);
  EXPECT_EQ(failures_with(r, "timed out after 0.3 s"), 1);
  EXPECT_LT(took, 2.0);  // the stalled request was cut at its deadline, not after the fake's 5 s
}

TEST(BenchServe, ApiKeyIsSentAsABearerToken) {
  FakeConfig c;
  c.first_delay_ms = 1, c.gap_ms = 0, c.api_key = "sekrit";
  FakeServer s(c);
  BenchServeOptions o = options_for(s, c, 2, 1);
  expect_error([&] { serve::bench_serve(o); }, "--api-key");
  o.api_key = "sekrit";
  EXPECT_EQ(serve::bench_serve(o).completed, 2);
}

TEST(BenchServe, UrlFormsAndModelChoice) {
  FakeConfig c;
  c.first_delay_ms = 1, c.gap_ms = 0;
  FakeServer s(c);
  for (const std::string suffix : {"/", "/v1", "/v1/"}) {
    BenchServeOptions o = options_for(s, c, 1, 1);
    o.url += suffix;
    const BenchServeResult r = serve::bench_serve(o);
    EXPECT_EQ(r.completed, 1) << suffix;
    EXPECT_EQ(r.base_url, s.url() + "/v1") << suffix;
  }
  BenchServeOptions o = options_for(s, c, 1, 1);
  o.model = "fake-model";
  EXPECT_EQ(serve::bench_serve(o).completed, 1);
  o.model = "other-model";
  expect_error([&] { serve::bench_serve(o); }, "--model other-model: the server at " + s.url() + "/v1 serves fake-model");
}

TEST(BenchServe, ChatCompletions) {
  FakeConfig c;
  c.first_delay_ms = 1, c.gap_ms = 0, c.output_tokens = 4;
  FakeServer s(c);
  BenchServeOptions o = options_for(s, c, 3, 2);
  o.chat = true;
  const BenchServeResult r = serve::bench_serve(o);
  EXPECT_TRUE(s.problems().empty()) << s.problems().front();
  EXPECT_EQ(r.endpoint, "/v1/chat/completions");
  EXPECT_EQ(r.completed, 3);
  EXPECT_EQ(r.itl.count, 3 * 3);
  EXPECT_EQ(r.total_output_tokens, 12);
}

// A port nothing listens on: bound, then closed (no one else takes it within the test).
int unused_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(BenchServe, AnUnreachableServerIsAnErrorNamingTheUrl) {
  BenchServeOptions o;
  const std::string url = "http://127.0.0.1:" + std::to_string(unused_port());
  o.url = url;
  o.timeout_s = 5;
  expect_error([&] { serve::bench_serve(o); }, "cannot reach " + url + "/v1/models");
  expect_error([&] { serve::bench_serve(o); }, "start the server first");
}

TEST(BenchServe, BadOptionsAreErrorsNamingTheOption) {
  // All checked before anything is contacted: the URL's port has no server.
  const std::string url = "http://127.0.0.1:" + std::to_string(unused_port());
  const auto bad = [&](auto change, const std::string& needle) {
    BenchServeOptions o;
    o.url = url;
    change(o);
    expect_error([&] { serve::bench_serve(o); }, needle);
  };
  bad([](BenchServeOptions& o) { o.concurrency = 0; }, "--concurrency 0");
  bad([](BenchServeOptions& o) { o.requests = 0; }, "--requests 0");
  bad([](BenchServeOptions& o) { o.prompt_tokens = -1; }, "--prompt-tokens -1");
  bad([](BenchServeOptions& o) { o.output_tokens = 0; }, "--output-tokens 0");
  bad([](BenchServeOptions& o) { o.vocab = 0; }, "--vocab 0");
  bad([](BenchServeOptions& o) { o.timeout_s = 0; }, "--timeout");
  bad([](BenchServeOptions& o) { o.timeout_s = std::nan(""); }, "--timeout");
  bad([](BenchServeOptions& o) { o.api_key = "a\nb"; }, "--api-key");
  bad([](BenchServeOptions& o) { o.url = "https://127.0.0.1:8000"; }, "https is not supported");
  bad([](BenchServeOptions& o) { o.url = "HTTPS://example.com/v1"; }, "https is not supported");
  bad([](BenchServeOptions& o) { o.url = "127.0.0.1:8000"; }, "has no scheme");
  bad([](BenchServeOptions& o) { o.url = "ftp://127.0.0.1"; }, "scheme 'ftp'");
  bad([](BenchServeOptions& o) { o.url = "http://127.0.0.1:99999"; }, "port '99999'");
  bad([](BenchServeOptions& o) { o.url = "http://127.0.0.1:80x"; }, "port '80x'");
  bad([](BenchServeOptions& o) { o.url = "http://:8000"; }, "has no host");
  bad([](BenchServeOptions& o) { o.url = "http://127.0.0.1:8000/v1?x=1"; }, "query");
}

TEST(BenchServe, JsonHasEveryNumber) {
  FakeConfig c;
  c.first_delay_ms = 1, c.gap_ms = 0;
  c.behaviour = [](int a) { return a == 1 ? FakeBehaviour::http500 : FakeBehaviour::ok; };
  FakeServer s(c);
  const auto j = serve::to_json(serve::bench_serve(options_for(s, c, 3, 1)));
  EXPECT_EQ(j["completed"], 2);
  EXPECT_EQ(j["failed"], 1);
  EXPECT_EQ(j["errors"][0]["message"], "HTTP 500: fake internal error");
  EXPECT_EQ(j["errors"][0]["count"], 1);
  EXPECT_EQ(j["total_output_tokens"], 2 * c.output_tokens);
  for (const char* k : {"ttft_ms", "itl_ms", "e2e_ms"}) {
    for (const char* q : {"p50", "p95", "p99", "mean", "max", "count"}) EXPECT_TRUE(j[k].contains(q)) << k << "." << q;
  }
  for (const char* k : {"url", "model", "endpoint", "concurrency", "requests", "prompt_tokens", "output_tokens", "seed",
                        "duration_s", "request_throughput", "output_tokens_per_s", "total_tokens_per_s"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
}

// ---- the CLI -----------------------------------------------------------------------------------

TEST(BenchServeCli, TableJsonAndExitStatus) {
  FakeConfig c;
  c.first_delay_ms = 2, c.gap_ms = 1;
  c.behaviour = [](int a) { return a == 2 ? FakeBehaviour::http500 : FakeBehaviour::ok; };
  FakeServer s(c);
  const std::string shape = " --prompt-tokens 8 --output-tokens 6 --vocab 256 --timeout 10";
  CliResult r = run_cli("bench-serve " + s.url() + " --requests 4 --concurrency 2" + shape);
  EXPECT_EQ(r.status, 0) << r.output;  // a partial failure exits 0, and says so
  for (const char* want : {"FAILED: 1 of 4 requests", "1 x HTTP 500: fake internal error", "requests ok", "output tokens/s",
                           "TTFT", "ITL", "E2E", "p99"}) {
    EXPECT_NE(r.output.find(want), std::string::npos) << want << " in\n" << r.output;
  }

  r = run_cli("bench-serve " + s.url() + "/v1 --requests 3 --json" + shape);
  EXPECT_EQ(r.status, 0) << r.output;
  const size_t brace = r.output.find("\n{");  // progress lines on stderr come first
  ASSERT_NE(brace, std::string::npos) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(brace + 1), nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j["completed"], 3);
  EXPECT_EQ(j["total_prompt_tokens"], 24);
}

TEST(BenchServeCli, EveryRequestFailedExitsNonZero) {
  FakeConfig c;
  c.behaviour = [](int) { return FakeBehaviour::http500; };
  FakeServer s(c);
  const CliResult r = run_cli("bench-serve " + s.url() + " --requests 3 --prompt-tokens 8 --output-tokens 6");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("all 3 requests failed; the most frequent reason: HTTP 500: fake internal error"),
            std::string::npos)
      << r.output;
}

TEST(BenchServeCli, UsageErrors) {
  CliResult r = run_cli("bench-serve https://127.0.0.1:1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("https is not supported"), std::string::npos) << r.output;
  r = run_cli("bench-serve http://127.0.0.1:1 --concurrency 0");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--concurrency"), std::string::npos) << r.output;
  r = run_cli("bench-serve http://127.0.0.1:" + std::to_string(unused_port()) + " --requests 1");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("cannot reach http://127.0.0.1:"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace nvfp4::test

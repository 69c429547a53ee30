// The OpenAI request parser and response bodies (src/serve/openai_api.hpp) and the Prometheus
// text format (src/serve/metrics.hpp), without HTTP.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"
#include "serve/metrics.hpp"
#include "serve/openai_api.hpp"

namespace {

using json = nlohmann::json;
using nvfp4::serve::ApiError;
using nvfp4::serve::parse_chat_request;
using nvfp4::serve::parse_completion_request;

ApiError error_of(bool chat, const std::string& body) {
  try {
    chat ? parse_chat_request(body) : parse_completion_request(body);
  } catch (const ApiError& e) {
    return e;
  }
  ApiError none;
  none.status = 0;
  return none;
}

TEST(OpenAiRequest, CompletionFieldsAndDefaults) {
  auto r = parse_completion_request(R"({"model": "m", "prompt": "Hi"})");
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt_text, "Hi");
  EXPECT_FALSE(r.prompt_is_ids);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.sampling.temperature, 1.0);  // OpenAI's default, not the CLI's
  EXPECT_EQ(r.sampling.top_p, 1.0);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_FALSE(r.seed_given);
  EXPECT_FALSE(r.stream);

  r = parse_completion_request(R"({"prompt": [[5, 6, 7]], "max_tokens": 9, "min_tokens": 2, "ignore_eos": true,
      "temperature": 0, "top_p": 0.5, "top_k": -1, "seed": -3, "stop": "\n", "stream": true,
      "stream_options": {"include_usage": true}, "echo": true, "user": "u", "unknown_field": [1], "n": 1,
      "presence_penalty": 0, "logprobs": null, "suffix": null})");
  EXPECT_TRUE(r.prompt_is_ids);
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(*r.max_tokens, 9);
  EXPECT_EQ(r.min_tokens, 2);
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_EQ(r.sampling.temperature, 0.0);
  EXPECT_EQ(r.sampling.top_p, 0.5);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, static_cast<uint64_t>(int64_t{-3}));
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n"}));
  EXPECT_TRUE(r.stream && r.include_usage && r.echo);
  EXPECT_EQ(parse_completion_request(R"({"prompt": ["one"]})").prompt_text, "one");
  EXPECT_EQ(parse_completion_request(R"({"prompt": [1, 2.0]})").prompt_ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(*parse_completion_request(R"({"prompt": "a", "max_completion_tokens": 4})").max_tokens, 4);
}

TEST(OpenAiRequest, ChatMessagesAndContentParts) {
  const auto r = parse_chat_request(R"({"messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
      {"role": "assistant", "content": null},
      {"role": "user", "content": "ünïcødé 😀", "name": "bob"}], "max_tokens": 3, "tools": [],
      "response_format": {"type": "text"}})");
  EXPECT_TRUE(r.chat);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "Hello there");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(r.messages[3].content, "ünïcødé 😀");
  EXPECT_TRUE(r.add_generation_prompt);
}

TEST(OpenAiRequest, EveryProblemIsA400NamingTheField) {
  struct Case {
    bool chat;
    const char* body;
    const char* param;
  };
  const Case cases[] = {
      {false, "", ""},
      {false, "nul", ""},
      {false, "\"text\"", ""},
      {false, R"({})", "prompt"},
      {false, R"({"prompt": {}})", "prompt"},
      {false, R"({"prompt": ["a", "b"]})", "prompt"},
      {false, R"({"prompt": [[1], [2]]})", "prompt"},
      {false, R"({"prompt": [1, "x"]})", "prompt[1]"},
      {false, R"({"prompt": [1, 3000000000]})", "prompt[1]"},
      {false, R"({"prompt": "a", "max_tokens": -1})", "max_tokens"},
      {false, R"({"prompt": "a", "max_tokens": true})", "max_tokens"},
      {false, R"({"prompt": "a", "temperature": "hot"})", "temperature"},
      {false, R"({"prompt": "a", "temperature": 2.5})", "temperature"},
      {false, R"({"prompt": "a", "top_p": 1.5})", "top_p"},
      {false, R"({"prompt": "a", "top_k": -2})", "top_k"},
      {false, R"({"prompt": "a", "seed": 1.5})", "seed"},
      {false, R"({"prompt": "a", "seed": 18446744073709551615})", "seed"},
      {false, R"({"prompt": "a", "n": 3})", "n"},
      {false, R"({"prompt": "a", "best_of": 2})", "best_of"},
      {false, R"({"prompt": "a", "stop": ["a", 1]})", "stop[1]"},
      {false, R"({"prompt": "a", "stream": "yes"})", "stream"},
      {false, R"({"prompt": "a", "stream": true, "stream_options": []})", "stream_options"},
      {false, R"({"prompt": "a", "frequency_penalty": 0.5})", "frequency_penalty"},
      {false, R"({"prompt": "a", "repetition_penalty": 1.2})", "repetition_penalty"},
      {false, R"({"prompt": "a", "logit_bias": {"5": 1}})", "logit_bias"},
      {false, R"({"prompt": "a", "suffix": "x"})", "suffix"},
      {false, R"({"prompt": "a", "model": 5})", "model"},
      {true, R"({})", "messages"},
      {true, R"({"messages": []})", "messages"},
      {true, R"({"messages": [5]})", "messages[0]"},
      {true, R"({"messages": [{"content": "x"}]})", "messages[0].role"},
      {true, R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role"},
      {true, R"({"messages": [{"role": "user"}]})", "messages[0].content"},
      {true, R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content"},
      {true, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", "messages[0].content[0].type"},
      {true, R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", "logprobs"},
      {true, R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", "tools"},
      {true, R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})",
       "response_format"},
  };
  for (const auto& c : cases) {
    const ApiError e = error_of(c.chat, c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.message;
    EXPECT_FALSE(e.message.empty());
    const json b = json::parse(nvfp4::serve::error_body(e));
    EXPECT_EQ(b["error"]["type"], "invalid_request_error");
  }
  // Deeply nested JSON is an error, not a stack overflow.
  std::string deep(100000, '[');
  EXPECT_EQ(error_of(false, "{\"prompt\": " + deep).status, 400);
}

TEST(OpenAiResponse, BodiesAndChunksHaveTheOpenAiShape) {
  const json c = json::parse(nvfp4::serve::completion_body("cmpl-1", 100, "m", "hi", "length", {3, 2}));
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "hi");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c["usage"]["total_tokens"], 5);
  const json ch = json::parse(nvfp4::serve::chat_body("chatcmpl-1", 100, "m", "hey", "stop", {3, 1}));
  EXPECT_EQ(ch["object"], "chat.completion");
  EXPECT_EQ(ch["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(ch["choices"][0]["message"]["content"], "hey");
  const std::string ev = nvfp4::serve::chat_chunk("chatcmpl-1", 100, "m", "", "", true);
  ASSERT_EQ(ev.rfind("data: ", 0), 0u);
  ASSERT_EQ(ev.substr(ev.size() - 2), "\n\n");
  const json first = json::parse(ev.substr(6));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const json last = json::parse(nvfp4::serve::chat_chunk("chatcmpl-1", 100, "m", "", "stop").substr(6));
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const json u = json::parse(nvfp4::serve::usage_chunk(false, "cmpl-1", 100, "m", {4, 5}).substr(6));
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["completion_tokens"], 5);
  // Text that ends inside a UTF-8 character still makes valid JSON.
  const json bad = json::parse(nvfp4::serve::completion_body("x", 1, "m", "ok\xE2\x82", "length", {1, 1}));
  EXPECT_EQ(bad["choices"][0]["text"].get<std::string>().substr(0, 2), "ok");
}

TEST(PrometheusText, CountersGaugesHistogramsInTheExpositionFormat) {
  nvfp4::serve::Metrics m;
  m.counter("req_total", "Requests", "code");
  m.gauge("running", "Running\nnow");
  m.histogram("lat_seconds", "Latency", {0.1, 1.0});
  m.add("req_total", 2, "200");
  m.add("req_total", 1, "a\"b\\c\nd");
  m.set("running", 3.5);
  for (double x : {0.05, 0.1, 0.5, 7.0}) m.observe("lat_seconds", x);
  const std::string t = m.render();
  EXPECT_NE(t.find("# HELP req_total Requests\n# TYPE req_total counter\n"), std::string::npos) << t;
  EXPECT_NE(t.find("req_total{code=\"200\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("req_total{code=\"a\\\"b\\\\c\\nd\"} 1\n"), std::string::npos) << t;
  EXPECT_NE(t.find("# HELP running Running\\nnow\n"), std::string::npos) << t;
  EXPECT_NE(t.find("running 3.5\n"), std::string::npos) << t;
  EXPECT_NE(t.find("lat_seconds_bucket{le=\"0.10000000000000001\"} 2\n"), std::string::npos) << t;
  EXPECT_NE(t.find("lat_seconds_bucket{le=\"1\"} 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("lat_seconds_bucket{le=\"+Inf\"} 4\n"), std::string::npos) << t;
  EXPECT_NE(t.find("lat_seconds_sum 7.6500000000000004\n"), std::string::npos) << t;
  EXPECT_NE(t.find("lat_seconds_count 4\n"), std::string::npos) << t;
  EXPECT_EQ(m.value("req_total", "200"), 2);
  EXPECT_EQ(m.count("lat_seconds"), 4);
  EXPECT_THROW(m.counter("req_total", "again"), nvfp4::Error);
  EXPECT_THROW(m.counter("bad-name", "x"), nvfp4::Error);
  EXPECT_THROW(m.add("running", 1), nvfp4::Error);
  EXPECT_THROW(m.add("req_total", -1, "200"), nvfp4::Error);
  EXPECT_THROW(m.observe("nope", 1), nvfp4::Error);
  EXPECT_THROW(m.histogram("h2", "x", {1.0, 1.0}), nvfp4::Error);
}

}  // namespace

// The checked-in corpus of the request-parser fuzzer, replayed through its entry point (which
// aborts on a broken invariant and lets any exception but ApiError escape).
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

TEST(FuzzOpenAiRequestCorpus, ReplaysEveryFile) {
  const std::filesystem::path dir = NVFP4_TESTS_DIR "/fuzz/corpus_openai_request";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    SCOPED_TRACE(entry.path().string());
    EXPECT_EQ(LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0);
    ++files;
  }
  EXPECT_GE(files, 6u);
}

}  // namespace

// libFuzzer target fuzz_chat_template: a chat template comes with a downloaded model
// (tokenizer_config.json's "chat_template"), so ChatTemplate::parse and render run untrusted text
// (docs/fuzzing.md).
//
// Built twice: into the libFuzzer binary `fuzz_chat_template` (tests/fuzz/CMakeLists.txt, clang,
// -fsanitize=fuzzer,address,undefined) and into the GoogleTest binary `test_fuzz_chat_template`,
// whose replay test runs every file of tests/fuzz/corpus_chat_template/ through it on every CI run.
//
// Contract checked here: parse either throws nvfp4::Error whose message starts with
// "fuzz.jinja:" (the source it was given), or returns a template that, rendered on a fixed
// conversation (system, user, assistant with a tool call, tool, user; tools given) with and without
// the generation prompt, either gives valid UTF-8 no longer than the output limit or throws
// nvfp4::Error starting with "fuzz.jinja:". The limits are lowered so that every input finishes in
// milliseconds; anything but nvfp4::Error escapes, and a broken invariant aborts.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "nvfp4/chat_template.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::fuzz {

namespace {

constexpr std::string_view kSource = "fuzz.jinja";

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_chat_template: %s\n", what.c_str());
  std::abort();
}

void check_error(const Error& e, const char* when) {
  const std::string_view what = e.what();
  if (what.substr(0, kSource.size() + 1) != std::string(kSource) + ":") {
    fail(std::string("an error ") + when + " does not name the template: " + std::string(what));
  }
}

const nlohmann::ordered_json& messages() {
  static const nlohmann::ordered_json m = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Z\u00fcrich? {{ not a tag }} \ud83d\ude80"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "get_weather", "arguments": {"city": "Z\u00fcrich"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21.5}"},
    {"role": "user", "content": "  thanks\n"}])");
  return m;
}

const nlohmann::ordered_json& extra() {
  static const nlohmann::ordered_json e = nlohmann::ordered_json::parse(R"({"tools": [{"type": "function",
      "function": {"name": "get_weather", "description": "Current weather.", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}}], "date_string": "26 Jul 2024"})");
  return e;
}

// Small enough that any input renders in milliseconds under the sanitizers.
io::ChatTemplateLimits fuzz_limits() {
  io::ChatTemplateLimits l;
  l.max_call_depth = 16;
  l.max_value_depth = 32;
  l.max_range = 1000;
  l.max_string_bytes = 1 << 16;
  l.max_list_items = 4096;
  l.max_iterations = 10000;
  l.max_work = 100000;
  return l;
}

}  // namespace

int chat_template_one_input(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<io::ChatTemplate> t;
  try {
    t = io::ChatTemplate::parse(text, kSource);
  } catch (const Error& e) {
    check_error(e, "at parse time");
    return 0;
  }
  t->set_variable("bos_token", "<s>");
  t->set_variable("eos_token", "</s>");
  std::tm now{};
  now.tm_year = 124;
  now.tm_mon = 6;
  now.tm_mday = 26;
  t->set_now(now);
  const io::ChatTemplateLimits limits = fuzz_limits();
  t->set_limits(limits);
  for (const bool add_generation_prompt : {false, true}) {
    try {
      const std::string out = t->render_json(messages(), add_generation_prompt, extra());
      if (static_cast<int64_t>(out.size()) > limits.max_string_bytes) fail("the output passed the limit");
      if (io::utf8_replace_invalid(out) != out) fail("the output is not valid UTF-8");
    } catch (const Error& e) {
      check_error(e, "when rendering");
    }
  }
  return 0;
}

}  // namespace nvfp4::fuzz

#ifdef NVFP4_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return nvfp4::fuzz::chat_template_one_input(data, size);
}
#endif

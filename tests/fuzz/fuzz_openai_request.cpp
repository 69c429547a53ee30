// libFuzzer entry point for the OpenAI request parser of `nvfp4 serve` (src/serve/openai_api.cpp;
// docs/fuzzing.md). Built into the libFuzzer binary `fuzz_openai_request` and into the ordinary
// `test_serve_api` GoogleTest binary, which replays tests/fuzz/corpus_openai_request on every CI run.
//
// Input: the first byte picks the endpoint (even: /v1/completions, odd: /v1/chat/completions), the
// rest is the request body. Contract: the parser returns a request whose fields are within their
// documented ranges, or throws ApiError with an HTTP status and a message. Any other exception
// escapes and a broken invariant aborts: the fuzzer reports both as crashes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "serve/openai_api.hpp"

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const nvfp4::serve::ApiRequest r =
        chat ? nvfp4::serve::parse_chat_request(body) : nvfp4::serve::parse_completion_request(body);
    require(r.chat == chat);
    require(!r.max_tokens || *r.max_tokens >= 1);
    require(r.min_tokens >= 0 && (!r.max_tokens || r.min_tokens <= *r.max_tokens));
    require(r.sampling.temperature >= 0 && r.sampling.temperature <= 2);
    require(r.sampling.top_p > 0 && r.sampling.top_p <= 1);
    require(r.sampling.top_k >= 0);
    for (const auto& s : r.stop) require(!s.empty());
    for (int32_t id : r.prompt_ids) require(id >= 0);
    require(!r.prompt_is_ids || !r.prompt_ids.empty());
    require(!chat || !r.messages.empty());
    require(!r.include_usage || r.stream);
    // The response writers take any text the engine may produce (invalid UTF-8 included).
    (void)nvfp4::serve::completion_body("cmpl-x", 0, r.model, r.prompt_text, "stop", {1, 1});
  } catch (const nvfp4::serve::ApiError& e) {
    require(e.status >= 400 && e.status < 600 && !e.message.empty());
    (void)nvfp4::serve::error_body(e);
  }
  return 0;
}

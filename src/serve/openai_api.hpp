// The OpenAI API's request and response bodies as `nvfp4 serve` reads and writes them
// (POST /v1/completions, POST /v1/chat/completions; the fields vLLM documents, its extensions
// min_tokens, ignore_eos and top_k included). Pure functions over text: no HTTP, no engine — the
// fuzz target tests/fuzz/fuzz_openai_request.cpp feeds them arbitrary bytes.
//
// Every problem with a request is an ApiError: the HTTP status and the OpenAI error object
// ({"error": {"message", "type", "param", "code"}}) naming the field. Fields the server cannot
// honour (logprobs, penalties, tools, n > 1, ...) are errors saying so, never silently ignored;
// fields it does not know are ignored (clients send extras), as vLLM does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvfp4/chat_template.hpp"
#include "nvfp4/sampling.hpp"

namespace nvfp4::serve {

struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the field, e.g. "temperature", "messages[1].content" (empty: none)
  std::string code;   // e.g. "invalid_api_key", "model_not_found" (empty: null)
};

// {"error": {...}} as the body of an error response or a stream's error event.
std::string error_body(const ApiError& e);

struct ApiRequest {
  bool chat = false;
  std::string model;                  // empty when not given
  // /v1/completions: the prompt as text, or as token ids.
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  bool prompt_is_ids = false;
  bool echo = false;
  // /v1/chat/completions
  std::vector<io::ChatMessage> messages;
  bool add_generation_prompt = true;
  // Both.
  std::optional<int> max_tokens;      // absent: completions 16, chat what the context leaves
  int min_tokens = 0;
  bool ignore_eos = false;
  infer::SamplingOptions sampling;    // OpenAI's defaults: temperature 1, top_p 1, top_k off
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
};

// Parse and validate a request body. Throws ApiError (400) naming the field.
ApiRequest parse_completion_request(std::string_view body);
ApiRequest parse_chat_request(std::string_view body);

// Response bodies. `id` "cmpl-..." / "chatcmpl-...", `created` Unix seconds.
struct Usage {
  int prompt_tokens = 0, completion_tokens = 0;
};
std::string completion_body(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                            const std::string& finish_reason, const Usage& u);
std::string chat_body(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                      const std::string& finish_reason, const Usage& u);
// One server-sent event ("data: {...}\n\n") of a stream: a text piece (finish_reason empty), the
// final piece with its finish_reason, the usage chunk, and the end.
std::string completion_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                             const std::string& finish_reason);
// `role_only`: the first chunk of a chat stream, {"role": "assistant", "content": ""}.
std::string chat_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                       const std::string& finish_reason, bool role_only = false);
std::string usage_chunk(bool chat, const std::string& id, int64_t created, const std::string& model, const Usage& u);
std::string sse(const std::string& json_text);  // "data: " + json_text + "\n\n"
inline constexpr char kSseDone[] = "data: [DONE]\n\n";

// JSON text of `j`; invalid UTF-8 (a token that ends inside a character) becomes U+FFFD.
std::string dump(const nlohmann::json& j);

}  // namespace nvfp4::serve

// OpenAI request parsing and response bodies (src/serve/openai_api.hpp).
#include "serve/openai_api.hpp"

#include <cmath>
#include <limits>

namespace nvfp4::serve {

using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  ApiError e;
  e.param = param;
  e.message = message;
  throw e;
}

[[noreturn]] void unsupported(const std::string& param, const std::string& what) {
  bad(param, "'" + param + "': " + what + " is not supported by nvfp4 serve");
}

// The field, or nullptr when absent or null (clients send null for "not given").
const json* field(const json& o, const char* name) {
  const auto it = o.find(name);
  if (it == o.end() || it->is_null()) return nullptr;
  return &*it;
}

bool as_bool(const json& v, const std::string& param) {
  if (!v.is_boolean()) bad(param, "'" + param + "' must be a boolean");
  return v.get<bool>();
}

double as_number(const json& v, const std::string& param, double lo, double hi) {
  if (!v.is_number()) bad(param, "'" + param + "' must be a number");
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) {
    bad(param, "'" + param + "' is " + v.dump() + "; it must be in [" + dump(json(lo)) + ", " + dump(json(hi)) + "]");
  }
  return x;
}

// An integer (a float with an integral value is accepted, as Python's JSON readers do).
int64_t as_integer(const json& v, const std::string& param, int64_t lo, int64_t hi) {
  int64_t x = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      bad(param, "'" + param + "' is " + v.dump() + "; it must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    x = v.get<int64_t>();
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>()) &&
             std::fabs(v.get<double>()) < 9e18) {
    x = static_cast<int64_t>(v.get<double>());
  } else {
    bad(param, "'" + param + "' must be an integer");
  }
  if (x < lo || x > hi) {
    bad(param, "'" + param + "' is " + std::to_string(x) + "; it must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return x;
}

std::string as_string(const json& v, const std::string& param) {
  if (!v.is_string()) bad(param, "'" + param + "' must be a string");
  return v.get<std::string>();
}

json parse_object(std::string_view body) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    bad("", std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad("", "the request body must be a JSON object");
  return j;
}

// What completions and chat share: model, sampling, limits, stop, stream, and the refusals.
void parse_common(const json& j, ApiRequest& r) {
  if (const json* v = field(j, "model")) r.model = as_string(*v, "model");
  if (const json* v = field(j, "max_tokens")) r.max_tokens = static_cast<int>(as_integer(*v, "max_tokens", 1, 1 << 30));
  if (const json* v = field(j, "max_completion_tokens")) {
    r.max_tokens = static_cast<int>(as_integer(*v, "max_completion_tokens", 1, 1 << 30));
  }
  if (const json* v = field(j, "min_tokens")) r.min_tokens = static_cast<int>(as_integer(*v, "min_tokens", 0, 1 << 30));
  if (r.max_tokens && r.min_tokens > *r.max_tokens) {
    bad("min_tokens", "'min_tokens' " + std::to_string(r.min_tokens) + " exceeds 'max_tokens' " + std::to_string(*r.max_tokens));
  }
  if (const json* v = field(j, "ignore_eos")) r.ignore_eos = as_bool(*v, "ignore_eos");
  r.sampling.temperature = 1.0;
  r.sampling.top_k = 0;
  r.sampling.top_p = 1.0;
  if (const json* v = field(j, "temperature")) r.sampling.temperature = as_number(*v, "temperature", 0, 2);
  if (const json* v = field(j, "top_p")) {
    r.sampling.top_p = as_number(*v, "top_p", 0, 1);
    if (r.sampling.top_p == 0) bad("top_p", "'top_p' must be greater than 0");
  }
  if (const json* v = field(j, "top_k")) {
    const int64_t k = as_integer(*v, "top_k", -1, std::numeric_limits<int32_t>::max());
    r.sampling.top_k = k < 0 ? 0 : static_cast<int>(k);  // -1 and 0: every token
  }
  if (const json* v = field(j, "seed")) {
    r.sampling.seed = static_cast<uint64_t>(as_integer(*v, "seed", std::numeric_limits<int64_t>::min(),
                                                       std::numeric_limits<int64_t>::max()));
    r.seed_given = true;
  }
  if (const json* v = field(j, "n")) {
    if (as_integer(*v, "n", 1, 128) != 1) unsupported("n", "more than one choice per request");
  }
  if (const json* v = field(j, "best_of")) {
    if (as_integer(*v, "best_of", 1, 128) != 1) unsupported("best_of", "best_of > 1");
  }
  if (const json* v = field(j, "stop")) {
    if (v->is_string()) {
      r.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > 16) bad("stop", "'stop' holds at most 16 strings");
      for (size_t i = 0; i < v->size(); ++i) r.stop.push_back(as_string((*v)[i], "stop[" + std::to_string(i) + "]"));
    } else {
      bad("stop", "'stop' must be a string or an array of strings");
    }
    for (const auto& s : r.stop) {
      if (s.empty()) bad("stop", "'stop' holds an empty string, which would end every generation at once");
    }
  }
  if (const json* v = field(j, "stream")) r.stream = as_bool(*v, "stream");
  if (const json* v = field(j, "stream_options")) {
    if (!v->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (const json* u = field(*v, "include_usage")) r.include_usage = as_bool(*u, "stream_options.include_usage");
  }
  for (const char* p : {"presence_penalty", "frequency_penalty"}) {
    if (const json* v = field(j, p)) {
      if (as_number(*v, p, -2, 2) != 0) unsupported(p, "a non-zero penalty");
    }
  }
  if (const json* v = field(j, "repetition_penalty")) {
    if (as_number(*v, "repetition_penalty", 0, 100) != 1) unsupported("repetition_penalty", "a repetition penalty other than 1");
  }
  if (const json* v = field(j, "logit_bias")) {
    if (!v->is_object()) bad("logit_bias", "'logit_bias' must be an object");
    if (!v->empty()) unsupported("logit_bias", "logit_bias");
  }
  if (const json* v = field(j, "user")) as_string(*v, "user");
}

}  // namespace

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string error_body(const ApiError& e) {
  json o;
  o["error"] = {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return dump(o);
}

ApiRequest parse_completion_request(std::string_view body) {
  const json j = parse_object(body);
  ApiRequest r;
  r.chat = false;
  const json* p = field(j, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  auto ids_of = [&](const json& a, const std::string& param) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < a.size(); ++i) {
      ids.push_back(static_cast<int32_t>(
          as_integer(a[i], param + "[" + std::to_string(i) + "]", 0, std::numeric_limits<int32_t>::max())));
    }
    return ids;
  };
  if (p->is_string()) {
    r.prompt_text = p->get<std::string>();
  } else if (p->is_array()) {
    if (p->empty()) bad("prompt", "'prompt' is empty");
    if ((*p)[0].is_string()) {
      if (p->size() != 1) unsupported("prompt", "a batch of several prompts in one request");
      r.prompt_text = (*p)[0].get<std::string>();
    } else if ((*p)[0].is_array()) {
      if (p->size() != 1) unsupported("prompt", "a batch of several prompts in one request");
      r.prompt_ids = ids_of((*p)[0], "prompt[0]");
      r.prompt_is_ids = true;
    } else {
      r.prompt_ids = ids_of(*p, "prompt");
      r.prompt_is_ids = true;
    }
    if (r.prompt_is_ids && r.prompt_ids.empty()) bad("prompt", "'prompt' holds no tokens");
  } else {
    bad("prompt", "'prompt' must be a string, an array of token ids, or an array of one of those");
  }
  if (const json* v = field(j, "echo")) r.echo = as_bool(*v, "echo");
  if (const json* v = field(j, "logprobs")) {
    if (as_integer(*v, "logprobs", 0, 20) != 0) unsupported("logprobs", "logprobs");
  }
  if (const json* v = field(j, "suffix")) {
    if (!as_string(*v, "suffix").empty()) unsupported("suffix", "a suffix");
  }
  parse_common(j, r);
  return r;
}

ApiRequest parse_chat_request(std::string_view body) {
  const json j = parse_object(body);
  ApiRequest r;
  r.chat = true;
  const json* m = field(j, "messages");
  if (!m) bad("messages", "'messages' is required");
  if (!m->is_array() || m->empty()) bad("messages", "'messages' must be a non-empty array");
  for (size_t i = 0; i < m->size(); ++i) {
    const std::string at = "messages[" + std::to_string(i) + "]";
    const json& msg = (*m)[i];
    if (!msg.is_object()) bad(at, "'" + at + "' must be an object");
    const json* role = field(msg, "role");
    if (!role) bad(at + ".role", "'" + at + ".role' is required");
    io::ChatMessage cm;
    cm.role = as_string(*role, at + ".role");
    if (cm.role != "system" && cm.role != "user" && cm.role != "assistant" && cm.role != "developer" && cm.role != "tool") {
      bad(at + ".role", "'" + at + ".role' is '" + cm.role + "'; it must be system, developer, user, assistant or tool");
    }
    if (const json* c = field(msg, "content")) {
      if (c->is_string()) {
        cm.content = c->get<std::string>();
      } else if (c->is_array()) {
        for (size_t k = 0; k < c->size(); ++k) {
          const std::string pat = at + ".content[" + std::to_string(k) + "]";
          const json& part = (*c)[k];
          if (!part.is_object()) bad(pat, "'" + pat + "' must be an object");
          const json* type = field(part, "type");
          if (!type || as_string(*type, pat + ".type") != "text") unsupported(pat + ".type", "content other than text");
          const json* text = field(part, "text");
          if (!text) bad(pat + ".text", "'" + pat + ".text' is required");
          cm.content += as_string(*text, pat + ".text");
        }
      } else {
        bad(at + ".content", "'" + at + ".content' must be a string or an array of text parts");
      }
    } else if (cm.role != "assistant") {
      bad(at + ".content", "'" + at + ".content' is required");
    }
    if (const json* tc = field(msg, "tool_calls")) {
      if (!tc->is_array() || !tc->empty()) unsupported(at + ".tool_calls", "tool calls");
    }
    if (const json* n = field(msg, "name")) as_string(*n, at + ".name");
    r.messages.push_back(std::move(cm));
  }
  if (const json* v = field(j, "logprobs")) {
    if (as_bool(*v, "logprobs")) unsupported("logprobs", "logprobs");
  }
  if (const json* v = field(j, "top_logprobs")) {
    if (as_integer(*v, "top_logprobs", 0, 20) != 0) unsupported("top_logprobs", "top_logprobs");
  }
  for (const char* p : {"tools", "functions"}) {
    if (const json* v = field(j, p)) {
      if (!v->is_array()) bad(p, std::string("'") + p + "' must be an array");
      if (!v->empty()) unsupported(p, "tool calling");
    }
  }
  if (const json* v = field(j, "response_format")) {
    const json* type = v->is_object() ? field(*v, "type") : nullptr;
    if (!type || as_string(*type, "response_format.type") != "text") {
      unsupported("response_format", "a response format other than text");
    }
  }
  if (const json* v = field(j, "add_generation_prompt")) r.add_generation_prompt = as_bool(*v, "add_generation_prompt");
  parse_common(j, r);
  return r;
}

std::string sse(const std::string& json_text) { return "data: " + json_text + "\n\n"; }

namespace {

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json finish_json(const std::string& f) { return f.empty() ? json(nullptr) : json(f); }

json head(const char* object, const std::string& id, int64_t created, const std::string& model) {
  json o;
  o["id"] = id;
  o["object"] = object;
  o["created"] = created;
  o["model"] = model;
  return o;
}

}  // namespace

std::string completion_body(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                            const std::string& finish_reason, const Usage& u) {
  json o = head("text_completion", id, created, model);
  o["choices"] = json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_json(finish_reason)}}});
  o["usage"] = usage_json(u);
  return dump(o);
}

std::string chat_body(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                      const std::string& finish_reason, const Usage& u) {
  json o = head("chat.completion", id, created, model);
  o["choices"] = json::array({{{"index", 0},
                               {"message", {{"role", "assistant"}, {"content", text}}},
                               {"logprobs", nullptr},
                               {"finish_reason", finish_json(finish_reason)}}});
  o["usage"] = usage_json(u);
  return dump(o);
}

std::string completion_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                             const std::string& finish_reason) {
  json o = head("text_completion", id, created, model);
  o["choices"] = json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_json(finish_reason)}}});
  return sse(dump(o));
}

std::string chat_chunk(const std::string& id, int64_t created, const std::string& model, const std::string& text,
                       const std::string& finish_reason, bool role_only) {
  json o = head("chat.completion.chunk", id, created, model);
  json delta = json::object();
  if (role_only) {
    delta = {{"role", "assistant"}, {"content", ""}};
  } else if (!text.empty() || finish_reason.empty()) {
    delta = {{"content", text}};
  }
  o["choices"] = json::array({{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", finish_json(finish_reason)}}});
  return sse(dump(o));
}

std::string usage_chunk(bool chat, const std::string& id, int64_t created, const std::string& model, const Usage& u) {
  json o = head(chat ? "chat.completion.chunk" : "text_completion", id, created, model);
  o["choices"] = json::array();
  o["usage"] = usage_json(u);
  return sse(dump(o));
}

}  // namespace nvfp4::serve

// Hugging Face chat templates: the Jinja template in a model's tokenizer_config.json ("chat_template")
// rendered into a prompt exactly as transformers' apply_chat_template(tokenize=False) renders it.
//
// What it is: a renderer for the subset of Jinja2 that chat templates use (docs/tokenizers.md,
// "Chat templates", lists it), with the settings transformers compiles templates with —
// jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) plus the loop
// controls extension ({% break %}, {% continue %}) and its {% generation %} block, the globals
// raise_exception(msg) and strftime_now(fmt), and a tojson filter that keeps non-ASCII text
// (json.dumps with ensure_ascii=False; indent, separators, sort_keys taken). The variables are
// those transformers passes: messages, add_generation_prompt, tools and documents (none unless
// given), the tokenizer's special tokens (bos_token, eos_token, ...) and any extra ones. A name
// never set is jinja2's default Undefined: it prints as "", is false, has length 0, and using
// one of its attributes, adding to it or calling it is an error.
//
// What it is not: a general Jinja engine. No template loader (include, import, extends, block),
// no autoescaping, no call blocks, no async, no line statements. A construct outside the subset
// (or a filter or test jinja2 has and this renderer lacks) fails at parse time with an
// nvfp4::Error "<source>:<line>:<col>: unsupported: ..."; what only rendering can tell (case
// mapping of a non-ASCII letter, a 64-bit overflow, a str method this renderer lacks called on a
// computed string) fails then. Either way the result is jinja2's text or an error — never a
// different prompt. tests/hf/check_chat_templates.py compares the output with the real jinja2,
// byte for byte.
//
// Templates are untrusted input (they come with downloaded models): parsing and rendering are
// bounded (kMaxTemplateNesting, ChatTemplateLimits below) — nesting, macro recursion, loop
// iterations, string and output sizes, total work — and every failure is an nvfp4::Error, never a
// crash or a hang.
//
// Numbers: integers are 64-bit (Python's are unbounded: an overflow is an error, not a wrapped
// value); floats print as Python's repr() does. Case mapping (upper, lower, title, capitalize,
// case-insensitive sort) covers ASCII letters; on other letters it is a render error.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"

namespace nvfp4::io {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool", ...
  std::string content;  // UTF-8
};

// What bounds one render of a template: hostile templates fail with an nvfp4::Error naming the
// limit. With the defaults a render stops within about a second of CPU and a few hundred MB of
// memory whatever the template; a real chat template uses a tiny fraction of each.
// ChatTemplate::set_limits changes them (tests and fuzzers lower them).
struct ChatTemplateLimits {
  int max_call_depth = 32;              // nested macro calls
  int max_value_depth = 128;            // nested lists/dicts (the JSON variables included)
  int64_t max_range = 100000;           // range() length (jinja2's sandbox has the same bound)
  int64_t max_string_bytes = 32 << 20;  // any one string, and the output
  int64_t max_list_items = 1'000'000;   // any one list (a string iterated included)
  int64_t max_iterations = 2'000'000;   // loop iterations, all loops of a render together
  int64_t max_work = 10'000'000;        // one per statement, expression and list item; bytes / 32
};
inline constexpr ChatTemplateLimits kLimits{};
// Nesting of blocks, brackets and operators the parser accepts (its recursion, and the renderer's).
inline constexpr int kMaxTemplateNesting = 64;

// raise_exception(msg) called by a template: what() is "<source>:<line>:<col>: raise_exception:
// <msg>"; raised() is <msg> verbatim (what an OpenAI-compatible server returns as a 400).
class ChatTemplateRaised : public Error {
 public:
  ChatTemplateRaised(const std::string& what, std::string raised) : Error(what), raised_(std::move(raised)) {}
  const std::string& raised() const { return raised_; }

 private:
  std::string raised_;
};

namespace chat {
struct Template;  // the parsed template (src/io/chat_template_internal.hpp)
}

class ChatTemplate {
 public:
  // Parses a template; throws nvfp4::Error "<source_name>:<line>:<col>: ..." for syntax errors and
  // unsupported constructs. Columns count code points from 1 on the line; lines and columns are
  // those of the text after jinja2's newline normalisation (\r\n and \r become \n).
  static ChatTemplate parse(std::string_view text, std::string_view source_name);
  // From a tokenizer_config.json: its "chat_template" (a string, or a list of {"name","template"}
  // objects: take "default"), and its special tokens (bos_token/eos_token/unk_token/pad_token,
  // also sep_token/cls_token/mask_token, given as a string or as an AddedToken object
  // {"content": ...}; null ones are left unset, as transformers leaves them out), and
  // additional_special_tokens as a list when non-empty. nullopt when the file has no
  // chat_template (newer models may ship chat_template.jinja beside it instead: read that with
  // parse()). Errors name the file and field.
  static std::optional<ChatTemplate> from_tokenizer_config(const std::string& path);
  // A model folder's template: tokenizer_config.json's chat_template, else a chat_template.jinja
  // beside it (with the config's special tokens); nullopt when it has neither.
  static std::optional<ChatTemplate> from_model_folder(const std::string& dir);

  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ChatTemplate(const ChatTemplate&);
  ChatTemplate& operator=(const ChatTemplate&);
  ~ChatTemplate();

  // Renders; `extra` are further top-level variables as JSON (e.g. {"tools": [...]} — may be
  // null/empty object). Runtime errors (raise_exception, type errors such as adding a string to a
  // list, unknown filter at runtime, recursion/loop limits) throw nvfp4::Error with the message
  // (raise_exception's message verbatim after a prefix naming the template: ChatTemplateRaised).
  // The messages become a list of {"role", "content"} dicts. Thread-safe (const); uses at most
  // about 1 MB of the calling thread's stack (a guard stops deeper recursion with an error).
  // NOTE: nlohmann::json sorts object keys; a template that prints tools with tojson prints them
  // in that order. Pass the request's JSON as ordered_json to render_json to keep its key order,
  // as transformers does (Python dicts keep insertion order).
  std::string render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                     const nlohmann::json& extra = {}) const;
  // The general form: `messages` a JSON list of message objects (tool_calls, name, list content:
  // whatever the template reads), `extra` a JSON object (or null) of further variables.
  std::string render_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                          const nlohmann::ordered_json& extra = nullptr) const;

  // A top-level variable for every render (e.g. bos_token); `extra` of render() overrides it.
  void set_variable(const std::string& name, const std::string& value);
  void set_json_variable(const std::string& name, const nlohmann::ordered_json& value);
  // strftime_now(fmt)'s clock: fixed at `local_time` (reproducible prompts and tests): tm_year
  // since 1900, tm_mon from 0, ..., normalised as std::mktime would (the 32nd of a month is the
  // 1st of the next); tm_wday, tm_yday and tm_isdst are recomputed. Unset (the default), it is the
  // local time at each call, as datetime.now() is in transformers. Formats as Python's strftime
  // of a naive datetime: %f is the microseconds, %z and %Z are empty, the rest the C library's.
  void set_now(const std::tm& local_time);
  void clear_now();
  void set_limits(const ChatTemplateLimits& limits);  // for every later render (kLimits by default)

  const std::string& source_name() const;  // as given to parse; from_tokenizer_config: "<path>:chat_template"
  // bos_token, eos_token, ... and additional_special_tokens from a tokenizer_config.json object
  // (`path` names it in errors), as transformers passes them.
  void set_special_tokens(const nlohmann::ordered_json& config, const std::string& path);

 private:
  ChatTemplate();
  std::shared_ptr<const chat::Template> t_;  // shared by copies: parsed once, immutable
  nlohmann::ordered_json variables_;          // set_variable / set_json_variable, an object
  std::optional<std::tm> now_;
  ChatTemplateLimits limits_ = kLimits;
};

}  // namespace nvfp4::io

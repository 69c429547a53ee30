// render_chat_template: renders chat templates for tests/hf/check_chat_templates.py, which compares
// the output with the real jinja2 (the ctest ChatTemplate.IdenticalToJinja2).
//
// Reads JSON from stdin. One job, an object:
//   {"template": "...", "source": "name"}  or  {"tokenizer_config": "path/tokenizer_config.json"},
//   "messages": [...], "add_generation_prompt": bool, "variables": {...}, "extra": {...},
//   "now": "2024-07-26T10:30:15"   (strftime_now's clock; optional)
// prints the rendered text (exit 0) or "ERROR: <message>" (exit 1). A list of jobs prints a JSON
// list of results instead, one per job:
//   {"text": "..."} | {"error": "...", "parse": bool, "raised": "..." (raise_exception only)} | {"none": true}
// ("none": the tokenizer config has no chat_template).
#include <cstdio>
#include <ctime>
#include <iostream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "nvfp4/chat_template.hpp"
#include "nvfp4/error.hpp"

namespace {

using nlohmann::ordered_json;
using nvfp4::io::ChatTemplate;

ordered_json run_job(const ordered_json& job) {
  std::optional<ChatTemplate> t;
  try {
    if (job.contains("tokenizer_config")) {
      t = ChatTemplate::from_tokenizer_config(job["tokenizer_config"].get<std::string>());
      if (!t) return ordered_json{{"none", true}};
    } else {
      t = ChatTemplate::parse(job.at("template").get<std::string>(), job.value("source", std::string("template")));
    }
  } catch (const nvfp4::Error& e) {
    return ordered_json{{"error", e.what()}, {"parse", true}};
  }
  if (job.contains("variables")) {
    for (const auto& [k, v] : job["variables"].items()) t->set_json_variable(k, v);
  }
  if (job.contains("now")) {
    std::tm tm{};
    const std::string s = job["now"].get<std::string>();
    if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6) {
      return ordered_json{{"error", "bad \"now\": " + s}, {"parse", false}};
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    t->set_now(tm);
  }
  try {
    const ordered_json messages = job.value("messages", ordered_json::array());
    const ordered_json extra = job.value("extra", ordered_json());
    return ordered_json{{"text", t->render_json(messages, job.value("add_generation_prompt", false), extra)}};
  } catch (const nvfp4::io::ChatTemplateRaised& e) {
    return ordered_json{{"error", e.what()}, {"parse", false}, {"raised", e.raised()}};
  } catch (const nvfp4::Error& e) {
    return ordered_json{{"error", e.what()}, {"parse", false}};
  }
}

}  // namespace

int main() {
  const std::string input{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  ordered_json in;
  try {
    in = ordered_json::parse(input);
  } catch (const nlohmann::json::exception& e) {
    std::fprintf(stderr, "render_chat_template: stdin is not JSON: %s\n", e.what());
    return 2;
  }
  if (in.is_array()) {
    ordered_json out = ordered_json::array();
    for (const auto& job : in) out.push_back(run_job(job));
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  const ordered_json r = run_job(in);
  if (r.contains("text")) {
    std::cout << r["text"].get<std::string>();
    return 0;
  }
  std::cout << "ERROR: " << (r.contains("none") ? std::string("the tokenizer config has no chat_template") : r["error"].get<std::string>()) << "\n";
  return 1;
}

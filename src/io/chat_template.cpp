// Hugging Face chat templates: the public class (include/nvfp4/chat_template.hpp) over the parser
// and renderer of chat_template_*.cpp, and the reading of tokenizer_config.json.
#include "nvfp4/chat_template.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/chat_template_internal.hpp"

namespace nvfp4::io {

ChatTemplate::ChatTemplate() : variables_(nlohmann::ordered_json::object()) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::ChatTemplate(const ChatTemplate&) = default;
ChatTemplate& ChatTemplate::operator=(const ChatTemplate&) = default;
ChatTemplate::~ChatTemplate() = default;

ChatTemplate ChatTemplate::parse(std::string_view text, std::string_view source_name) {
  ChatTemplate t;
  t.t_ = chat::parse_template(text, source_name);
  return t;
}

namespace {

// A special token as tokenizer_config.json gives it: a string, an AddedToken object
// {"content": ...}, or null (unset).
std::optional<std::string> token_content(const nlohmann::ordered_json& v, const std::string& where) {
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw Error(where + ": expected a string or an AddedToken object {\"content\": \"...\"}, got " + std::string(v.type_name()));
}

}  // namespace

namespace {

nlohmann::ordered_json read_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open the tokenizer config (a tokenizer_config.json)");
  std::stringstream buf;
  buf << in.rdbuf();
  nlohmann::ordered_json cfg;
  try {
    cfg = nlohmann::ordered_json::parse(buf.str());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  if (!cfg.is_object()) throw Error(path + ": not a JSON object; a tokenizer_config.json is one");
  return cfg;
}

}  // namespace

// transformers passes its special_tokens_map: the tokens that are set and not empty.
void ChatTemplate::set_special_tokens(const nlohmann::ordered_json& cfg, const std::string& path) {
  for (const char* name : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    const auto f = cfg.find(name);
    if (f == cfg.end()) continue;
    const std::optional<std::string> v = token_content(*f, path + ": " + name);
    if (v && !v->empty()) set_variable(name, *v);
  }
  if (const auto f = cfg.find("additional_special_tokens"); f != cfg.end() && !f->is_null()) {
    if (!f->is_array()) throw Error(path + ": additional_special_tokens: expected a list, got " + std::string(f->type_name()));
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (size_t k = 0; k < f->size(); ++k) {
      const auto v = token_content((*f)[k], path + ": additional_special_tokens[" + std::to_string(k) + "]");
      if (v) list.push_back(*v);
    }
    if (!list.empty()) set_json_variable("additional_special_tokens", list);
  }
}

std::optional<ChatTemplate> ChatTemplate::from_tokenizer_config(const std::string& path) {
  const nlohmann::ordered_json cfg = read_config(path);
  const auto it = cfg.find("chat_template");
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  std::string text, source = path + ":chat_template";
  if (it->is_string()) {
    text = it->get<std::string>();
  } else if (it->is_array()) {
    bool found = false;
    for (size_t k = 0; k < it->size(); ++k) {
      const auto& e = (*it)[k];
      const std::string where = path + ": chat_template[" + std::to_string(k) + "]";
      if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || !e.contains("template") || !e["template"].is_string()) {
        throw Error(where + ": expected an object {\"name\": \"...\", \"template\": \"...\"}");
      }
      if (e["name"] == "default" && !found) {
        text = e["template"].get<std::string>();
        found = true;
      }
    }
    if (!found) {
      throw Error(path + ": chat_template: a list of named templates with none named \"default\" (transformers needs the "
                         "name too; pick one and load it with ChatTemplate::parse)");
    }
    source = path + ":chat_template[default]";
  } else {
    throw Error(path + ": chat_template: expected a string or a list of {\"name\", \"template\"} objects, got " +
                std::string(it->type_name()));
  }

  ChatTemplate t = parse(text, source);
  t.set_special_tokens(cfg, path);
  return t;
}

std::optional<ChatTemplate> ChatTemplate::from_model_folder(const std::string& dir) {
  const std::filesystem::path d(dir);
  const std::string cfg_path = (d / "tokenizer_config.json").string();
  const bool has_cfg = std::filesystem::exists(cfg_path);
  if (has_cfg) {
    if (auto t = from_tokenizer_config(cfg_path)) return t;
  }
  const std::string jinja = (d / "chat_template.jinja").string();
  if (!std::filesystem::exists(jinja)) return std::nullopt;
  std::ifstream in(jinja, std::ios::binary);
  if (!in) throw Error(jinja + ": cannot read the chat template");
  std::stringstream text;
  text << in.rdbuf();
  ChatTemplate t = parse(text.str(), jinja);
  if (has_cfg) t.set_special_tokens(read_config(cfg_path), cfg_path);
  return t;
}

void ChatTemplate::set_variable(const std::string& name, const std::string& value) { variables_[name] = value; }

void ChatTemplate::set_json_variable(const std::string& name, const nlohmann::ordered_json& value) { variables_[name] = value; }

void ChatTemplate::set_now(const std::tm& local_time) {
  // Normalise the fields (and fill in the weekday and day of the year) as Python's datetime would.
  std::tm tm = local_time;
  tm.tm_isdst = 0;
  const std::time_t t = timegm(&tm);
  std::tm out{};
  gmtime_r(&t, &out);
  now_ = out;
}

void ChatTemplate::clear_now() { now_.reset(); }

void ChatTemplate::set_limits(const ChatTemplateLimits& limits) { limits_ = limits; }

const std::string& ChatTemplate::source_name() const { return t_->source; }

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                 const nlohmann::json& extra) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    nlohmann::ordered_json msg = nlohmann::ordered_json::object();
    msg["role"] = m.role;
    msg["content"] = m.content;
    list.push_back(std::move(msg));
  }
  nlohmann::ordered_json ordered;
  try {
    if (!extra.is_null()) ordered = nlohmann::ordered_json::parse(extra.dump());
  } catch (const nlohmann::json::exception& e) {
    throw Error(t_->source + ": render: the extra variables are not valid JSON text (" + e.what() + ")");
  }
  return render_json(list, add_generation_prompt, ordered);
}

std::string ChatTemplate::render_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                      const nlohmann::ordered_json& extra) const {
  using chat::Value;
  if (!extra.is_null() && !extra.is_object()) throw Error(t_->source + ": render: extra variables must be a JSON object or null");
  const chat::RenderBudget budget(limits_);
  auto globals = std::make_shared<chat::Scope>();
  for (auto& [name, fn] : chat::global_functions()) globals->vars[name] = std::move(fn);
  auto context = std::make_shared<chat::Scope>();
  context->parent = globals;
  try {
    for (const auto& [name, v] : variables_.items()) context->vars[name] = chat::from_json(v);
    if (!messages.is_array()) throw chat::Failure{"messages must be a JSON list", false};
    context->vars["messages"] = chat::from_json(messages);
    context->vars["add_generation_prompt"] = Value::boolean(add_generation_prompt);
    // transformers passes tools and documents always (None when the request has none).
    context->vars["tools"] = Value::none();
    context->vars["documents"] = Value::none();
    if (extra.is_object()) {
      for (const auto& [name, v] : extra.items()) {
        if (name == "messages" || name == "add_generation_prompt") {
          throw chat::Failure{"extra variables cannot set '" + name + "' (a render argument)", false};
        }
        context->vars[name] = chat::from_json(v);
      }
    }
  } catch (const chat::Failure& f) {
    throw Error(t_->source + ": render: " + f.message);
  }
  return chat::Renderer(*t_, context, now_).run();
}

}  // namespace nvfp4::io

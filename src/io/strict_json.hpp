// JSON parsed strictly: a syntax error or a duplicate key at any depth stops the parse (nlohmann
// keeps the last of two equal keys silently; a file with a key twice is ambiguous). Linear time
// and no recursion, so hostile input (huge or deeply nested) cannot blow the stack. Used by the
// safetensors header and index readers. Private to src/io/.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace nvfp4::io {

struct StrictJson {
  bool ok = false;
  nlohmann::json value;                      // the document, when ok
  std::optional<std::string> syntax_error;   // nlohmann's message (may quote invalid UTF-8 bytes)
  std::optional<std::string> duplicate_key;  // the key seen twice
  size_t duplicate_depth = 0;                // 1: in the top-level object
  std::string top_key;                       // the last top-level key read before the stop
};

StrictJson parse_strict_json(std::string_view text);

}  // namespace nvfp4::io

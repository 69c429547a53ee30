// What token_shards.cpp (shard files, loader, manifest) and token_dataset.cpp (text -> dataset)
// share; private to src/io.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/token_shards.hpp"

namespace nvfp4::io::detail {

// Throws nvfp4::Error "FILE: what".
[[noreturn]] void fail(std::string_view file, const std::string& what);
std::string errno_text(int err);
std::string plural(int64_t n, const char* word);  // "1 token", "2 tokens"

// `buf` is the whole shard file as T (uint16_t or uint32_t): 1024 bytes of header slots, then
// the tokens. Fills the header in (num_tokens, version and token_bytes from the buffer) and
// writes the file atomically. Instantiated for uint16_t and uint32_t in token_shards.cpp.
template <class T>
void write_shard_buffer(const std::string& path, ShardHeader h, std::vector<T>& buf);

// The whole file; errors name the file and `what` it is.
std::string read_whole_file(const std::string& path, const char* what);

}  // namespace nvfp4::io::detail

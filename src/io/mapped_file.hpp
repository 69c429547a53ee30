// A read-only memory map of a whole regular file: what the safetensors reader and the token
// shards read through (one class, one set of checks and messages).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace nvfp4::io {

class MappedFile {
 public:
  // Maps path, which must be a non-empty regular file. `kind` says what the file should be ("a
  // safetensors file", "a token shard") and `hint` what to do when it is a folder or not a
  // regular file; errors are nvfp4::Error("<path>: ..."). A file truncated by another process
  // while it is mapped raises SIGBUS on the lost pages: the files we map are written once
  // (atomically) and not changed under a reader.
  static MappedFile open(const std::string& path, const std::string& kind, const std::string& hint);

  MappedFile() = default;
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const uint8_t> bytes() const { return {static_cast<const uint8_t*>(map_), size_}; }
  const uint8_t* data() const { return static_cast<const uint8_t*>(map_); }
  size_t size() const { return size_; }

 private:
  void* map_ = nullptr;
  size_t size_ = 0;
};

}  // namespace nvfp4::io

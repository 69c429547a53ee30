// safetensors reading and writing (docs/numerics.md §6).
//
// File layout: u64 little-endian header length N, N bytes of JSON, then the data section.
// The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data section) plus an optional "__metadata__" map of strings to strings.
//
// Reading memory-maps the file (multi-GB checkpoints cost no copy) and validates the header
// completely before any tensor is touched: header length (<= 100 MB and inside the file),
// well-formed JSON, known dtypes, non-negative shapes, offsets that are in range, match
// numel * dtype size, do not overlap and leave no gap, and a data section that ends where the
// file ends. Every failure is an nvfp4::Error naming the file, the tensor and the problem.
//
// Writing is atomic: the file is written to a temporary name in the same folder, flushed,
// then renamed over the target, so a crash never leaves a half-written file behind and an
// existing file is only replaced by a complete one.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/dtype.hpp"
#include "nvfp4/tensor.hpp"

namespace nvfp4::io {

inline constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // 100 MB, as upstream

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section, [begin, end)
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct Header {
  std::vector<TensorInfo> tensors;              // sorted by begin offset
  std::map<std::string, std::string> metadata;  // "__metadata__", empty if absent
  uint64_t header_bytes = 0;                    // N, the JSON length
  uint64_t data_bytes = 0;                      // size of the data section
};

// Parse and validate a complete file image (8-byte length, JSON header, data section).
// `file` names the source in error messages. This is the fuzzed entry point.
Header parse_header(std::span<const uint8_t> file_image, std::string_view file);

// A read-only, memory-mapped safetensors file.
class SafetensorsFile {
 public:
  // Opens, maps and validates `path`. Throws nvfp4::Error (missing, unreadable, invalid).
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& path() const;
  const Header& header() const;
  const std::vector<TensorInfo>& tensors() const { return header().tensors; }
  const std::map<std::string, std::string>& metadata() const { return header().metadata; }

  const TensorInfo* find(std::string_view name) const;  // nullptr if absent
  const TensorInfo& at(std::string_view name) const;    // throws naming file and tensor
  std::span<const uint8_t> bytes(const TensorInfo& t) const;  // view into the mapping
  Tensor load(std::string_view name) const;                   // owned copy

 private:
  struct Impl;
  explicit SafetensorsFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A checkpoint that may be one file or several shards listed by an index JSON
// ({"metadata": {...}, "weight_map": {tensor: shard file}}, e.g. model.safetensors.index.json).
class Checkpoint {
 public:
  // `path` is a .safetensors file, an index .json file, or a folder holding either
  // model.safetensors or model.safetensors.index.json. Validates every shard, checks that each
  // tensor of the weight map is in its shard and that no tensor appears twice.
  static Checkpoint open(const std::string& path);

  std::vector<std::string> names() const;  // sorted
  const TensorInfo& info(std::string_view name) const;
  std::span<const uint8_t> bytes(std::string_view name) const;
  Tensor load(std::string_view name) const;
  // The first shard's (by file name) __metadata__, overlaid with the string values of the
  // index's "metadata" (the index wins on a clash; non-string values such as total_size are
  // left out).
  const std::map<std::string, std::string>& metadata() const;
  const std::vector<SafetensorsFile>& shards() const { return shards_; }

 private:
  std::string path_;  // as given to open(), for error messages
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, size_t, std::less<>> where_;  // tensor name -> shard index
  std::map<std::string, std::string> metadata_;
};

struct TensorRef {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;  // exactly numel * dtype size bytes
};

// Write one file atomically. Tensors are stored in the given order, contiguous, no gaps;
// the header is padded with spaces to a multiple of 8 bytes. metadata becomes "__metadata__"
// ("format": "pt" is added unless given). Throws nvfp4::Error on a duplicate or empty name,
// a size that does not match the shape, or an I/O failure (the target is left untouched).
void write_file(const std::string& path, const std::vector<TensorRef>& tensors,
                const std::map<std::string, std::string>& metadata = {});

// Convenience: write owned tensors by name.
void write_file(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                const std::map<std::string, std::string>& metadata = {});

// Write a sharded checkpoint into `dir`: model-0000i-of-0000n.safetensors shards of at most
// max_shard_bytes of tensor data each (a larger tensor gets a shard of its own) and
// model.safetensors.index.json; a single shard is written as model.safetensors with no index.
// Every file is written atomically. Returns the paths written.
std::vector<std::string> write_sharded(const std::string& dir, const std::vector<TensorRef>& tensors,
                                       uint64_t max_shard_bytes,
                                       const std::map<std::string, std::string>& metadata = {});

// Write bytes to path atomically (temp file in the same folder + fsync + rename).
void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);
// The same for text (JSON, reports, config files).
void write_text_file_atomic(const std::string& path, std::string_view text);

// ---- temporary files of writers that were killed -------------------------------------------
//
// Every atomic write above goes through DIR/.NAME.tmp.<pid>.<n> (pid: the writing process, n: a
// per-process counter) and renames it to DIR/NAME; a writer killed in between (kill -9, power
// loss) leaves the temp file behind. The pid in the name says whose it is.

// The pid in `file_name` (no folder) when it is ".X.<tag>.<pid>" or ".X.<tag>.<pid>.<n>" with X
// not empty and pid > 0 (tag "tmp": write_file_atomic's temp files); nullopt otherwise.
std::optional<int64_t> temp_name_pid(std::string_view file_name, std::string_view tag = "tmp");
// True when no process `pid` exists on this machine (kill(pid, 0) fails with ESRCH). A process
// of another user (EPERM) exists. NOTE: pids are per pid namespace: a writer in another
// container sharing the folder cannot be seen, so do not share an output folder across them.
bool process_is_gone(int64_t pid);
// Deletes the regular files in `dir` named by temp_name_pid() whose process is gone; a running
// process's temp files (this one's included) and every other file are left alone. Returns the
// paths deleted. A missing `dir` is nothing to do; a failed delete is an nvfp4::Error naming the
// file. Called when a folder is opened for writing (train --out, data --out).
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

}  // namespace nvfp4::io

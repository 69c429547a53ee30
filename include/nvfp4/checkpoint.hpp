// Training checkpoints: everything needed to resume a run, in ONE safetensors file.
// docs/model.md ("Checkpoints and metrics") is the user-level description; this is the contract.
//
// ---- the file ----------------------------------------------------------------------------------
//
//   DIR/ckpt_00001000.safetensors      checkpoint_path(DIR, 1000): the state after step 1000
//
//   tensors (all F32, row-major, names chosen by the caller), by convention:
//     model.layers.0.self_attn.q_proj.weight, ...     the parameters (HF Llama names)
//     optimizer.m.<parameter name>                    AdamW first moment
//     optimizer.v.<parameter name>                    AdamW second moment
//   "__metadata__" (string -> string):
//     nvfp4.checkpoint_version   "1" (kCheckpointVersion); readers refuse any other value
//     nvfp4.producer             "nvfp4 <version>" unless the caller gives its own
//     nvfp4.tensor_crc32         JSON object: tensor name -> CRC-32 (zlib's) of its bytes as 8
//                                lower-case hex digits; checked by read_into() and verify()
//     format                     "pt" (added by the safetensors writer)
//     ...                        the caller's entries, by convention JSON texts: model config,
//                                recipe, train state (step, data position, RNG state), schedule
//
// Writing is atomic (the safetensors writer's temp file in the same folder + fsync + rename +
// folder fsync): a crash or a failed write never leaves a partial file under the final name, and
// an existing checkpoint of that name is only ever replaced by a complete one.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nvfp4/safetensors.hpp"

namespace nvfp4::io {

inline constexpr const char* kCheckpointVersionKey = "nvfp4.checkpoint_version";
inline constexpr const char* kCheckpointVersion = "1";
inline constexpr const char* kCheckpointProducerKey = "nvfp4.producer";
inline constexpr const char* kCheckpointCrcKey = "nvfp4.tensor_crc32";
// What a training checkpoint's model needs besides its tensors: the model config (JSON) and the
// tokenizer's full description (io::Tokenizer::describe(); older checkpoints: its name).
inline constexpr const char* kCheckpointModelConfigKey = "nvfp4.model_config";
inline constexpr const char* kCheckpointTokenizerKey = "nvfp4.tokenizer";

// One FP32 tensor to save. `data` points at numel(shape) floats the caller owns until
// write_checkpoint returns (nullptr is allowed only when numel is 0).
struct CheckpointTensor {
  std::string name;
  std::vector<int64_t> shape;  // {} is a scalar
  const float* data = nullptr;
};

// Writes `tensors` (in the given order) and `metadata` to `path` atomically (see above). The
// folder must exist. Throws nvfp4::Error naming the path, and the tensor where there is one, for
// an empty or duplicate name, a negative dimension, null data, a caller metadata key that is
// reserved (kCheckpointVersionKey, kCheckpointCrcKey) or empty, or an I/O failure; in every case
// the file at `path`, if any, is left as it was.
void write_checkpoint(const std::string& path, std::span<const CheckpointTensor> tensors,
                      const std::map<std::string, std::string>& metadata);

// A checkpoint opened for reading: memory-mapped, the safetensors header validated completely,
// then the checkpoint version and the CRC table (one entry per tensor, no others). Tensor bytes
// are checked against their CRC when read.
class CheckpointReader {
 public:
  // Throws nvfp4::Error naming `path`: missing, unreadable, not a valid safetensors file
  // (truncated, corrupt header), not an nvfp4 training checkpoint (no version entry), another
  // checkpoint version, or a missing / malformed CRC table.
  static CheckpointReader open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::string& version() const;  // kCheckpointVersion for now

  bool has(std::string_view name) const { return file_.find(name) != nullptr; }
  std::vector<std::string> names() const;  // in file order (the order they were written)
  // The stored shape; throws naming the file and the tensor if there is no such tensor.
  const std::vector<int64_t>& shape(std::string_view name) const;

  bool has_metadata(std::string_view key) const;
  // The metadata value of `key`; throws nvfp4::Error naming the file and the missing key.
  const std::string& metadata(std::string_view key) const;
  const std::map<std::string, std::string>& all_metadata() const { return file_.metadata(); }

  // Copies tensor `name` into `out`. Checks, each failure an nvfp4::Error naming the file and the
  // tensor: it exists; its dtype is F32; its shape equals `shape` exactly (the message gives the
  // expected and the stored shape); out.size() == numel(shape); its bytes match their CRC-32
  // (else the file is corrupt).
  void read_into(std::string_view name, std::span<float> out, const std::vector<int64_t>& shape) const;
  // read_into(), then refuses a NaN or infinity (a run's parameters and optimizer state are
  // finite: such a file was written by a diverged run or edited): nvfp4::Error naming the file,
  // the tensor and the first bad element's flat index. For loading a model or resuming.
  void read_finite_into(std::string_view name, std::span<float> out, const std::vector<int64_t>& shape) const;

  // Checks every tensor's CRC-32 (reads the whole file); throws naming the first bad tensor.
  void verify() const;

 private:
  explicit CheckpointReader(SafetensorsFile file) : file_(std::move(file)) {}
  void check_crc(const TensorInfo& t) const;
  SafetensorsFile file_;
  std::map<std::string, uint32_t, std::less<>> crc_;
};

// ---- a folder of checkpoints ---------------------------------------------------------------------

// "ckpt_%08lld.safetensors": the file name of the checkpoint after `step` (step >= 0).
std::string checkpoint_file_name(int64_t step);
// dir / checkpoint_file_name(step).
std::string checkpoint_path(const std::string& dir, int64_t step);
// The step of a checkpoint file name, or nullopt if `file_name` (no folder) is not exactly
// checkpoint_file_name(step) for some step (so "ckpt_5.safetensors" and temp files do not count).
std::optional<int64_t> checkpoint_step(std::string_view file_name);

// (step, path) of every checkpoint file in `dir`, sorted by step; empty if `dir` does not exist.
// Throws nvfp4::Error naming `dir` if it exists but cannot be listed.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir);

// The path of the checkpoint with the largest step in `dir`, or "" if there is none. By name only:
// the file is not opened (CheckpointReader::open does the checking).
std::string latest_checkpoint(const std::string& dir);

// Deletes all but the `keep_last_n` newest checkpoints (by step) in `dir`; the newest is never
// deleted. Other files are not touched. Returns the paths deleted, oldest first. Throws
// nvfp4::Error for keep_last_n < 1 (to keep every checkpoint, do not call it) or a failed delete.
std::vector<std::string> prune_checkpoints(const std::string& dir, int64_t keep_last_n);

}  // namespace nvfp4::io

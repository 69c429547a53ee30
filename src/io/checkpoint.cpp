// Training checkpoints; the file layout and the contract are in nvfp4/checkpoint.hpp.
//
// A checkpoint is an ordinary safetensors file written by write_file() (atomic), with three
// reserved metadata entries: the checkpoint version, the producer and a CRC-32 per tensor. The
// safetensors reader validates the structure (a truncated file or a broken header fails there);
// the CRCs catch what structure cannot: flipped or zeroed bytes inside the data section.
#include "nvfp4/checkpoint.hpp"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"
#include "nvfp4/tensor.hpp"

#ifndef NVFP4_VERSION
#define NVFP4_VERSION "unknown"
#endif

namespace nvfp4::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and checkpoints copy FP32 bytes as they are");
static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559, "checkpoints store IEEE FP32");

namespace fs = std::filesystem;

namespace {

constexpr const char* kPrefix = "ckpt_";
constexpr const char* kSuffix = ".safetensors";

[[noreturn]] void fail(std::string_view file, const std::string& what) { throw Error(std::string(file) + ": " + what); }

[[noreturn]] void fail_tensor(std::string_view file, std::string_view tensor, const std::string& what) {
  throw Error(std::string(file) + ": tensor '" + std::string(tensor) + "': " + what);
}

uint32_t crc32_of(std::span<const uint8_t> bytes) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  constexpr size_t kChunk = size_t{1} << 30;  // zlib takes a uInt length
  for (size_t at = 0; at < bytes.size(); at += kChunk) {
    const size_t n = std::min(kChunk, bytes.size() - at);
    crc = ::crc32(crc, bytes.data() + at, static_cast<uInt>(n));
  }
  return static_cast<uint32_t>(crc);
}

std::string hex8(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

std::optional<uint32_t> parse_hex8(const std::string& s) {
  if (s.size() != 8) return std::nullopt;
  uint32_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  for (const char c : s) {
    if (c >= 'A' && c <= 'F') return std::nullopt;  // lower case only, as written
  }
  return v;
}

}  // namespace

// ---- writing -----------------------------------------------------------------------------------

void write_checkpoint(const std::string& path, std::span<const CheckpointTensor> tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> meta;
  for (const auto& [k, v] : metadata) {
    if (k.empty()) fail(path, "a checkpoint metadata key is empty; give every entry a name");
    if (k == kCheckpointVersionKey || k == kCheckpointCrcKey) {
      fail(path, "metadata key '" + k + "' is reserved: write_checkpoint sets it itself");
    }
    meta.emplace(k, v);
  }
  std::vector<TensorRef> refs;
  refs.reserve(tensors.size());
  nlohmann::ordered_json crcs = nlohmann::ordered_json::object();
  for (const auto& t : tensors) {
    if (t.name.empty()) fail(path, "cannot write a tensor with an empty name; give every tensor a name");
    for (const int64_t d : t.shape) {
      if (d < 0) fail_tensor(path, t.name, "shape " + shape_to_string(t.shape) + " has a negative dimension");
    }
    const int64_t n = shape_numel(t.shape);
    if (t.data == nullptr && n != 0) {
      fail_tensor(path, t.name, "data is null but shape " + shape_to_string(t.shape) + " has " + std::to_string(n) +
                                    " elements");
    }
    const std::span<const uint8_t> bytes =
        n == 0 ? std::span<const uint8_t>()
               : std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(t.data), static_cast<size_t>(n) * sizeof(float));
    refs.push_back(TensorRef{t.name, DType::F32, t.shape, bytes});
    crcs[t.name] = hex8(crc32_of(bytes));  // a duplicate name is rejected by write_file below
  }
  meta[kCheckpointVersionKey] = kCheckpointVersion;
  meta.emplace(kCheckpointProducerKey, std::string("nvfp4 ") + NVFP4_VERSION);  // unless the caller set one
  try {
    meta[kCheckpointCrcKey] = crcs.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    fail(path, std::string("cannot encode the tensor names as JSON (") + e.what() + "); names must be valid UTF-8");
  }
  write_file(path, refs, meta);
}

// ---- reading -----------------------------------------------------------------------------------

CheckpointReader CheckpointReader::open(const std::string& path) {
  CheckpointReader r(SafetensorsFile::open(path));
  const auto& md = r.file_.metadata();
  const auto v = md.find(kCheckpointVersionKey);
  if (v == md.end()) {
    fail(path, std::string("is not an nvfp4 training checkpoint: its metadata has no '") + kCheckpointVersionKey +
                   "' (is it a model export or another tool's file? load those with `nvfp4 inspect`)");
  }
  if (v->second != kCheckpointVersion) {
    fail(path, "is checkpoint version '" + v->second + "', this build reads version " + kCheckpointVersion +
                   " only; use the nvfp4 that wrote it (producer '" +
                   (md.count(kCheckpointProducerKey) ? md.at(kCheckpointProducerKey) : std::string("?")) + "')");
  }
  const auto c = md.find(kCheckpointCrcKey);
  if (c == md.end()) {
    fail(path, std::string("has no '") + kCheckpointCrcKey + "' metadata entry; the checkpoint is corrupt or was not "
                                                            "written by write_checkpoint");
  }
  const auto j = nlohmann::json::parse(c->second, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    fail(path, std::string("the '") + kCheckpointCrcKey + "' metadata entry is not a JSON object; the checkpoint is corrupt");
  }
  for (const auto& [name, value] : j.items()) {
    const auto* s = value.get_ptr<const std::string*>();
    const auto crc = s ? parse_hex8(*s) : std::nullopt;
    if (!crc) fail_tensor(path, name, "its CRC-32 entry is " + value.dump() + ", expected 8 lower-case hex digits; the checkpoint is corrupt");
    if (r.file_.find(name) == nullptr) {
      fail_tensor(path, name, "is listed in the CRC table but not stored in the file; the checkpoint is corrupt");
    }
    r.crc_.emplace(name, *crc);
  }
  for (const auto& t : r.file_.tensors()) {
    if (!r.crc_.count(t.name)) fail_tensor(path, t.name, "has no CRC-32 entry; the checkpoint is corrupt");
  }
  return r;
}

const std::string& CheckpointReader::version() const { return file_.metadata().at(kCheckpointVersionKey); }

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  out.reserve(file_.tensors().size());
  for (const auto& t : file_.tensors()) out.push_back(t.name);  // sorted by offset = write order
  return out;
}

const std::vector<int64_t>& CheckpointReader::shape(std::string_view name) const { return file_.at(name).shape; }

bool CheckpointReader::has_metadata(std::string_view key) const {
  const auto& md = file_.metadata();
  return md.find(std::string(key)) != md.end();
}

const std::string& CheckpointReader::metadata(std::string_view key) const {
  const auto& md = file_.metadata();
  const auto it = md.find(std::string(key));
  if (it == md.end()) {
    fail(path(), "checkpoint metadata has no entry '" + std::string(key) +
                     "'; it was written by a run that did not record it (older nvfp4 or another trainer)");
  }
  return it->second;
}

void CheckpointReader::check_crc(const TensorInfo& t) const {
  const uint32_t want = crc_.find(t.name)->second;  // open() made sure every tensor has one
  const uint32_t got = crc32_of(file_.bytes(t));
  if (got != want) {
    fail_tensor(path(), t.name, "data does not match its CRC-32 (stored " + hex8(want) + ", computed " + hex8(got) +
                                    "); the checkpoint is corrupt. Resume from an earlier checkpoint");
  }
}

void CheckpointReader::read_into(std::string_view name, std::span<float> out, const std::vector<int64_t>& shape) const {
  const int64_t n = shape_numel(shape);
  if (static_cast<uint64_t>(n) != out.size()) {
    fail_tensor(path(), name, "the destination holds " + std::to_string(out.size()) + " floats but shape " +
                                  shape_to_string(shape) + " needs " + std::to_string(n));
  }
  const TensorInfo* t = file_.find(name);
  if (t == nullptr) {
    fail_tensor(path(), name, "is not in this checkpoint (expected shape " + shape_to_string(shape) +
                                  "); was it written for another model configuration?");
  }
  if (t->dtype != DType::F32) {
    fail_tensor(path(), name, "is stored as " + std::string(dtype_name(t->dtype)) +
                                  ", expected F32 (training checkpoints hold FP32 tensors)");
  }
  if (t->shape != shape) {
    fail_tensor(path(), name, "shape mismatch: expected " + shape_to_string(shape) + ", found " +
                                  shape_to_string(t->shape) +
                                  " in the file; was it written for another model configuration?");
  }
  check_crc(*t);
  const auto bytes = file_.bytes(*t);
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
}

void CheckpointReader::read_finite_into(std::string_view name, std::span<float> out,
                                        const std::vector<int64_t>& shape) const {
  read_into(name, out, shape);
  const auto bad = std::find_if(out.begin(), out.end(), [](float x) { return !std::isfinite(x); });
  if (bad != out.end()) {
    const char* what = std::isnan(*bad) ? "nan" : *bad > 0 ? "inf" : "-inf";
    fail_tensor(path(), name, "element " + std::to_string(bad - out.begin()) + " is " + what +
                                  " (a checkpoint of a healthy run holds finite values only: was it written by a "
                                  "diverged run, or edited?); use an earlier checkpoint");
  }
}

void CheckpointReader::verify() const {
  for (const auto& t : file_.tensors()) check_crc(t);
}

// ---- a folder of checkpoints -----------------------------------------------------------------

std::string checkpoint_file_name(int64_t step) {
  if (step < 0) throw Error("checkpoint step " + std::to_string(step) + " is negative");
  char buf[64];
  std::snprintf(buf, sizeof buf, "ckpt_%08lld.safetensors", static_cast<long long>(step));
  return buf;
}

std::string checkpoint_path(const std::string& dir, int64_t step) {
  return (fs::path(dir) / checkpoint_file_name(step)).string();
}

std::optional<int64_t> checkpoint_step(std::string_view file_name) {
  const std::string_view prefix(kPrefix), suffix(kSuffix);
  if (file_name.size() <= prefix.size() + suffix.size() || !file_name.starts_with(prefix) ||
      !file_name.ends_with(suffix)) {
    return std::nullopt;
  }
  const std::string_view digits = file_name.substr(prefix.size(), file_name.size() - prefix.size() - suffix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return std::nullopt;
  int64_t step = 0;
  const auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  if (ec != std::errc() || p != digits.data() + digits.size()) return std::nullopt;  // overflow
  if (checkpoint_file_name(step) != file_name) return std::nullopt;                  // not the canonical spelling
  return step;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (st.type() == fs::file_type::not_found) return out;
  if (ec) fail(dir, "cannot access the checkpoint folder: " + ec.message());
  if (!fs::is_directory(st)) fail(dir, "is not a folder; expected the folder that holds ckpt_*.safetensors files");
  fs::directory_iterator it(dir, ec);
  if (ec) fail(dir, "cannot list the checkpoint folder: " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (const auto step = checkpoint_step(name)) {
      std::error_code fec;
      if (it->is_regular_file(fec)) out.emplace_back(*step, it->path().string());
    }
  }
  if (ec) fail(dir, "cannot list the checkpoint folder: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::string latest_checkpoint(const std::string& dir) {
  const auto all = list_checkpoints(dir);
  return all.empty() ? std::string() : all.back().second;
}

std::vector<std::string> prune_checkpoints(const std::string& dir, int64_t keep_last_n) {
  if (keep_last_n < 1) {
    throw Error("prune_checkpoints(" + dir + "): keep_last_n is " + std::to_string(keep_last_n) +
                ", it must be >= 1 (the newest checkpoint is always kept; to keep all, do not prune)");
  }
  const auto all = list_checkpoints(dir);
  std::vector<std::string> deleted;
  if (static_cast<int64_t>(all.size()) <= keep_last_n) return deleted;
  const size_t n_delete = all.size() - static_cast<size_t>(keep_last_n);  // < all.size(): the newest stays
  for (size_t i = 0; i < n_delete; ++i) {
    std::error_code ec;
    if (!fs::remove(all[i].second, ec) && ec) {
      fail(all[i].second, "cannot delete an old checkpoint: " + ec.message());
    }
    deleted.push_back(all[i].second);
  }
  return deleted;
}

}  // namespace nvfp4::io

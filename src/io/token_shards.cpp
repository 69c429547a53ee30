// Token shard files, the shard loader and the dataset manifest; the contract is in
// nvfp4/token_shards.hpp, the user-level description in docs/data.md. Making a dataset from text
// is in token_dataset.cpp.
//
// Reading maps the shard (like SafetensorsFile) and validates the whole header against the file
// size before a token is touched, then checks every token against the vocabulary: a corrupt
// shard is an Error naming the file at open, never garbage in a training batch.
//
// Writing goes through io::write_file_atomic (temp file + fsync + rename, nvfp4/safetensors.hpp).
// The pipeline's shard buffer holds the header slots in front of the tokens, so a full shard of
// 100M tokens is written from one buffer without a copy.
#include "nvfp4/token_shards.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <type_traits>
#include <utility>

#include <nlohmann/json.hpp>

#include "io/mapped_file.hpp"
#include "io/token_shards_internal.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"

namespace nvfp4::io {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian and are read and written by memcpy / mmap");
static_assert(kShardHeaderBytes == 1024, "llm.c's shard header is 256 int32");

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

namespace detail {

[[noreturn]] void fail(std::string_view file, const std::string& what) {
  throw Error(std::string(file) + ": " + what);
}

std::string errno_text(int err) { return std::strerror(err); }

std::string plural(int64_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace detail

using detail::errno_text;
using detail::fail;
using detail::plural;

namespace {

// The 256-int32 header of `h`, ready to memcpy to the front of a shard.
void pack_header(const ShardHeader& h, int32_t* header) {
  std::fill(header, header + kShardHeaderInts, 0);
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<int32_t>(h.num_tokens);
  header[3] = h.vocab_size;
  header[4] = h.tokenizer_id;
  header[5] = static_cast<int32_t>(h.split);
  header[6] = h.index;
  header[7] = h.documents;
  header[8] = h.token_bytes;
}

void check_writable_header(const std::string& path, const ShardHeader& h, int64_t num_tokens) {
  if (num_tokens > kMaxShardTokens) {
    fail(path, "a shard holds at most " + std::to_string(kMaxShardTokens) + " tokens (header[2] is an int32), not " +
                   std::to_string(num_tokens) + "; write more, smaller shards");
  }
  if (h.vocab_size < 0) fail(path, "vocabulary size " + std::to_string(h.vocab_size) + " is negative");
  if (h.token_bytes == 2 && h.vocab_size > kMaxUint16Vocab) {
    fail(path, "vocabulary size " + std::to_string(h.vocab_size) + " does not fit uint16 tokens (at most " +
                   std::to_string(kMaxUint16Vocab) + "); write uint32 tokens");
  }
  if (h.split != Split::train && h.split != Split::val) fail(path, "split must be train (0) or val (1)");
}

}  // namespace

int32_t shard_token_bytes(int32_t vocab_size) { return vocab_size <= kMaxUint16Vocab ? 2 : 4; }

template <class T>
void detail::write_shard_buffer(const std::string& path, ShardHeader h, std::vector<T>& buf) {
  static_assert(std::is_same_v<T, uint16_t> || std::is_same_v<T, uint32_t>, "shards hold uint16 or uint32 tokens");
  constexpr size_t kHeaderSlots = kShardHeaderBytes / sizeof(T);
  const int64_t n = static_cast<int64_t>(buf.size() - kHeaderSlots);
  h.num_tokens = n;
  h.version = kShardVersion;
  h.token_bytes = static_cast<int32_t>(sizeof(T));
  check_writable_header(path, h, n);
  if (n > 0) {
    const T max = *std::max_element(buf.begin() + kHeaderSlots, buf.end());
    // uint32 ids are read back as int32: above INT32_MAX no vocabulary can hold them.
    const uint64_t limit = h.vocab_size > 0 ? static_cast<uint64_t>(h.vocab_size) : (uint64_t{1} << 31);
    if (max >= limit) {
      fail(path, "token " + std::to_string(max) + " is outside the vocabulary of " + std::to_string(limit) +
                     "; not writing a shard that would fail to load");
    }
  }
  int32_t header[kShardHeaderInts];
  pack_header(h, header);
  std::memcpy(buf.data(), header, sizeof header);
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(buf.data()), buf.size() * sizeof(T)});
}
template void detail::write_shard_buffer(const std::string&, ShardHeader, std::vector<uint16_t>&);
template void detail::write_shard_buffer(const std::string&, ShardHeader, std::vector<uint32_t>&);

const char* split_name(Split s) { return s == Split::val ? "val" : "train"; }

namespace {

template <class T>
void write_tokens(const std::string& path, ShardHeader h, std::span<const T> tokens) {
  h.token_bytes = static_cast<int32_t>(sizeof(T));
  check_writable_header(path, h, static_cast<int64_t>(tokens.size()));
  std::vector<T> buf(kShardHeaderBytes / sizeof(T));
  buf.insert(buf.end(), tokens.begin(), tokens.end());
  detail::write_shard_buffer(path, h, buf);
}

}  // namespace

void write_token_shard(const std::string& path, const ShardHeader& h, std::span<const uint16_t> tokens) {
  write_tokens(path, h, tokens);
}
void write_token_shard(const std::string& path, const ShardHeader& h, std::span<const uint32_t> tokens) {
  write_tokens(path, h, tokens);
}

void ShardTokens::copy(int64_t offset, std::span<int32_t> out) const {
  const uint8_t* p = data_ + offset * bytes_;
  if (bytes_ == 2) {
    for (size_t i = 0; i < out.size(); ++i) {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      out[i] = v;
    }
  } else {
    for (size_t i = 0; i < out.size(); ++i) {
      uint32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      out[i] = static_cast<int32_t>(v);  // < 2^31: checked when the shard was opened
    }
  }
}

// ---- TokenShard ---------------------------------------------------------------------------

struct TokenShard::Impl {
  std::string path;
  MappedFile file;
  ShardHeader header;
};

TokenShard::TokenShard(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TokenShard::TokenShard(TokenShard&&) noexcept = default;
TokenShard& TokenShard::operator=(TokenShard&&) noexcept = default;
TokenShard::~TokenShard() = default;

const std::string& TokenShard::path() const { return impl_->path; }
const ShardHeader& TokenShard::header() const { return impl_->header; }
ShardTokens TokenShard::tokens() const {
  return {impl_->file.data() + kShardHeaderBytes, impl_->header.num_tokens,
          impl_->header.token_bytes};
}

namespace {

// The header of a shard file of `file_bytes` bytes whose first 1024 bytes are `h`, checked
// against itself and the file size (everything but the tokens). Errors name `path`.
ShardHeader parse_shard_header(const std::string& path, const int32_t* h, uint64_t file_bytes) {
  if (h[0] != kShardMagic) {
    std::string hint = "; is it a token shard?";
    if (h[0] == 20240801) hint = "; that is llm.c's LLaMA-3 (uint32 token) shard format, which this build does not read";
    fail(path, "has magic " + std::to_string(h[0]) + ", expected " + std::to_string(kShardMagic) +
                   " (llm.c token shard)" + hint);
  }
  if (h[1] != kShardVersionUint16 && h[1] != kShardVersion) {
    fail(path, "has token shard version " + std::to_string(h[1]) + "; this build reads versions " +
                   std::to_string(kShardVersionUint16) + " (uint16 tokens) and " + std::to_string(kShardVersion) +
                   " (uint16 or uint32 tokens); remake the shard with `nvfp4 data`");
  }
  // Version 1 has no width slot (llm.c and our old writer leave header[8] zero): uint16.
  const int32_t width = h[1] == kShardVersionUint16 ? 2 : h[8];
  if (width != 2 && width != 4) {
    fail(path, "header records " + std::to_string(width) + " bytes per token (header[8]); version 2 shards hold 2 "
                   "(uint16) or 4 (uint32); the shard is corrupt");
  }
  if (h[2] < 0) fail(path, "header says " + std::to_string(h[2]) + " tokens, a negative count; the shard is corrupt");
  const uint64_t data_bytes = file_bytes - kShardHeaderBytes;
  const uint64_t want_bytes = static_cast<uint64_t>(width) * static_cast<uint64_t>(h[2]);
  const std::string what = std::to_string(h[2]) + " tokens (" + std::to_string(want_bytes) + " bytes as uint" +
                           std::to_string(8 * width) + ")";
  if (data_bytes < want_bytes) {
    fail(path, "header says " + what + " but only " + std::to_string(data_bytes) +
                   " bytes follow the header; the file is truncated (remake it with `nvfp4 data`)");
  }
  if (data_bytes > want_bytes) {
    fail(path, "header says " + what + " but " + std::to_string(data_bytes) +
                   " bytes follow the header; the token count does not match the file size, the shard is corrupt");
  }
  if (h[3] < 0 || (width == 2 && h[3] > kMaxUint16Vocab)) {
    fail(path, "header records vocabulary size " + std::to_string(h[3]) + ", outside [0, " +
                   (width == 2 ? std::to_string(kMaxUint16Vocab) + "] for uint16 tokens" : std::string("2^31)")) +
                   "; the shard is corrupt");
  }
  if (h[5] != 0 && h[5] != 1) {
    fail(path, "header records split " + std::to_string(h[5]) + ", expected 0 (train) or 1 (val); the shard is corrupt");
  }
  ShardHeader sh;
  sh.num_tokens = h[2];
  sh.vocab_size = h[3];
  sh.tokenizer_id = h[4];
  sh.split = static_cast<Split>(h[5]);
  sh.index = h[6];
  sh.documents = h[7];
  sh.version = h[1];
  sh.token_bytes = width;
  return sh;
}

std::string too_short(uint64_t file_bytes) {
  return "is " + std::to_string(file_bytes) + " bytes, shorter than the 1024-byte token shard header; the file is "
         "truncated or not a token shard";
}

// The largest token of `t` and the position of its first occurrence at or above `limit`
// (-1 if none); the max loop vectorizes, the slow search runs only on failure.
template <class T>
std::pair<uint64_t, int64_t> first_at_or_above(const T* t, int64_t n, uint64_t limit) {
  T max = 0;
  for (int64_t i = 0; i < n; ++i) max = std::max(max, t[i]);
  if (n == 0 || max < limit) return {max, -1};
  int64_t i = 0;
  while (t[i] < limit) ++i;
  return {t[i], i};
}

}  // namespace

TokenShard TokenShard::open(const std::string& path, int32_t expected_vocab) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->file = MappedFile::open(path, "a token shard", "a token shard is a .bin file written by `nvfp4 data`");
  const uint64_t file_bytes = impl->file.size();
  if (file_bytes < static_cast<uint64_t>(kShardHeaderBytes)) fail(path, too_short(file_bytes));
  const uint8_t* m = impl->file.data();

  int32_t h[kShardHeaderInts];
  std::memcpy(h, m, sizeof h);
  impl->header = parse_shard_header(path, h, file_bytes);
  const ShardHeader& sh = impl->header;
  if (expected_vocab != 0 && sh.vocab_size != 0 && sh.vocab_size != expected_vocab) {
    fail(path, "was made by a tokenizer with " + std::to_string(sh.vocab_size) + " tokens (" +
                   tokenizer_name_for_id(sh.tokenizer_id) + "), but " + std::to_string(expected_vocab) +
                   " were expected; use shards made with the model's tokenizer");
  }
  const int32_t vocab = sh.vocab_size != 0 ? sh.vocab_size : expected_vocab;
  TokenShard shard(std::move(impl));
  // uint32 ids are handed out as int32: above INT32_MAX is corrupt whatever the vocabulary.
  const uint64_t limit = vocab > 0 ? static_cast<uint64_t>(vocab) : (sh.token_bytes == 4 ? uint64_t{1} << 31 : 0);
  if (limit > 0) {
    const uint8_t* data = shard.impl_->file.data() + kShardHeaderBytes;
    // NOTE: the mapping is page-aligned and the header is 1024 bytes, so the tokens are aligned.
    const auto [bad, at] = sh.token_bytes == 2
                               ? first_at_or_above(reinterpret_cast<const uint16_t*>(data), sh.num_tokens, limit)
                               : first_at_or_above(reinterpret_cast<const uint32_t*>(data), sh.num_tokens, limit);
    if (at >= 0) {
      fail(path, "token " + std::to_string(bad) + " at position " + std::to_string(at) + " is outside the vocabulary of " +
                     std::to_string(limit) + " (" + tokenizer_name_for_id(sh.tokenizer_id) +
                     " tokenizer); the shard is corrupt or was made with another tokenizer");
    }
  }
  return shard;
}

// ---- ShardLoader --------------------------------------------------------------------------

ShardLoader::ShardLoader(std::vector<std::string> shard_paths, int64_t B, int64_t T, int32_t vocab_size,
                         LoaderPosition start)
    : B_(B), T_(T) {
  if (shard_paths.empty()) throw Error("shard loader: no shard files given; make them with `nvfp4 data`");
  if (B < 1 || T < 1) {
    throw Error("shard loader: batch size B = " + std::to_string(B) + " and sequence length T = " + std::to_string(T) +
                " must both be >= 1");
  }
  if (B > kMaxShardTokens / T) {
    throw Error("shard loader: B*T = " + std::to_string(B) + "*" + std::to_string(T) +
                " is larger than any shard can hold (" + std::to_string(kMaxShardTokens) + " tokens)");
  }
  const int64_t need = B * T + 1;
  shards_.reserve(shard_paths.size());
  for (const auto& p : shard_paths) {
    shards_.push_back(TokenShard::open(p, vocab_size));
    const TokenShard& s = shards_.back();
    const ShardHeader& first = shards_.front().header();
    if (s.header().vocab_size != 0 && first.vocab_size != 0 &&
        (s.header().vocab_size != first.vocab_size || s.header().tokenizer_id != first.tokenizer_id)) {
      fail(p, "was made by tokenizer " + tokenizer_name_for_id(s.header().tokenizer_id) + " (vocabulary " +
                  std::to_string(s.header().vocab_size) + ") but " + shards_.front().path() + " by " +
                  tokenizer_name_for_id(first.tokenizer_id) + " (vocabulary " + std::to_string(first.vocab_size) +
                  "); one loader reads shards of one tokenizer");
    }
    if (s.size() < need) {
      fail(p, "holds " + plural(s.size(), "token") + ", fewer than the B*T+1 = " + std::to_string(need) +
                  " one batch needs (B=" + std::to_string(B) + ", T=" + std::to_string(T) +
                  "); use a smaller B or T, or leave this shard out");
    }
  }
  seek(start);
}

void ShardLoader::normalize(LoaderPosition& p) const {
  // Every shard holds >= B*T+1 tokens (checked at construction), so one step is enough.
  if (p.offset + B_ * T_ + 1 > shards_[static_cast<size_t>(p.shard)].size()) {
    p.offset = 0;
    if (++p.shard == static_cast<int64_t>(shards_.size())) {
      p.shard = 0;
      ++p.epoch;
    }
  }
}

void ShardLoader::seek(LoaderPosition p) {
  const int64_t n = static_cast<int64_t>(shards_.size());
  if (p.shard < 0 || p.shard >= n || p.epoch < 0 || p.offset < 0 ||
      p.offset > shards_[static_cast<size_t>(p.shard)].size()) {
    throw Error("shard loader: position {shard " + std::to_string(p.shard) + ", offset " + std::to_string(p.offset) +
                ", epoch " + std::to_string(p.epoch) + "} is not inside these " + plural(n, "shard") +
                "; was it saved with another shard list?");
  }
  normalize(p);
  pos_ = p;
}

void ShardLoader::next(std::span<int32_t> out) {
  const auto row = static_cast<size_t>(T_ + 1);
  if (out.size() != static_cast<size_t>(B_) * row) {
    throw Error("shard loader: the output buffer holds " + std::to_string(out.size()) + " tokens, expected B*(T+1) = " +
                std::to_string(B_ * (T_ + 1)));
  }
  const ShardTokens src = shards_[static_cast<size_t>(pos_.shard)].tokens();
  for (int64_t b = 0; b < B_; ++b) {
    // Row b: tokens[offset + b*T, offset + (b+1)*T], T+1 tokens; rows overlap by one token.
    src.copy(pos_.offset + b * T_, out.subspan(static_cast<size_t>(b) * row, row));
  }
  pos_.offset += B_ * T_;
  normalize(pos_);
}

std::vector<int32_t> ShardLoader::next() {
  std::vector<int32_t> out(static_cast<size_t>(B_ * (T_ + 1)));
  next(out);
  return out;
}

int64_t ShardLoader::batches_per_epoch() const {
  int64_t n = 0;
  for (const auto& s : shards_) n += (s.size() - 1) / (B_ * T_);
  return n;
}

// ---- manifest -----------------------------------------------------------------------------

std::string detail::read_whole_file(const std::string& path, const char* what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail(path, std::string("cannot open ") + what + ": " + errno_text(err));
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      fail(path, std::string("cannot read ") + what + ": " + errno_text(err));
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return out;
}

namespace {

// The first 1024 bytes of a shard and its size, checked (parse_shard_header): enough to compare
// a shard with its manifest entry without mapping its tokens.
ShardHeader read_shard_header(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    fail(path, "cannot open this shard listed in the dataset manifest: " +
                   (ec ? ec.message() : std::string("no such file")) +
                   "; the dataset is incomplete, remake it with `nvfp4 data --force`");
  }
  if (!fs::is_regular_file(st)) fail(path, "is not a regular file; a token shard is a .bin file written by `nvfp4 data`");
  const uint64_t file_bytes = fs::file_size(path, ec);
  if (ec) fail(path, "cannot read the shard's size: " + ec.message());
  if (file_bytes < static_cast<uint64_t>(kShardHeaderBytes)) fail(path, too_short(file_bytes));
  int32_t h[kShardHeaderInts];
  std::ifstream f(path, std::ios::binary);
  if (!f.read(reinterpret_cast<char*>(h), sizeof h)) fail(path, "cannot read the 1024-byte shard header");
  return parse_shard_header(path, h, file_bytes);
}

}  // namespace

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

const std::vector<std::string>& TokenDataset::shards(Split split) const {
  const auto& out = split == Split::val ? val : train;
  if (out.empty()) {
    fail(manifest_path, std::string("lists no ") + split_name(split) + " shards" +
                            (split == Split::val ? "; the dataset was made with --val-fraction 0 or from a single document"
                                                 : ""));
  }
  return out;
}

TokenDataset open_token_dataset(const std::string& dir) {
  TokenDataset ds;
  ds.dir = dir;
  ds.manifest_path = (fs::path(dir) / kManifestName).string();
  const std::string& path = ds.manifest_path;
  const std::string text =
      detail::read_whole_file(path, "the dataset manifest (was the dataset made with `nvfp4 data`?)");
  const std::string remake = "; remake the dataset with `nvfp4 data --force`";
  try {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::parse_error& e) {
      fail(path, std::string("is not valid JSON (") + e.what() + ")" + remake);
    }
    if (!j.is_object() || !j.contains("format") || j["format"] != kManifestFormat) {
      fail(path, std::string("is not a token dataset manifest (\"format\" is not \"") + kManifestFormat + "\")");
    }
    const json version = j.value("format_version", json());
    if (version != 1 && version != kManifestVersion) {
      fail(path, "has manifest version " + version.dump() + "; this build reads versions 1 and " +
                     std::to_string(kManifestVersion));
    }
    // The shard layout: version-1 manifests describe uint16 shards of layout version 1.
    const json layout = j.value("shard_layout", json::object());
    ds.token_bytes = layout.value("token_bytes", 2);
    // The tokenizer: its description as the manifest holds it (hand-made manifests may have none).
    int32_t manifest_tokenizer_id = 0;
    if (j.contains("tokenizer")) {
      const json& t = j["tokenizer"];
      if (!t.is_object() || !t.contains("vocab_size") || !t["vocab_size"].is_number_integer()) {
        fail(path, "has a \"tokenizer\" that is not a tokenizer description with a \"vocab_size\"" + remake);
      }
      ds.tokenizer = t.dump();
      ds.vocab_size = t["vocab_size"].get<int32_t>();
      manifest_tokenizer_id = t.value("shard_id", 0);
    }
    const auto shards = j.find("shards");
    if (shards == j.end() || !shards->is_array()) fail(path, "has no \"shards\" list");
    json fingerprint_shards = json::array();
    int64_t split_tokens[2] = {0, 0}, split_shards[2] = {0, 0};
    for (const auto& s : *shards) {
      if (!s.is_object() || !s.contains("file") || !s["file"].is_string() || !s.contains("split") ||
          !s["split"].is_string()) {
        fail(path, "has a \"shards\" entry without a \"file\" and \"split\" string: " + s.dump());
      }
      const std::string file = s["file"].get<std::string>();
      if (file.empty() || fs::path(file).has_parent_path() || file == "." || file == "..") {
        fail(path, "lists shard '" + file + "', which is not a plain file name inside the dataset folder");
      }
      const std::string split_s = s["split"].get<std::string>();
      if (split_s != "train" && split_s != "val") {
        fail(path, "lists shard " + file + " under split \"" + split_s + "\"; splits are train and val" + remake);
      }
      const Split split = split_s == "val" ? Split::val : Split::train;
      const std::string shard_path = (fs::path(dir) / file).string();
      // The shard's header against its manifest entry and the manifest's tokenizer and layout.
      const ShardHeader h = read_shard_header(shard_path);
      const std::string both = " (manifest " + path + ")";
      if (h.split != split) {
        fail(shard_path, std::string("header says split ") + split_name(h.split) + " but the manifest lists it under " +
                             split_name(split) + both + "; train and val are mixed up" + remake);
      }
      if (s.contains("tokens") && s["tokens"] != h.num_tokens) {
        fail(shard_path, "holds " + plural(h.num_tokens, "token") + " but the manifest lists " + s["tokens"].dump() +
                             both + "; the shard is not the one the manifest describes" + remake);
      }
      if (ds.vocab_size != 0 && h.vocab_size != 0 &&
          (h.vocab_size != ds.vocab_size || (manifest_tokenizer_id != 0 && h.tokenizer_id != manifest_tokenizer_id))) {
        fail(shard_path, "was made by tokenizer " + tokenizer_name_for_id(h.tokenizer_id) + " (vocabulary " +
                             std::to_string(h.vocab_size) + ") but the manifest's tokenizer has vocabulary " +
                             std::to_string(ds.vocab_size) + both + remake);
      }
      if (h.token_bytes != ds.token_bytes) {
        fail(shard_path, "stores " + std::to_string(h.token_bytes) + "-byte tokens but the manifest's shard layout says " +
                             std::to_string(ds.token_bytes) + both + remake);
      }
      if (ds.vocab_size == 0) ds.vocab_size = h.vocab_size;
      if (ds.tokenizer.empty()) ds.tokenizer = tokenizer_name_for_id(h.tokenizer_id);
      split_tokens[static_cast<int>(split)] += h.num_tokens;
      split_shards[static_cast<int>(split)] += 1;
      (split == Split::val ? ds.val : ds.train).push_back(shard_path);
      fingerprint_shards.push_back({{"file", file}, {"split", split_s}, {"tokens", h.num_tokens},
                                    {"documents", h.documents}, {"vocab_size", h.vocab_size},
                                    {"tokenizer_id", h.tokenizer_id}, {"token_bytes", h.token_bytes}});
    }
    // The split totals (what `nvfp4 data` printed) against the shards.
    if (j.contains("splits") && j["splits"].is_object()) {
      for (const Split sp : {Split::train, Split::val}) {
        const json st = j["splits"].value(split_name(sp), json::object());
        const int k = static_cast<int>(sp);
        if ((st.contains("tokens") && st["tokens"] != split_tokens[k]) ||
            (st.contains("shards") && st["shards"] != split_shards[k])) {
          fail(path, std::string("\"splits\".") + split_name(sp) + " says " + st.value("tokens", json()).dump() +
                         " tokens in " + st.value("shards", json()).dump() + " shards, but its shards hold " +
                         std::to_string(split_tokens[k]) + " tokens in " + std::to_string(split_shards[k]) + " shards" + remake);
        }
      }
    }
    // NOTE: json (not ordered_json) sorts object keys, so the fingerprint does not depend on the
    // order the manifest's writer put them in.
    const json fingerprint = {{"tokenizer", j.value("tokenizer", json())},
                              {"options", j.value("options", json())},
                              {"shard_layout", {{"version", layout.value("version", 1)}, {"token_bytes", ds.token_bytes}}},
                              {"splits", j.value("splits", json())},
                              {"shards", std::move(fingerprint_shards)}};
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(fingerprint.dump())));
    ds.identity = std::string("fnv1a64:") + hex;
  } catch (const json::exception& e) {
    fail(path, std::string("is malformed (") + e.what() + ")" + remake);
  }
  return ds;
}

std::vector<std::string> manifest_shards(const std::string& dir, Split split) {
  return open_token_dataset(dir).shards(split);
}

}  // namespace nvfp4::io

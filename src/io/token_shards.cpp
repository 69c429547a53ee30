// Token shards, the shard loader and the text -> shards pipeline; the contract is in
// nvfp4/token_shards.hpp, the user-level description in docs/data.md.
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
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "format/philox.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"

namespace nvfp4::io {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian and are read and written by memcpy / mmap");
static_assert(kShardHeaderBytes == 1024, "llm.c's shard header is 256 int32");

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

namespace {

[[noreturn]] void fail(std::string_view file, const std::string& what) {
  throw Error(std::string(file) + ": " + what);
}

std::string errno_text(int err) { return std::strerror(err); }

std::string plural(int64_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

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
}

void check_writable_header(const std::string& path, const ShardHeader& h, int64_t num_tokens) {
  if (num_tokens > kMaxShardTokens) {
    fail(path, "a shard holds at most " + std::to_string(kMaxShardTokens) + " tokens (header[2] is an int32), not " +
                   std::to_string(num_tokens) + "; write more, smaller shards");
  }
  if (h.vocab_size < 0 || h.vocab_size > kMaxShardVocab) {
    fail(path, "vocabulary size " + std::to_string(h.vocab_size) + " does not fit uint16 tokens (at most " +
                   std::to_string(kMaxShardVocab) + ")");
  }
  if (h.split != Split::train && h.split != Split::val) fail(path, "split must be train (0) or val (1)");
}

// `buf` is the whole file as uint16: 512 header slots, then the tokens. Fills the header in
// and writes it atomically.
void write_shard_buffer(const std::string& path, ShardHeader h, std::vector<uint16_t>& buf) {
  constexpr size_t kHeaderSlots = kShardHeaderBytes / sizeof(uint16_t);
  const int64_t n = static_cast<int64_t>(buf.size() - kHeaderSlots);
  h.num_tokens = n;
  check_writable_header(path, h, n);
  if (h.vocab_size > 0) {
    uint16_t max = 0;
    for (size_t i = kHeaderSlots; i < buf.size(); ++i) max = std::max(max, buf[i]);
    if (n > 0 && max >= h.vocab_size) {
      fail(path, "token " + std::to_string(max) + " is outside the vocabulary of " + std::to_string(h.vocab_size) +
                     "; not writing a shard that would fail to load");
    }
  }
  int32_t header[kShardHeaderInts];
  pack_header(h, header);
  std::memcpy(buf.data(), header, sizeof header);
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(buf.data()), buf.size() * sizeof(uint16_t)});
}

}  // namespace

const char* split_name(Split s) { return s == Split::val ? "val" : "train"; }

void write_token_shard(const std::string& path, const ShardHeader& h, std::span<const uint16_t> tokens) {
  check_writable_header(path, h, static_cast<int64_t>(tokens.size()));
  std::vector<uint16_t> buf(kShardHeaderBytes / sizeof(uint16_t));
  buf.insert(buf.end(), tokens.begin(), tokens.end());
  write_shard_buffer(path, h, buf);
}

// ---- TokenShard ---------------------------------------------------------------------------

struct TokenShard::Impl {
  std::string path;
  void* map = nullptr;
  size_t size = 0;
  ShardHeader header;
  ~Impl() {
    if (map != nullptr) ::munmap(map, size);
  }
};

TokenShard::TokenShard(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TokenShard::TokenShard(TokenShard&&) noexcept = default;
TokenShard& TokenShard::operator=(TokenShard&&) noexcept = default;
TokenShard::~TokenShard() = default;

const std::string& TokenShard::path() const { return impl_->path; }
const ShardHeader& TokenShard::header() const { return impl_->header; }
std::span<const uint16_t> TokenShard::tokens() const {
  return {reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(impl_->map) + kShardHeaderBytes),
          static_cast<size_t>(impl_->header.num_tokens)};
}

TokenShard TokenShard::open(const std::string& path, int32_t expected_vocab) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail(path, "cannot open token shard: " + errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "is not a regular file; a token shard is a .bin file written by `nvfp4 data`");
  }
  const auto file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < static_cast<uint64_t>(kShardHeaderBytes)) {
    ::close(fd);
    fail(path, "is " + std::to_string(file_bytes) + " bytes, shorter than the 1024-byte token shard header; the file is "
               "truncated or not a token shard");
  }
  impl->size = static_cast<size_t>(file_bytes);
  void* m = ::mmap(nullptr, impl->size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (m == MAP_FAILED) fail(path, "cannot memory-map " + std::to_string(impl->size) + " bytes: " + errno_text(map_err));
  impl->map = m;  // unmapped by ~Impl if anything below throws

  int32_t h[kShardHeaderInts];
  std::memcpy(h, m, sizeof h);
  if (h[0] != kShardMagic) {
    std::string hint = "; is it a token shard?";
    if (h[0] == 20240801) hint = "; that is llm.c's LLaMA-3 (uint32 token) shard format, which this build does not read";
    fail(path, "has magic " + std::to_string(h[0]) + ", expected " + std::to_string(kShardMagic) +
                   " (llm.c token shard)" + hint);
  }
  if (h[1] != kShardVersion) {
    fail(path, "has token shard version " + std::to_string(h[1]) + "; this build reads version " +
                   std::to_string(kShardVersion) + " (uint16 tokens); remake the shard with `nvfp4 data`");
  }
  if (h[2] < 0) fail(path, "header says " + std::to_string(h[2]) + " tokens, a negative count; the shard is corrupt");
  const uint64_t data_bytes = file_bytes - kShardHeaderBytes;
  const uint64_t want_bytes = 2 * static_cast<uint64_t>(h[2]);
  if (data_bytes < want_bytes) {
    fail(path, "header says " + std::to_string(h[2]) + " tokens (" + std::to_string(want_bytes) +
                   " bytes) but only " + std::to_string(data_bytes) + " bytes follow the header; the file is truncated "
                   "(remake it with `nvfp4 data`)");
  }
  if (data_bytes > want_bytes) {
    fail(path, "header says " + std::to_string(h[2]) + " tokens (" + std::to_string(want_bytes) + " bytes) but " +
                   std::to_string(data_bytes) + " bytes follow the header; the token count does not match the file "
                   "size, the shard is corrupt");
  }
  if (h[3] < 0 || h[3] > kMaxShardVocab) {
    fail(path, "header records vocabulary size " + std::to_string(h[3]) + ", outside [0, " +
                   std::to_string(kMaxShardVocab) + "]; the shard is corrupt");
  }
  if (h[5] != 0 && h[5] != 1) {
    fail(path, "header records split " + std::to_string(h[5]) + ", expected 0 (train) or 1 (val); the shard is corrupt");
  }
  ShardHeader& sh = impl->header;
  sh.num_tokens = h[2];
  sh.vocab_size = h[3];
  sh.tokenizer_id = h[4];
  sh.split = static_cast<Split>(h[5]);
  sh.index = h[6];
  sh.documents = h[7];
  if (expected_vocab != 0 && sh.vocab_size != 0 && sh.vocab_size != expected_vocab) {
    fail(path, "was made by a tokenizer with " + std::to_string(sh.vocab_size) + " tokens (" +
                   tokenizer_name_for_id(sh.tokenizer_id) + "), but " + std::to_string(expected_vocab) +
                   " were expected; use shards made with the model's tokenizer");
  }
  const int32_t vocab = sh.vocab_size != 0 ? sh.vocab_size : expected_vocab;
  TokenShard shard(std::move(impl));
  if (vocab > 0) {
    const auto t = shard.tokens();
    uint16_t max = 0;
    for (const uint16_t v : t) max = std::max(max, v);  // vectorizes; the slow search runs only on failure
    if (!t.empty() && max >= vocab) {
      size_t i = 0;
      while (t[i] < vocab) ++i;
      fail(path, "token " + std::to_string(t[i]) + " at position " + std::to_string(i) + " is outside the vocabulary of " +
                     std::to_string(vocab) + " (" + tokenizer_name_for_id(shard.header().tokenizer_id) +
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
  const uint16_t* src = shards_[static_cast<size_t>(pos_.shard)].tokens().data() + pos_.offset;
  for (int64_t b = 0; b < B_; ++b) {
    // Row b: tokens[offset + b*T, offset + (b+1)*T], T+1 tokens; rows overlap by one token.
    const uint16_t* r = src + b * T_;
    int32_t* o = out.data() + static_cast<size_t>(b) * row;
    for (size_t t = 0; t < row; ++t) o[t] = r[t];
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

namespace {

std::string read_whole_file(const std::string& path, const char* what) {
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

}  // namespace

std::vector<std::string> manifest_shards(const std::string& dir, Split split) {
  const std::string path = (fs::path(dir) / kManifestName).string();
  const std::string text = read_whole_file(path, "the dataset manifest (was the dataset made with `nvfp4 data`?)");
  std::vector<std::string> out;
  try {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::parse_error& e) {
      fail(path, std::string("is not valid JSON (") + e.what() + "); remake the dataset with `nvfp4 data --force`");
    }
    if (!j.is_object() || !j.contains("format") || j["format"] != kManifestFormat) {
      fail(path, std::string("is not a token dataset manifest (\"format\" is not \"") + kManifestFormat + "\")");
    }
    if (!j.contains("format_version") || j["format_version"] != kManifestVersion) {
      fail(path, "has manifest version " + j.value("format_version", json()).dump() + "; this build reads version " +
                     std::to_string(kManifestVersion));
    }
    const auto shards = j.find("shards");
    if (shards == j.end() || !shards->is_array()) fail(path, "has no \"shards\" list");
    for (const auto& s : *shards) {
      if (!s.is_object() || !s.contains("file") || !s["file"].is_string() || !s.contains("split") ||
          !s["split"].is_string()) {
        fail(path, "has a \"shards\" entry without a \"file\" and \"split\" string: " + s.dump());
      }
      const std::string file = s["file"].get<std::string>();
      if (file.empty() || fs::path(file).has_parent_path() || file == "." || file == "..") {
        fail(path, "lists shard '" + file + "', which is not a plain file name inside the dataset folder");
      }
      if (s["split"].get<std::string>() == split_name(split)) out.push_back((fs::path(dir) / file).string());
    }
  } catch (const json::exception& e) {
    fail(path, std::string("is malformed (") + e.what() + "); remake the dataset with `nvfp4 data --force`");
  }
  if (out.empty()) {
    fail(path, std::string("lists no ") + split_name(split) + " shards" +
                   (split == Split::val ? "; the dataset was made with --val-fraction 0 or from a single document" : ""));
  }
  return out;
}

// ---- inputs -------------------------------------------------------------------------------

namespace {

bool is_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

// Appends the files of `p` (a file, or a folder walked recursively) sorted by path.
void expand_path(const std::string& arg, const fs::path& p, std::vector<std::string>& out) {
  std::error_code ec;
  const fs::file_status st = fs::status(p, ec);
  if (ec || !fs::exists(st)) {
    fail(p.string(), "does not exist" + std::string(arg == p.string() ? "" : " (matched by " + arg + ")") +
                         "; pass text files, .gz files, folders or globs");
  }
  if (fs::is_regular_file(st)) {
    out.push_back(p.string());
    return;
  }
  if (!fs::is_directory(st)) fail(p.string(), "is neither a regular file nor a folder; pass text files, folders or globs");
  std::vector<std::string> files;
  fs::recursive_directory_iterator it(p, fs::directory_options::none, ec);
  if (ec) fail(p.string(), "cannot list the folder: " + ec.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) fail(p.string(), "cannot list the folder: " + ec.message());
    if (hidden(it->path())) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec)) files.push_back(it->path().string());
  }
  if (ec) fail(p.string(), "cannot list the folder: " + ec.message());
  std::sort(files.begin(), files.end());
  out.insert(out.end(), files.begin(), files.end());
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool is_gz_name(const std::string& path) { return ends_with(path, ".gz"); }

std::string read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    fail(path, "cannot open: " + errno_text(err != 0 ? err : ENOMEM));
  }
  gzbuffer(f, 1 << 17);
  std::string out;
  std::vector<char> buf(1 << 18);
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      gzclose(f);
      fail(path, "is not a readable gzip file (" + msg + (code == Z_BUF_ERROR ? ": the file is truncated" : "") +
                     "); check it with `gzip -t " + path + "`");
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
  }
  const bool direct = gzdirect(f) != 0;
  const int rc = gzclose(f);
  if (rc == Z_BUF_ERROR) fail(path, "ends in the middle of a gzip stream; the file is truncated (check it with `gzip -t`)");
  if (rc != Z_OK) fail(path, "cannot be read to the end as gzip (zlib error " + std::to_string(rc) + ")");
  if (direct && !out.empty()) {
    fail(path, "is named .gz but is not gzip-compressed; decompress or rename it");
  }
  return out;
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> all;
  for (const auto& arg : inputs) {
    std::error_code ec;
    if (arg.empty()) throw Error("an input path is empty; pass text files, .gz files, folders or globs");
    if (is_glob(arg) && !fs::exists(arg, ec)) {
      glob_t g{};
      const int rc = ::glob(arg.c_str(), 0, nullptr, &g);
      if (rc == GLOB_NOMATCH) {
        globfree(&g);
        fail(arg, "the pattern matches no file (quote it if the shell should not expand it)");
      }
      if (rc != 0) {
        globfree(&g);
        fail(arg, "cannot expand the pattern (glob error " + std::to_string(rc) + ")");
      }
      std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
      globfree(&g);
      std::sort(matches.begin(), matches.end());  // byte order, whatever the locale's collation
      for (const auto& m : matches) expand_path(arg, m, all);
    } else {
      expand_path(arg, arg, all);
    }
  }
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (auto& p : all) {
    std::error_code ec;
    const fs::path canon = fs::weakly_canonical(p, ec);
    if (seen.insert(ec ? p : canon.string()).second) out.push_back(std::move(p));
  }
  return out;
}

bool is_info_name(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  if (ends_with(name, ".gz")) name.resize(name.size() - 3);
  if (ends_with(name, ".info")) return true;
  // Split info files: NAME.info-1, NAME.info-2, ...
  const size_t dash = name.rfind(".info-");
  if (dash == std::string::npos || dash + 6 == name.size()) return false;
  return std::all_of(name.begin() + static_cast<std::ptrdiff_t>(dash + 6), name.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

std::string clean_info_text(std::string_view raw) {
  if (raw.find('\x1f') == std::string_view::npos) return std::string(raw);
  std::string out;
  out.reserve(raw.size());
  size_t start = 0;
  bool first = true;
  while (start <= raw.size()) {
    size_t end = raw.find('\x1f', start);
    if (end == std::string_view::npos) end = raw.size();
    std::string_view seg = raw.substr(start, end - start);
    const bool preamble = first;
    first = false;
    start = end + 1;
    while (!seg.empty() && (seg.front() == '\n' || seg.front() == '\r')) seg.remove_prefix(1);
    if (!preamble) {
      if (seg.starts_with("Tag Table:") || seg.starts_with("End Tag Table") || seg.starts_with("Local Variables:") ||
          seg.starts_with("Indirect:")) {
        continue;
      }
      if (seg.starts_with("File: ")) {  // the node's navigation line
        const size_t nl = seg.find('\n');
        seg.remove_prefix(nl == std::string_view::npos ? seg.size() : nl + 1);
        while (!seg.empty() && (seg.front() == '\n' || seg.front() == '\r')) seg.remove_prefix(1);
      }
    }
    while (!seg.empty() && (seg.back() == '\n' || seg.back() == '\r')) seg.remove_suffix(1);
    if (seg.empty()) continue;
    if (!out.empty()) out += "\n\n";
    out += seg;
  }
  if (!out.empty()) out += '\n';
  return out;
}

std::string read_input_text(const std::string& path) {
  std::string raw = is_gz_name(path) ? read_gzip(path) : read_whole_file(path, "input");
  if (is_info_name(path)) return clean_info_text(raw);
  return raw;
}

// ---- documents and the split --------------------------------------------------------------

std::vector<std::string_view> split_documents(std::string_view text, int64_t doc_bytes) {
  if (doc_bytes < 1) throw Error("doc_bytes (--doc-bytes) must be >= 1, not " + std::to_string(doc_bytes));
  std::vector<std::string_view> docs;
  if (text.empty()) return docs;
  const auto limit = static_cast<size_t>(doc_bytes);
  if (text.size() <= limit) return {text};

  // Paragraph ends: the start of the first non-blank line after a run of blank lines.
  std::vector<size_t> cuts;  // paragraph boundaries, excluding 0 and text.size()
  bool seen_text = false, in_blank = false;
  for (size_t ls = 0; ls < text.size();) {
    size_t le = text.find('\n', ls);
    le = le == std::string_view::npos ? text.size() : le + 1;
    const std::string_view line = text.substr(ls, le - ls);
    const bool blank = line.find_first_not_of(" \t\r\n") == std::string_view::npos;
    if (blank) {
      in_blank = seen_text;
    } else {
      if (in_blank) cuts.push_back(ls);
      in_blank = false;
      seen_text = true;
    }
    ls = le;
  }
  cuts.push_back(text.size());

  size_t cur = 0;   // start of the document being grouped
  size_t prev = 0;  // start of the next paragraph
  for (const size_t end : cuts) {
    // Paragraph [prev, end).
    if (end - prev > limit) {
      if (prev > cur) docs.push_back(text.substr(cur, prev - cur));
      size_t b = prev;
      while (end - b > limit) {
        const std::string_view window = text.substr(b, limit);
        size_t cut = window.rfind('\n');
        cut = cut == std::string_view::npos ? 0 : cut + 1;
        if (cut == 0) {  // no newline: cut before a UTF-8 continuation byte
          cut = limit;
          while (cut > 0 && (static_cast<unsigned char>(text[b + cut]) & 0xC0) == 0x80) --cut;
          if (cut == 0) cut = limit;
        }
        docs.push_back(text.substr(b, cut));
        b += cut;
      }
      cur = b;  // the paragraph's tail groups with what follows
    } else if (end - cur > limit) {
      docs.push_back(text.substr(cur, prev - cur));
      cur = prev;
    }
    prev = end;
  }
  if (text.size() > cur) docs.push_back(text.substr(cur));
  return docs;
}

double split_draw(uint64_t seed, uint64_t index) {
  // NOTE: the third counter word tags the stream ("splt") so these draws never coincide with the
  // stochastic-rounding draws keyed by the same seed.
  const fmt::Philox4x32 c{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0x73706c74u, 0u}};
  const fmt::Philox4x32 r = fmt::philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const uint64_t bits = ((static_cast<uint64_t>(r.v[0]) << 32) | r.v[1]) >> 11;  // 53 bits
  return static_cast<double>(bits) * 0x1.0p-53;
}

std::vector<int64_t> document_order(uint64_t seed, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    // NOTE: stream tag "shuf" in the third counter word: independent of the split draws.
    const fmt::Philox4x32 c{{static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), 0x73687566u, 0u}};
    const fmt::Philox4x32 r = fmt::philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    const int64_t j = static_cast<int64_t>(bits % static_cast<uint64_t>(i + 1));  // bias < 2^-40 for n < 2^24
    std::swap(order[i], order[j]);
  }
  return order;
}

std::vector<Split> assign_splits(uint64_t seed, int64_t documents, double val_fraction) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0)) {
    throw Error("val_fraction (--val-fraction) must be in [0, 1), not " + std::to_string(val_fraction));
  }
  if (documents < 0) throw Error("assign_splits: negative document count");
  std::vector<Split> s(static_cast<size_t>(documents), Split::train);
  if (documents < 2 || val_fraction == 0.0) return s;  // a single document always trains
  std::vector<double> u(s.size());
  int64_t val = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    u[i] = split_draw(seed, i);
    if (u[i] < val_fraction) {
      s[i] = Split::val;
      ++val;
    }
  }
  if (val == 0) s[static_cast<size_t>(std::min_element(u.begin(), u.end()) - u.begin())] = Split::val;
  if (val == documents) s[static_cast<size_t>(std::max_element(u.begin(), u.end()) - u.begin())] = Split::train;
  return s;
}

// ---- building a dataset -------------------------------------------------------------------

namespace {

constexpr size_t kBinarySniffBytes = 8192;

bool looks_binary(std::string_view text) {
  return text.substr(0, std::min(text.size(), kBinarySniffBytes)).find('\0') != std::string_view::npos;
}

std::string shard_file_name(Split s, int64_t index) {
  char name[64];
  std::snprintf(name, sizeof name, "%s_%06lld.bin", split_name(s), static_cast<long long>(index));
  return name;
}

bool is_shard_file_name(const std::string& name) {
  for (const char* prefix : {"train_", "val_"}) {
    const std::string p = prefix;
    if (name.size() == p.size() + 10 && name.starts_with(p) && name.ends_with(".bin") &&
        std::all_of(name.begin() + static_cast<std::ptrdiff_t>(p.size()), name.end() - 4,
                    [](char c) { return c >= '0' && c <= '9'; })) {
      return true;
    }
  }
  return false;
}

// One split's token stream, cut into shards as it fills.
class SplitWriter {
 public:
  SplitWriter(fs::path dir, Split split, const Tokenizer& tok, int64_t shard_tokens, int64_t expected_tokens,
              std::vector<ShardRecord>& records)
      : dir_(std::move(dir)), split_(split), tok_(tok), shard_tokens_(shard_tokens), records_(records) {
    buf_.reserve(kHeaderSlots + static_cast<size_t>(std::min(shard_tokens, std::max<int64_t>(expected_tokens, 0))));
    buf_.resize(kHeaderSlots);
  }

  void add_document(std::string_view doc) {
    scratch_.clear();
    scratch_.push_back(tok_.eot_token());
    tok_.encode_append(doc, scratch_);
    const int32_t vocab = tok_.vocab_size();
    size_t i = 0;
    while (i < scratch_.size()) {
      if (i == 0) ++docs_;  // the end-of-text token that starts the document lands in this shard
      const size_t room = kHeaderSlots + static_cast<size_t>(shard_tokens_) - buf_.size();
      const size_t take = std::min(room, scratch_.size() - i);
      for (size_t k = i; k < i + take; ++k) {
        const int32_t t = scratch_[k];
        if (t < 0 || t >= vocab) {
          throw Error("tokenizer " + tok_.name() + " produced token " + std::to_string(t) +
                      " outside its vocabulary of " + std::to_string(vocab) + "; this is a bug in the tokenizer");
        }
        buf_.push_back(static_cast<uint16_t>(t));
      }
      i += take;
      tokens_ += static_cast<int64_t>(take);
      if (buf_.size() == kHeaderSlots + static_cast<size_t>(shard_tokens_)) flush();
    }
  }

  void finish() {
    if (buf_.size() > kHeaderSlots) flush();
  }
  int64_t tokens() const { return tokens_; }
  int64_t shards() const { return index_; }

 private:
  static constexpr size_t kHeaderSlots = kShardHeaderBytes / sizeof(uint16_t);

  void flush() {
    ShardRecord r;
    r.file = shard_file_name(split_, index_);
    r.split = split_;
    r.tokens = static_cast<int64_t>(buf_.size() - kHeaderSlots);
    r.documents = docs_;
    ShardHeader h;
    h.vocab_size = tok_.vocab_size();
    h.tokenizer_id = tok_.shard_id();
    h.split = split_;
    h.index = static_cast<int32_t>(index_);
    h.documents = static_cast<int32_t>(std::min<int64_t>(docs_, std::numeric_limits<int32_t>::max()));
    write_shard_buffer((dir_ / r.file).string(), h, buf_);
    records_.push_back(r);
    ++index_;
    docs_ = 0;
    buf_.resize(kHeaderSlots);
  }

  fs::path dir_;
  Split split_;
  const Tokenizer& tok_;
  int64_t shard_tokens_;
  std::vector<ShardRecord>& records_;
  std::vector<uint16_t> buf_;      // 512 header slots, then this shard's tokens
  std::vector<int32_t> scratch_;   // one document's tokens
  int64_t tokens_ = 0, docs_ = 0, index_ = 0;
};

ordered_json split_json(const SplitStats& s) {
  return {{"documents", s.documents}, {"text_bytes", s.text_bytes}, {"tokens", s.tokens}, {"shards", s.shards}};
}

}  // namespace

DataSummary build_token_dataset(const DataOptions& o, const DataProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  // 1. options and the output folder.
  if (o.inputs.empty()) throw Error("no inputs given; pass text files, .gz files, folders or globs");
  if (o.out_dir.empty()) throw Error("no output folder given (--out DIR)");
  const auto tok = make_tokenizer(o.tokenizer);
  if (tok->vocab_size() > kMaxShardVocab) {
    throw Error("tokenizer " + tok->name() + " has " + std::to_string(tok->vocab_size()) +
                " tokens; token shards store uint16 tokens, at most " + std::to_string(kMaxShardVocab));
  }
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0)) {
    throw Error("--val-fraction " + std::to_string(o.val_fraction) + " is outside [0, 1)");
  }
  if (o.shard_tokens < 1 || o.shard_tokens > kMaxShardTokens) {
    throw Error("--shard-tokens " + std::to_string(o.shard_tokens) + " is outside [1, " +
                std::to_string(kMaxShardTokens) + "] (header[2] is an int32)");
  }
  if (o.doc_bytes < 1) throw Error("--doc-bytes " + std::to_string(o.doc_bytes) + " must be >= 1");
  const fs::path dir(o.out_dir);
  std::error_code ec;
  const fs::file_status dst = fs::status(dir, ec);
  const bool dir_exists = fs::exists(dst);
  if (dir_exists && !fs::is_directory(dst)) fail(o.out_dir, "exists and is not a folder; choose another --out");
  if (dir_exists && !fs::is_empty(dir, ec) && !o.force) {
    const bool has_manifest = fs::exists(dir / kManifestName, ec);
    fail(o.out_dir, std::string("exists and is not empty") + (has_manifest ? " (it holds a dataset)" : "") +
                        "; choose another --out, or pass --force to replace the dataset in it");
  }

  // 2. inputs, first pass: documents per file.
  DataSummary sum;
  sum.out_dir = o.out_dir;
  sum.manifest_path = (dir / kManifestName).string();
  sum.tokenizer_description = tok->describe();
  const std::vector<std::string> files = expand_inputs(o.inputs);
  uint64_t total_bytes = 0;
  std::vector<uint64_t> doc_sizes;  // bytes of every document, in order
  for (const auto& f : files) {
    const std::string text = read_input_text(f);
    if (looks_binary(text)) {
      sum.skipped.push_back({f, "binary (NUL byte in the first 8 KiB)"});
      continue;
    }
    SourceStats s;
    s.path = f;
    s.file_bytes = fs::file_size(f, ec);
    if (ec) s.file_bytes = 0;
    s.text_bytes = text.size();
    const auto docs = split_documents(text, o.doc_bytes);
    s.documents = static_cast<int64_t>(docs.size());
    for (const auto d : docs) doc_sizes.push_back(d.size());
    s.gzip = is_gz_name(f);
    s.info = is_info_name(f);
    total_bytes += s.text_bytes;
    sum.sources.push_back(std::move(s));
  }
  if (total_bytes == 0) {
    std::string what = plural(static_cast<int64_t>(files.size()), "input file");
    if (!sum.skipped.empty()) what += " (" + std::to_string(sum.skipped.size()) + " skipped as binary)";
    throw Error("the inputs hold no text: " + what + ", 0 bytes; nothing to tokenize");
  }

  // 3. split, second pass: tokens into shards.
  const std::vector<Split> splits = assign_splits(o.seed, static_cast<int64_t>(doc_sizes.size()), o.val_fraction);
  uint64_t split_bytes[2] = {0, 0};
  if (dir_exists && o.force) {
    fs::remove(dir / kManifestName, ec);  // the old dataset is no longer whole from here on
    if (ec) fail(sum.manifest_path, "cannot remove the old manifest: " + ec.message());
  }
  fs::create_directories(dir, ec);
  if (ec) fail(o.out_dir, "cannot create the output folder: " + ec.message());
  // Each split's bytes and documents, to size the shard buffers (exact for the byte tokenizer).
  int64_t est_tokens[2] = {0, 0};
  for (size_t i = 0; i < splits.size(); ++i) est_tokens[static_cast<int>(splits[i])] += static_cast<int64_t>(doc_sizes[i]) + 1;
  SplitWriter train(dir, Split::train, *tok, o.shard_tokens, est_tokens[0], sum.shards);
  SplitWriter val(dir, Split::val, *tok, o.shard_tokens, est_tokens[1], sum.shards);
  int64_t doc_index = 0;
  uint64_t done_bytes = 0;
  std::vector<std::string> held[2];  // [train, val] documents, with o.shuffle
  if (progress) progress(0, total_bytes);
  for (const auto& s : sum.sources) {
    const std::string text = read_input_text(s.path);
    const auto docs = split_documents(text, o.doc_bytes);
    if (text.size() != s.text_bytes || static_cast<int64_t>(docs.size()) != s.documents) {
      fail(s.path, "changed while it was being read (" + std::to_string(s.text_bytes) + " bytes, then " +
                       std::to_string(text.size()) + "); rerun when the inputs are stable");
    }
    for (const auto doc : docs) {
      const Split sp = splits[static_cast<size_t>(doc_index++)];
      if (o.shuffle) {
        held[static_cast<int>(sp)].emplace_back(doc);  // written below, in a seeded order
      } else {
        (sp == Split::val ? val : train).add_document(doc);
      }
      (sp == Split::val ? sum.val : sum.train).documents += 1;
      split_bytes[static_cast<int>(sp)] += doc.size();
      done_bytes += doc.size();
      if (progress) progress(done_bytes, total_bytes);
    }
  }
  if (o.shuffle) {
    for (int k = 0; k < 2; ++k) {
      const auto order = document_order(o.seed + static_cast<uint64_t>(k), static_cast<int64_t>(held[k].size()));
      for (const int64_t i : order) (k == 1 ? val : train).add_document(held[k][static_cast<size_t>(i)]);
      held[k].clear();
    }
  }
  train.finish();
  val.finish();
  std::stable_sort(sum.shards.begin(), sum.shards.end(),
                   [](const ShardRecord& a, const ShardRecord& b) { return a.split < b.split; });
  sum.train.text_bytes = split_bytes[0];
  sum.val.text_bytes = split_bytes[1];
  sum.train.tokens = train.tokens();
  sum.val.tokens = val.tokens();
  sum.train.shards = train.shards();
  sum.val.shards = val.shards();

  // Stale shards of an older dataset in this folder would be picked up by a folder glob.
  if (dir_exists && o.force) {
    std::set<std::string> fresh;
    for (const auto& r : sum.shards) fresh.insert(r.file);
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (is_shard_file_name(name) && !fresh.contains(name)) {
        std::error_code rm;
        fs::remove(e.path(), rm);
        if (rm) fail(e.path().string(), "cannot remove this stale shard of the old dataset: " + rm.message());
      }
    }
  }

  // 4. the manifest, last: its presence means the dataset is complete.
  ordered_json m;
  m["format"] = kManifestFormat;
  m["format_version"] = kManifestVersion;
  m["created_by"] = o.tool.empty() ? ordered_json() : ordered_json(o.tool);
  m["command"] = o.command.empty() ? ordered_json() : ordered_json(o.command);
  m["tokenizer"] = ordered_json::parse(sum.tokenizer_description);
  m["options"] = {{"val_fraction", o.val_fraction},
                  {"seed", o.seed},
                  {"shuffle", o.shuffle},
                  {"shard_tokens", o.shard_tokens},
                  {"doc_bytes", o.doc_bytes}};
  m["shard_layout"] = {{"magic", kShardMagic},
                       {"version", kShardVersion},
                       {"header_ints", kShardHeaderInts},
                       {"token_dtype", "uint16"},
                       {"header_fields", {"magic", "version", "tokens", "vocab_size", "tokenizer_id", "split",
                                          "shard_index", "documents"}}};
  ordered_json sources = ordered_json::array();
  for (const auto& s : sum.sources) {
    sources.push_back({{"path", s.path}, {"file_bytes", s.file_bytes}, {"text_bytes", s.text_bytes},
                       {"documents", s.documents}, {"gzip", s.gzip}, {"info", s.info}});
  }
  m["sources"] = std::move(sources);
  ordered_json skipped = ordered_json::array();
  for (const auto& s : sum.skipped) skipped.push_back({{"path", s.path}, {"reason", s.reason}});
  m["skipped"] = std::move(skipped);
  m["splits"] = {{"train", split_json(sum.train)}, {"val", split_json(sum.val)}};
  ordered_json shards = ordered_json::array();
  for (const auto& r : sum.shards) {
    shards.push_back({{"file", r.file}, {"split", split_name(r.split)}, {"tokens", r.tokens}, {"documents", r.documents}});
  }
  m["shards"] = std::move(shards);
  std::string text;
  try {
    // NOTE: replace, not throw, on invalid UTF-8: file names are bytes and need not be UTF-8.
    text = m.dump(2, ' ', false, ordered_json::error_handler_t::replace) + "\n";
  } catch (const ordered_json::exception& e) {
    fail(sum.manifest_path, std::string("cannot encode the manifest: ") + e.what());
  }
  write_file_atomic(sum.manifest_path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace nvfp4::io

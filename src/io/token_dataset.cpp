// The text -> token dataset pipeline (`nvfp4 data`): inputs (files, folders, globs, .gz, GNU
// info), documents, the train/val split and build_token_dataset(); the contract is in
// nvfp4/token_shards.hpp, the user-level description in docs/data.md.
#include <fcntl.h>
#include <glob.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <thread>
#include <exception>
#include <atomic>

#include <nlohmann/json.hpp>

#include "format/philox.hpp"
#include "io/input_stream.hpp"
#include "io/token_shards_internal.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"

namespace nvfp4::io {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;
using detail::errno_text;
using detail::fail;
using detail::is_gz_name;
using detail::plural;
using detail::read_whole_file;
using detail::write_shard_buffer;

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

std::string read_gzip(const std::string& path) {
  detail::InputStream in(path);
  std::string out;
  std::vector<char> buf(1 << 18);
  while (const size_t n = in.read(buf.data(), buf.size())) out.append(buf.data(), n);
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

// The tokens of each document, the end-of-text token first, encoded on every core (documents
// are independent; the order of the result is the order of `docs`). A tokenizer's encode is
// safe to call from several threads (its caches are per thread).
std::vector<std::vector<int32_t>> encode_documents(const Tokenizer& tok, const std::vector<std::string_view>& docs) {
  std::vector<std::vector<int32_t>> out(docs.size());
  const int32_t eot = tok.eot_token();
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto work = [&] {
    for (size_t i; !failed && (i = next.fetch_add(1)) < docs.size();) {
      try {
        out[i].reserve(docs[i].size() / 3 + 2);
        out[i].push_back(eot);
        tok.encode_append(docs[i], out[i]);
      } catch (...) {
        if (!failed.exchange(true)) error = std::current_exception();
      }
    }
  };
  const size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), docs.size());
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

// One split's token stream, cut into shards as it fills.
template <class T>  // uint16_t or uint32_t tokens (shard_token_bytes)
class SplitWriter {
 public:
  SplitWriter(fs::path dir, Split split, const Tokenizer& tok, int64_t shard_tokens, int64_t expected_tokens,
              std::vector<ShardRecord>& records)
      : dir_(std::move(dir)), split_(split), tok_(tok), shard_tokens_(shard_tokens), records_(records) {
    buf_.reserve(kHeaderSlots + static_cast<size_t>(std::min(shard_tokens, std::max<int64_t>(expected_tokens, 0))));
    buf_.resize(kHeaderSlots);
  }

  // One document's tokens, the end-of-text token first (encode_documents makes them).
  void add_document(const std::vector<int32_t>& tokens) {
    const std::vector<int32_t>& scratch_ = tokens;
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
        buf_.push_back(static_cast<T>(t));
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
  static constexpr size_t kHeaderSlots = kShardHeaderBytes / sizeof(T);

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
  std::vector<T> buf_;             // 1024 bytes of header slots, then this shard's tokens
  int64_t tokens_ = 0, docs_ = 0, index_ = 0;
};

ordered_json split_json(const SplitStats& s) {
  return {{"documents", s.documents}, {"text_bytes", s.text_bytes}, {"tokens", s.tokens}, {"shards", s.shards}};
}

}  // namespace

// ---- the output folder: build beside it, swap in, clean up after killed builds -------------

namespace {

// out_dir as an absolute path without a trailing "/" or ".", its parent and its name.
struct OutDir {
  fs::path target, parent;
  std::string name;
  fs::path sibling(const char* tag, int64_t pid) const {  // parent/.NAME.<tag>.<pid>
    return parent / ("." + name + "." + tag + "." + std::to_string(pid));
  }
};

OutDir out_dir_of(const std::string& out_dir) {
  std::error_code ec;
  fs::path t = fs::absolute(out_dir, ec).lexically_normal();
  if (ec) fail(out_dir, "cannot resolve the output folder: " + ec.message());
  if (t.filename().empty()) t = t.parent_path();  // "out/" or "."
  // A symlinked --out: swap at the folder it points to, so the link stays a link.
  std::error_code st;
  if (fs::is_symlink(fs::symlink_status(t, st))) {
    t = fs::canonical(t, ec);
    if (ec) fail(out_dir, "is a symbolic link that cannot be resolved: " + ec.message());
  }
  if (t.filename().empty() || t == t.root_path()) fail(out_dir, "cannot write a dataset into the root folder; choose another --out");
  return {t, t.parent_path(), t.filename().string()};
}

// Files a dataset build owns: the manifest, train_/val_ shards, atomic writers' temp files.
bool is_dataset_file(const std::string& name) {
  return name == kManifestName || is_shard_file_name(name) || temp_name_pid(name).has_value();
}

void sync_folder(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);  // best effort: some filesystems cannot sync a folder
    ::close(fd);
  }
}

void rename_or_fail(const fs::path& from, const fs::path& to, const std::string& why) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    const int err = errno;
    fail(to.string(), "cannot rename " + from.string() + " to it (" + why + "): " + errno_text(err));
  }
}

// Moves the entries of `from` that are not dataset files into `to` (where no entry of that name
// exists), deletes the dataset files, and removes `from` if it is then empty. Returns whether
// it was removed.
bool retire_folder(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(from, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(it->path());
  if (ec) fail(from.string(), "cannot list the folder: " + ec.message());
  for (const auto& e : entries) {
    const std::string name = e.filename().string();
    std::error_code rm;
    if (is_dataset_file(name) && !fs::is_directory(fs::symlink_status(e, rm))) {
      fs::remove(e, rm);
      if (rm) fail(e.string(), "cannot delete this file of the old dataset: " + rm.message());
    } else if (!fs::exists(fs::symlink_status(to / name, rm))) {
      rename_or_fail(e, to / name, "moving a file that is not part of the dataset back into the dataset folder");
    }
  }
  return fs::remove(from, ec);  // false (and left in place) when something could not move
}

// Deletes a build folder of this process if it is still there (an exception unwinds past it).
struct BuildFolderGuard {
  fs::path dir;
  ~BuildFolderGuard() {
    if (dir.empty()) return;
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// Puts the complete dataset in the build folder in place of o.target (build_token_dataset,
// step 5). The guard lets go of the build folder the moment it stops holding only the new dataset.
void swap_in(BuildFolderGuard& build, const OutDir& o) {
  const fs::path built = build.dir;
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(o.target, ec))) {
    rename_or_fail(built, o.target, "putting the new dataset in place");
    build.dir.clear();
    sync_folder(o.parent);
    return;
  }
  fs::path old = built;  // after the exchange, the old folder is under the build folder's name
  if (::renameat2(AT_FDCWD, built.c_str(), AT_FDCWD, o.target.c_str(), RENAME_EXCHANGE) == 0) {
    build.dir.clear();
  } else {
    const int err = errno;
    if (err != EINVAL && err != ENOSYS && err != ENOTSUP) {
      fail(o.target.string(), "cannot swap the new dataset in from " + built.string() + ": " + errno_text(err) +
                                  "; the old dataset is unchanged");
    }
    // No atomic exchange on this filesystem: old aside, new in. A kill in between leaves the old
    // dataset whole under .NAME.old.<pid>, which clean_stale_dataset_builds() renames back.
    old = o.sibling("old", ::getpid());
    rename_or_fail(o.target, old, "moving the old dataset aside");
    if (::rename(built.c_str(), o.target.c_str()) != 0) {
      const int err2 = errno;
      (void)::rename(old.c_str(), o.target.c_str());
      fail(o.target.string(), "cannot rename the new dataset " + built.string() + " into place: " + errno_text(err2) +
                                  "; the old dataset was put back");
    }
    build.dir.clear();
  }
  sync_folder(o.parent);
  if (!retire_folder(old, o.target)) {
    fail(old.string(), "the new dataset is in " + o.target.string() + ", but this folder of the old one could not be "
                       "emptied; move what is left in it by hand");
  }
}

}  // namespace

std::vector<std::string> clean_stale_dataset_builds(const std::string& out_dir) {
  const OutDir o = out_dir_of(out_dir);
  std::vector<std::string> done;
  std::error_code ec;
  std::vector<std::pair<int, fs::path>> stale;  // (0 = old, 1 = tmp): the old datasets first
  for (fs::directory_iterator it(o.parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with("." + o.name + ".")) continue;
    for (const auto& [rank, tag] : {std::pair{0, "old"}, std::pair{1, "tmp"}}) {
      const auto pid = temp_name_pid(name, tag);
      // Exactly .NAME.<tag>.<pid>: the prefix must be this folder's name, not a longer one.
      std::error_code st;
      if (pid && name == "." + o.name + "." + tag + "." + std::to_string(*pid) && process_is_gone(*pid) &&
          fs::is_directory(it->symlink_status(st))) {
        stale.emplace_back(rank, it->path());
      }
    }
  }
  std::sort(stale.begin(), stale.end());
  for (const auto& [rank, dir] : stale) {
    std::error_code e;
    if (!fs::exists(fs::symlink_status(o.target, e))) {
      // Killed between the two renames of a swap (an .old folder: what the user had), or after
      // a build into a missing out_dir finished (a .tmp folder with its manifest): put it back.
      if (rank == 0 || fs::exists(dir / kManifestName, e)) {
        rename_or_fail(dir, o.target, "restoring a dataset folder left by a killed `nvfp4 data`");
        done.push_back("restored " + o.target.string() + " from " + dir.string());
      } else {
        fs::remove_all(dir, e);  // a partial build: nothing but our own files
        if (e) fail(dir.string(), "cannot delete this partial dataset of a killed `nvfp4 data`: " + e.message());
        done.push_back("removed " + dir.string());
      }
      continue;
    }
    done.push_back(retire_folder(dir, o.target) ? "removed " + dir.string()
                                                : "left " + dir.string() + " (it holds files that could not be moved)");
  }
  return done;
}

DataSummary build_token_dataset(const DataOptions& o, const DataProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  // 1. options and the output folder.
  if (o.inputs.empty()) throw Error("no inputs given; pass text files, .gz files, folders or globs");
  if (o.out_dir.empty()) throw Error("no output folder given (--out DIR)");
  const std::shared_ptr<const Tokenizer> tok =
      o.tokenizer_object ? o.tokenizer_object : std::shared_ptr<const Tokenizer>(make_tokenizer(o.tokenizer));
  if (tok->vocab_size() < 1) throw Error("tokenizer " + tok->name() + " has an empty vocabulary");
  const int32_t token_bytes = shard_token_bytes(tok->vocab_size());
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0)) {
    throw Error("--val-fraction " + std::to_string(o.val_fraction) + " is outside [0, 1)");
  }
  if (o.shard_tokens < 1 || o.shard_tokens > kMaxShardTokens) {
    throw Error("--shard-tokens " + std::to_string(o.shard_tokens) + " is outside [1, " +
                std::to_string(kMaxShardTokens) + "] (header[2] is an int32)");
  }
  if (o.doc_bytes < 1) throw Error("--doc-bytes " + std::to_string(o.doc_bytes) + " must be >= 1");
  const fs::path dir(o.out_dir);
  const OutDir out = out_dir_of(o.out_dir);
  DataSummary sum;
  sum.cleaned = clean_stale_dataset_builds(o.out_dir);
  std::error_code ec;
  const fs::file_status dst = fs::status(dir, ec);
  const bool dir_exists = fs::exists(dst);
  if (dir_exists && !fs::is_directory(dst)) fail(o.out_dir, "exists and is not a folder; choose another --out");
  if (dir_exists) {
    for (const auto& f : remove_stale_temp_files(o.out_dir)) sum.cleaned.push_back("removed " + f);
  }
  if (dir_exists && !fs::is_empty(dir, ec) && !o.force) {
    const bool has_manifest = fs::exists(dir / kManifestName, ec);
    fail(o.out_dir, std::string("exists and is not empty") + (has_manifest ? " (it holds a dataset)" : "") +
                        "; choose another --out, or pass --force to replace the dataset in it");
  }

  // 2. inputs, first pass: documents per file.
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

  // 3. split, second pass: tokens into shards, in a build folder beside out_dir.
  const std::vector<Split> splits = assign_splits(o.seed, static_cast<int64_t>(doc_sizes.size()), o.val_fraction);
  uint64_t split_bytes[2] = {0, 0};
  fs::create_directories(out.parent, ec);
  if (ec) fail(out.parent.string(), "cannot create the folder that will hold --out: " + ec.message());
  BuildFolderGuard guard{out.sibling("tmp", ::getpid())};
  const fs::path build = guard.dir;
  fs::remove_all(build, ec);  // this process's own, from an earlier call that could not clean up
  fs::create_directory(build, ec);
  if (ec) {
    fail(build.string(), "cannot create the build folder beside " + o.out_dir + " (" + ec.message() +
                             "); --out must be in a folder you can write to");
  }
  // Each split's bytes and documents, to size the shard buffers (exact for the byte tokenizer).
  int64_t est_tokens[2] = {0, 0};
  for (size_t i = 0; i < splits.size(); ++i) est_tokens[static_cast<int>(splits[i])] += static_cast<int64_t>(doc_sizes[i]) + 1;
  // One pass over the inputs, writing shards of T tokens (the vocabulary's width).
  auto write_splits = [&]<class T>(T) {
    SplitWriter<T> train(build, Split::train, *tok, o.shard_tokens, est_tokens[0], sum.shards);
    SplitWriter<T> val(build, Split::val, *tok, o.shard_tokens, est_tokens[1], sum.shards);
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
      std::vector<std::vector<int32_t>> encoded;
      if (!o.shuffle) encoded = encode_documents(*tok, docs);
      for (size_t d = 0; d < docs.size(); ++d) {
        const std::string_view doc = docs[d];
        const Split sp = splits[static_cast<size_t>(doc_index++)];
        if (o.shuffle) {
          held[static_cast<int>(sp)].emplace_back(doc);  // written below, in a seeded order
        } else {
          (sp == Split::val ? val : train).add_document(encoded[d]);
          std::vector<int32_t>().swap(encoded[d]);
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
        std::vector<std::string_view> ordered;
        ordered.reserve(order.size());
        for (const int64_t i : order) ordered.emplace_back(held[k][static_cast<size_t>(i)]);
        const auto encoded = encode_documents(*tok, ordered);
        for (const auto& ids : encoded) (k == 1 ? val : train).add_document(ids);
        held[k].clear();
      }
    }
    train.finish();
    val.finish();
    sum.train.tokens = train.tokens();
    sum.val.tokens = val.tokens();
    sum.train.shards = train.shards();
    sum.val.shards = val.shards();
  };
  if (token_bytes == 2) {
    write_splits(uint16_t{});
  } else {
    write_splits(uint32_t{});
  }
  std::stable_sort(sum.shards.begin(), sum.shards.end(),
                   [](const ShardRecord& a, const ShardRecord& b) { return a.split < b.split; });
  sum.train.text_bytes = split_bytes[0];
  sum.val.text_bytes = split_bytes[1];

  // 4. the manifest, last in the build folder.
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
                       {"token_dtype", token_bytes == 2 ? "uint16" : "uint32"},
                       {"token_bytes", token_bytes},
                       {"header_fields", {"magic", "version", "tokens", "vocab_size", "tokenizer_id", "split",
                                          "shard_index", "documents", "token_bytes"}}};
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
  write_text_file_atomic((build / kManifestName).string(), text);

  // 5. the swap: out_dir holds the old dataset up to here and the new one from here on.
  swap_in(guard, out);
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace nvfp4::io

// safetensors reading and writing (docs/numerics.md §6); the contract is in nvfp4/safetensors.hpp.
//
// Reading: parse_header() validates a complete file image (it is the fuzzed entry point, see
// docs/fuzzing.md); SafetensorsFile maps the file and runs parse_header() on the mapping.
// The rules follow the upstream Rust `safetensors` crate: offsets sorted, contiguous, starting at
// 0 and ending exactly at the end of the file (trailing bytes are an error), sizes equal to
// numel * dtype size. We are stricter than upstream in two places: duplicate JSON keys are an
// error (serde_json / nlohmann silently keep one of them), and "__metadata__" must be an object.
// Unknown extra keys inside a tensor entry are ignored, as upstream does.
//
// Writing: every file goes through write_chunks_atomic() (src/io/atomic_file.cpp): temp file in
// the same folder, write, fsync, close, rename over the target, fsync the folder. On any failure
// the temp file is removed and the target is untouched.
//
// No exception other than nvfp4::Error leaves this file: nlohmann exceptions and bad_alloc are
// converted where they can occur. When built for fuzzing (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION,
// set by tests/fuzz/CMakeLists.txt) the last-resort conversion of other std::exceptions is off,
// so a logic error (say std::out_of_range) crashes the fuzzer instead of being hidden.
#include "nvfp4/safetensors.hpp"

#include "io/atomic_file.hpp"
#include "io/mapped_file.hpp"
#include "io/strict_json.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <new>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"

namespace nvfp4::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---- error helpers ------------------------------------------------------------------------

constexpr std::string_view kCorrupt = "; the file is corrupt or was written by a broken writer";

// Names from a hostile file can be huge; an error message quotes at most this much of one.
constexpr size_t kMaxQuoted = 200;

// Text from a file made safe for an error message: control bytes (and, with ascii_only, every
// non-ASCII byte) become \xNN, and at most kMaxQuoted bytes are kept, cut on a UTF-8 boundary.
// Messages may end up in logs and in the CLI's JSON output, so they stay valid UTF-8.
std::string printable(std::string_view s, bool ascii_only = false) {
  const bool cut = s.size() > kMaxQuoted;
  if (cut) {
    size_t n = kMaxQuoted;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // not inside a code point
    s = s.substr(0, n);
  }
  std::string out;
  out.reserve(s.size() + 3);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F || (ascii_only && c >= 0x80)) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += ch;
    }
  }
  if (cut) out += "...";
  return out;
}

std::string quote_name(std::string_view s) {
  // Appended piecewise: "'" + std::string + "'" trips a GCC 12 -Wrestrict false positive.
  std::string out(1, '\'');
  out += printable(s);
  out += '\'';
  return out;
}

[[noreturn]] void fail(std::string_view file, const std::string& what) {
  throw Error(std::string(file) + ": " + what);
}

[[noreturn]] void fail_tensor(std::string_view file, std::string_view tensor, const std::string& what) {
  throw Error(std::string(file) + ": tensor " + quote_name(tensor) + ": " + what);
}

std::string errno_text(int err) { return std::strerror(err); }

std::string known_dtypes() {
  std::string s;
  for (const auto& info : dtype_table()) {
    if (!s.empty()) s += ", ";
    s += info.name;
  }
  return s;
}

const char* json_type_name(const json& j) { return j.type_name(); }

// A JSON value for an error message. Containers are only named: dumping one is recursive in
// nlohmann, and a hostile header can nest arrays deeply enough to overflow the stack.
std::string describe(const json& j) {
  if (j.is_array()) return "a JSON array";
  if (j.is_object()) return "a JSON object";
  return printable(j.dump(-1, ' ', false, json::error_handler_t::replace));
}

// Parses `text` as JSON, rejecting syntax errors and duplicate keys at any depth.
// `context` names the file in errors; `kind` says what the JSON is ("header", "index").
json parse_json_strict(std::string_view text, std::string_view context, std::string_view kind) {
  StrictJson builder = parse_strict_json(text);
  if (builder.ok) return std::move(builder.value);
  if (builder.duplicate_key) {
    if (builder.duplicate_depth == 1) {
      fail(context, "key " + quote_name(*builder.duplicate_key) + " appears twice in the " + std::string(kind) +
                        " (JSON readers disagree on which copy wins)" + std::string(kCorrupt));
    }
    fail(context, "entry " + quote_name(builder.top_key) + ": key " + quote_name(*builder.duplicate_key) +
                      " appears twice" + std::string(kCorrupt));
  }
  // NOTE: nlohmann quotes the offending input bytes, which may be invalid UTF-8: escape them.
  fail(context, "the " + std::string(kind) + " is not valid JSON (" +
                    printable(builder.syntax_error.value_or("parse stopped"), true) +
                    "); the file is corrupt or not a safetensors file");
}

// A JSON integer >= 0 (nlohmann stores "-0" as a signed 0), or nullopt.
std::optional<uint64_t> json_unsigned(const json& j) {
  if (j.is_number_unsigned()) return j.get_ref<const json::number_unsigned_t&>();
  if (j.is_number_integer()) {
    const int64_t v = j.get_ref<const json::number_integer_t&>();
    if (v >= 0) return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// shape_to_string, but a hostile shape of a million dimensions gives a short message.
std::string shape_text(const std::vector<int64_t>& shape) {
  constexpr size_t kMaxDims = 16;
  if (shape.size() <= kMaxDims) return shape_to_string(shape);
  std::vector<int64_t> head(shape.begin(), shape.begin() + kMaxDims);
  std::string s = shape_to_string(head);
  s.pop_back();
  return s + ", ... (" + std::to_string(shape.size()) + " dimensions)]";
}

// ---- header validation --------------------------------------------------------------------

TensorInfo parse_tensor_entry(const std::string& name, const json& entry, std::string_view file) {
  if (name.empty()) fail(file, "a tensor has an empty name" + std::string(kCorrupt));
  if (!entry.is_object()) {
    fail_tensor(file, name,
                "entry is a JSON " + std::string(json_type_name(entry)) +
                    ", expected an object with \"dtype\", \"shape\" and \"data_offsets\"" + std::string(kCorrupt));
  }
  TensorInfo t;
  t.name = name;

  // dtype
  const auto dt = entry.find("dtype");
  if (dt == entry.end()) fail_tensor(file, name, "has no \"dtype\"" + std::string(kCorrupt));
  const auto* dname = dt->get_ptr<const std::string*>();
  if (dname == nullptr) {
    fail_tensor(file, name, "\"dtype\" is a JSON " + std::string(json_type_name(*dt)) + ", expected a string such as \"BF16\"" + std::string(kCorrupt));
  }
  const auto parsed = parse_dtype(*dname);
  if (!parsed) {
    fail_tensor(file, name,
                "unknown dtype " + quote_name(*dname) + "; known dtypes are " + known_dtypes() +
                    " (a newer writer may use a type this version does not support)");
  }
  t.dtype = *parsed;

  // shape
  const auto sh = entry.find("shape");
  if (sh == entry.end()) fail_tensor(file, name, "has no \"shape\"" + std::string(kCorrupt));
  if (!sh->is_array()) {
    fail_tensor(file, name, "\"shape\" is a JSON " + std::string(json_type_name(*sh)) + ", expected an array of non-negative integers" + std::string(kCorrupt));
  }
  t.shape.reserve(sh->size());
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : *sh) {
    const auto v = json_unsigned(d);
    if (!v) {
      const bool negative = d.is_number_integer() && !d.is_number_unsigned();
      fail_tensor(file, name,
                  std::string("\"shape\" has ") + (negative ? "a negative dimension " : "a dimension that is not an integer: ") +
                      describe(d) + std::string(kCorrupt));
    }
    if (*v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail_tensor(file, name, "dimension " + std::to_string(*v) + " does not fit in 64 bits" + std::string(kCorrupt));
    }
    t.shape.push_back(static_cast<int64_t>(*v));
  }
  // numel with overflow check; a zero dimension makes any product 0, so check that first.
  const bool has_zero = std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end();
  if (has_zero) {
    numel = 0;
  } else {
    for (int64_t d : t.shape) {
      const uint64_t ud = static_cast<uint64_t>(d);
      if (numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ud) {
        overflow = true;
        break;
      }
      numel *= ud;
    }
  }
  if (overflow) {
    fail_tensor(file, name, "shape " + shape_text(t.shape) + " has more elements than fit in 64 bits" + std::string(kCorrupt));
  }
  const uint64_t esize = dtype_size(t.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / esize) {
    fail_tensor(file, name, "shape " + shape_text(t.shape) + " of " + std::string(dtype_name(t.dtype)) +
                                " needs more bytes than fit in 64 bits" + std::string(kCorrupt));
  }
  const uint64_t expected_bytes = numel * esize;

  // data_offsets
  const auto off = entry.find("data_offsets");
  if (off == entry.end()) fail_tensor(file, name, "has no \"data_offsets\"" + std::string(kCorrupt));
  if (!off->is_array() || off->size() != 2) {
    fail_tensor(file, name, "\"data_offsets\" must be an array of two integers [begin, end], got " +
                                (off->is_array() ? std::to_string(off->size()) + " elements" : describe(*off)) +
                                std::string(kCorrupt));
  }
  const auto b = json_unsigned((*off)[0]);
  const auto e = json_unsigned((*off)[1]);
  if (!b || !e) {
    fail_tensor(file, name, "\"data_offsets\" must be two non-negative integers, got [" +
                                describe((*off)[0]) + ", " + describe((*off)[1]) + "]" + std::string(kCorrupt));
  }
  t.begin = *b;
  t.end = *e;
  if (t.begin > t.end) {
    fail_tensor(file, name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                "] are reversed (begin > end)" + std::string(kCorrupt));
  }
  if (t.end - t.begin != expected_bytes) {
    fail_tensor(file, name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                "] do not match shape " + shape_text(t.shape) + " of " +
                                std::string(dtype_name(t.dtype)) + " (" + std::to_string(expected_bytes) + " bytes)" +
                                std::string(kCorrupt));
  }
  return t;
}

Header parse_header_impl(std::span<const uint8_t> image, std::string_view file) {
  if (image.size() < 8) {
    fail(file, "file is " + std::to_string(image.size()) +
                   " bytes, too short for the 8-byte header length; the file is truncated or not a safetensors file");
  }
  const uint64_t n = read_le64(image.data());
  if (n > kMaxHeaderBytes) {
    fail(file, "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
                   " bytes; the file is corrupt or not a safetensors file");
  }
  const uint64_t rest = image.size() - 8;
  if (n > rest) {
    fail(file, "header length " + std::to_string(n) + " is larger than the " + std::to_string(rest) +
                   " bytes that follow it; the file is truncated or not a safetensors file");
  }
  Header h;
  h.header_bytes = n;
  h.data_bytes = rest - n;

  const std::string_view text(reinterpret_cast<const char*>(image.data() + 8), static_cast<size_t>(n));
  const json j = parse_json_strict(text, file, "header");
  if (!j.is_object()) {
    fail(file, "the header is a JSON " + std::string(json_type_name(j)) +
                   ", expected an object mapping tensor names to entries; not a safetensors file");
  }

  h.tensors.reserve(j.size());
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        fail(file, "\"__metadata__\" is a JSON " + std::string(json_type_name(value)) +
                       ", expected an object of strings" + std::string(kCorrupt));
      }
      for (const auto& [mk, mv] : value.items()) {
        const auto* s = mv.get_ptr<const std::string*>();
        if (s == nullptr) {
          fail(file, "\"__metadata__\" entry " + quote_name(mk) + " is a JSON " + std::string(json_type_name(mv)) +
                         ", but metadata values must be strings" + std::string(kCorrupt));
        }
        h.metadata.emplace(mk, *s);
      }
      continue;
    }
    h.tensors.push_back(parse_tensor_entry(key, value, file));
  }

  // Sort by (begin, end, name) so that zero-size tensors sharing an offset sit before the
  // tensor that starts there, and the order does not depend on JSON key order.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });

  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : h.tensors) {
    if (t.end > h.data_bytes) {
      fail_tensor(file, t.name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                    "] run past the end of the data section (" + std::to_string(h.data_bytes) +
                                    " bytes); the file is truncated or corrupt");
    }
    if (t.begin < expected) {
      fail_tensor(file, t.name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                    "] overlap tensor " + quote_name(prev ? prev->name : std::string()) + " [" +
                                    std::to_string(prev ? prev->begin : 0) + ", " + std::to_string(expected) + "]" +
                                    std::string(kCorrupt));
    }
    if (t.begin > expected) {
      fail_tensor(file, t.name, "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                    "] leave a gap of " + std::to_string(t.begin - expected) + " bytes after " +
                                    (prev ? "tensor " + quote_name(prev->name) : std::string("the start of the data section")) +
                                    " (offset " + std::to_string(expected) + ")" + std::string(kCorrupt));
    }
    expected = t.end;
    prev = &t;
  }
  if (expected != h.data_bytes) {
    fail(file, "the data section holds " + std::to_string(h.data_bytes) + " bytes but the tensors cover only " +
                   std::to_string(expected) + "; " + std::to_string(h.data_bytes - expected) +
                   " trailing bytes belong to no tensor" + std::string(kCorrupt));
  }
  return h;
}

// Checked numel * dtype size for writing; errors name the path and tensor.
uint64_t expected_nbytes(const std::string& path, const TensorRef& t) {
  uint64_t numel = 1;
  for (int64_t d : t.shape) {
    if (d < 0) fail_tensor(path, t.name, "shape " + shape_to_string(t.shape) + " has a negative dimension");
  }
  if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) return 0;
  for (int64_t d : t.shape) {
    const uint64_t ud = static_cast<uint64_t>(d);
    if (numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ud) {
      fail_tensor(path, t.name, "shape " + shape_to_string(t.shape) + " has more elements than fit in 64 bits");
    }
    numel *= ud;
  }
  const uint64_t esize = dtype_size(t.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / esize) {
    fail_tensor(path, t.name, "shape " + shape_to_string(t.shape) + " needs more bytes than fit in 64 bits");
  }
  return numel * esize;
}

// Names non-empty and unique, sizes matching shapes. Returns the total data size.
uint64_t validate_refs(const std::string& path, const std::vector<TensorRef>& tensors) {
  std::set<std::string_view> seen;
  uint64_t total = 0;
  for (const auto& t : tensors) {
    if (t.name.empty()) fail(path, "cannot write a tensor with an empty name; give every tensor a name");
    if (t.name == "__metadata__") {
      fail_tensor(path, t.name, "is a reserved name in safetensors; rename the tensor");
    }
    if (!seen.insert(t.name).second) {
      fail_tensor(path, t.name, "appears twice in the list of tensors to write; tensor names must be unique");
    }
    const uint64_t want = expected_nbytes(path, t);
    if (t.bytes.size() != want) {
      fail_tensor(path, t.name, "has " + std::to_string(t.bytes.size()) + " bytes but shape " +
                                    shape_to_string(t.shape) + " of " + std::string(dtype_name(t.dtype)) + " needs " +
                                    std::to_string(want));
    }
    total += want;
  }
  return total;
}

// The header bytes (8-byte length + JSON padded with spaces to a multiple of 8) of a file
// holding `tensors` in order, contiguously.
std::vector<uint8_t> build_header(const std::string& path, const std::vector<TensorRef>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  if (!meta.contains("format")) meta["format"] = "pt";
  j["__metadata__"] = std::move(meta);
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = std::string(dtype_name(t.dtype));
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + t.bytes.size()};
    offset += t.bytes.size();
    j[t.name] = std::move(e);
  }
  std::string text;
  try {
    text = j.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    fail(path, std::string("cannot encode the header: ") + e.what() + "; tensor names and metadata must be valid UTF-8");
  }
  const size_t padded = (text.size() + 7) / 8 * 8;
  if (padded > kMaxHeaderBytes) {
    fail(path, "the header would be " + std::to_string(padded) + " bytes, over the " + std::to_string(kMaxHeaderBytes) +
                   "-byte limit that readers enforce; write fewer tensors per file (write_sharded) or less metadata");
  }
  text.resize(padded, ' ');
  std::vector<uint8_t> out(8 + text.size());
  put_le64(out.data(), text.size());
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

void write_refs(const std::string& path, const std::vector<TensorRef>& tensors,
                const std::map<std::string, std::string>& metadata) {
  validate_refs(path, tensors);
  const std::vector<uint8_t> header = build_header(path, tensors, metadata);
  std::vector<std::span<const uint8_t>> chunks;
  chunks.reserve(tensors.size() + 1);
  chunks.emplace_back(header);
  for (const auto& t : tensors) chunks.push_back(t.bytes);
  write_chunks_atomic(path, chunks);
}

// Reads a whole (small) file such as an index JSON.
std::string read_small_file(const std::string& path, uint64_t limit) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail(path, "cannot open: " + errno_text(err));
  }
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > limit) {
    ::close(fd);
    fail(path, "is " + std::to_string(st.st_size) + " bytes, more than the " + std::to_string(limit) +
                   " expected of an index; is it really a checkpoint index?");
  }
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int err = r < 0 ? errno : EIO;
      ::close(fd);
      fail(path, "cannot read: " + errno_text(err));
    }
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return out;
}

}  // namespace

// ---- public API -------------------------------------------------------------------------

int64_t TensorInfo::numel() const { return shape_numel(shape); }

Header parse_header(std::span<const uint8_t> file_image, std::string_view file) {
  try {
    return parse_header_impl(file_image, file);
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    fail(file, "ran out of memory while reading the header; the header is too large for this machine");
  } catch (const nlohmann::json::exception& e) {
     fail(file, "unreadable header (" + printable(e.what(), true) + ")" + std::string(kCorrupt));
  }
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  catch (const std::exception& e) {
    fail(file, std::string("unexpected failure while reading the header: ") + e.what());
  }
#endif
}

// ---- SafetensorsFile --------------------------------------------------------------------

struct SafetensorsFile::Impl {
  std::string path;
  MappedFile file;
  Header header;
  std::map<std::string, size_t, std::less<>> by_name;  // name -> index into header.tensors

  const uint8_t* data_section() const { return file.data() + 8 + header.header_bytes; }
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->file = MappedFile::open(path, "a safetensors file",
                                "safetensors files are memory-mapped regular files (a checkpoint folder: Checkpoint::open)");
  impl->header = parse_header(impl->file.bytes(), path);
  try {
    for (size_t i = 0; i < impl->header.tensors.size(); ++i) impl->by_name.emplace(impl->header.tensors[i].name, i);
  } catch (const std::bad_alloc&) {
    fail(path, "ran out of memory indexing " + std::to_string(impl->header.tensors.size()) + " tensors");
  }
  return SafetensorsFile(std::move(impl));
}

const std::string& SafetensorsFile::path() const { return impl_->path; }
const Header& SafetensorsFile::header() const { return impl_->header; }

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = impl_->by_name.find(name);
  return it == impl_->by_name.end() ? nullptr : &impl_->header.tensors[it->second];
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  fail(impl_->path, "has no tensor named " + quote_name(name) + "; run `nvfp4 inspect " + impl_->path +
                        "` to list its tensors");
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& t) const {
  if (t.begin > t.end || t.end > impl_->header.data_bytes) {
    fail_tensor(impl_->path, t.name, "offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                                         "] are outside this file's data section; was this TensorInfo taken from another file?");
  }
  return {impl_->data_section() + t.begin, static_cast<size_t>(t.end - t.begin)};
}

Tensor SafetensorsFile::load(std::string_view name) const {
  const TensorInfo& t = at(name);
  const auto b = bytes(t);
  Tensor out;
  out.dtype = t.dtype;
  out.shape = t.shape;
  out.data.assign(b.begin(), b.end());
  return out;
}

// ---- Checkpoint -------------------------------------------------------------------------

namespace {
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr uint64_t kMaxIndexBytes = kMaxHeaderBytes;
}  // namespace

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint ck;
  ck.path_ = path;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec && st.type() != fs::file_type::not_found) fail(path, "cannot access: " + ec.message());
  if (!fs::exists(st)) {
    fail(path, "does not exist; expected a .safetensors file, an index .json file or a folder holding " +
                   std::string(kSingleName) + " or " + kIndexName);
  }
  fs::path file(path);
  if (fs::is_directory(st)) {
    const fs::path idx = file / kIndexName;
    const fs::path single = file / kSingleName;
    if (fs::exists(idx, ec)) {
      file = idx;
    } else if (fs::exists(single, ec)) {
      file = single;
    } else {
      fail(path, "is a folder without " + std::string(kIndexName) + " or " + kSingleName +
                     "; pass the .safetensors file or index .json directly");
    }
  }

  if (file.extension() != ".json") {
    ck.shards_.push_back(SafetensorsFile::open(file.string()));
    for (const auto& t : ck.shards_[0].tensors()) ck.where_.emplace(t.name, 0);
    ck.metadata_ = ck.shards_[0].metadata();
    return ck;
  }

  // An index: {"metadata": {...}, "weight_map": {tensor: shard file}}.
  const std::string index = file.string();
  json j;
  try {
    const std::string text = read_small_file(index, kMaxIndexBytes);
    j = parse_json_strict(text, index, "index");
  } catch (const std::bad_alloc&) {
    fail(index, "ran out of memory reading the index");
  }
  if (!j.is_object()) fail(index, "the index is a JSON " + std::string(json_type_name(j)) + ", expected an object with \"weight_map\"");
  const auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) {
    fail(index, "has no \"weight_map\" object mapping tensor names to shard files; is it a safetensors index?");
  }
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::map<std::string, size_t> shard_ids;        // shard file name -> index into shards_ (sorted by name)
  for (const auto& [tensor, shard] : wm->items()) {
    const auto* s = shard.get_ptr<const std::string*>();
    if (s == nullptr || s->empty()) {
      fail(index, "weight_map entry for tensor " + quote_name(tensor) + " must be a non-empty shard file name");
    }
    if (tensor.empty()) fail(index, "weight_map has an empty tensor name");
    if (fs::path(*s).is_absolute()) {
      fail(index, "weight_map entry for tensor " + quote_name(tensor) + " names shard " + quote_name(*s) +
                      " by an absolute path; shard paths must be relative to the index's folder");
    }
    weight_map.emplace(tensor, *s);
    shard_ids.emplace(*s, 0);
  }
  const fs::path dir = file.parent_path();
  for (auto& [shard, id] : shard_ids) {
    id = ck.shards_.size();
    const std::string shard_path = (dir / shard).string();
    try {
      ck.shards_.push_back(SafetensorsFile::open(shard_path));
    } catch (const Error& e) {
      fail(index, "cannot read shard " + quote_name(shard) + " listed in its weight_map: " + std::string(e.what()));
    }
  }
  for (const auto& [tensor, shard] : weight_map) {
    const size_t id = shard_ids.at(shard);
    if (ck.shards_[id].find(tensor) == nullptr) {
      fail(index, "tensor " + quote_name(tensor) + " is listed in shard " + quote_name(shard) +
                      ", but that shard has no such tensor; the index and shards do not belong together");
    }
    ck.where_.emplace(tensor, id);
  }
  for (const auto& [shard, id] : shard_ids) {
    for (const auto& t : ck.shards_[id].tensors()) {
      const auto it = weight_map.find(t.name);
      if (it == weight_map.end()) {
        fail(index, "shard " + quote_name(shard) + " holds tensor " + quote_name(t.name) +
                        " that the weight_map does not list; the index is stale or incomplete");
      }
      if (it->second != shard) {
        fail(index, "tensor " + quote_name(t.name) + " is in two shards, " + quote_name(it->second) + " and " + quote_name(shard) +
                        "; a checkpoint must hold each tensor once");
      }
    }
  }
  // metadata(): the first shard's (by file name) __metadata__, overlaid with the index's
  // "metadata" entries whose values are strings (index wins on a clash). Non-string index
  // values such as "total_size" are left out: the map holds strings only.
  if (!ck.shards_.empty()) ck.metadata_ = ck.shards_[0].metadata();
  const auto md = j.find("metadata");
  if (md != j.end() && !md->is_object() && !md->is_null()) {
    fail(index, "\"metadata\" is a JSON " + std::string(json_type_name(*md)) + ", expected an object");
  }
  if (md != j.end() && md->is_object()) {
    for (const auto& [k, v] : md->items()) {
      if (const auto* s = v.get_ptr<const std::string*>()) ck.metadata_[k] = *s;
    }
  }
  return ck;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, id] : where_) out.push_back(name);
  return out;  // std::map iterates in sorted order
}

const TensorInfo& Checkpoint::info(std::string_view name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) {
    fail(path_, "has no tensor named " + quote_name(name) + "; run `nvfp4 inspect " + path_ + "` to list its tensors");
  }
  return shards_[it->second].at(name);
}

std::span<const uint8_t> Checkpoint::bytes(std::string_view name) const {
  const TensorInfo& t = info(name);
  return shards_[where_.find(name)->second].bytes(t);
}

Tensor Checkpoint::load(std::string_view name) const {
  info(name);  // throws a checkpoint-level error when absent
  return shards_[where_.find(name)->second].load(name);
}

const std::map<std::string, std::string>& Checkpoint::metadata() const { return metadata_; }

// ---- writing ----------------------------------------------------------------------------

void write_file(const std::string& path, const std::vector<TensorRef>& tensors,
                const std::map<std::string, std::string>& metadata) {
  write_refs(path, tensors, metadata);
}

void write_file(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                const std::map<std::string, std::string>& metadata) {
  std::vector<TensorRef> refs;
  refs.reserve(tensors.size());
  for (const auto& [name, t] : tensors) refs.push_back(TensorRef{name, t.dtype, t.shape, t.data});
  write_refs(path, refs, metadata);
}

std::vector<std::string> write_sharded(const std::string& dir, const std::vector<TensorRef>& tensors,
                                       uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  const uint64_t total = validate_refs(dir, tensors);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, "cannot create the checkpoint folder: " + ec.message());
  if (!fs::is_directory(dir, ec)) fail(dir, "exists and is not a folder; cannot write a checkpoint into it");

  // Greedy, in the given order: start a new shard when the next tensor would overflow this one
  // (a tensor larger than the limit gets a shard of its own; a zero-byte tensor never starts one).
  std::vector<std::vector<TensorRef>> shards(1);
  uint64_t used = 0;
  for (const auto& t : tensors) {
    if (!shards.back().empty() && !t.bytes.empty() && used + t.bytes.size() > max_shard_bytes) {
      shards.emplace_back();
      used = 0;
    }
    shards.back().push_back(t);
    used += t.bytes.size();
  }

  const fs::path root(dir);
  std::vector<std::string> written;
  if (shards.size() == 1) {
    const std::string p = (root / kSingleName).string();
    write_refs(p, shards[0], metadata);
    written.push_back(p);
    // A stale index from an earlier sharded write would shadow the new file in Checkpoint::open.
    fs::remove(root / kIndexName, ec);
    return written;
  }

  json weight_map = json::object();
  const size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    const std::string p = (root / name).string();
    write_refs(p, shards[i], metadata);
    written.push_back(p);
    for (const auto& t : shards[i]) weight_map[t.name] = name;
  }
  json index = json::object();
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = std::move(weight_map);
  std::string text;
  try {
    text = index.dump(2) + "\n";
  } catch (const json::exception& e) {
    fail(dir, std::string("cannot encode the index: ") + e.what());
  }
  const std::string p = (root / kIndexName).string();
  write_text_file_atomic(p, text);
  written.push_back(p);
  return written;
}

}  // namespace nvfp4::io

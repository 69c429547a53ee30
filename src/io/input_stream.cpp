#include "io/input_stream.hpp"

#include <algorithm>
#include <cerrno>

#include "io/token_shards_internal.hpp"

namespace nvfp4::io::detail {

bool is_gz_name(std::string_view path) { return path.size() >= 3 && path.substr(path.size() - 3) == ".gz"; }

InputStream::InputStream(const std::string& path) : path_(path) {
  errno = 0;
  if (is_gz_name(path)) {
    gz_ = gzopen(path.c_str(), "rb");
    if (gz_ == nullptr) fail(path, "cannot open: " + errno_text(errno != 0 ? errno : ENOMEM));
    gzbuffer(gz_, 1 << 17);
  } else {
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) fail(path, "cannot open: " + errno_text(errno));
  }
}

InputStream::~InputStream() {
  if (file_) std::fclose(file_);
  if (gz_) gzclose(gz_);
}

size_t InputStream::read(char* dst, size_t n) {
  if (file_) {
    const size_t got = std::fread(dst, 1, n, file_);
    if (got < n && std::ferror(file_)) fail(path_, "read error: " + errno_text(errno));
    consumed_ += got;
    return got;
  }
  if (!gz_) return 0;  // gzip stream finished
  const int got = gzread(gz_, dst, static_cast<unsigned>(std::min<size_t>(n, 1u << 30)));
  if (got < 0) {
    int code = 0;
    const std::string msg = gzerror(gz_, &code);
    fail(path_, "is not a readable gzip file (" + msg + (code == Z_BUF_ERROR ? ": the file is truncated" : "") +
                    "); check it with `gzip -t " + path_ + "`");
  }
  consumed_ = static_cast<uint64_t>(std::max<z_off_t>(gzoffset(gz_), 0));
  produced_ += static_cast<uint64_t>(got);
  if (got == 0) finish_gzip();
  return static_cast<size_t>(got);
}

void InputStream::finish_gzip() {
  const bool direct = gzdirect(gz_) != 0;
  const int rc = gzclose(gz_);
  gz_ = nullptr;
  if (rc == Z_BUF_ERROR) fail(path_, "ends in the middle of a gzip stream; the file is truncated (check it with `gzip -t`)");
  if (rc != Z_OK) fail(path_, "cannot be read to the end as gzip (zlib error " + std::to_string(rc) + ")");
  if (direct && produced_ > 0) fail(path_, "is named .gz but is not gzip-compressed; decompress or rename it");
}

}  // namespace nvfp4::io::detail

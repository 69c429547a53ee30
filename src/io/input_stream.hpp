// One input file read in pieces: plain, or gzip-decompressed when its name ends in ".gz" (zlib;
// concatenated members are read in full). What `nvfp4 data` (token_dataset.cpp) and the BPE
// trainer (tokenizer/train_words.cpp) read text through. Private to src/io.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include <zlib.h>

namespace nvfp4::io::detail {

bool is_gz_name(std::string_view path);

class InputStream {
 public:
  // Throws nvfp4::Error "PATH: cannot open: ..." when the file cannot be opened.
  explicit InputStream(const std::string& path);
  ~InputStream();
  InputStream(const InputStream&) = delete;
  InputStream& operator=(const InputStream&) = delete;

  // Up to n bytes into dst; 0 at the end of the file. Errors name the file: a read error, a
  // corrupt or truncated gzip stream, a ".gz" file that holds bytes but is not gzip.
  size_t read(char* dst, size_t n);
  // Bytes of the file on disk consumed so far (compressed bytes for gzip): for progress.
  uint64_t consumed() const { return consumed_; }

 private:
  void finish_gzip();
  std::string path_;
  std::FILE* file_ = nullptr;
  gzFile gz_ = nullptr;
  uint64_t consumed_ = 0, produced_ = 0;
};

}  // namespace nvfp4::io::detail

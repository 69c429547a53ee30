// MappedFile (see mapped_file.hpp).
#include "io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "nvfp4/error.hpp"

namespace nvfp4::io {

MappedFile MappedFile::open(const std::string& path, const std::string& kind, const std::string& hint) {
  auto fail = [&](const std::string& what) -> void { throw Error(path + ": " + what); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail("cannot open " + kind + ": " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("cannot stat: " + std::string(std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(std::string(S_ISDIR(st.st_mode) ? "is a folder" : "is not a regular file") + ", not " + kind + "; " + hint);
  }
  const auto bytes = static_cast<uint64_t>(st.st_size);
  if (bytes == 0) {
    ::close(fd);
    fail("is empty (0 bytes); the file is truncated or not " + kind);
  }
  MappedFile f;
  f.size_ = static_cast<size_t>(bytes);
  void* m = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (m == MAP_FAILED) {
    fail("cannot memory-map " + std::to_string(f.size_) + " bytes: " + std::strerror(map_err));
  }
  f.map_ = m;
  return f;
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : map_(std::exchange(o.map_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (map_ != nullptr) ::munmap(map_, size_);
    map_ = std::exchange(o.map_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

}  // namespace nvfp4::io

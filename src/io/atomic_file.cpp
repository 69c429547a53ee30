// Files written atomically (nvfp4/safetensors.hpp: write_file_atomic and friends; every writer of
// the project goes through write_chunks_atomic): a temp file in the same folder, written,
// fsynced, closed, renamed over the target, the folder fsynced. On any failure the temp file is
// removed and the target is untouched. Temp files of killed writers are found by name and pid.
#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <limits>

#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"

namespace nvfp4::io {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(std::string_view file, const std::string& what) { throw Error(std::string(file) + ": " + what); }

std::string errno_text(int err) { return std::strerror(err); }

std::atomic<uint64_t> g_temp_counter{0};

// The temp name, .NAME.tmp.<pid>.<n>, is what temp_name_pid() parses: remove_stale_temp_files()
// relies on it.
}  // namespace

void write_chunks_atomic(const std::string& path, std::span<const std::span<const uint8_t>> chunks) {
  if (path.empty()) throw Error("cannot write a file with an empty path");
  const fs::path target(path);
  const std::string base = target.filename().string();
  if (base.empty() || base == "." || base == "..") {
    fail(path, "cannot write: the path names a folder, not a file");
  }
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  const fs::path temp = dir / ("." + base + ".tmp." + std::to_string(::getpid()) + "." +
                               std::to_string(g_temp_counter.fetch_add(1)));
  const std::string temp_s = temp.string();

  int fd = ::open(temp_s.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    const int err = errno;
    fail(path, "cannot create temporary file " + temp_s + ": " + errno_text(err) +
                   (err == ENOENT ? " (does the folder exist?)" : ""));
  }
  // Replacing a file keeps its permission bits (best effort; a failure here is harmless).
  struct stat old_st {};
  if (::stat(path.c_str(), &old_st) == 0 && S_ISREG(old_st.st_mode)) (void)::fchmod(fd, old_st.st_mode & 07777);
  // From here on, any failure closes and removes the temp file; the target is not touched.
  auto abandon = [&](const std::string& step, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(temp_s.c_str());
    fail(path, "cannot write (" + step + " of " + temp_s + " failed: " + errno_text(err) + "); the file was left unchanged");
  };
  for (const auto& chunk : chunks) {
    const uint8_t* p = chunk.data();
    size_t left = chunk.size();
    while (left > 0) {
      const ssize_t w = ::write(fd, p, std::min<size_t>(left, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        abandon("write", errno);
      }
      if (w == 0) abandon("write", EIO);
      p += w;
      left -= static_cast<size_t>(w);
    }
  }
  if (::fsync(fd) != 0) abandon("fsync", errno);
  const int fd_closed = fd;
  fd = -1;
  if (::close(fd_closed) != 0) abandon("close", errno);
  if (::rename(temp_s.c_str(), path.c_str()) != 0) abandon("rename to " + path, errno);

  // Make the rename itself durable. Some filesystems cannot fsync a folder (EINVAL): fine.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    const int rc = ::fsync(dfd);
    const int err = errno;
    ::close(dfd);
    if (rc != 0 && err != EINVAL && err != EROFS) {
      fail(path, "written, but syncing its folder " + dir.string() + " failed: " + errno_text(err));
    }
  }
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> bytes) {
  const std::span<const uint8_t> one[1] = {bytes};
  write_chunks_atomic(path, one);
}

void write_text_file_atomic(const std::string& path, std::string_view text) {
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

std::optional<int64_t> temp_name_pid(std::string_view name, std::string_view tag) {
  // ".X.<tag>.<pid>" or ".X.<tag>.<pid>.<n>", X not empty: find ".<tag>." after the first char.
  const std::string mid = "." + std::string(tag) + ".";
  if (name.size() < 2 || name[0] != '.') return std::nullopt;
  const size_t at = name.rfind(mid);
  if (at == std::string_view::npos || at < 2) return std::nullopt;
  std::string_view rest = name.substr(at + mid.size());
  const size_t dot = rest.find('.');
  const std::string_view pid_s = rest.substr(0, dot);
  const auto digits = [](std::string_view d) {
    return !d.empty() && d.size() <= 18 && std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!digits(pid_s) || (dot != std::string_view::npos && !digits(rest.substr(dot + 1)))) return std::nullopt;
  int64_t pid = 0;
  std::from_chars(pid_s.data(), pid_s.data() + pid_s.size(), pid);
  if (pid <= 0) return std::nullopt;
  return pid;
}

bool process_is_gone(int64_t pid) {
  if (pid <= 0 || pid > std::numeric_limits<pid_t>::max()) return false;  // not a pid we would signal
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) return removed;
    fail(dir, "cannot list the folder to clean up temporary files: " + ec.message());
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto pid = temp_name_pid(name);
    std::error_code fec;
    if (!pid || !it->is_regular_file(fec) || !process_is_gone(*pid)) continue;
    if (!fs::remove(it->path(), fec) && fec) {
      fail(it->path().string(), "cannot delete this temporary file of a killed writer (pid " + std::to_string(*pid) +
                                    "): " + fec.message());
    }
    removed.push_back(it->path().string());
  }
  if (ec) fail(dir, "cannot list the folder to clean up temporary files: " + ec.message());
  return removed;
}

}  // namespace nvfp4::io

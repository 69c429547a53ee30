// Metrics log and progress bar; the contract is in metrics.hpp.
#include "train/metrics.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <utility>

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"  // io::write_file_atomic

namespace nvfp4::train {

namespace {

using ojson = nlohmann::ordered_json;

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw Error(path + ": " + what); }

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Writes all of `s` to fd; false with errno set on failure.
bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (w == 0) {
      errno = EIO;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

// ---- MetricsLog --------------------------------------------------------------------------------

MetricsLog::MetricsLog(std::string path) : path_(std::move(path)) {
  // O_RDWR rather than O_WRONLY only to read the last byte below.
  fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd_ < 0) {
    const int err = errno;
    fail(path_, std::string("cannot open the metrics log for appending: ") + std::strerror(err) +
                    (err == ENOENT ? " (does the folder exist?)" : ""));
  }
  // A file that a crash left without its final '\n' (a torn record): the first record starts on
  // a fresh line so it stays whole. The fragment is left for truncate_after_step() to judge.
  struct stat st {};
  if (::fstat(fd_, &st) == 0 && st.st_size > 0) {
    char last = '\n';
    if (::pread(fd_, &last, 1, st.st_size - 1) == 1 && last != '\n') newline_first_ = true;
  }
}

MetricsLog::MetricsLog(MetricsLog&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), newline_first_(other.newline_first_) {}

MetricsLog& MetricsLog::operator=(MetricsLog&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    newline_first_ = other.newline_first_;
  }
  return *this;
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::log(const ojson& record) {
  if (fd_ < 0) fail(path_, "the metrics log was moved from; log to the object it was moved to");
  if (!record.is_object()) {
    fail(path_, std::string("a metrics record must be a JSON object, got a JSON ") + record.type_name());
  }
  std::string line;
  try {
    const auto step = record.find("step");
    if (step != record.end() && !step->is_number_integer()) {
      fail(path_, "a metrics record's \"step\" must be an integer, got " + step->dump());
    }
    if (step == record.end() || step == record.begin()) {
      line = record.dump();
    } else {
      ojson ordered = ojson::object();
      ordered["step"] = *step;
      for (const auto& [k, v] : record.items()) {
        if (k != "step") ordered[k] = v;
      }
      line = ordered.dump();
    }
  } catch (const ojson::exception& e) {
    fail(path_, std::string("cannot encode a metrics record as JSON (") + e.what() + "); strings must be valid UTF-8");
  }
  line += '\n';
  if (newline_first_) line.insert(line.begin(), '\n');
  // NOTE: one write(2) per line on an O_APPEND descriptor: the kernel appends it as a unit, so a
  // killed process never leaves half a record.
  if (!write_all(fd_, line.data(), line.size())) {
    const int err = errno;
    fail(path_, std::string("cannot append a metrics record: ") + std::strerror(err));
  }
  newline_first_ = false;
}

// ---- truncate_after_step ---------------------------------------------------------------------

int64_t truncate_after_step(const std::string& path, int64_t step) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    if (ec) fail(path, "cannot access the metrics log: " + ec.message());
    return 0;
  }
  std::string text;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, std::string("cannot open the metrics log for reading: ") + std::strerror(errno));
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) fail(path, "cannot read the metrics log");
  }
  std::string kept;
  kept.reserve(text.size());
  int64_t dropped = 0;
  bool changed = false;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    ++line_no;
    const size_t nl = text.find('\n', pos);
    const bool terminated = nl != std::string::npos;
    const size_t end = terminated ? nl : text.size();
    const std::string_view line(text.data() + pos, end - pos);
    pos = terminated ? nl + 1 : text.size();
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) {  // blank: not a record, kept
      kept.append(line);
      kept += '\n';
      changed = changed || !terminated;
      continue;
    }
    const ojson j = ojson::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      if (!terminated) {  // the torn last line of a crash
        ++dropped;
        changed = true;
        continue;
      }
      fail(path, "line " + std::to_string(line_no) + " is not a JSON object; a metrics log holds one JSON object "
                 "per line. Fix or remove that line, then resume again");
    }
    const auto s = j.find("step");
    if (s != j.end()) {
      if (!s->is_number_integer()) {
        fail(path, "line " + std::to_string(line_no) + ": \"step\" is " + s->dump() + ", expected an integer");
      }
      bool after;
      if (s->is_number_unsigned()) {
        const uint64_t u = s->get<uint64_t>();
        after = u > static_cast<uint64_t>(INT64_MAX) || static_cast<int64_t>(u) > step;
      } else {
        after = s->get<int64_t>() > step;
      }
      if (after) {
        ++dropped;
        changed = true;
        continue;
      }
    }
    kept.append(line);
    kept += '\n';
    changed = changed || !terminated;  // a whole record that only lacked its '\n' gets one
  }
  if (changed) {
    io::write_file_atomic(path, std::span(reinterpret_cast<const uint8_t*>(kept.data()), kept.size()));
  }
  return dropped;
}

// ---- ProgressBar -------------------------------------------------------------------------------

namespace {

constexpr int kBarWidth = 30;
constexpr double kRedrawInterval = 0.1;  // seconds between terminal redraws

std::string eta_text(double s) {
  if (!(s >= 0) || !std::isfinite(s)) return "--:--";
  const auto t = static_cast<int64_t>(std::llround(s));
  char buf[48];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  }
  return buf;
}

std::string rate_text(double v) {
  char buf[48];
  if (v >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.1fG", v / 1e9);
  } else if (v >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  } else if (v >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  }
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(std::FILE* out, Style style, double interval_s)
    : out_(out), interval_s_(interval_s) {
  redraw_ = style == Style::redraw || (style == Style::detect && out != nullptr && ::isatty(::fileno(out)) == 1);
}

std::string ProgressBar::format_line(int64_t step, int64_t total, double loss, double tokens_per_s, double eta_s) {
  std::string s;
  char buf[96];
  if (total > 0) {
    const int64_t done = std::clamp<int64_t>(step, 0, total);
    const int filled = static_cast<int>(static_cast<double>(done) / static_cast<double>(total) * kBarWidth);
    s += '[';
    s.append(static_cast<size_t>(filled), '=');
    if (filled < kBarWidth) {
      s += '>';
      s.append(static_cast<size_t>(kBarWidth - filled - 1), ' ');
    }
    s += "] ";
    const int pct = static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total));
    std::snprintf(buf, sizeof buf, "%lld/%lld %d%%", static_cast<long long>(step), static_cast<long long>(total), pct);
    s += buf;
  } else {
    std::snprintf(buf, sizeof buf, "step %lld", static_cast<long long>(step));
    s += buf;
  }
  std::snprintf(buf, sizeof buf, " loss %.3f", loss);
  s += buf;
  if (tokens_per_s >= 0) s += " " + rate_text(tokens_per_s) + " tok/s";
  if (total > 0) s += " ETA " + eta_text(eta_s);
  return s;
}

void ProgressBar::emit(const std::string& line) {
  if (out_ == nullptr) return;
  if (redraw_) {
    // Pad with spaces over the rest of a longer previous line (no terminal escape codes).
    std::string text = "\r" + line;
    if (line.size() < last_len_) text.append(last_len_ - line.size(), ' ');
    std::fputs(text.c_str(), out_);
  } else {
    std::fputs((line + "\n").c_str(), out_);
  }
  std::fflush(out_);
  last_len_ = line.size();
  pending_ = false;
}

void ProgressBar::update(int64_t step, int64_t total, double loss, double tokens_per_s) {
  if (finished_) return;
  const double t = now_s();
  if (!started_) {
    started_ = true;
    first_step_ = step;
    t0_ = t;
  }
  double eta = -1;
  if (total > 0 && step > first_step_) {
    eta = (t - t0_) / static_cast<double>(step - first_step_) * static_cast<double>(std::max<int64_t>(total - step, 0));
  }
  last_line_ = format_line(step, total, loss, tokens_per_s, eta);
  pending_ = true;

  const bool first = !printed_;
  const int64_t decile =
      total > 0 ? static_cast<int64_t>(10.0 * static_cast<double>(std::clamp<int64_t>(step, 0, total)) / static_cast<double>(total))
                : -1;
  bool show;
  if (redraw_) {
    show = first || t - last_print_ >= kRedrawInterval || (total > 0 && step >= total);
  } else {
    show = first || decile > last_decile_ || t - last_print_ >= interval_s_;
  }
  if (!show) return;
  emit(last_line_);
  printed_ = true;
  last_print_ = t;
  last_decile_ = std::max(last_decile_, decile);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!started_ || out_ == nullptr) return;
  if (pending_) emit(last_line_);
  if (redraw_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

}  // namespace nvfp4::train

// What a training run reports: a JSON-lines metrics file for machines and a progress bar for
// people. docs/model.md ("Checkpoints and metrics") describes the file for users.
//
// ---- the metrics file (JSONL) ------------------------------------------------------------------
//
// One JSON object per line, '\n'-terminated, UTF-8. By convention every record of a training run
// has an integer "step" (the 0-based optimizer step it describes) and is written first in the
// line; the other keys are the caller's ("loss", "lr", "grad_norm", "tokens_per_s", "val_loss",
// ...). Records without "step" (say a header with the run's configuration) are allowed and are
// kept by truncate_after_step().
//
// Crash safety: each record is written with one write(2) of the whole line on a file opened with
// O_APPEND and no user-space buffer, so a killed process leaves only whole lines (the kernel has
// the bytes once write returns). There is no fsync per line: a power loss can drop the last
// records, and at worst leave a torn last line, which truncate_after_step() removes on resume.
// Should a log be opened on a file whose last line is torn (no truncate_after_step() first), its
// first record starts with a '\n' so that it stays a line of its own.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace nvfp4::train {

class MetricsLog {
 public:
  // Opens `path` for appending, creating it (mode 0666 & ~umask) if absent; an existing file is
  // never truncated. Throws nvfp4::Error naming the path if it cannot be opened.
  explicit MetricsLog(std::string path);
  MetricsLog(MetricsLog&& other) noexcept;
  MetricsLog& operator=(MetricsLog&& other) noexcept;
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  ~MetricsLog();

  // Appends `record` (a JSON object; "step", when present, is moved to the front) as one line.
  // Include <nlohmann/json.hpp> to call it: log({{"step", 10}, {"loss", 3.41}}). A plain
  // nlohmann::json converts implicitly. Throws nvfp4::Error naming the file for a record that is
  // not an object, a "step" that is not an integer, a string that is not valid UTF-8, or a write
  // failure (the file then holds no part of this record, unless the disk filled mid-line).
  void log(const nlohmann::ordered_json& record);

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool newline_first_ = false;  // the file ended in a torn line: start the next record with '\n'
};

// Resume support: rewrites the metrics file at `path` keeping exactly the lines whose "step" is
// <= `step` and the lines without a "step", byte for byte and in order, so records of steps after
// the checkpoint (written before a crash) are not duplicated when those steps run again. A last
// line without its '\n' that does not parse (torn by a crash) is dropped too. The rewrite is
// atomic (temp + fsync + rename); a missing file is left missing. Returns how many lines were
// dropped (0: the file was not rewritten). Throws nvfp4::Error naming the file and the 1-based
// line number for any other line that is not a JSON object or whose "step" is not an integer;
// the file is then left unchanged.
int64_t truncate_after_step(const std::string& path, int64_t step);

// A one-line progress display for long work:
//   [=========>                    ] 120/1000 12% loss 3.412 41.2k tok/s ETA 02:13
// On a terminal (isatty) the line is redrawn in place with '\r', at most every 0.1 s. Anywhere
// else (a pipe, a file, a CI log) it prints plain lines: the first update, each time progress
// enters a new 10 % decile, and otherwise at most every `interval_s` seconds; finish() prints the
// final state if it was not the last line printed. A 10 000-step run thus logs about 11 lines.
// The ETA is (total - step) times the mean wall time per step since the first update.
class ProgressBar {
 public:
  enum class Style { detect, redraw, lines };  // detect: redraw if isatty(fileno(out)), else lines

  explicit ProgressBar(std::FILE* out = stderr, Style style = Style::detect, double interval_s = 60.0);
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // `step` is the number of steps completed (after 0-based step s finishes, pass s + 1), `total`
  // the number there will be (<= 0: unknown, no bar, percentage or ETA). A NaN loss prints "nan"
  // and tokens_per_s < 0 leaves the throughput out.
  void update(int64_t step, int64_t total, double loss, double tokens_per_s);
  // Draws the last state if not yet shown and ends the line (redraw style). Idempotent; the bar
  // is not used afterwards.
  void finish();

  bool redraws() const { return redraw_; }

  // The text of one line without '\r' or '\n' (eta_s < 0: "ETA --:--"), for tests and logs.
  static std::string format_line(int64_t step, int64_t total, double loss, double tokens_per_s, double eta_s);

 private:
  void emit(const std::string& line);
  std::FILE* out_;
  bool redraw_;
  double interval_s_;
  bool started_ = false, finished_ = false, pending_ = false, printed_ = false;
  int64_t first_step_ = 0, last_decile_ = -1;
  double t0_ = 0, last_print_ = 0;
  size_t last_len_ = 0;
  std::string last_line_;  // the latest update's text, printed or not
};

}  // namespace nvfp4::train

// Word counting for the BPE trainer: input files streamed in chunks (detail::InputStream, plain
// or gzip), each chunk pre-tokenized exactly as encoding pre-tokenizes (the Split pre-tokenizer
// of pipeline.hpp with kBpeSplitPattern, after the special tokens are cut out), words counted in
// one hash map per thread, the maps summed at the end.
//
// NOTE: why a chunk may end after "\n" + a printable ASCII character X: no alternative of the
// pattern can cross it. Only [\r\n]*, [\r\n]+, \s* and \s+ match a newline, and none of them can
// continue with X (not white space, not \r or \n); the optional first character of
// [^\r\n\p{L}\p{N}]?\p{L}+ excludes \n. So the match holding the "\n" ends right after it, it
// was found without looking at X (no alternative that could look past the newline and fail
// comes before the one that matches), and the pattern has no look-behind, so matching from X
// on is the same at the start of a new chunk. UTF-8 repair is local to non-ASCII bytes.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <sys/stat.h>
#include <thread>

#include "io/input_stream.hpp"
#include "io/tokenizer/pipeline.hpp"
#include "io/tokenizer/train.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace nvfp4::io::hf {

namespace {

constexpr size_t kReadBytes = size_t{4} << 20;   // a chunk is at least this (or the rest of a file)
constexpr size_t kMaxChunk = size_t{64} << 20;   // ... and cut blindly (at a character) past this
constexpr size_t kQueueChunks = 4;               // chunks read ahead of the counting threads

// One thread's counts.
class Counter {
 public:
  Counter(const PreTokenizer& split, const TokenMatcher& specials) : split_(split), specials_(specials) {}

  void add(std::string_view raw) {
    const std::string text = utf8_replace_invalid(raw);
    out_.text_bytes += raw.size();
    auto count = [this](std::string_view w, bool) {
      ++out_.counts.find_or_insert(w, 0);
      ++out_.words;
    };
    if (specials_.empty()) {
      if (!text.empty()) split_.each(text, true, count);
      return;
    }
    matches_.clear();
    specials_.find(text, matches_);
    size_t at = 0;
    for (const auto& m : matches_) {
      if (m[0] > at) split_.each(std::string_view(text).substr(at, m[0] - at), at == 0, count);
      at = m[1];
      ++out_.special_matches;
    }
    if (at < text.size()) split_.each(std::string_view(text).substr(at), at == 0, count);
  }
  WordCounts& result() { return out_; }

 private:
  const PreTokenizer& split_;
  const TokenMatcher& specials_;
  std::vector<std::array<size_t, 3>> matches_;
  WordCounts out_;
};

// Chunks handed from the reading thread to the counting threads.
class ChunkQueue {
 public:
  void push(std::string chunk) {
    std::unique_lock lock(m_);
    not_full_.wait(lock, [&] { return q_.size() < kQueueChunks || failed_; });
    if (failed_) return;
    q_.push_back(std::move(chunk));
    not_empty_.notify_one();
  }
  bool pop(std::string& chunk) {
    std::unique_lock lock(m_);
    not_empty_.wait(lock, [&] { return !q_.empty() || closed_ || failed_; });
    if (q_.empty() || failed_) return false;
    chunk = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return true;
  }
  void close() {
    std::lock_guard lock(m_);
    closed_ = true;
    not_empty_.notify_all();
  }
  void fail(std::exception_ptr e) {
    std::lock_guard lock(m_);
    if (!error_) error_ = e;
    failed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }
  std::exception_ptr error() {
    std::lock_guard lock(m_);
    return error_;
  }

 private:
  std::mutex m_;
  std::condition_variable not_full_, not_empty_;
  std::deque<std::string> q_;
  bool closed_ = false, failed_ = false;
  std::exception_ptr error_;
};

// Runs `produce(emit)` on this thread and counts every emitted chunk on `threads` workers (on
// this thread when threads == 1).
template <typename Produce>
WordCounts count_chunks(const std::vector<std::string>& specials, int threads, Produce&& produce) {
  const auto split = make_split(std::string(kBpeSplitPattern), true, SplitBehavior::isolated, false,
                                "the trainer's split pattern");
  TokenMatcher matcher;
  for (size_t i = 0; i < specials.size(); ++i) matcher.add(specials[i], static_cast<int32_t>(i));
  const int n = std::max(1, threads);
  std::vector<std::unique_ptr<Counter>> counters;
  for (int i = 0; i < n; ++i) counters.push_back(std::make_unique<Counter>(*split, matcher));
  std::atomic<uint64_t> distinct{0};

  if (n == 1) {
    produce([&](std::string chunk) {
      counters[0]->add(chunk);
      distinct.store(counters[0]->result().counts.size());
    }, distinct);
  } else {
    ChunkQueue queue;
    std::vector<std::thread> workers;
    for (int i = 0; i < n; ++i) {
      workers.emplace_back([&, i] {
        try {
          std::string chunk;
          while (queue.pop(chunk)) {
            Counter& c = *counters[static_cast<size_t>(i)];
            const uint64_t before = c.result().counts.size();
            c.add(chunk);
            distinct.fetch_add(c.result().counts.size() - before);
          }
        } catch (...) {
          queue.fail(std::current_exception());
        }
      });
    }
    try {
      produce([&](std::string chunk) {
        if (queue.error()) std::rethrow_exception(queue.error());
        queue.push(std::move(chunk));
      }, distinct);
      queue.close();
    } catch (...) {
      queue.fail(std::current_exception());
    }
    for (auto& w : workers) w.join();
    if (auto e = queue.error()) std::rethrow_exception(e);
  }

  // Sum the threads' maps into the first one.
  WordCounts out = std::move(counters[0]->result());
  for (size_t i = 1; i < counters.size(); ++i) {
    WordCounts& o = counters[i]->result();
    o.counts.for_each([&](std::string_view w, uint64_t c) { out.counts.find_or_insert(w, 0) += c; });
    out.text_bytes += o.text_bytes;
    out.words += o.words;
    out.special_matches += o.special_matches;
    o.counts.clear();
  }
  return out;
}

bool straddles_special(std::string_view buf, size_t cut, const std::vector<std::string>& specials) {
  for (const auto& s : specials) {
    if (s.size() < 2) continue;
    const size_t from = cut >= s.size() - 1 ? cut - (s.size() - 1) : 0;
    for (size_t p = buf.find(s, from); p != std::string_view::npos && p < cut; p = buf.find(s, p + 1)) {
      if (p + s.size() > cut) return true;
    }
  }
  return false;
}

// A cut at a character boundary at most 3 bytes before `at` (a chunk with no safe cut).
size_t char_boundary(std::string_view buf, size_t at) {
  for (size_t k = 0; k < 4 && at > k; ++k) {
    if ((static_cast<uint8_t>(buf[at - k]) & 0xC0) != 0x80) return at - k;
  }
  return at;
}

}  // namespace

size_t safe_cut(std::string_view buf, const std::vector<std::string>& specials) {
  if (buf.size() < 2) return 0;
  size_t nl = buf.rfind('\n', buf.size() - 2);
  while (nl != std::string_view::npos) {
    const auto next = static_cast<uint8_t>(buf[nl + 1]);
    if (next >= 0x21 && next <= 0x7E && !straddles_special(buf, nl + 1, specials)) return nl + 1;
    if (nl == 0) break;
    nl = buf.rfind('\n', nl - 1);
  }
  return 0;
}

WordCounts count_words_in_files(const std::vector<std::string>& files, const std::vector<std::string>& specials,
                                int threads, const WordProgress& progress) {
  uint64_t total = 0;
  for (const auto& f : files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_size);
  }
  WordCounts out = count_chunks(specials, threads, [&](auto&& emit, const std::atomic<uint64_t>& distinct) {
    uint64_t done = 0;
    for (const auto& path : files) {
      detail::InputStream in(path);
      std::string buf;
      bool end = false;
      size_t want = kReadBytes;  // bytes to hold before looking for a cut
      for (;;) {
        while (!end && buf.size() < want) {
          const size_t old = buf.size();
          buf.resize(old + kReadBytes);
          const size_t got = in.read(buf.data() + old, kReadBytes);
          buf.resize(old + got);
          end = got == 0;
        }
        if (buf.empty()) break;
        size_t cut = end ? buf.size() : safe_cut(buf, specials);
        if (cut == 0) {
          if (buf.size() < kMaxChunk) {  // no safe place yet: read on and look again
            want = buf.size() + kReadBytes;
            continue;
          }
          cut = char_boundary(buf, buf.size() - 1);
        }
        emit(buf.substr(0, cut));
        buf.erase(0, cut);
        want = kReadBytes;
        if (progress) {
          BpeTrainProgress p;
          p.phase = BpeTrainProgress::Phase::words;
          p.done = done + in.consumed();
          p.total = std::max(total, p.done);
          p.distinct_words = distinct.load();
          progress(p);
        }
      }
      done += in.consumed();
    }
  });
  out.input_files = files.size();
  return out;
}

WordCounts count_words_in_texts(const std::vector<std::string>& texts, const std::vector<std::string>& specials,
                                int threads, const WordProgress& progress) {
  uint64_t total = 0;
  for (const auto& t : texts) total += t.size();
  WordCounts out = count_chunks(specials, threads, [&](auto&& emit, const std::atomic<uint64_t>& distinct) {
    uint64_t done = 0;
    for (const auto& t : texts) {
      emit(t);
      done += t.size();
      if (progress) {
        BpeTrainProgress p;
        p.phase = BpeTrainProgress::Phase::words;
        p.done = done;
        p.total = total;
        p.distinct_words = distinct.load();
        progress(p);
      }
    }
  });
  out.input_files = texts.size();
  return out;
}

}  // namespace nvfp4::io::hf

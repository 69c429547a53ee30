// The BPE model of the Hugging Face pipeline: a word becomes its symbols (characters, or bytes of
// byte-level text), then the lowest-ranked merge among adjacent pairs is applied, leftmost first
// on equal ranks, until none applies — the reference's algorithm (a heap of (rank, position)
// with stale entries skipped picks exactly that pair every step). Words seen before come from a
// per-thread cache the model owns.
#include <algorithm>
#include <atomic>
#include <mutex>
#include <queue>
#include <thread>
#include <unordered_map>

#include "io/tokenizer/pipeline.hpp"
#include "io/tokenizer/unicode.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::io::hf {

namespace {

std::atomic<uint64_t> g_serial{1};

// Words longer than this are not cached (the reference's limit too).
constexpr size_t kMaxCachedWord = 256;
constexpr size_t kMaxCacheEntries = 1 << 18;

}  // namespace

struct Bpe::Cache {
  StringMap<uint64_t> index;  // word -> (offset into ids) << 16 | count
  std::vector<int32_t> ids;
};

struct Bpe::Caches {
  std::mutex mutex;
  std::unordered_map<std::thread::id, std::unique_ptr<Cache>> by_thread;  // a thread's cache
};

Bpe::Bpe(std::vector<std::pair<std::string, int32_t>> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
         BpeOptions options, const std::string& where)
    : caches_(std::make_unique<Caches>()), opt_(std::move(options)), where_(where), serial_(g_serial.fetch_add(1)) {
  for (auto& [tok, id] : vocab) {
    if (id < 0) throw Error(where + ": model.vocab: token id " + std::to_string(id) + " is negative");
    vocab_.set(tok, id);
    max_id_ = std::max(max_id_, id);
  }
  tokens_.reserve(vocab.size());
  // The reference keeps one token per id (its reverse map): the last one written wins there too.
  vocab_.for_each([&](std::string_view tok, int32_t id) {
    if (*vocab_.find(tok) != id) return;  // overwritten by a later duplicate key
    id_to_token_.set(id, static_cast<uint32_t>(tokens_.size()));
    tokens_.emplace_back(tok);
  });
  const size_t prefix_len = opt_.continuing_subword_prefix ? opt_.continuing_subword_prefix->size() : 0;
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    const std::string at = where + ": model.merges[" + std::to_string(r) + "]: ";
    const int32_t* ia = vocab_.find(a);
    const int32_t* ib = vocab_.find(b);
    if (!ia) throw Error(at + "token '" + a + "' is not in the vocabulary");
    if (!ib) throw Error(at + "token '" + b + "' is not in the vocabulary");
    if (b.size() < prefix_len) throw Error(at + "token '" + b + "' is shorter than continuing_subword_prefix");
    const std::string joined = a + b.substr(prefix_len);
    const int32_t* in = vocab_.find(joined);
    if (!in) throw Error(at + "the merged token '" + joined + "' is not in the vocabulary");
    merges_.set(static_cast<uint32_t>(*ia), static_cast<uint32_t>(*ib), (uint64_t(r) << 32) | uint32_t(*in));
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    const int32_t* id = vocab_.find(name);
    fallback_[b] = id ? *id : -1;
  }
  byte_unit_.fill(-1);
}

Bpe::~Bpe() = default;

void Bpe::set_byte_level_input() {
  if (opt_.continuing_subword_prefix || opt_.end_of_word_suffix) {
    throw Error(where_ + ": a byte-level model with continuing_subword_prefix or end_of_word_suffix is not supported");
  }
  byte_input_ = true;
  const auto& chars = byte_level_chars();
  for (int b = 0; b < 256; ++b) {
    const int32_t* id = vocab_.find(chars[b]);
    byte_unit_[b] = id ? *id : -1;
  }
  vocab_.for_each([&](std::string_view tok, int32_t id) {
    if (auto raw = byte_level_decode(tok)) raw_vocab_.set(*raw, id);
  });
}

std::optional<int32_t> Bpe::token_to_id(std::string_view token) const {
  const int32_t* id = vocab_.find(token);
  return id ? std::optional<int32_t>(*id) : std::nullopt;
}

const std::string* Bpe::id_to_token(int32_t id) const {
  const uint32_t* k = id_to_token_.find(id);
  return k ? &tokens_[*k] : nullptr;
}

Bpe::Cache& Bpe::cache() const {
  // The cache of the model this thread used last, remembered by the model's serial number (never
  // reused, so a destroyed model's is never matched again): no lock while one model is in use.
  thread_local uint64_t last_serial = 0;
  thread_local Cache* last = nullptr;
  if (last_serial == serial_) return *last;
  const std::lock_guard<std::mutex> lock(caches_->mutex);
  auto& c = caches_->by_thread[std::this_thread::get_id()];
  if (!c) c = std::make_unique<Cache>();
  last_serial = serial_;
  last = c.get();
  return *c;
}

// The symbols of `word`, as the reference makes them: each character (with the continuing
// prefix / end-of-word suffix where configured) looked up; a missing one becomes its <0xXX>
// bytes (byte_fallback, when all exist) or the unknown token (fused when fuse_unk).
void Bpe::initial_symbols(std::string_view word, std::vector<int32_t>& ids, std::vector<uint32_t>& lens) const {
  int32_t unk_id = -1;
  uint32_t unk_len = 0;
  auto flush_unk = [&] {
    if (unk_id >= 0) {
      ids.push_back(unk_id);
      lens.push_back(unk_len);
      unk_id = -1;
    }
  };
  const auto& chars = byte_level_chars();
  std::string unit;
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    int32_t id = -1;
    std::string_view key;
    if (byte_input_) {
      id = byte_unit_[static_cast<uint8_t>(word[i])];
      key = chars[static_cast<uint8_t>(word[i])];
      ++i;
    } else {
      i += cp_len(static_cast<uint8_t>(word[i]));
      key = word.substr(start, i - start);
      if (opt_.continuing_subword_prefix || opt_.end_of_word_suffix) {
        unit.clear();
        if (start > 0 && opt_.continuing_subword_prefix) unit += *opt_.continuing_subword_prefix;
        unit.append(key);
        if (i == word.size() && opt_.end_of_word_suffix) unit += *opt_.end_of_word_suffix;
        key = unit;
      }
      const int32_t* p = vocab_.find(key);
      id = p ? *p : -1;
    }
    const auto byte_len = static_cast<uint32_t>(i - start);
    if (id >= 0) {
      flush_unk();
      ids.push_back(id);
      lens.push_back(byte_len);
      continue;
    }
    if (opt_.byte_fallback) {
      bool all = true;
      for (char c : key) all &= fallback_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        // NOTE: the reference adds the fallback bytes without flushing a pending unknown token
        // first, so the unknown token lands after them.
        for (char c : key) {
          ids.push_back(fallback_[static_cast<uint8_t>(c)]);
          lens.push_back(1);
        }
        continue;
      }
    }
    if (opt_.unk_token) {
      const int32_t* u = vocab_.find(*opt_.unk_token);
      if (!u) throw Error(where_ + ": model.unk_token '" + *opt_.unk_token + "' is not in the vocabulary");
      if (unk_id >= 0 && opt_.fuse_unk) {
        unk_len += byte_len;
      } else {
        flush_unk();
        unk_id = *u;
        unk_len = byte_len;
      }
    }
    // Without an unknown token the character is dropped, as the reference does.
  }
  flush_unk();
}

void Bpe::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  thread_local std::vector<int32_t> ids;
  thread_local std::vector<uint32_t> lens;
  ids.clear();
  lens.clear();
  initial_symbols(word, ids, lens);
  const size_t n = ids.size();
  if (n < 2) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  // Doubly linked symbols; merged-away ones are skipped through `next`.
  thread_local std::vector<int32_t> next, prev;
  next.resize(n);
  prev.resize(n);
  for (size_t k = 0; k < n; ++k) {
    next[k] = k + 1 < n ? static_cast<int32_t>(k + 1) : -1;
    prev[k] = static_cast<int32_t>(k) - 1;
  }
  auto rank_at = [&](int32_t pos, uint32_t& new_id) -> uint64_t {
    const int32_t nx = next[static_cast<size_t>(pos)];
    if (nx < 0) return ~uint64_t{0};
    const uint64_t* m = merges_.find(static_cast<uint32_t>(ids[static_cast<size_t>(pos)]),
                                     static_cast<uint32_t>(ids[static_cast<size_t>(nx)]));
    if (!m) return ~uint64_t{0};
    new_id = static_cast<uint32_t>(*m);
    return *m >> 32;
  };
  auto merge_at = [&](int32_t pos, uint32_t new_id) {
    const auto p = static_cast<size_t>(pos);
    const auto r = static_cast<size_t>(next[p]);
    ids[p] = static_cast<int32_t>(new_id);
    next[p] = next[r];
    if (next[r] >= 0) prev[static_cast<size_t>(next[r])] = pos;
  };
  if (n <= 48) {
    // Short words: scan the pairs for the lowest rank (leftmost on ties) every step.
    for (;;) {
      uint64_t best = ~uint64_t{0};
      int32_t best_pos = -1;
      uint32_t best_id = 0;
      for (int32_t pos = 0; pos >= 0; pos = next[static_cast<size_t>(pos)]) {
        uint32_t nid = 0;
        const uint64_t r = rank_at(pos, nid);
        if (r < best) {
          best = r;
          best_pos = pos;
          best_id = nid;
        }
      }
      if (best_pos < 0) break;
      merge_at(best_pos, best_id);
    }
  } else {
    // Long words: a min-heap of (rank, position); an entry whose pair changed is stale.
    using Entry = std::pair<uint64_t, int32_t>;
    std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
    std::vector<char> alive(n, 1);
    for (int32_t pos = 0; pos >= 0; pos = next[static_cast<size_t>(pos)]) {
      uint32_t nid = 0;
      const uint64_t r = rank_at(pos, nid);
      if (r != ~uint64_t{0}) heap.push({r, pos});
    }
    while (!heap.empty()) {
      const auto [r, pos] = heap.top();
      heap.pop();
      if (!alive[static_cast<size_t>(pos)]) continue;
      uint32_t nid = 0;
      if (rank_at(pos, nid) != r) continue;  // stale: the pair at pos is another one now
      alive[static_cast<size_t>(next[static_cast<size_t>(pos)])] = 0;
      merge_at(pos, nid);
      const int32_t pv = prev[static_cast<size_t>(pos)];
      if (pv >= 0) {
        const uint64_t rp = rank_at(pv, nid);
        if (rp != ~uint64_t{0}) heap.push({rp, pv});
      }
      const uint64_t rn = rank_at(pos, nid);
      if (rn != ~uint64_t{0}) heap.push({rn, pos});
    }
  }
  for (int32_t pos = 0; pos >= 0; pos = next[static_cast<size_t>(pos)]) out.push_back(ids[static_cast<size_t>(pos)]);
}

void Bpe::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (opt_.ignore_merges) {
    const int32_t* id = byte_input_ ? raw_vocab_.find(word) : vocab_.find(word);
    if (id) {
      out.push_back(*id);
      return;
    }
  }
  if (word.size() >= kMaxCachedWord) {
    merge_word(word, out);
    return;
  }
  Cache& c = cache();
  if (const uint64_t* hit = c.index.find(word)) {
    const size_t off = *hit >> 16, cnt = *hit & 0xFFFF;
    out.insert(out.end(), c.ids.begin() + static_cast<std::ptrdiff_t>(off),
               c.ids.begin() + static_cast<std::ptrdiff_t>(off + cnt));
    return;
  }
  const size_t before = out.size();
  merge_word(word, out);
  if (c.index.size() < kMaxCacheEntries) {
    const size_t off = c.ids.size();
    c.ids.insert(c.ids.end(), out.begin() + static_cast<std::ptrdiff_t>(before), out.end());
    c.index.set(word, (uint64_t(off) << 16) | (out.size() - before));
  }
}

}  // namespace nvfp4::io::hf

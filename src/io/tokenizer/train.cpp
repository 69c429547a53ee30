// The BPE trainer's merges (nvfp4/bpe_trainer.hpp): from the word counts (train_words.cpp) to a
// tokenizer.json.
//
// The algorithm is incremental, never a rescan of all words per merge:
//   - words: every distinct word of two bytes or more, as symbol ids in one flat array, with its
//     count;
//   - pairs: (left id, right id) -> total count over all words, and the words that held the pair
//     when it appeared (a word may have lost it since: it is skipped then);
//   - a max-heap of (count, pair) ordered by count, then by the smaller (left, right) ids, with
//     lazy invalidation: an entry whose count is stale is pushed again with the current count
//     when popped; a pair whose count grows gets a new entry at once, so the top entry whose
//     count is current is the best pair.
// Merging a pair touches only the words that hold it; the counts of the neighbouring pairs change
// by the word's count (HF's Word::merge bookkeeping: (prev, A) and (B, next) lose, (prev, AB)
// and (AB, next) gain).
//
// NOTE: every word stays segmented exactly as encoding with the merges so far would segment it
// (lowest rank first, leftmost on ties): the new pairs a merge makes all hold its new id, which
// no earlier merge has, so merging the pair everywhere is encoding's next step. Hence the file's
// ignore_merges = false: encoding gives every training word the trainer's segmentation (a test
// checks it word by word). It also means a merge never makes a token that exists already: a
// token's span never took part in a merge crossing its edges, so the merges inside it come in
// the same order in any word as in the token alone, and the token is always made by the same
// last pair. (The reference trainer handles such a repeat for its subword-prefix options, which
// byte-level BPE does not have.) A repeat would be a bug here, reported as an internal error.
#include <algorithm>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "io/tokenizer/pipeline.hpp"
#include "io/tokenizer/train.hpp"
#include "io/tokenizer/unicode.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"
#include "nvfp4/token_shards.hpp"

namespace nvfp4::io {

namespace {

using hf::PairMap;
using hf::StringMap;
constexpr uint32_t kNone = ~uint32_t{0};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string byte_level(std::string_view raw) {
  const auto& chars = hf::byte_level_chars();
  std::string out;
  for (char c : raw) out += chars[static_cast<uint8_t>(c)];
  return out;
}

// The 256 byte tokens' ids: bytes ordered by the code point of their byte-level character.
std::array<uint32_t, 256> byte_ids() {
  std::array<uint8_t, 256> order{};
  for (int b = 0; b < 256; ++b) order[static_cast<size_t>(b)] = static_cast<uint8_t>(b);
  const auto& chars = hf::byte_level_chars();
  std::sort(order.begin(), order.end(),
            [&](uint8_t x, uint8_t y) { return hf::first_cp(chars[x]) < hf::first_cp(chars[y]); });
  std::array<uint32_t, 256> id{};
  for (uint32_t i = 0; i < 256; ++i) id[order[i]] = i;
  return id;
}

void check_options(const BpeTrainOptions& o) {
  const auto n_special = static_cast<int64_t>(o.special_tokens.size());
  if (o.vocab_size < 256 + n_special || o.vocab_size > kBpeMaxVocab) {
    throw Error("--vocab " + std::to_string(o.vocab_size) + " is outside [" + std::to_string(256 + n_special) + ", " +
                std::to_string(kBpeMaxVocab) + "]: the vocabulary holds the 256 byte tokens" +
                (n_special ? " and the " + std::to_string(n_special) + " special token" + (n_special == 1 ? "" : "s")
                           : std::string()) +
                ", then the merges");
  }
  if (o.min_frequency < 1) throw Error("--min-frequency must be >= 1, not 0");
  const auto& chars = hf::byte_level_chars();
  for (size_t i = 0; i < o.special_tokens.size(); ++i) {
    const std::string& s = o.special_tokens[i];
    if (s.empty()) throw Error("--special: a special token is empty");
    if (utf8_replace_invalid(s) != s) throw Error("--special '" + utf8_replace_invalid(s) + "' is not valid UTF-8");
    if (std::find(chars.begin(), chars.end(), s) != chars.end()) {
      throw Error("--special '" + s + "' is one of the 256 byte-level tokens; a special token must be another string");
    }
    for (size_t j = 0; j < i; ++j) {
      if (o.special_tokens[j] == s) throw Error("--special '" + s + "' is given twice");
    }
  }
}

struct HeapEntry {
  uint64_t count;
  uint64_t key;  // left id << 32 | right id
  uint32_t pair;
};
// std::*_heap keep the greatest on top: the highest count, then the smallest (left, right).
struct HeapLess {
  bool operator()(const HeapEntry& x, const HeapEntry& y) const {
    return x.count != y.count ? x.count < y.count : x.key > y.key;
  }
};

class Merger {
 public:
  Merger(hf::WordCounts& wc, const BpeTrainOptions& o) : o_(o) {
    const auto ids = byte_ids();
    tokens_.resize(256);
    for (int b = 0; b < 256; ++b) tokens_[ids[static_cast<size_t>(b)]] = std::string(1, static_cast<char>(b));
    for (uint32_t i = 0; i < 256; ++i) token_ids_.set(tokens_[i], static_cast<int32_t>(i));
    for (const auto& s : o.special_tokens) specials_.set(s, 1);
    // Words of one byte have no pair: counted in the stats, left out here.
    wc.counts.for_each([&](std::string_view w, uint64_t c) {
      if (w.size() < 2) return;
      off_.push_back(syms_.size());
      len_.push_back(static_cast<uint32_t>(w.size()));
      count_.push_back(static_cast<int64_t>(c));
      for (char ch : w) syms_.push_back(ids[static_cast<uint8_t>(ch)]);
    });
    wc.counts.clear();
    wstamp_.assign(len_.size(), 0);
    step_ = 1;
    for (uint32_t w = 0; w < len_.size(); ++w) {
      const uint32_t* s = &syms_[off_[w]];
      for (uint32_t i = 0; i + 1 < len_[w]; ++i) add(s[i], s[i + 1], count_[w], w);
    }
    for (uint32_t p = 0; p < pairs_.size(); ++p) {
      if (pairs_[p].count > 0) heap_.push_back(entry(p));
    }
    std::make_heap(heap_.begin(), heap_.end(), HeapLess{});
  }

  // Merges until the vocabulary (specials included) reaches vocab_size or no pair occurs
  // min_frequency times.
  void run(BpeTrainStats& st) {
    const auto target = static_cast<size_t>(o_.vocab_size) - o_.special_tokens.size();
    while (tokens_.size() < target) {
      const std::optional<uint32_t> best = pop_best();
      if (!best) break;
      const uint64_t count = static_cast<uint64_t>(pairs_[*best].count);
      if (count < o_.min_frequency) break;
      const uint32_t a = pairs_[*best].a, b = pairs_[*best].b;
      const std::string joined = tokens_[a] + tokens_[b];
      if (specials_.find(byte_level(joined))) {
        // The token would be spelled like a special token: never learn it.
        pairs_[*best].done = true;
        continue;
      }
      if (token_ids_.find(joined)) {
        throw std::logic_error("BPE trainer: merge " + std::to_string(merges_.size()) + " makes the token '" +
                               byte_level(joined) + "' again (see the NOTE in train.cpp)");
      }
      const auto t = static_cast<uint32_t>(tokens_.size());
      tokens_.push_back(joined);
      token_ids_.set(joined, static_cast<int32_t>(t));
      merges_.emplace_back(a, b);
      apply(*best, t);
      st.last_merge_count = count;
      if (o_.progress) {
        BpeTrainProgress p;
        p.phase = BpeTrainProgress::Phase::merges;
        p.done = tokens_.size() + o_.special_tokens.size();
        p.total = static_cast<uint64_t>(o_.vocab_size);
        p.last_count = count;
        o_.progress(p);
      }
    }
    for (uint32_t w = 0; w < len_.size(); ++w) st.tokens += static_cast<uint64_t>(count_[w]) * len_[w];
    st.merges = static_cast<int64_t>(merges_.size());
    st.complete = tokens_.size() == target;
    st.vocab_size = static_cast<int64_t>(tokens_.size() + o_.special_tokens.size());
  }

  // Each word as the ids its segmentation gives (for the tests' check that encoding agrees).
  template <typename F>
  void each_word(F&& f) const {
    for (uint32_t w = 0; w < len_.size(); ++w) f(&syms_[off_[w]], len_[w]);
  }

  std::string tokenizer_json() const;

 private:
  struct PairState {
    uint32_t a = 0, b = 0;
    int64_t count = 0;
    int64_t step_old = 0;   // the count before the current merge touched it
    uint32_t step = 0;      // the merge that last touched it
    bool done = false;      // merged (or refused): never chosen again
    std::vector<uint32_t> words;
  };

  HeapEntry entry(uint32_t p) const {
    return {static_cast<uint64_t>(pairs_[p].count), (uint64_t(pairs_[p].a) << 32) | pairs_[p].b, p};
  }

  void push(uint32_t p) {
    heap_.push_back(entry(p));
    std::push_heap(heap_.begin(), heap_.end(), HeapLess{});
  }

  std::optional<uint32_t> pop_best() {
    while (!heap_.empty()) {
      std::pop_heap(heap_.begin(), heap_.end(), HeapLess{});
      const HeapEntry e = heap_.back();
      heap_.pop_back();
      const PairState& s = pairs_[e.pair];
      if (s.done || s.count <= 0) continue;
      const auto c = static_cast<uint64_t>(s.count);
      if (c == e.count) return e.pair;
      if (c < e.count) push(e.pair);  // stale: back in at its current count
      // c > e.count: the entry pushed when it grew holds it
    }
    return std::nullopt;
  }

  // count(a, b) += delta; a positive delta records that word w holds the pair.
  void add(uint32_t a, uint32_t b, int64_t delta, uint32_t w) {
    uint32_t& slot = index_.find_or_insert(a, b, kNone);
    if (slot == kNone) {
      slot = static_cast<uint32_t>(pairs_.size());
      pairs_.emplace_back();
      pairs_.back().a = a;
      pairs_.back().b = b;
    }
    const uint32_t p = slot;
    PairState& s = pairs_[p];
    if (s.step != step_) {
      s.step = step_;
      s.step_old = s.count;
      touched_.push_back(p);
    }
    s.count += delta;
    if (delta > 0 && (s.words.empty() || s.words.back() != w)) s.words.push_back(w);
  }

  // Merges pair p into token t in every word that holds it.
  void apply(uint32_t p, uint32_t t) {
    ++step_;
    touched_.clear();
    const uint32_t a = pairs_[p].a, b = pairs_[p].b;
    const std::vector<uint32_t> words = std::move(pairs_[p].words);
    pairs_[p].words = {};
    for (const uint32_t w : words) {
      if (wstamp_[w] == step_) continue;
      wstamp_[w] = step_;
      merge_word(w, a, b, t);
    }
    pairs_[p].count = 0;
    pairs_[p].done = true;
    for (const uint32_t q : touched_) {
      const PairState& s = pairs_[q];
      if (!s.done && s.count > s.step_old) push(q);
    }
  }

  // Every (a, b) of word w becomes t, left to right.
  void merge_word(uint32_t w, uint32_t a, uint32_t b, uint32_t t) {
    uint32_t* s = &syms_[off_[w]];
    const uint32_t n = len_[w];
    const int64_t c = count_[w];
    uint32_t j = 0;
    for (uint32_t i = 0; i < n;) {
      if (i + 1 < n && s[i] == a && s[i + 1] == b) {
        // (a, b) itself: its count is zeroed after the merge.
        if (j > 0) {
          add(s[j - 1], a, -c, w);  // s[j - 1] may be t already (a b a b)
          add(s[j - 1], t, c, w);
        }
        if (i + 2 < n) {
          add(b, s[i + 2], -c, w);
          add(t, s[i + 2], c, w);
        }
        s[j++] = t;
        i += 2;
      } else {
        s[j++] = s[i++];
      }
    }
    len_[w] = j;
  }

  const BpeTrainOptions& o_;
  std::vector<std::string> tokens_;  // id -> raw bytes
  StringMap<int32_t> token_ids_;     // raw bytes -> id
  StringMap<int> specials_;          // special token contents
  std::vector<uint32_t> syms_;       // every word's symbols, word after word
  std::vector<uint64_t> off_;        // word -> its first symbol in syms_
  std::vector<uint32_t> len_;        // word -> its symbols now
  std::vector<int64_t> count_;       // word -> occurrences in the text
  std::vector<uint32_t> wstamp_;     // word -> the merge that last visited it
  PairMap<uint32_t> index_;          // (a, b) -> index into pairs_
  std::vector<PairState> pairs_;
  std::vector<uint32_t> touched_;    // pairs the current merge changed
  std::vector<HeapEntry> heap_;
  std::vector<std::pair<uint32_t, uint32_t>> merges_;
  uint32_t step_ = 0;
};

std::string json_string(std::string_view s) { return nlohmann::json(s).dump(); }

std::string Merger::tokenizer_json() const {
  using ojson = nlohmann::ordered_json;
  std::vector<std::string> names(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) names[i] = json_string(byte_level(tokens_[i]));
  std::string j = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [";
  for (size_t i = 0; i < o_.special_tokens.size(); ++i) {
    ojson t = {{"id", tokens_.size() + i}, {"content", o_.special_tokens[i]}, {"single_word", false},
               {"lstrip", false}, {"rstrip", false}, {"normalized", false}, {"special", true}};
    j += (i ? ",\n    " : "\n    ") + t.dump();
  }
  j += o_.special_tokens.empty() ? "],\n" : "\n  ],\n";
  const ojson split = {{"type", "Split"}, {"pattern", {{"Regex", std::string(kBpeSplitPattern)}}},
                       {"behavior", "Isolated"}, {"invert", false}};
  const ojson byte_pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  const ojson pre = {{"type", "Sequence"}, {"pretokenizers", ojson::array({split, byte_pre})}};
  const ojson post = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  const ojson dec = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  j += "  \"normalizer\": null,\n  \"pre_tokenizer\": " + pre.dump() + ",\n  \"post_processor\": " + post.dump() +
       ",\n  \"decoder\": " + dec.dump() + ",\n";
  j += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
       "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
       "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n    \"vocab\": {";
  for (size_t i = 0; i < names.size(); ++i) j += (i ? ",\n      " : "\n      ") + names[i] + ": " + std::to_string(i);
  j += "\n    },\n    \"merges\": [";
  for (size_t r = 0; r < merges_.size(); ++r) {
    j += (r ? ",\n      [" : "\n      [") + names[merges_[r].first] + ", " + names[merges_[r].second] + "]";
  }
  j += merges_.empty() ? "]\n  }\n}\n" : "\n    ]\n  }\n}\n";
  return j;
}

std::string tokenizer_config_json(const BpeTrainOptions& o, const BpeTrainStats& st) {
  nlohmann::ordered_json c;
  c["tokenizer_class"] = "PreTrainedTokenizerFast";
  c["clean_up_tokenization_spaces"] = false;
  if (!o.special_tokens.empty()) c["eos_token"] = o.special_tokens.front();
  nlohmann::ordered_json t;
  if (!o.command.empty()) t["command"] = o.command;
  t["vocab_size"] = o.vocab_size;
  t["min_frequency"] = o.min_frequency;
  t["special_tokens"] = o.special_tokens;
  t["merges"] = st.merges;
  t["complete"] = st.complete;
  t["text_bytes"] = st.text_bytes;
  t["words"] = st.words;
  t["distinct_words"] = st.distinct_words;
  c["nvfp4_training"] = t;
  return c.dump(2) + "\n";
}

using WordIds = std::vector<std::pair<std::string, std::vector<int32_t>>>;

BpeTrainResult finish(hf::WordCounts wc, const BpeTrainOptions& o, double count_seconds, WordIds* words = nullptr) {
  BpeTrainResult r;
  BpeTrainStats& st = r.stats;
  st.input_files = wc.input_files;
  st.text_bytes = wc.text_bytes;
  st.words = wc.words;
  st.distinct_words = wc.counts.size();
  st.special_matches = wc.special_matches;
  st.count_seconds = count_seconds;
  if (wc.words == 0) {
    throw Error(std::string("the inputs hold no text") + (wc.special_matches ? " besides special tokens" : "") + " (" +
                std::to_string(wc.text_bytes) + " bytes in " + std::to_string(wc.input_files) +
                (wc.input_files == 1 ? " file" : " files") + "); nothing to train on");
  }
  // Words of one byte are one token each; special tokens too.
  st.tokens = wc.special_matches;
  wc.counts.for_each([&](std::string_view w, uint64_t c) {
    if (w.size() == 1) st.tokens += c;
    if (words && w.size() >= 2) words->emplace_back(std::string(w), std::vector<int32_t>());
  });
  const auto t0 = std::chrono::steady_clock::now();
  Merger m(wc, o);  // keeps the words >= 2 bytes in the map's order, as above
  m.run(st);
  if (words) {
    size_t k = 0;
    m.each_word([&](const uint32_t* ids, uint32_t n) { (*words)[k++].second.assign(ids, ids + n); });
  }
  st.merge_seconds = seconds_since(t0);
  r.tokenizer_json = m.tokenizer_json();
  r.tokenizer_config_json = tokenizer_config_json(o, st);
  return r;
}

int thread_count(const BpeTrainOptions& o) {
  if (o.threads < 0) throw Error("--threads must be >= 0 (0: one per core), not " + std::to_string(o.threads));
  if (o.threads > 0) return o.threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

BpeTrainResult train_bpe(const BpeTrainOptions& o) {
  check_options(o);
  if (o.inputs.empty()) throw Error("no inputs given; pass text files, .gz files, folders or globs");
  const std::vector<std::string> files = expand_inputs(o.inputs);
  const auto t0 = std::chrono::steady_clock::now();
  hf::WordCounts wc = hf::count_words_in_files(files, o.special_tokens, thread_count(o), o.progress);
  return finish(std::move(wc), o, seconds_since(t0));
}

BpeTrainResult train_bpe_on_texts(const std::vector<std::string>& texts, const BpeTrainOptions& o) {
  check_options(o);
  const auto t0 = std::chrono::steady_clock::now();
  hf::WordCounts wc = hf::count_words_in_texts(texts, o.special_tokens, thread_count(o), o.progress);
  return finish(std::move(wc), o, seconds_since(t0));
}

namespace hf {

BpeTrainResult train_bpe_on_texts_with_words(const std::vector<std::string>& texts, const BpeTrainOptions& o,
                                             std::vector<std::pair<std::string, std::vector<int32_t>>>& words) {
  check_options(o);
  words.clear();
  return finish(count_words_in_texts(texts, o.special_tokens, thread_count(o), o.progress), o, 0, &words);
}

}  // namespace hf

}  // namespace nvfp4::io

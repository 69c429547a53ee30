// Training a byte-level BPE tokenizer (`nvfp4 tokenizer train`; docs/tokenizer_training.md): text
// in, a Hugging Face tokenizer.json out that the reference `tokenizers` library and our
// HfTokenizer (nvfp4/hf_tokenizer.hpp) load and encode identically.
//
// What it makes, fixed by design (no knobs beyond the options below):
//   - pre-tokenization: the GPT-4 / Llama-3 split pattern (kBpeSplitPattern, Split Isolated),
//     then ByteLevel without its own regex; no normalizer;
//   - ids 0..255: the 256 byte-level characters in code point order ("!" = 0, ..., "Ā" (byte
//     0x00) = 188, ...): the order of GPT-2's, Llama-3's and the reference trainer's byte tokens;
//   - ids 256..: one per merge, in merge order (each merge makes a new token);
//   - the special tokens last, in the order given (Llama-3's layout): ids vocab_size - S ..
//     vocab_size - 1 when the merges filled the vocabulary;
//   - model.ignore_merges = false: encoding applies the merges by rank, which reproduces the
//     segmentation the trainer gave every word (a test checks it).
// Merge choice: the pair with the highest count over all words; ties go to the smallest
// (left id, right id) — the reference trainer's rule — so a corpus always gives the same file.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace nvfp4::io {

// The GPT-4 (cl100k) / Llama-3 word pattern.
inline constexpr std::string_view kBpeSplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

inline constexpr int64_t kBpeMaxVocab = int64_t{1} << 24;

struct BpeTrainProgress {
  enum class Phase { words, merges } phase = Phase::words;
  uint64_t done = 0, total = 0;   // words: input bytes read (compressed for .gz) of all; merges: tokens of vocab_size
  uint64_t distinct_words = 0;    // words: so far (per counting thread, summed: an upper bound)
  uint64_t last_count = 0;        // merges: occurrences of the last merged pair
};

struct BpeTrainOptions {
  std::vector<std::string> inputs;  // text files, .gz files, folders (recursive, sorted) or globs
  // The whole vocabulary: 256 byte tokens + merges + special tokens, in [256 + S, kBpeMaxVocab].
  int64_t vocab_size = 32768;
  std::vector<std::string> special_tokens;  // non-empty, distinct, none a single byte-level character
  // A pair seen fewer times than this is never merged (>= 1); training stops early when no
  // pair is left that often (BpeTrainStats::complete = false).
  uint64_t min_frequency = 2;
  int threads = 0;  // word-counting threads; 0: one per core
  // Recorded in tokenizer_config.json ("" = left out), e.g. the command line.
  std::string command;
  // Called on the calling thread after every chunk of text and every merge: throttle it.
  std::function<void(const BpeTrainProgress&)> progress;
};

struct BpeTrainStats {
  uint64_t input_files = 0;
  uint64_t text_bytes = 0;         // after decompression
  uint64_t words = 0;              // pre-tokenized words, all occurrences
  uint64_t distinct_words = 0;
  uint64_t special_matches = 0;    // special tokens found in the text (cut out, not learned)
  int64_t merges = 0;              // entries of model.merges
  int64_t vocab_size = 0;          // 1 + the largest id (== options.vocab_size when complete)
  bool complete = false;           // the merges filled the vocabulary
  uint64_t last_merge_count = 0;   // occurrences of the last merged pair
  uint64_t tokens = 0;             // tokens of the training text under the learned merges (specials: 1 each)
  double count_seconds = 0, merge_seconds = 0;
};

struct BpeTrainResult {
  std::string tokenizer_json;         // the tokenizer.json text
  std::string tokenizer_config_json;  // tokenizer_config.json: eos_token = the first special token
  BpeTrainStats stats;
};

// Trains on the files of options.inputs (io::expand_inputs): each file is one text, streamed in
// chunks cut where no word can cross (after a "\n" followed by a printable ASCII character); a
// file with no such place in 64 MiB is cut at a character boundary there. Invalid UTF-8 is
// replaced as utf8_replace_invalid does; special tokens in the text are cut out first, as
// encoding does. Throws nvfp4::Error naming the option or file: bad options, a missing or
// unreadable input, inputs without text.
BpeTrainResult train_bpe(const BpeTrainOptions& options);

// The same on texts in memory (options.inputs is ignored; each text is one document).
BpeTrainResult train_bpe_on_texts(const std::vector<std::string>& texts, const BpeTrainOptions& options);

}  // namespace nvfp4::io

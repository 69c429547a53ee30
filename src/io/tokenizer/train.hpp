// The two halves of the BPE trainer (nvfp4/bpe_trainer.hpp): counting the words of the text
// (train_words.cpp) and learning the merges from the counts (train.cpp). Private to src/io/.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer/string_map.hpp"
#include "nvfp4/bpe_trainer.hpp"

namespace nvfp4::io::hf {

// Every distinct pre-tokenized word (raw bytes, valid UTF-8) and how often it occurs.
struct WordCounts {
  StringMap<uint64_t> counts;
  uint64_t input_files = 0;
  uint64_t text_bytes = 0;       // after decompression
  uint64_t words = 0;            // occurrences
  uint64_t special_matches = 0;  // special tokens cut out of the text
};

using WordProgress = std::function<void(const BpeTrainProgress&)>;

// Each text is made valid UTF-8 (utf8_replace_invalid), cut at the special tokens
// (leftmost-longest, as encoding cuts them), and each piece split by kBpeSplitPattern.
// `threads` workers count; the result does not depend on their number.
WordCounts count_words_in_files(const std::vector<std::string>& files, const std::vector<std::string>& specials,
                                int threads, const WordProgress& progress);
WordCounts count_words_in_texts(const std::vector<std::string>& texts, const std::vector<std::string>& specials,
                                int threads, const WordProgress& progress);

// train_bpe_on_texts that also hands back every distinct word of two bytes or more with the ids
// of the trainer's final segmentation of it (tests check that encoding agrees).
BpeTrainResult train_bpe_on_texts_with_words(const std::vector<std::string>& texts, const BpeTrainOptions& options,
                                             std::vector<std::pair<std::string, std::vector<int32_t>>>& words);

// Where a buffer of text may be cut so that no word (and no special token) crosses the cut:
// right after the last '\n' that a printable ASCII character follows. 0 when there is none.
size_t safe_cut(std::string_view buf, const std::vector<std::string>& specials);

}  // namespace nvfp4::io::hf

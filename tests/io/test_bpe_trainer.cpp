// The BPE trainer (nvfp4/bpe_trainer.hpp, src/io/tokenizer/train*.cpp) on generated text:
// hand-checked first merges and their tie rule, the byte-token order, the vocabulary size,
// determinism (threads, input order, files vs memory, gzip, chunk cuts), special tokens, that
// encoding with the written file reproduces the trainer's segmentation of every word, round
// trips through HfTokenizer, errors, and the CLI. (Against the reference library:
// scripts/tokenizer_train_check.sh.)
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "io/tokenizer/pipeline.hpp"
#include "io/tokenizer/train.hpp"
#include "nvfp4/bpe_trainer.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
namespace io = nvfp4::io;
using nlohmann::json;
using nvfp4::test::error_of;

// A lexicon of 3000 words: common ones, then syllable compounds (some capitalized).
const std::vector<std::string>& lexicon() {
  static const std::vector<std::string> words = [] {
    std::vector<std::string> w = {"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "naïve",
                                  "café", "данные", "токен", "日本語", "の", "中文", "🙂", "λ", "x_1", "self.x",
                                  "don't", "we're", "it's", "HTTP", "0x1F", "42", "2026", "3.14159"};
    static const char* syllables[] = {"ka", "to", "re", "in", "an", "th", "er", "on", "st", "qu", "ix", "ou", "ing",
                                      "ed", "s", "al", "pro", "con", "de", "ly", "é", "да", "ны", "の", "中"};
    std::mt19937 rng(12345);
    while (w.size() < 3000) {
      std::string s;
      for (int n = 1 + static_cast<int>(rng() % 4); n > 0; --n) s += syllables[rng() % std::size(syllables)];
      if (rng() % 10 == 0 && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
      w.push_back(s);
    }
    return w;
  }();
  return words;
}

// Lines of lexicon words, drawn with probability ~ 1 / rank, joined by spaces and punctuation,
// some indented, some followed by a blank line; different per seed.
std::string generated_text(uint32_t seed, int lines) {
  static const char* seps[] = {" ", " ", " ", " ", ", ", ". ", "  ", "\t", " (", ") ", ": ", " = ", "; ", " -> "};
  const auto& words = lexicon();
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, std::log(static_cast<double>(words.size()) + 1.0));
  std::string out;
  for (int l = 0; l < lines; ++l) {
    if (rng() % 5 == 0) out += std::string(rng() % 9, ' ');
    const int n = 2 + static_cast<int>(rng() % 12);
    for (int w = 0; w < n; ++w) {
      if (w) out += seps[rng() % std::size(seps)];
      out += words[std::min(words.size() - 1, static_cast<size_t>(std::exp(u(rng))) - 1)];
    }
    out += rng() % 7 == 0 ? "\n\n" : "\n";
  }
  return out;
}

io::BpeTrainOptions options(int64_t vocab, std::vector<std::string> specials = {}) {
  io::BpeTrainOptions o;
  o.vocab_size = vocab;
  o.special_tokens = std::move(specials);
  return o;
}

std::vector<std::pair<std::string, std::string>> merges_of(const std::string& tokenizer_json) {
  std::vector<std::pair<std::string, std::string>> out;
  const json j = json::parse(tokenizer_json);
  for (const auto& m : j["model"]["merges"]) out.emplace_back(m[0], m[1]);
  return out;
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

TEST(BpeTrainer, FirstMergesAreTheMostFrequentPairsTiesToTheSmallestIds) {
  // Words: "ab" once, " ab" 3 times, " cd" 3 times, " xy" once. Pair counts: (a, b) 4; then
  // (Ġ, ab), (Ġ, c) and (c, d) 3 each: the tie goes to the smallest (left id, right id), and the
  // letters (ids 64..) sort before Ġ (the space, id 220): cd, Ġab, Ġcd; then the pairs seen once.
  io::BpeTrainOptions o = options(256 + 6);
  o.min_frequency = 1;
  const io::BpeTrainResult r = io::train_bpe_on_texts({"ab ab ab ab cd cd cd xy"}, o);
  EXPECT_EQ(merges_of(r.tokenizer_json),
            (Pairs{{"a", "b"}, {"c", "d"}, {"Ġ", "ab"}, {"Ġ", "cd"}, {"x", "y"}, {"Ġ", "xy"}}));
  const json vocab = json::parse(r.tokenizer_json)["model"]["vocab"];
  EXPECT_EQ(vocab["!"], 0);    // the byte-level characters in code point order
  EXPECT_EQ(vocab["a"], 64);
  EXPECT_EQ(vocab["Ā"], 188);  // byte 0x00, the first mapped one
  EXPECT_EQ(vocab["Ġ"], 220);  // byte 0x20
  EXPECT_EQ(vocab["ab"], 256);
  EXPECT_EQ(vocab["Ġxy"], 261);
  EXPECT_TRUE(r.stats.complete);
  EXPECT_EQ(r.stats.tokens, 8u);  // ab Ġab Ġab Ġab Ġcd Ġcd Ġcd Ġxy
  EXPECT_EQ(r.stats.last_merge_count, 1u);
}

TEST(BpeTrainer, MinFrequencyStopsTheMergesAndSpecialsFollowTheLastOne) {
  io::BpeTrainOptions o = options(1000, {"<|endoftext|>"});
  o.min_frequency = 2;  // (x, y) and (Ġ, xy) are seen once
  const io::BpeTrainResult r = io::train_bpe_on_texts({"ab ab ab ab cd cd cd xy"}, o);
  EXPECT_EQ(merges_of(r.tokenizer_json).size(), 4u);
  EXPECT_FALSE(r.stats.complete);
  EXPECT_EQ(r.stats.vocab_size, 256 + 4 + 1);
  const json j = json::parse(r.tokenizer_json);
  EXPECT_EQ(j["added_tokens"][0]["id"], 260);  // right after the last merge
  EXPECT_EQ(j["model"]["vocab"].size(), 260u);
}

TEST(BpeTrainer, VocabularyIsExactlyTheSizeAskedSpecialsLastAndFileShape) {
  const std::vector<std::string> texts = {generated_text(1, 3000), generated_text(2, 3000)};
  const io::BpeTrainResult r = io::train_bpe_on_texts(texts, options(1000, {"<|endoftext|>", "<|pad|>"}));
  EXPECT_TRUE(r.stats.complete);
  EXPECT_EQ(r.stats.vocab_size, 1000);
  EXPECT_EQ(r.stats.merges, 1000 - 256 - 2);
  const json j = json::parse(r.tokenizer_json);
  EXPECT_EQ(j["version"], "1.0");
  EXPECT_EQ(j["normalizer"], nullptr);
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"], std::string(io::kBpeSplitPattern));
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][0]["behavior"], "Isolated");
  EXPECT_EQ(j["pre_tokenizer"]["pretokenizers"][1]["use_regex"], false);
  EXPECT_EQ(j["model"]["ignore_merges"], false);
  EXPECT_EQ(j["model"]["byte_fallback"], false);
  const json& vocab = j["model"]["vocab"];
  EXPECT_EQ(vocab.size(), 998u);
  std::vector<bool> seen(1000, false);
  for (const auto& [tok, id] : vocab.items()) seen[id.get<size_t>()] = true;
  for (int i = 0; i < 998; ++i) EXPECT_TRUE(seen[static_cast<size_t>(i)]) << "no token has id " << i;
  ASSERT_EQ(j["added_tokens"].size(), 2u);
  EXPECT_EQ(j["added_tokens"][0], json::parse(R"({"id":998,"content":"<|endoftext|>","single_word":false,)"
                                               R"("lstrip":false,"rstrip":false,"normalized":false,"special":true})"));
  EXPECT_EQ(j["added_tokens"][1]["id"], 999);
  const json config = json::parse(r.tokenizer_config_json);
  EXPECT_EQ(config["eos_token"], "<|endoftext|>");
  EXPECT_EQ(config["tokenizer_class"], "PreTrainedTokenizerFast");
}

TEST(BpeTrainer, SameInputSameBytesWhateverTheThreadsOrOrder) {
  const std::vector<std::string> texts = {generated_text(3, 2000), generated_text(4, 2000), generated_text(5, 500)};
  io::BpeTrainOptions o = options(900, {"<eot>"});
  o.threads = 1;
  const std::string one = io::train_bpe_on_texts(texts, o).tokenizer_json;
  o.threads = 2;
  EXPECT_EQ(io::train_bpe_on_texts(texts, o).tokenizer_json, one);
  o.threads = 3;
  EXPECT_EQ(io::train_bpe_on_texts({texts[2], texts[0], texts[1]}, o).tokenizer_json, one);
  EXPECT_NE(io::train_bpe_on_texts({texts[0]}, o).tokenizer_json, one);
}

TEST(BpeTrainer, EncodingReproducesTheTrainersSegmentationOfEveryWord) {
  const std::vector<std::string> texts = {generated_text(6, 4000), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
                                          std::string(300, ' ') + "x\n"};
  std::vector<std::pair<std::string, std::vector<int32_t>>> words;
  const io::BpeTrainResult r = io::hf::train_bpe_on_texts_with_words(texts, options(1500, {"<eot>"}), words);
  ASSERT_GT(words.size(), 100u);
  const auto p = io::hf::load_pipeline(r.tokenizer_json, "trained.json");
  for (const auto& [w, ids] : words) {
    std::vector<int32_t> got;
    p->model->tokenize(w, got);
    ASSERT_EQ(got, ids) << "word '" << w << "'";
  }
  // And the whole texts: the trainer's token count is encoding's.
  const auto tok = io::HfTokenizer::from_json(r.tokenizer_json, "trained.json");
  uint64_t tokens = 0;
  for (const auto& t : texts) tokens += tok->encode(t).size();
  EXPECT_EQ(tokens, r.stats.tokens);
}

TEST(BpeTrainer, TrainedFileLoadsEncodesAndRoundTrips) {
  const io::BpeTrainResult r =
      io::train_bpe_on_texts({generated_text(7, 3000)}, options(1200, {"<|endoftext|>", "<|pad|>"}));
  const auto tok = io::HfTokenizer::from_json(r.tokenizer_json, "trained.json", "<|endoftext|>");
  EXPECT_EQ(tok->vocab_size(), 1200);
  EXPECT_EQ(tok->eot_token(), 1198);
  const std::vector<std::string> texts = {
      "the tokenizer is a byte level vocabulary",
      "  def merge(self, pair):\n\treturn None  \r\n\n",
      "naïve café — данные 日本語の中文 🙂👍🏽 λ→∞",
      "never seen: Zyxwvut QQQQ 9876543210 ~~~ <html>",
      "",
      " ",
      "\n\n\n",
      std::string(1000, 'a') + std::string(500, ' ') + "b",
  };
  for (const auto& s : texts) {
    const std::vector<int32_t> ids = tok->encode(s);
    EXPECT_EQ(tok->decode(ids), s) << s;
    for (int32_t id : ids) EXPECT_LT(id, 1198) << "a special id from plain text";
  }
  // Special tokens are found in text, and invalid UTF-8 decodes as U+FFFD.
  const std::vector<int32_t> ids = tok->encode("a<|endoftext|>b<|pad|>");
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[1], 1198);
  EXPECT_EQ(ids[3], 1199);
  EXPECT_EQ(tok->decode(tok->encode("x\xff y")), "x\xEF\xBF\xBD y");
}

TEST(BpeTrainer, SpecialTokensAreCutOutOfTheTextNotLearned) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += generated_text(static_cast<uint32_t>(100 + i), 5) + "<|endoftext|>";
  const io::BpeTrainResult with = io::train_bpe_on_texts({text}, options(800, {"<|endoftext|>"}));
  EXPECT_EQ(with.stats.special_matches, 200u);
  const json vocab = json::parse(with.tokenizer_json)["model"]["vocab"];
  for (const auto& [tok, id] : vocab.items()) {
    EXPECT_EQ(tok.find("endoftext"), std::string::npos) << tok;
  }
  // Without the special token the same text teaches pieces of it.
  const io::BpeTrainResult without = io::train_bpe_on_texts({text}, options(800));
  EXPECT_TRUE(json::parse(without.tokenizer_json)["model"]["vocab"].contains("endoftext"));
}

TEST(BpeTrainer, SafeCutIsAfterANewlineThatAPrintableCharacterFollows) {
  EXPECT_EQ(io::hf::safe_cut("abc\ndef", {}), 4u);
  EXPECT_EQ(io::hf::safe_cut("a\nb\nc", {}), 4u);               // the last one
  EXPECT_EQ(io::hf::safe_cut("abc\n def\n\tx\n\n", {}), 0u);     // white space after every newline
  EXPECT_EQ(io::hf::safe_cut("abc\n\n\ny", {}), 6u);             // after the run of newlines
  EXPECT_EQ(io::hf::safe_cut("abc\n", {}), 0u);                  // nothing after it yet
  EXPECT_EQ(io::hf::safe_cut("ab\ncd\n\xC3\xA9", {}), 3u);       // é is not ASCII
  EXPECT_EQ(io::hf::safe_cut("p\nq <x\ny> r", {"<x\ny>"}), 2u);  // not inside a special token
}

constexpr char kBpePrefix[] = "nvfp4_bpe_";

class BpeFiles : public nvfp4::test::ScratchDirTest<kBpePrefix> {
 protected:
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
};

TEST_F(BpeFiles, BigFilesAreCutBetweenWordsAndGzipReadsTheSame) {
  // Over 4 MiB: read in several chunks; the file gives what the same text in memory gives.
  std::string big;
  for (uint32_t s = 0; big.size() < (size_t{9} << 20); ++s) big += generated_text(1000 + s, 2000);
  const std::string plain = write("big.txt", big);
  const std::string gz = (dir_ / "big.txt.gz").string();
  gzFile f = gzopen(gz.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, big.data(), static_cast<unsigned>(big.size())), static_cast<int>(big.size()));
  ASSERT_EQ(gzclose(f), Z_OK);

  io::BpeTrainOptions o = options(2000, {"<eot>"});
  const io::BpeTrainResult mem = io::train_bpe_on_texts({big}, o);
  o.inputs = {plain};
  const io::BpeTrainResult file = io::train_bpe(o);
  EXPECT_EQ(file.tokenizer_json, mem.tokenizer_json);
  EXPECT_EQ(file.stats.words, mem.stats.words);
  EXPECT_EQ(file.stats.tokens, mem.stats.tokens);
  EXPECT_EQ(file.stats.text_bytes, big.size());
  o.inputs = {gz};
  EXPECT_EQ(io::train_bpe(o).tokenizer_json, mem.tokenizer_json);
}

TEST_F(BpeFiles, ErrorsNameTheOptionOrFile) {
  const std::string text = write("a.txt", generated_text(9, 100));
  auto train = [&](io::BpeTrainOptions o) {
    if (o.inputs.empty()) o.inputs = {text};
    return io::train_bpe(o);
  };
  EXPECT_NE(error_of([&] { train(options(255)); }).find("--vocab 255"), std::string::npos);
  EXPECT_NE(error_of([&] { train(options(257, {"<a>", "<b>"})); }).find("2 special tokens"), std::string::npos);
  EXPECT_NE(error_of([&] { train(options(300, {"<a>", "<a>"})); }).find("'<a>' is given twice"), std::string::npos);
  EXPECT_NE(error_of([&] { train(options(300, {""})); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([&] { train(options(300, {"Ġ"})); }).find("byte-level token"), std::string::npos);
  EXPECT_NE(error_of([&] { train(options(300, {"\xff"})); }).find("not valid UTF-8"), std::string::npos);
  io::BpeTrainOptions o = options(300);
  o.min_frequency = 0;
  EXPECT_NE(error_of([&] { train(o); }).find("--min-frequency"), std::string::npos);
  o = options(300);
  o.inputs = {(dir_ / "missing.txt").string()};
  EXPECT_NE(error_of([&] { train(o); }).find("missing.txt: does not exist"), std::string::npos);
  o.inputs = {write("empty.txt", "")};
  EXPECT_NE(error_of([&] { train(o); }).find("hold no text"), std::string::npos);
  o = options(300, {"<s>"});
  o.inputs = {write("only.txt", "<s><s>")};
  EXPECT_NE(error_of([&] { train(o); }).find("no text besides special tokens"), std::string::npos);
  o.inputs = {write("bad.gz", "not gzip")};
  EXPECT_NE(error_of([&] { train(o); }).find("bad.gz: is named .gz but is not gzip-compressed"), std::string::npos);
}

TEST_F(BpeFiles, CliWritesTheTokenizerAndItsConfigThatLoadTogether) {
  const std::string text = write("corpus.txt", generated_text(10, 3000));
  const fs::path out = dir_ / "tok";
  auto r = nvfp4::test::run_cli("tokenizer train " + text + " --vocab 700 --special '<|endoftext|>' --out " +
                                out.string() + "/ --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const json j = json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["vocab_size"], 700);
  EXPECT_EQ(j["complete"], true);
  ASSERT_TRUE(fs::exists(out / "tokenizer.json"));
  ASSERT_TRUE(fs::exists(out / "tokenizer_config.json"));
  EXPECT_TRUE(nvfp4::test::temp_files_in(out).empty());
  const auto tok = io::HfTokenizer::load(out.string());  // the folder: tokenizer.json + its config
  EXPECT_EQ(tok->eot_token(), 699);
  EXPECT_EQ(tok->vocab_size(), 700);

  // The output is never an input; bad options fail with status 1 and name the option.
  r = nvfp4::test::run_cli("tokenizer train " + text + " --vocab 700 --out " + text);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("would replace the input"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("tokenizer train " + text + " --vocab 100 --out " + (dir_ / "x.json").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--vocab"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("tokenizer train " + text + " --vocab 700 --no-config --out " + (dir_ / "y.json").string());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir_ / "y.json"));
  EXPECT_FALSE(fs::exists(dir_ / "tokenizer_config.json"));
  // A new folder given as a relative path (its nearest existing folder is the working directory).
  const fs::path cwd = fs::current_path();
  fs::current_path(dir_);
  r = nvfp4::test::run_cli("tokenizer train " + text + " --vocab 700 --out fresh/");
  fs::current_path(cwd);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir_ / "fresh" / "tokenizer.json"));
}

}  // namespace

// A Hugging Face tokenizer through the whole pipeline, as a user runs it: `nvfp4 tokenize`
// (--jsonl, --decode), `nvfp4 data --tokenizer tokenizer.json` (shards with its ids, 32-bit when
// the vocabulary needs it, the tokenizer recorded), `train` sizing the vocabulary from it,
// `sample` decoding with it, and `export-hf` writing tokenizer.json + tokenizer_config.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/cli_test.hpp"
#include "io/tokenizer/pipeline.hpp"
#include "nvfp4/checkpoint.hpp"
#include "nvfp4/hf_tokenizer.hpp"
#include "support/test_support.hpp"

namespace fs = std::filesystem;

namespace {

using nvfp4::test::Cli;
using Result = nvfp4::test::CliResult;
Result run(const std::string& a) { return nvfp4::test::run_cli(a); }

std::string read(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write(const std::string& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// A byte-level BPE in Llama-3's shape: the 256 byte characters, merges for "th", "the", " the",
// " t" (in that rank order), an <|endoftext|> special token, and `extra` unused tokens (to push
// the vocabulary past 65,536 when asked).
std::string tokenizer_json(int extra = 0) {
  const auto& chars = nvfp4::io::hf::byte_level_chars();
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int b = 0; b < 256; ++b) vocab[chars[b]] = b;
  const std::string G = chars[' '];
  int id = 256;
  for (const std::string& t : std::vector<std::string>{G + "t", "th", "the", G + "the"}) vocab[t] = id++;
  for (int k = 0; k < extra; ++k) vocab["<unused_" + std::to_string(k) + ">"] = id++;
  nlohmann::ordered_json j = {
      {"version", "1.0"},
      {"added_tokens", nlohmann::ordered_json::array(
                           {{{"id", id}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false},
                             {"rstrip", false}, {"normalized", false}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         nlohmann::ordered_json::array(
             {{{"type", "Split"},
               {"pattern", {{"Regex", R"( ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}})}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", nlohmann::ordered_json::array({"t h", "th e", G + " the", G + " t"})}}}};
  return j.dump();
}

TEST_F(Cli, TokenizeEncodesAndDecodesJsonLines) {
  write(path("tok.json"), tokenizer_json());
  write(path("in.txt"), "the cat\n\nthe the\n\xFF!\n");
  const Result r = run("tokenize " + path("tok.json") + " " + path("in.txt") + " --jsonl");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string G = nvfp4::io::hf::byte_level_chars()[' '];
  // "the" is 258; " cat" is its bytes; an empty line is []; invalid UTF-8 is U+FFFD's bytes.
  EXPECT_EQ(r.output, "[258,32,99,97,116]\n[]\n[258,259]\n[239,191,189,33]\n");
  write(path("ids.jsonl"), r.output);
  const Result d = run("tokenize " + path("tok.json") + " " + path("ids.jsonl") + " --jsonl --decode");
  ASSERT_EQ(d.status, 0) << d.output;
  EXPECT_EQ(d.output, "the cat\n\nthe the\n\xEF\xBF\xBD!\n");
  const Result s = run("tokenize " + path("tok.json") + " " + path("in.txt") + " --json");
  ASSERT_EQ(s.status, 0) << s.output;
  const auto direct = nvfp4::io::HfTokenizer::from_json(tokenizer_json(), "tok.json")->encode(read(path("in.txt")));
  EXPECT_EQ(nlohmann::json::parse(s.output)["tokens"], direct.size());  // the whole file as one text
  // Errors name the file and what is wrong.
  write(path("bad.jsonl"), "[1,2]\nnot ids\n");
  const Result e = run("tokenize " + path("tok.json") + " " + path("bad.jsonl") + " --jsonl --decode");
  EXPECT_EQ(e.status, 1);
  EXPECT_NE(e.output.find("bad.jsonl: line 2 is not a JSON array of token ids"), std::string::npos) << e.output;
  const Result m = run("tokenize " + path("missing.json") + " " + path("in.txt"));
  EXPECT_EQ(m.status, 1);
  EXPECT_NE(m.output.find("missing.json"), std::string::npos) << m.output;
  write(path("broken.json"), tokenizer_json().substr(0, 500));
  const Result b = run("tokenize " + path("broken.json") + " " + path("in.txt"));
  EXPECT_EQ(b.status, 1);
  EXPECT_NE(b.output.find("broken.json: not valid JSON"), std::string::npos) << b.output;
}

TEST_F(Cli, DataTrainSampleAndExportCarryTheTokenizer) {
  const std::string tok = path("tok.json");
  write(tok, tokenizer_json());
  fs::create_directories(path("text"));
  std::string text;
  for (int i = 0; i < 400; ++i) text += "the cat sat on the mat " + std::to_string(i) + ".\n\n";
  write(path("text/a.txt"), text);
  Result r = run("data " + path("text") + " --out " + path("data") + " --doc-bytes 512 --tokenizer " + tok);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto manifest = nlohmann::json::parse(read(path("data/manifest.json")));
  EXPECT_EQ(manifest["tokenizer"]["name"], "hf");
  EXPECT_EQ(manifest["tokenizer"]["vocab_size"], 261);
  EXPECT_EQ(manifest["tokenizer"]["tokenizer_json"], tokenizer_json());

  r = run("train --data " + path("data") + " --out " + path("run") +
          " --preset tiny --seq-len 32 --batch 2 --steps 2 --no-progress");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string ckpt = nvfp4::io::latest_checkpoint(path("run"));
  const auto run_json = nlohmann::json::parse(read(path("run/run.json")));
  EXPECT_EQ(run_json["model"]["vocab"], 261) << "the vocabulary comes from the data's tokenizer";
  EXPECT_NE(r.output.find("\"vocab\":261,"), std::string::npos) << "the printed model is the one trained: " << r.output;

  r = run("sample " + ckpt + " --prompt \"the cat\" --tokens 4 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto sj = nlohmann::json::parse(r.output);
  EXPECT_EQ(sj["prompt"], "the cat");
  EXPECT_LE(sj["tokens"].get<int>(), 4);
  EXPECT_TRUE(sj["completion"].is_string());

  r = run("export-hf " + ckpt + " " + path("hf"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read(path("hf/tokenizer.json")), tokenizer_json());
  const auto cfg = nlohmann::json::parse(read(path("hf/tokenizer_config.json")));
  EXPECT_EQ(cfg["eos_token"], "<|endoftext|>");
  EXPECT_EQ(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
  // The export's tokenizer folder works as a tokenizer argument again.
  write(path("one.txt"), "the the\n");
  r = run("tokenize " + path("hf") + " " + path("one.txt") + " --jsonl");
  EXPECT_EQ(r.output, "[258,259]\n");
}

TEST_F(Cli, AVocabularyPast65536TokensGetsThirtyTwoBitShards) {
  write(path("big.json"), tokenizer_json(70000));
  fs::create_directories(path("text"));
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the mat " + std::to_string(i) + ".\n\n";
  write(path("text/a.txt"), text);
  const Result r = run("data " + path("text") + " --out " + path("data") + " --tokenizer " + path("big.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto manifest = nlohmann::json::parse(read(path("data/manifest.json")));
  EXPECT_EQ(manifest["tokenizer"]["vocab_size"], 70261);
  EXPECT_EQ(manifest["shard_layout"]["token_bytes"], 4);
  EXPECT_EQ(manifest["shard_layout"]["token_dtype"], "uint32");
}

}  // namespace

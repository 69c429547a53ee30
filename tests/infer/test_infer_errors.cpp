// Bad input to the inference library and to `nvfp4 generate` / `nvfp4 eval`: corrupt model
// folders, NaN weights, activations that overflow, inputs of another tokenizer, hostile options.
// Each is one clear line naming the file, tensor, line or option, exit status 1 — never a crash,
// never a NaN printed with status 0, never an output written over an input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nvfp4/engine.hpp"
#include "nvfp4/evaluate.hpp"
#include "nvfp4/generate.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"
#include "nvfp4/tokenizer.hpp"
#include "support/test_support.hpp"
#include "tiny_hf_model.hpp"

namespace {

namespace fs = std::filesystem;
using nvfp4::infer::EvalDocument;
using nvfp4::infer::HfModel;
using nvfp4::infer::Precision;
using nvfp4::test::error_of;

constexpr char kPrefix[] = "nvfp4_infer_errors_test_";
using EngineErrorTest = nvfp4::test::ScratchDirTest<kPrefix>;
using EvalCliErrorTest = nvfp4::test::ScratchDirTest<kPrefix>;

// Overwrites element `index` of tensor `name` in a .safetensors file (F32 or BF16) with `value`.
void poke(const fs::path& file, const std::string& name, int64_t index, float value) {
  uint64_t offset = 0;
  nvfp4::DType dtype{};
  {
    const auto f = nvfp4::io::SafetensorsFile::open(file.string());
    const auto& t = f.at(name);
    dtype = t.dtype;
    offset = 8 + f.header().header_bytes + t.begin;
  }
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  if (dtype == nvfp4::DType::F32) {
    io.seekp(static_cast<std::streamoff>(offset + 4 * index));
    io.write(reinterpret_cast<const char*>(&bits), 4);
  } else {
    const uint16_t high = static_cast<uint16_t>(bits >> 16);  // BF16: the top half (NaN, Inf stay so)
    io.seekp(static_cast<std::streamoff>(offset + 2 * index));
    io.write(reinterpret_cast<const char*>(&high), 2);
  }
  ASSERT_TRUE(io.good()) << file;
}

// Every element of a (small) tensor set to `value`.
void poke_all(const fs::path& file, const std::string& name, int64_t numel, float value) {
  for (int64_t i = 0; i < numel; ++i) poke(file, name, i, value);
}

// A byte-level model folder as `nvfp4 export-hf` writes one: vocab 257, nvfp4_tokenizer.json.
nvfp4::model::ModelConfig write_byte_model(const fs::path& dir, int seq_len = 128,
                                           nvfp4::DType dtype = nvfp4::DType::F32) {
  auto c = nvfp4::test::tiny_config("qwen3");
  c.vocab = 257;
  c.seq_len = seq_len;
  nvfp4::test::write_tiny_hf_model(dir, "qwen3", c, 31, dtype);
  std::ofstream(dir / "nvfp4_tokenizer.json") << nvfp4::io::ByteTokenizer().describe() << "\n";
  return c;
}

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

// Runs the CLI and expects status 1 with one line of output holding `fragment`.
void expect_cli_error(const std::string& args, const std::string& fragment) {
  const auto r = nvfp4::test::run_cli(args);
  EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(fragment), std::string::npos) << args << "\n" << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << "one line: " << args << "\n" << r.output;
}

TEST_F(EngineErrorTest, NonFiniteWeightsAreAnErrorNamingTheTensorAndElement) {
  for (const auto dtype : {nvfp4::DType::F32, nvfp4::DType::BF16}) {
    const fs::path dir = dir_ / std::string(nvfp4::dtype_name(dtype));
    write_byte_model(dir, 128, dtype);
    poke(dir / "model.safetensors", "model.layers.1.mlp.down_proj.weight", 96 * 2 + 3, NAN);  // (64, 96): [2, 3]
    poke(dir / "model.safetensors", "model.layers.1.mlp.down_proj.weight", 96 * 5, INFINITY);
    const HfModel m = HfModel::open(dir.string());  // opening converts nothing
    const std::string want = "tensor model.layers.1.mlp.down_proj.weight holds 2 NaN or infinite value(s), the first at [2, 3]";
    for (const Precision p : {Precision::fp32, Precision::w4a16, Precision::w4a4, Precision::fp8}) {
      nvfp4::infer::EngineOptions o;
      o.precision = p;
      const std::string e = error_of([&] { nvfp4::infer::make_cpu_engine(m, o); });
      EXPECT_NE(e.find(want), std::string::npos) << e;
      EXPECT_EQ(e.rfind(dir.string(), 0), 0u) << e;
    }
    // The CUDA engine reads BF16: the same check.
    size_t spec = 0;
    while (m.specs()[spec].name != "model.layers.1.mlp.down_proj.weight") ++spec;
    std::vector<uint16_t> h(static_cast<size_t>(m.specs()[spec].numel));
    EXPECT_NE(error_of([&] { m.read_bf16(spec, h); }).find(want), std::string::npos);
  }
  // A norm gain (1-D).
  write_byte_model(dir_ / "norm");
  poke(dir_ / "norm" / "model.safetensors", "model.layers.0.input_layernorm.weight", 7, -INFINITY);
  const HfModel m = HfModel::open((dir_ / "norm").string());
  EXPECT_NE(error_of([&] { nvfp4::infer::make_cpu_engine(m, {}); })
                .find("tensor model.layers.0.input_layernorm.weight holds 1 NaN or infinite value(s), the first at [7]"),
            std::string::npos);
}

TEST_F(EngineErrorTest, OverflowingActivationsAreAnErrorNotANumber) {
  // A finite but absurd weight: the residual stream overflows FP32, and RMSNorm would turn it into
  // zeros (uniform logits, perplexity = vocab) without a word.
  write_byte_model(dir_ / "up");
  poke(dir_ / "up" / "model.safetensors", "model.layers.0.mlp.up_proj.weight", 0, 3e38f);
  const HfModel up = HfModel::open((dir_ / "up").string());
  const auto e = nvfp4::infer::make_cpu_engine(up, {});
  const std::vector<EvalDocument> docs = {{{256, 'a', 'b', 'c'}, 3, "a.txt"}};
  std::string err = error_of([&] { nvfp4::infer::evaluate(*e, nullptr, docs, {}); });
  EXPECT_NE(err.find("activations overflow FP32"), std::string::npos) << err;
  EXPECT_NE(err.find(dir_.string()), std::string::npos) << err;

  // The largest final norm gains: the logits themselves are infinite or NaN.
  write_byte_model(dir_ / "norm");
  poke_all(dir_ / "norm" / "model.safetensors", "model.norm.weight", 64, FLT_MAX);
  const HfModel m = HfModel::open((dir_ / "norm").string());
  nvfp4::infer::EngineOptions o;
  o.max_sequences = 2;
  const auto f = nvfp4::infer::make_cpu_engine(m, o);
  const auto g = nvfp4::infer::make_cpu_engine(m, o);
  err = error_of([&] { nvfp4::infer::evaluate(*f, nullptr, docs, {}); });
  EXPECT_NE(err.find("eval: a.txt, token 1: the model's logits are NaN or infinite"), std::string::npos) << err;
  err = error_of([&] { nvfp4::infer::generate(*f, m, "ab", {}); });
  EXPECT_NE(err.find("generate: the model's logits for generated token 0 of sequence 0 are NaN or infinite"),
            std::string::npos)
      << err;
  // As the reference: named so.
  write_byte_model(dir_ / "fine");
  const HfModel fine = HfModel::open((dir_ / "fine").string());
  const auto ok = nvfp4::infer::make_cpu_engine(fine, o);
  err = error_of([&] { nvfp4::infer::evaluate(*ok, g.get(), docs, {}); });
  EXPECT_NE(err.find("the --reference engine's logits are NaN or infinite"), std::string::npos) << err;
}

TEST_F(EngineErrorTest, PerLayerWithNothingQuantizedFailsBeforeAnyWork) {
  write_byte_model(dir_);
  const HfModel m = HfModel::open(dir_.string());
  nvfp4::infer::EngineOptions o;
  o.precision = Precision::w4a16;
  o.keep_bf16 = {"model.*"};
  const auto e = nvfp4::infer::make_cpu_engine(m, o);
  nvfp4::infer::EvalOptions eo;
  eo.per_layer = true;
  int64_t progress = 0;
  eo.progress = [&](int64_t, int64_t, const std::string&) { ++progress; };
  const std::vector<EvalDocument> docs = {{{256, 1, 2, 3}, -1, ""}};
  EXPECT_NE(error_of([&] { nvfp4::infer::evaluate(*e, nullptr, docs, eo); }).find("--per-layer: no linear layer is quantized"),
            std::string::npos);
  EXPECT_EQ(progress, 0) << "the check comes before the perplexity pass";
}

TEST_F(EngineErrorTest, InputFilesAreTheFolderFilesTheModelIsReadFrom) {
  write_byte_model(dir_);
  std::ofstream(dir_ / "generation_config.json") << R"({"eos_token_id": 256})";
  std::ofstream(dir_ / "README.md") << "not read";
  const HfModel m = HfModel::open(dir_.string());
  std::vector<std::string> names;
  for (const auto& f : m.input_files()) names.push_back(fs::path(f).filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"config.json", "generation_config.json", "model.safetensors",
                                             "nvfp4_tokenizer.json"}));
  // An eos id beyond int32 would wrap into another id.
  std::ofstream(dir_ / "generation_config.json") << R"({"eos_token_id": 4294967552})";
  EXPECT_NE(error_of([&] { HfModel::open(dir_.string()); }).find("generation_config.json: field \"eos_token_id\""),
            std::string::npos);
}

TEST_F(EvalCliErrorTest, GenerateOptionsThatDoNotFitTheModelNameTheOption) {
  write_byte_model(dir_ / "m", 32);
  const std::string gen = "generate " + (dir_ / "m").string() + " --device cpu --temperature 0 ";
  // "hello": end-of-text + 5 bytes; 26 positions left of 32.
  expect_cli_error(gen + "--prompt hello --max-tokens 27", "--max-tokens 27: the prompt's 6 tokens + 27 exceed the "
                                                           "model's max_position_embeddings of 32; give --max-tokens 26 or less");
  expect_cli_error(gen + "--prompt " + std::string(40, 'x') + " --max-tokens 1",
                   "--prompt: its 41 tokens leave no room to generate within the model's max_position_embeddings of 32");
  // The default --max-tokens (64) is cut to what the context leaves.
  auto r = nvfp4::test::run_cli(gen + "--prompt hello --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_LE(nlohmann::json::parse(r.output).at("generated_tokens").get<int>(), 26);
  r = nvfp4::test::run_cli(gen + "--prompt hello --max-tokens 26 --json");
  EXPECT_EQ(r.status, 0) << r.output;

  expect_cli_error(gen + "--prompt hi --stop ''", "--stop: an empty stop string");
  expect_cli_error(gen + "--prompt hi --top-p 0", "--top-p");
  expect_cli_error(gen + "--prompt hi --top-p 1.5", "--top-p");
  expect_cli_error(gen + "--prompt hi --temperature -1", "--temperature");
  expect_cli_error(gen + "--prompt hi --batch 0", "--batch");
  expect_cli_error(gen + "--prompt hi --batch 100000", "--batch");
  expect_cli_error(gen + "--prompt hi --precision bf16", "--precision bf16 is the CUDA engine's");
  expect_cli_error("generate " + (dir_ / "m").string() + " --device cpu", "--prompt is required");
  // Without a GPU (or a CUDA build), --device cuda is one clear line; with one it runs.
  r = nvfp4::test::run_cli("generate " + (dir_ / "m").string() + " --device cuda --prompt hi --max-tokens 2");
  if (r.status != 0) {
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("--device cuda"), std::string::npos) << r.output;
  }
}

TEST_F(EvalCliErrorTest, BadModelFoldersAreOneLineNamingTheFileOrField) {
  const fs::path m = dir_ / "m";
  write_byte_model(m);
  const std::string config = read_file(m / "config.json");
  const std::string weights = read_file(m / "model.safetensors");
  auto restore = [&] {
    std::ofstream(m / "config.json", std::ios::trunc) << config;
    std::ofstream(m / "model.safetensors", std::ios::binary | std::ios::trunc) << weights;
  };
  const std::string gen = "generate " + m.string() + " --device cpu --prompt hi --max-tokens 2";
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = config;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    std::ofstream(m / "config.json", std::ios::trunc) << s.replace(at, from.size(), to);
  };
  fs::remove(m / "config.json");
  expect_cli_error(gen, "no config.json in this folder");
  std::ofstream(m / "config.json") << "{not json";
  expect_cli_error(gen, "config.json: not a JSON object");
  replace("\"hidden_size\": 64", "\"hidden_size\": \"64\"");
  expect_cli_error(gen, "field \"hidden_size\" is \"64\"");
  replace("\"num_hidden_layers\": 2,", "");
  expect_cli_error(gen, "field \"num_hidden_layers\" is missing");
  restore();
  // vocab_size below the tokenizer's 257 ids (the weights agree with config.json).
  auto small = nvfp4::test::tiny_config("qwen3");
  small.vocab = 200;
  nvfp4::test::write_tiny_hf_model(dir_ / "small", "qwen3", small, 3);
  std::ofstream(dir_ / "small" / "nvfp4_tokenizer.json") << nvfp4::io::ByteTokenizer().describe() << "\n";
  expect_cli_error("generate " + (dir_ / "small").string() + " --device cpu --prompt hi",
                   "the tokenizer has 257 ids but config.json's vocab_size is 200");
  // A truncated weights file.
  fs::resize_file(m / "model.safetensors", weights.size() / 2);
  expect_cli_error(gen, "model.safetensors");
  restore();
  // NaN weights: fp32 and w4a16 both name the tensor.
  poke(m / "model.safetensors", "model.layers.0.self_attn.q_proj.weight", 5, NAN);
  expect_cli_error("eval " + m.string() + " --device cpu --ids " + (dir_ / "missing.jsonl").string(),
                   "missing.jsonl: cannot be read");
  std::ofstream(dir_ / "ids.jsonl") << "[256, 1, 2, 3]\n";
  for (const std::string p : {"fp32", "w4a16"}) {
    expect_cli_error("eval " + m.string() + " --device cpu --ids " + (dir_ / "ids.jsonl").string() + " --precision " + p,
                     "tensor model.layers.0.self_attn.q_proj.weight holds 1 NaN or infinite value(s), the first at [0, 5]");
  }
  restore();
  // Overflowing logits: an error, not "nll nan" with status 0.
  poke_all(m / "model.safetensors", "model.norm.weight", 64, FLT_MAX);
  expect_cli_error("eval " + m.string() + " --device cpu --ids " + (dir_ / "ids.jsonl").string(),
                   "ids.jsonl line 1, token 1: the model's logits are NaN or infinite");
  expect_cli_error("eval " + m.string() + " --device cpu --ids " + (dir_ / "ids.jsonl").string() + " --save-logits " +
                       (dir_ / "l.safetensors").string(),
                   "--save-logits: the logits of " + (dir_ / "ids.jsonl").string() + " line 1 are NaN or infinite");
  EXPECT_FALSE(fs::exists(dir_ / "l.safetensors"));
}

TEST_F(EvalCliErrorTest, BadInputsAreOneLineNamingTheFileLineOrOption) {
  const fs::path m = dir_ / "m";
  write_byte_model(m, 64);
  const std::string eval = "eval " + m.string() + " --device cpu ";
  auto file = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return (dir_ / name).string();
  };
  const std::string text = file("a.txt", "hello there");
  // Windows.
  expect_cli_error(eval + "--text " + text + " --ctx 100", "--ctx 100 exceeds the model's max_position_embeddings 64");
  expect_cli_error(eval + "--text " + text + " --ctx 4 --stride 5", "--stride 5 must be in [1, --ctx = 4]");
  expect_cli_error(eval + "--text " + text + " --stride 50", "--stride 50 must be in [1, 12]");
  // --text.
  expect_cli_error(eval + "--text " + file("empty.txt", ""), "nothing to score: " + (dir_ / "empty.txt").string());
  expect_cli_error(eval + "--text " + (dir_ / "missing.txt").string(), "missing.txt: does not exist");
  auto r = nvfp4::test::run_cli(eval + "--text " + file("bin.dat", std::string("\0\xff\x01\x80zz", 6)) + " --json");
  EXPECT_EQ(r.status, 0) << r.output;  // bytes are text to a byte-level model
  // --ids.
  const std::string blank = file("blank.jsonl", "[256, 1, 2]\n\n  \n[256, 3]\n");
  r = nvfp4::test::run_cli(eval + "--ids " + blank + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).at("tokens"), 3);
  expect_cli_error(eval + "--ids " + file("nj.jsonl", "[256, 1]\nnot json\n"), "nj.jsonl line 2: not a JSON array");
  expect_cli_error(eval + "--ids " + file("fl.jsonl", "[256, 1.5]\n"), "fl.jsonl line 1: token 1.5 is not an id in [0, 257)");
  expect_cli_error(eval + "--ids " + file("ng.jsonl", "[256, -1]\n"), "ng.jsonl line 1: token -1 is not an id");
  expect_cli_error(eval + "--ids " + file("hg.jsonl", "[256, 18446744073709551615]\n"),
                   "hg.jsonl line 1: token 18446744073709551615 is not an id");
  expect_cli_error(eval + "--ids " + file("wr.jsonl", "[256, 4294967297]\n"), "wr.jsonl line 1: token 4294967297 is not an id");
  expect_cli_error(eval + "--ids " + file("one.jsonl", "[256]\n"), "one.jsonl line 1: needs at least 2 tokens");
  expect_cli_error(eval + "--ids " + file("none.jsonl", ""), "none.jsonl: no lines of token ids");
  expect_cli_error(eval + "--ids " + dir_.string(), "is a folder; give a JSON lines file");
  // --data: another tokenizer's shard, one without a recorded vocabulary, a corrupt one.
  nvfp4::io::ShardHeader h;
  h.vocab_size = 50257, h.tokenizer_id = 2;
  const std::vector<uint16_t> big = {50256, 300, 400};
  nvfp4::io::write_token_shard((dir_ / "gpt2.bin").string(), h, big);
  expect_cli_error(eval + "--data " + (dir_ / "gpt2.bin").string(), "gpt2.bin: its tokenizer has 50257 ids");
  h.vocab_size = 257;  // the byte tokenizer's size, but a BPE tokenizer's ids
  const std::vector<uint16_t> small = {256, 100, 200};
  nvfp4::io::write_token_shard((dir_ / "bpe.bin").string(), h, small);
  expect_cli_error(eval + "--data " + (dir_ / "bpe.bin").string(),
                   "bpe.bin: its tokens are another tokenizer's (hf, 257 ids), not the model's (byte, 257 ids)");
  h.vocab_size = 0, h.tokenizer_id = 0;  // llm.c's own shards record neither
  nvfp4::io::write_token_shard((dir_ / "llmc.bin").string(), h, big);
  expect_cli_error(eval + "--data " + (dir_ / "llmc.bin").string(), "llmc.bin: token 0 is 50256, not an id of the model's");
  h.vocab_size = 257, h.tokenizer_id = 1;
  nvfp4::io::write_token_shard((dir_ / "cut.bin").string(), h, small);
  fs::resize_file(dir_ / "cut.bin", fs::file_size(dir_ / "cut.bin") - 1);
  expect_cli_error(eval + "--data " + (dir_ / "cut.bin").string(), "cut.bin");
  // Options.
  expect_cli_error(eval + "--text " + text + " --ids " + blank, "give exactly one of --text FILES, --data SHARDS, --ids");
  expect_cli_error(eval, "give exactly one of --text FILES");
  expect_cli_error(eval + "--text " + text + " --reference w5", "--reference w5: not a precision");
  expect_cli_error(eval + "--text " + text + " --reference bf16", "--reference bf16 is the CUDA engine's");
  expect_cli_error(eval + "--text " + text + " --per-layer", "--per-layer: --precision fp32 quantizes no linear layer");
  expect_cli_error(eval + "--text " + text + " --per-layer --precision fp32", "--per-layer: --precision fp32");
  expect_cli_error(eval + "--text " + text + " --per-layer --precision w4a16 --keep-bf16 'model.*'",
                   "--per-layer: no linear layer is quantized");
  expect_cli_error(eval + "--text " + text + " --batch 0", "--batch");
  r = nvfp4::test::run_cli(eval + "--text " + text + " --batch 4096 --json");  // slots: no more than windows
  EXPECT_EQ(r.status, 0) << r.output;
}

TEST_F(EvalCliErrorTest, SaveLogitsNeverReplacesAnInputAndChecksItsFolderFirst) {
  const fs::path m = dir_ / "m";
  write_byte_model(m, 64);
  std::ofstream(dir_ / "ids.jsonl") << "[256, 1, 2, 3]\n";
  const std::string eval = "eval " + m.string() + " --device cpu --ids " + (dir_ / "ids.jsonl").string() + " ";
  const std::string weights = read_file(m / "model.safetensors"), ids = read_file(dir_ / "ids.jsonl");
  expect_cli_error(eval + "--save-logits " + (dir_ / "ids.jsonl").string(), "would replace the input");
  expect_cli_error(eval + "--save-logits " + (dir_ / "." / "ids.jsonl").string(), "would replace the input");
  // The model's own files: before, --save-logits MODEL/model.safetensors replaced the weights.
  for (const std::string f : {"model.safetensors", "config.json", "nvfp4_tokenizer.json"}) {
    expect_cli_error(eval + "--save-logits " + (m / f).string(), "would replace the input");
  }
  EXPECT_EQ(read_file(m / "model.safetensors"), weights);
  EXPECT_EQ(read_file(dir_ / "ids.jsonl"), ids);
  expect_cli_error(eval + "--save-logits " + (dir_ / "no" / "l.safetensors").string(),
                   "the folder " + (dir_ / "no").string() + " does not exist");
  expect_cli_error(eval + "--save-logits " + dir_.string(), "is a folder; give a file name");
  expect_cli_error("eval " + m.string() + " --device cpu --text " + (dir_ / "ids.jsonl").string() + " --save-logits " +
                       (dir_ / "l.safetensors").string(),
                   "--save-logits needs --ids");
  // A line longer than the model's context cannot be run whole: named before anything runs.
  std::string line = "[256";
  for (int i = 0; i < 70; ++i) line += ", 7";
  std::ofstream(dir_ / "long.jsonl") << "[256, 1]\n" << line << "]\n";
  expect_cli_error("eval " + m.string() + " --device cpu --ids " + (dir_ / "long.jsonl").string() + " --save-logits " +
                       (dir_ / "l.safetensors").string(),
                   "long.jsonl line 2: 71 tokens; --save-logits runs each line whole");
  EXPECT_TRUE(nvfp4::test::temp_files_in(dir_).empty());
}

}  // namespace

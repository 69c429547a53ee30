// The `nvfp4` command line against bad input, run as an adversary would (issue 13, C1 C2 C7 C8
// C9 B4): an output that is its input, quantized files with corrupt scales, bytes that are not
// UTF-8, numeric options out of range, files where folders belong. Every case must end in exit
// status 1 and one line naming the file, tensor or option — never "internal error" (exit 2),
// never garbage with exit 0, never a lost input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_test.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/checkpoint.hpp"
#include "nvfp4/safetensors.hpp"
#include "support/test_support.hpp"
#include "support/tiny_corpus.hpp"
#include "train/report.hpp"

namespace fs = std::filesystem;

namespace {

using nvfp4::test::Cli;
using Result = nvfp4::test::CliResult;
inline Result run(const std::string& args) { return nvfp4::test::run_cli(args); }

std::string read_bytes(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Copies `in` to `out` with the bytes of tensor `name` changed by `edit` (metadata kept).
void rewrite_tensor(const std::string& in, const std::string& out, const std::string& name,
                    const std::function<void(std::vector<uint8_t>&)>& edit) {
  const auto f = nvfp4::io::SafetensorsFile::open(in);
  ASSERT_NE(f.find(name), nullptr) << name << " is not in " << in;
  std::vector<std::pair<std::string, nvfp4::Tensor>> tensors;
  for (const auto& t : f.tensors()) {
    const auto b = f.bytes(t);
    std::vector<uint8_t> v(b.begin(), b.end());
    if (t.name == name) edit(v);
    tensors.emplace_back(t.name, nvfp4::Tensor::from_bytes(t.dtype, t.shape, std::move(v)));
  }
  nvfp4::io::write_file(out, tensors, f.metadata());
}

void set_f32(std::vector<uint8_t>& b, float v) { std::memcpy(b.data(), &v, 4); }

// A checkpoint of the tiny model after one training step (what sample and export-hf read).
std::string tiny_checkpoint(const std::string& dir) {
  const Result r = run("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + dir +
                       " --preset tiny --seq-len 32 --batch 2 --steps 1 --no-progress");
  EXPECT_EQ(r.status, 0) << r.output;
  return nvfp4::io::latest_checkpoint(dir);
}

// The status and message every bad input must give: exit 1, not an internal error, and the
// message names `what`.
void expect_clear_error(const Result& r, const std::string& what, const std::string& context) {
  EXPECT_EQ(r.status, 1) << context << ":\n" << r.output;
  EXPECT_EQ(r.output.find("internal error"), std::string::npos) << context << ":\n" << r.output;
  EXPECT_NE(r.output.find(what), std::string::npos) << context << ": the message should name " << what << ":\n"
                                                    << r.output;
  EXPECT_EQ(r.output.find("nvfp4: nvfp4:"), std::string::npos) << context << ":\n" << r.output;
}

// --- C1: an output that is the input ------------------------------------------------------------

TEST_F(Cli, OutputThatIsTheInputIsRefusedAndTheInputKept) {
  const std::string in = MakeInput();
  const std::string q = path("q.safetensors");
  ASSERT_EQ(run("qtensor " + in + " " + q).status, 0);
  const std::string in_bytes = read_bytes(in), q_bytes = read_bytes(q);
  fs::create_hard_link(in, path("hard.safetensors"));
  fs::create_symlink(in, path("sym.safetensors"));
  fs::create_hard_link(q, path("qhard.safetensors"));
  // The same file under other names: itself, "./" and "dir/../" spellings, a hard link, a symlink.
  const std::string dotted = (dir_ / "." / "in.safetensors").string();
  const std::string up = (dir_ / ".." / dir_.filename() / "in.safetensors").string();
  for (const std::string& out : {in, dotted, up, path("hard.safetensors"), path("sym.safetensors")}) {
    SCOPED_TRACE(out);
    const Result r = run("qtensor " + in + " " + out);
    expect_clear_error(r, "choose another output", "qtensor IN " + out);
    EXPECT_NE(r.output.find(out), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(in), std::string::npos) << r.output;
  }
  for (const std::string& out : {q, path("qhard.safetensors")}) {
    const Result r = run("dequant " + q + " " + out);
    expect_clear_error(r, "choose another output", "dequant Q " + out);
  }
  // Relative spellings from inside the folder: "x" and "./x".
  // (run() starts the binary itself: a --version first, then the command from inside dir_.)
  const Result rel = run("--version >/dev/null; cd " + dir_.string() + " && " + std::string(NVFP4_BINARY) +
                         " qtensor in.safetensors ./in.safetensors");
  expect_clear_error(rel, "choose another output", "qtensor x ./x");
  EXPECT_TRUE(read_bytes(in) == in_bytes) << "the input must be untouched";
  EXPECT_TRUE(read_bytes(q) == q_bytes) << "the input must be untouched";
  EXPECT_TRUE(nvfp4::test::temp_files_in(dir_).empty());
  // A different output next to the input is fine.
  EXPECT_EQ(run("dequant " + q + " " + path("d.safetensors")).status, 0);
}

TEST_F(Cli, ExportIntoTheFolderOfItsCheckpointNeverReplacesIt) {
  // export-hf writes DIR/model.safetensors: a checkpoint of that name in DIR would be replaced.
  const std::string ckpt = path("model.safetensors");
  nvfp4::io::write_file(ckpt, {{"x", nvfp4::Tensor::from_f32({1, 2}, {2})}});
  const std::string before = read_bytes(ckpt);
  const Result r = run("export-hf " + ckpt + " " + dir_.string() + " --force");
  expect_clear_error(r, "choose another output", "export-hf DIR/model.safetensors DIR");
  EXPECT_TRUE(read_bytes(ckpt) == before) << "the checkpoint must be untouched";
}

// --- C2: quantized files with corrupt scales ----------------------------------------------------

TEST_F(Cli, DequantRefusesNonFiniteOrNegativeScalesAndNamesTheTensor) {
  const std::string in = MakeInput();
  struct Case {
    std::string format, tensor;  // the stored tensor that is corrupted
    std::function<void(std::vector<uint8_t>&)> edit;
    std::string what;  // in the message
  };
  const std::vector<Case> cases = {
      {"nvfp4", "layer.proj.row.amax", [](auto& b) { set_f32(b, NAN); }, "layer.proj.row.amax"},
      {"nvfp4", "layer.proj.row.amax", [](auto& b) { set_f32(b, INFINITY); }, "layer.proj.row.amax"},
      {"nvfp4", "layer.proj.row.amax", [](auto& b) { set_f32(b, -2.0f); }, "layer.proj.row.amax"},
      {"nvfp4", "layer.proj.col.amax", [](auto& b) { set_f32(b, NAN); }, "layer.proj.col.amax"},
      {"nvfp4", "layer.proj.row.s", [](auto& b) { b[3] = 0x7F; }, "layer.proj.row.s"},
      {"nvfp4", "layer.proj.row.s", [](auto& b) { b[5] = 0xFF; }, "layer.proj.row.s"},
      {"nvfp4", "layer.proj.row.s", [](auto& b) { b[5] = 0xB8; }, "layer.proj.row.s"},  // -1.0
      {"mxfp4", "layer.proj.row.e8m0", [](auto& b) { b[2] = 0xFF; }, "layer.proj.row.e8m0"},
      {"fp8-e4m3", "layer.proj.row.scale_inv", [](auto& b) { set_f32(b, NAN); }, "layer.proj.row.scale_inv"},
      {"fp8-e4m3", "layer.proj.row.scale_inv", [](auto& b) { set_f32(b, -1.0f); }, "layer.proj.row.scale_inv"},
      {"fp8-e5m2", "layer.proj.row.scale_inv", [](auto& b) { set_f32(b, INFINITY); }, "layer.proj.row.scale_inv"},
      {"fp8-e4m3", "layer.proj.row.amax", [](auto& b) { set_f32(b, -INFINITY); }, "layer.proj.row.amax"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const std::string n = std::to_string(i) + ".safetensors";
    SCOPED_TRACE(c.format + " " + c.tensor + " case " + n);
    const std::string q = path("q" + n), bad = path("bad" + n), out = path("out" + n);
    ASSERT_EQ(run("qtensor " + in + " " + q + " --columnwise --format " + c.format).status, 0);
    rewrite_tensor(q, bad, c.tensor, c.edit);
    expect_clear_error(run("dequant " + bad + " " + out), c.what, "dequant");
    EXPECT_FALSE(fs::exists(out)) << "nothing may be written";
    // inspect reads the same groups and reports the same damage.
    expect_clear_error(run("inspect " + bad), c.what, "inspect");
  }
}

TEST_F(Cli, DequantThatWouldOverflowNamesTheTensorAndElement) {
  // MXFP4 element 6.0 (code 7) under the largest E8M0 scale 2^127 is 1.0e39: not an FP32.
  const std::string in = MakeInput(), q = path("q.safetensors"), bad = path("bad.safetensors");
  ASSERT_EQ(run("qtensor " + in + " " + q + " --format mxfp4").status, 0);
  const std::string mid = path("mid.safetensors");
  rewrite_tensor(q, mid, "layer.proj.row.e8m0", [](auto& b) { b[1] = 254; });  // block 1: elements 32..63
  rewrite_tensor(mid, bad, "layer.proj.row.q", [](auto& b) { b[17] = 0x70; });  // element 35 (high nibble of byte 17)
  const Result r = run("dequant " + bad + " " + path("out.safetensors"));
  expect_clear_error(r, "layer.proj", "dequant");
  EXPECT_NE(r.output.find("element 35"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("out.safetensors")));
}

// --- C7: bytes that are not UTF-8 ---------------------------------------------------------------

TEST_F(Cli, SampleKeepsBytesThatAreNotUtf8) {
  const std::string ckpt = tiny_checkpoint(path("run"));
  ASSERT_FALSE(ckpt.empty());
  // A prompt ending in half a UTF-8 sequence, and a completion of random bytes (one step of
  // training: the model still spreads its probability over all 256 bytes).
  const std::string prompt = "'caf\xc3\xa9 \xe2\x82'";
  Result r = run("sample " + ckpt + " --prompt " + prompt + " --tokens 40 --temperature 1.5 --top-k 0 --seed 4 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find("{\n")));
  EXPECT_EQ(j.at("prompt").get<std::string>(), "caf\xc3\xa9 \xef\xbf\xbd") << "invalid bytes become U+FFFD";
  EXPECT_GT(j.at("tokens").get<int>(), 0);
  // Without --json the bytes go out as they are: the prompt, then the completion.
  r = run("sample " + ckpt + " --prompt " + prompt + " --tokens 40 --temperature 1.5 --top-k 0 --seed 4 2>/dev/null");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output.rfind("caf\xc3\xa9 \xe2\x82", 0), 0u) << r.output;
}

// --- C8: numeric options ------------------------------------------------------------------------

TEST_F(Cli, EveryNumericOptionRejectsValuesOutsideItsRange) {
  const std::string train = "train --data " + path("nodata") + " --out " + path("o") + " ";
  const std::string compare = "compare --data " + path("nodata") + " --out " + path("o") + " ";
  const std::string sample = "sample " + path("no.safetensors") + " ";
  const std::string data = "data " + path("no.txt") + " --out " + path("d") + " ";
  const std::string in = MakeInput();
  const std::string qtensor = "qtensor " + in + " " + path("q.safetensors") + " ";
  const std::string tokenizer = "tokenizer train " + in + " --out " + path("t.json") + " ";
  struct Case {
    std::string command, option, value;
  };
  const std::vector<Case> cases = {
      {train, "--layers", "0"}, {train, "--d-model", "0"}, {train, "--heads", "0"}, {train, "--kv-heads", "0"},
      {train, "--seq-len", "0"}, {train, "--vocab", "0"}, {train, "--ffn", "-1"}, {train, "--warmup", "-1"},
      {train, "--threads", "-1"}, {train, "--steps", "99999999999999999999"}, {train, "--steps", "0"},
      {train, "--steps", "-3"}, {train, "--layers", "99999999999"}, {train, "--batch", "0"},
      {train, "--grad-accum", "0"}, {train, "--lr", "nan"}, {train, "--lr", "0"}, {train, "--lr", "inf"},
      {train, "--beta1", "1"}, {train, "--beta2", "nan"}, {train, "--weight-decay", "-1"}, {train, "--grad-clip", "nan"},
      {train, "--val-every", "-1"}, {train, "--val-batches", "0"}, {train, "--ckpt-every", "-1"},
      {train, "--keep-checkpoints", "0"}, {train, "--seed", "-1"}, {train, "--spike-factor", "1"},
      {train, "--min-lr-frac", "2"}, {train, "--decay-frac", "nan"}, {train + "--recipe nvfp4 ", "--switch-bf16-at", "nan"},
      {train + "--recipe nvfp4 ", "--switch-bf16-at", "1.5"}, {train, "--layers", "abc"}, {train, "--d-model", "1e3"},
      {compare, "--seeds", "0"}, {compare, "--layers", "0"}, {compare, "--steps", "-5"},
      {sample, "--temperature", "nan"}, {sample, "--temperature", "-1"}, {sample, "--top-k", "-1"},
      {sample, "--seed", "-1"}, {sample, "--tokens", "0"},
      {"formats ", "--rows", "0"}, {"formats ", "--cols", "-1"}, {"formats ", "--repeats", "0"}, {"formats ", "--seed", "-1"},
      {"formats ", "--rows", "4294967296"}, {"formats --cols 65536 ", "--rows", "65536"},
      {data, "--val-fraction", "1"}, {data, "--val-fraction", "nan"}, {data, "--seed", "-1"},
      {data, "--shard-tokens", "0"}, {data, "--doc-bytes", "0"},
      {qtensor, "--seed", "-1"},
      {tokenizer, "--vocab", "255"}, {tokenizer, "--vocab", "99999999999"}, {tokenizer + "--vocab 300 ", "--min-frequency", "0"},
      {tokenizer + "--vocab 300 ", "--threads", "-1"},
  };
  for (const auto& c : cases) {
    const std::string args = c.command + c.option + " " + c.value;
    expect_clear_error(run(args), c.option, args);
  }
}

TEST_F(Cli, TokenCountThatWouldOverflowIsRefused) {
  // 2^62 steps of 4 x 64 tokens: the token count does not fit in 64 bits.
  const Result r = run("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + path("o") +
                       " --preset tiny --seq-len 64 --batch 4 --steps 4611686018427387904 --no-progress");
  expect_clear_error(r, "--steps", "train --steps 2^62");
  EXPECT_EQ(r.output.find("step  tokens"), std::string::npos) << "no training may start:\n" << r.output;
}

// --- C9: "internal error" paths -----------------------------------------------------------------

TEST_F(Cli, BadInputNeverEndsInAnInternalError) {
  const std::string file = path("file.txt");
  std::ofstream(file) << "not a folder\n";
  const std::string text = path("text.txt");
  std::ofstream(text) << "Some text to tokenize.\n";
  const std::string in = MakeInput();
  struct Case {
    std::string args, what;
  };
  const std::vector<Case> cases = {
      {"train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + path("o") +
           " --preset tiny --recipe nvfp4 --bf16-layers 99999999999-0",
       "--bf16-layers"},
      {"train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + path("o") +
           " --preset tiny --steps 1 --batch 1 --seq-len 16 --recipe nvfp4 --bf16-layers 2147483647-2",
       "--bf16-layers"},
      {"compare --data " + nvfp4::test::tiny_corpus_dir() + " --out " + path("o") +
           " --preset tiny --steps 1 --batch 1 --seq-len 16 --recipes nvfp4:bf16=4294967296-1",
       "bf16=4294967296-1"},
      {"compare --data " + nvfp4::test::tiny_corpus_dir() + " --out " + path("o") + " --preset tiny --steps 1 --batch 1 --seq-len 16 --recipes nvfp4:switch=nan",
       "switch=nan"},
      // --out naming a file: the message names it (and says a folder is wanted).
      {"train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + file + " --preset tiny --steps 1", file},
      {"compare --data " + nvfp4::test::tiny_corpus_dir() + " --out " + file + " --preset tiny --steps 1", file},
      {"data " + text + " --out " + file, file},
      {"tokenizer train " + text + " --vocab 300 --out " + file + "/tokenizer.json", file},
      {"report " + dir_.string() + " --out " + file, file},
      {"export-hf " + in + " " + file, file},
      {"train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + path("o") + " --config " + file, file},
      {"train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + path("o") + " --config " + dir_.string(),
       dir_.string()},
  };
  for (const auto& c : cases) expect_clear_error(run(c.args), c.what, c.args);
}

// --- B4: one error prefix -----------------------------------------------------------------------

TEST(CliErrors, LibraryMessagesDoNotCarryTheProgramName) {
  // main prints "nvfp4: " + what(); a message that began with "nvfp4: " itself read
  // "nvfp4: nvfp4: cpu::set_num_threads: ...".
  for (const std::string& what :
       {nvfp4::test::error_of([] { nvfp4::cpu::set_num_threads(0); }), nvfp4::test::error_of([] {
          nvfp4::train::CompareReport r;
          r.ema_factor = 2;
          (void)nvfp4::train::render_html(r);
        })}) {
    EXPECT_FALSE(what.empty());
    EXPECT_NE(what.rfind("nvfp4:", 0), 0u) << what;
  }
}

}  // namespace

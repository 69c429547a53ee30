// Datasets as contracts (issue 13, A6 / C3 / C5): token shards of both widths (uint16 and
// uint32) and the old uint16 layout, the tokenizer's full description in manifests and
// checkpoints, the dataset identity checked on --resume, the manifest checked against its
// shards, temp files of killed writers cleaned up, and `data --force` that never leaves the old
// dataset broken.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nvfp4/checkpoint.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"
#include "nvfp4/tokenizer.hpp"
#include "support/test_support.hpp"
#include "support/tiny_corpus.hpp"
#include "support/tiny_run.hpp"
#include "nvfp4/checkpoint_model.hpp"
#include "train/trainer.hpp"

namespace fs = std::filesystem;
namespace io = nvfp4::io;
using nvfp4::test::error_of;

namespace {

constexpr char kPrefix[] = "nvfp4_dataset_";
using DatasetTest = nvfp4::test::ScratchDirTest<kPrefix>;

std::string Read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void Write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
void Contains(const std::string& message, const std::vector<std::string>& parts) {
  for (const auto& p : parts) EXPECT_NE(message.find(p), std::string::npos) << "message: " << message << "\nmissing: " << p;
}

// A shard file as raw bytes: the 256-int32 header `h` then the tokens, each `width` bytes LE.
std::string ShardBytes(std::vector<int32_t> h, const std::vector<uint32_t>& tokens, int width) {
  h.resize(256, 0);
  std::string b(1024, '\0');
  std::memcpy(b.data(), h.data(), 1024);
  for (const uint32_t t : tokens) {
    for (int k = 0; k < width; ++k) b += static_cast<char>((t >> (8 * k)) & 0xff);
  }
  return b;
}

// The pid of a process that has exited and been reaped: no process has it (until pids wrap).
int64_t DeadPid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  int st = 0;
  ::waitpid(p, &st, 0);
  return p;
}

// A tokenizer with a vocabulary above 65,536: byte b is token 65536 + b, end of text 70000.
class WideTokenizer final : public io::Tokenizer {
 public:
  std::string name() const override { return "wide-test"; }
  int32_t vocab_size() const override { return 70001; }
  int32_t eot_token() const override { return 70000; }
  int32_t shard_id() const override { return 0; }
  std::string describe() const override { return R"({"name":"wide-test","kind":"test","vocab_size":70001,"eot_token":70000})"; }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> out;
    for (const char c : text) out.push_back(65536 + static_cast<unsigned char>(c));
    return out;
  }
  std::string decode(std::span<const int32_t> tokens) const override {
    std::string out;
    for (const int32_t t : tokens) out += t == 70000 ? '|' : static_cast<char>(t - 65536);
    return out;
  }
};

// Text files for a small dataset: `n` documents of a few hundred bytes each.
void WriteCorpus(const fs::path& dir, int n, int salt = 0) {
  for (int d = 0; d < n; ++d) {
    std::string text;
    for (int i = 0; i < 40; ++i) text += "doc " + std::to_string(d + salt) + " line " + std::to_string(i) + " of text.\n";
    Write(dir / ("doc" + std::to_string(100 + d) + ".txt"), text);
  }
}

io::DataOptions Options(const fs::path& in, const fs::path& out) {
  io::DataOptions o;
  o.inputs = {in.string()};
  o.out_dir = out.string();
  o.val_fraction = 0.25;
  o.shard_tokens = 2000;
  o.shuffle = false;
  return o;
}

// The tiny preset on the tiny corpus, `steps` steps (checkpoint at the end).
nvfp4::train::TrainOptions TinyRun(const fs::path& out, int64_t steps) {
  auto o = nvfp4::test::tiny_run("cpu", out.string());
  o.steps = steps;
  o.schedule = nvfp4::train::parse_schedule("cosine", 3e-3, 1, steps);
  o.threads = 2;
  return o;
}

nlohmann::json Manifest(const fs::path& dir) { return nlohmann::json::parse(Read(dir / "manifest.json")); }
void WriteManifest(const fs::path& dir, const nlohmann::json& m) { Write(dir / "manifest.json", m.dump(2)); }

// Every file of a folder and its bytes, to check a dataset is exactly what it was.
std::map<std::string, std::string> Snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename().string()] = Read(e.path());
  return out;
}

// ---- A6: the shard layout ---------------------------------------------------------------------

TEST_F(DatasetTest, Uint32ShardWrittenByHandReadsIdsAbove65535) {
  // Layout version 2, header[8] = 4 bytes per token: what the writer makes for large vocabularies.
  const std::vector<uint32_t> t = {0, 65535, 65536, 70000, 199999, 12};
  const fs::path p = dir_ / "wide.bin";
  Write(p, ShardBytes({20240520, 2, 6, 200000, 0, 1, 3, 1, 4}, t, 4));
  const auto s = io::TokenShard::open(p.string());
  ASSERT_EQ(s.size(), 6);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(s.tokens()[static_cast<int64_t>(i)], static_cast<int32_t>(t[i]));
  EXPECT_EQ(s.header().vocab_size, 200000);
  EXPECT_EQ(s.header().split, io::Split::val);
  EXPECT_EQ(s.header().index, 3);
}

TEST_F(DatasetTest, OldUint16ShardWrittenAsTheOldWriterDidStillReads) {
  // Version 1: no width slot, uint16 tokens (the layout of every dataset made before).
  const std::vector<uint32_t> t = {256, 72, 105, 33, 10, 256, 0, 255};
  const fs::path p = dir_ / "old.bin";
  Write(p, ShardBytes({20240520, 1, 8, 257, 1, 0, 0, 2}, t, 2));
  const auto s = io::TokenShard::open(p.string(), 257);
  ASSERT_EQ(s.size(), 8);
  EXPECT_EQ(std::vector<int32_t>(s.tokens().begin(), s.tokens().end()), std::vector<int32_t>(t.begin(), t.end()));
  EXPECT_EQ(s.header().documents, 2);
  io::ShardLoader L({p.string()}, 1, 4, 257);
  EXPECT_EQ(L.next(), (std::vector<int32_t>{256, 72, 105, 33, 10}));
}

TEST_F(DatasetTest, WriterPicksTheWidthAndRecordsVersionAndWidth) {
  EXPECT_EQ(io::shard_token_bytes(257), 2);
  EXPECT_EQ(io::shard_token_bytes(65536), 2);
  EXPECT_EQ(io::shard_token_bytes(65537), 4);
  io::ShardHeader h;
  h.vocab_size = 257;
  h.tokenizer_id = 1;
  const std::vector<uint16_t> narrow = {256, 1, 2, 255};
  io::write_token_shard((dir_ / "n.bin").string(), h, narrow);
  const std::string nb = Read(dir_ / "n.bin");
  ASSERT_EQ(nb.size(), 1024u + 2 * 4);
  int32_t hd[9];
  std::memcpy(hd, nb.data(), sizeof hd);
  EXPECT_EQ(hd[1], 2);  // version
  EXPECT_EQ(hd[8], 2);  // bytes per token
  // The token bytes are exactly the old layout's (uint16 little-endian after 1024 bytes).
  EXPECT_EQ(nb.substr(1024), ShardBytes({}, {256, 1, 2, 255}, 2).substr(1024));

  h.vocab_size = 100000;
  const std::vector<uint32_t> wide = {99999, 65536, 7};
  io::write_token_shard((dir_ / "w.bin").string(), h, wide);
  const std::string wb = Read(dir_ / "w.bin");
  ASSERT_EQ(wb.size(), 1024u + 4 * 3);
  std::memcpy(hd, wb.data(), sizeof hd);
  EXPECT_EQ(hd[1], 2);
  EXPECT_EQ(hd[8], 4);
  const auto s = io::TokenShard::open((dir_ / "w.bin").string());
  EXPECT_EQ(std::vector<int32_t>(s.tokens().begin(), s.tokens().end()), (std::vector<int32_t>{99999, 65536, 7}));
  // uint16 cannot hold a vocabulary above 65,536; a token outside the vocabulary is refused.
  Contains(error_of([&] { io::write_token_shard((dir_ / "x.bin").string(), h, narrow); }), {"x.bin", "100000", "uint16"});
  const std::vector<uint32_t> bad = {100000};
  Contains(error_of([&] { io::write_token_shard((dir_ / "x.bin").string(), h, bad); }), {"x.bin", "token 100000"});
}

TEST_F(DatasetTest, BadWidthAndWideTokensOutsideTheVocabularyNameTheShard) {
  const fs::path p = dir_ / "bad.bin";
  Write(p, ShardBytes({20240520, 2, 1, 300, 0, 0, 0, 0, 3}, {1}, 3));
  Contains(error_of([&] { io::TokenShard::open(p.string()); }), {p.string(), "3 bytes per token", "header[8]"});
  Write(p, ShardBytes({20240520, 2, 2, 300, 0, 0, 0, 0, 4}, {1, 300}, 4));
  Contains(error_of([&] { io::TokenShard::open(p.string()); }), {p.string(), "token 300 at position 1"});
  Write(p, ShardBytes({20240520, 2, 2, 0, 0, 0, 0, 0, 4}, {1, 0x80000000u}, 4));  // no vocabulary recorded
  Contains(error_of([&] { io::TokenShard::open(p.string()); }), {p.string(), "token 2147483648"});
  Write(p, ShardBytes({20240520, 2, 3, 300, 0, 0, 0, 0, 4}, {1, 2}, 4));
  Contains(error_of([&] { io::TokenShard::open(p.string()); }), {p.string(), "3 tokens", "truncated"});
}

TEST_F(DatasetTest, LargeVocabularyDatasetsGetUint32ShardsThatRoundTrip) {
  WriteCorpus(dir_ / "in", 6);
  auto o = Options(dir_ / "in", dir_ / "wide");
  o.tokenizer_object = std::make_shared<WideTokenizer>();
  const auto sum = io::build_token_dataset(o);
  const auto m = Manifest(dir_ / "wide");
  EXPECT_EQ(m.at("shard_layout").at("token_dtype"), "uint32");
  EXPECT_EQ(m.at("shard_layout").at("token_bytes"), 4);
  EXPECT_EQ(m.at("shard_layout").at("version"), 2);
  EXPECT_EQ(m.at("tokenizer").at("vocab_size"), 70001);
  const auto ds = io::open_token_dataset((dir_ / "wide").string());
  EXPECT_EQ(ds.token_bytes, 4);
  EXPECT_EQ(ds.vocab_size, 70001);
  io::ShardLoader L(ds.shards(io::Split::train), 2, 8);
  const auto w = L.next();
  EXPECT_EQ(w.front(), 70000);  // end of text, then "doc 10..." as 65536 + byte
  EXPECT_EQ(w[1], 65536 + 'd');
  // The byte tokenizer keeps uint16 shards.
  const auto narrow = io::build_token_dataset(Options(dir_ / "in", dir_ / "narrow"));
  EXPECT_EQ(Manifest(dir_ / "narrow").at("shard_layout").at("token_dtype"), "uint16");
  EXPECT_EQ(Manifest(dir_ / "narrow").at("shard_layout").at("token_bytes"), 2);
  EXPECT_EQ(narrow.train.tokens, sum.train.tokens);
}

// ---- A6: the tokenizer's description -------------------------------------------------------

TEST_F(DatasetTest, TokenizerDescriptionNamesKindVocabularyAndSpecialTokens) {
  const auto d = nlohmann::json::parse(io::ByteTokenizer().describe());
  EXPECT_EQ(d.at("name"), "byte");
  EXPECT_EQ(d.at("kind"), "byte");
  EXPECT_EQ(d.at("vocab_size"), 257);
  EXPECT_EQ(d.at("eot_token"), 256);
  EXPECT_EQ(d.at("special_tokens").at("<|endoftext|>"), 256);
  EXPECT_EQ(io::make_tokenizer_from_description(d.dump(), "x")->name(), "byte");
  EXPECT_EQ(io::make_tokenizer_from_description("byte", "old.ckpt")->vocab_size(), 257);  // old checkpoints
  auto other = d;
  other["vocab_size"] = 50257;
  Contains(error_of([&] { io::make_tokenizer_from_description(other.dump(), "c.safetensors"); }),
           {"c.safetensors", "vocab_size 50257", "257"});
  Contains(error_of([&] { io::make_tokenizer_from_description("gpt9", "c.safetensors"); }), {"c.safetensors", "gpt9"});
  Contains(error_of([&] { io::make_tokenizer_from_description("{\"kind\": 1}", "c.safetensors"); }),
           {"c.safetensors", "\"name\""});
}

TEST_F(DatasetTest, CheckpointsStoreTheTokenizerDescriptionAndOldOnesStillLoad) {
  const auto o = TinyRun(dir_ / "run", 2);
  const auto r = nvfp4::train::train(o);
  ASSERT_FALSE(r.last_checkpoint.empty());
  const auto ck = io::CheckpointReader::open(r.last_checkpoint);
  const auto d = nlohmann::json::parse(ck.metadata("nvfp4.tokenizer"));
  EXPECT_EQ(d, nlohmann::json::parse(io::ByteTokenizer().describe()));
  EXPECT_EQ(nvfp4::infer::load_checkpoint_tokenizer(r.last_checkpoint)->eot_token(), 256);
  const auto res = nvfp4::test::run_cli("sample " + r.last_checkpoint + " --prompt Hi --tokens 4");
  EXPECT_EQ(res.status, 0) << res.output;

  // The same checkpoint as an older nvfp4 wrote it: the tokenizer's name only.
  std::map<std::string, std::string> meta = ck.all_metadata();
  meta["nvfp4.tokenizer"] = "byte";
  for (const char* k : {io::kCheckpointVersionKey, io::kCheckpointCrcKey, "format"}) meta.erase(k);
  std::vector<std::vector<float>> data;
  std::vector<io::CheckpointTensor> tensors;
  for (const auto& n : ck.names()) {
    const auto& shape = ck.shape(n);
    data.emplace_back(static_cast<size_t>(nvfp4::shape_numel(shape)));
    ck.read_into(n, data.back(), shape);
  }
  size_t i = 0;
  for (const auto& n : ck.names()) tensors.push_back({n, ck.shape(n), data[i++].data()});
  const std::string old = (dir_ / "old.safetensors").string();
  io::write_checkpoint(old, tensors, meta);
  EXPECT_EQ(nvfp4::infer::load_checkpoint_tokenizer(old)->name(), "byte");
  const auto res_old = nvfp4::test::run_cli("sample " + old + " --prompt Hi --tokens 4");
  EXPECT_EQ(res_old.status, 0) << res_old.output;
  const auto exp = nvfp4::test::run_cli("export-hf " + old + " " + (dir_ / "hf").string());
  EXPECT_EQ(exp.status, 0) << exp.output;
}

// ---- C3: the manifest against its shards, the dataset identity on --resume -------------------

TEST_F(DatasetTest, ManifestWithTrainAndValSwappedIsRefused) {
  WriteCorpus(dir_ / "in", 8);
  io::build_token_dataset(Options(dir_ / "in", dir_ / "d"));
  auto m = Manifest(dir_ / "d");
  for (auto& s : m.at("shards")) s["split"] = s.at("split") == "train" ? "val" : "train";
  WriteManifest(dir_ / "d", m);
  const std::string msg = error_of([&] { io::manifest_shards((dir_ / "d").string(), io::Split::train); });
  Contains(msg, {(dir_ / "d" / "train_000000.bin").string(), "header says split train", "lists it under val", "mixed up"});
}

TEST_F(DatasetTest, ShardWhoseHeaderSplitDisagreesWithTheManifestIsRefused) {
  WriteCorpus(dir_ / "in", 8);
  io::build_token_dataset(Options(dir_ / "in", dir_ / "d"));
  const fs::path shard = dir_ / "d" / "train_000000.bin";
  std::string b = Read(shard);
  const int32_t val = 1;
  std::memcpy(b.data() + 4 * 5, &val, 4);
  Write(shard, b);
  Contains(error_of([&] { io::open_token_dataset((dir_ / "d").string()); }),
           {shard.string(), "header says split val", "manifest", "nvfp4 data --force"});
}

TEST_F(DatasetTest, ShardOfAnotherSizeTokenizerOrWidthIsRefused) {
  WriteCorpus(dir_ / "in", 8);
  io::build_token_dataset(Options(dir_ / "in", dir_ / "d"));
  const fs::path shard = dir_ / "d" / "train_000000.bin";
  const std::string good = Read(shard);
  io::ShardHeader h;
  h.vocab_size = 257;
  h.tokenizer_id = 1;
  const std::vector<uint16_t> few = {256, 1, 2};
  io::write_token_shard(shard.string(), h, few);  // another shard under the same name
  Contains(error_of([&] { io::open_token_dataset((dir_ / "d").string()); }), {shard.string(), "holds 3 tokens", "manifest lists"});
  const int64_t n = static_cast<int64_t>(good.size() - 1024) / 2;
  std::vector<uint16_t> same(static_cast<size_t>(n), 1);
  h.vocab_size = 300;
  io::write_token_shard(shard.string(), h, same);
  Contains(error_of([&] { io::open_token_dataset((dir_ / "d").string()); }), {shard.string(), "vocabulary 300", "257"});
  h.vocab_size = 257;
  std::vector<uint32_t> wide(static_cast<size_t>(n), 1);
  io::write_token_shard(shard.string(), h, wide);
  Contains(error_of([&] { io::open_token_dataset((dir_ / "d").string()); }), {shard.string(), "4-byte tokens", "says 2"});
  Write(shard, good);
  EXPECT_NO_THROW(io::open_token_dataset((dir_ / "d").string()));
  fs::remove(shard);
  Contains(error_of([&] { io::open_token_dataset((dir_ / "d").string()); }), {shard.string(), "listed in the dataset manifest"});
}

TEST_F(DatasetTest, IdentityFollowsTheDataNotTheFolder) {
  WriteCorpus(dir_ / "in", 8);
  io::build_token_dataset(Options(dir_ / "in", dir_ / "a"));
  fs::copy(dir_ / "a", dir_ / "copy");
  auto other = Options(dir_ / "in", dir_ / "b");
  other.seed = 7;  // another split of the same text
  io::build_token_dataset(other);
  const auto a = io::open_token_dataset((dir_ / "a").string());
  EXPECT_EQ(a.identity.rfind("fnv1a64:", 0), 0u) << a.identity;
  EXPECT_EQ(a.identity, io::open_token_dataset((dir_ / "copy").string()).identity);
  EXPECT_NE(a.identity, io::open_token_dataset((dir_ / "b").string()).identity);
  // A manifest written before the layout version (format_version 1, no token_bytes) still opens.
  auto m = Manifest(dir_ / "copy");
  m["format_version"] = 1;
  m["shard_layout"].erase("token_bytes");
  WriteManifest(dir_ / "copy", m);
  EXPECT_EQ(io::open_token_dataset((dir_ / "copy").string()).train.size(), a.train.size());
}

TEST_F(DatasetTest, ResumeWithAnotherDatasetIsRefusedNamingBoth) {
  auto o = TinyRun(dir_ / "run", 4);
  o.ckpt_every = 2;
  o.keep_checkpoints = 4;
  nvfp4::train::train(o);
  // "Interrupted" after step 2.
  fs::remove(io::checkpoint_path(o.out_dir, 4));
  // Another dataset of the same shape: the tiny corpus made again with another split.
  io::DataOptions d;
  d.inputs = {(fs::path(nvfp4::test::tiny_corpus_dir()).parent_path() / "text").string()};
  d.out_dir = (dir_ / "other").string();
  d.val_fraction = 0.2;
  d.seed = 5;
  io::build_token_dataset(d);
  auto r = o;
  r.resume = true;
  r.data_dir = d.out_dir;
  const std::string msg = error_of([&] { nvfp4::train::train(r); });
  Contains(msg, {"--resume", "ckpt_00000002", nvfp4::test::tiny_corpus_dir(), d.out_dir, "--data", "--out"});
  // A copy of the original dataset is the same dataset: the resume goes on.
  fs::copy(nvfp4::test::tiny_corpus_dir(), dir_ / "copy");
  r.data_dir = (dir_ / "copy").string();
  EXPECT_EQ(nvfp4::train::train(r).history.size(), 2u);
}

// ---- C5: temp files of killed writers, `data --force` --------------------------------------

TEST(TempFiles, NamesCarryTheWritersPid) {
  EXPECT_EQ(io::temp_name_pid(".run.json.tmp.1234.0"), 1234);
  EXPECT_EQ(io::temp_name_pid(".ckpt_00000002.safetensors.tmp.77.12"), 77);
  EXPECT_EQ(io::temp_name_pid(".out.tmp.42"), 42);
  EXPECT_EQ(io::temp_name_pid(".out.old.42", "old"), 42);
  for (const char* n : {"run.json.tmp.1.0", ".tmp.5", ".x.tmp.", ".x.tmp.12a", ".x.tmp.0", ".x.tmp.5.b", "notes.txt"}) {
    EXPECT_FALSE(io::temp_name_pid(n).has_value()) << n;
  }
  EXPECT_FALSE(io::process_is_gone(::getpid()));
  EXPECT_TRUE(io::process_is_gone(DeadPid()));
}

TEST_F(DatasetTest, TrainRemovesTempFilesOfKilledWritersOnly) {
  const fs::path out = dir_ / "run";
  const std::string dead = std::to_string(DeadPid()), live = std::to_string(::getpid());
  for (const std::string& n : std::vector<std::string>{".ckpt_00000002.safetensors.tmp." + dead + ".0",
                                                       ".run.json.tmp." + dead + ".3",
                                                       ".metrics.jsonl.tmp." + live + ".1", "notes.tmp.99"}) {
    Write(out / n, "partial");
  }
  nvfp4::train::train(TinyRun(out, 1));
  EXPECT_FALSE(fs::exists(out / (".ckpt_00000002.safetensors.tmp." + dead + ".0")));
  EXPECT_FALSE(fs::exists(out / (".run.json.tmp." + dead + ".3")));
  EXPECT_TRUE(fs::exists(out / (".metrics.jsonl.tmp." + live + ".1")));  // a running process's: never touched
  EXPECT_TRUE(fs::exists(out / "notes.tmp.99"));                          // not a temp name of ours
}

TEST_F(DatasetTest, DataRemovesTempFilesOfKilledWritersInItsOutput) {
  WriteCorpus(dir_ / "in", 4);
  const std::string dead = std::to_string(DeadPid());
  Write(dir_ / "d" / (".train_000000.bin.tmp." + dead + ".0"), "partial");
  // Only a dead writer's temp file in --out: the folder counts as empty, no --force needed.
  io::build_token_dataset(Options(dir_ / "in", dir_ / "d"));
  EXPECT_FALSE(fs::exists(dir_ / "d" / (".train_000000.bin.tmp." + dead + ".0")));
  EXPECT_TRUE(nvfp4::test::temp_files_in(dir_ / "d").empty());
}

TEST_F(DatasetTest, ForceFailingMidBuildLeavesTheOldDatasetIntact) {
  WriteCorpus(dir_ / "in", 12);
  auto o = Options(dir_ / "in", dir_ / "d");
  o.shard_tokens = 500;  // many shards: the failure below comes after some are written
  io::build_token_dataset(o);
  Write(dir_ / "d" / "notes.txt", "mine");
  const auto before = Snapshot(dir_ / "d");
  const auto train_before = io::manifest_shards((dir_ / "d").string(), io::Split::train);

  WriteCorpus(dir_ / "in", 12, 1000);  // new text, so a finished build would differ
  o.force = true;
  o.shard_tokens = 400;
  struct Killed {};
  int64_t calls = 0;
  EXPECT_THROW(io::build_token_dataset(o, [&](uint64_t done, uint64_t total) {
                 if (++calls > 1 && done > total / 2) throw Killed{};  // half way through the second pass
               }),
               Killed);
  EXPECT_EQ(Snapshot(dir_ / "d"), before);  // every file of the old dataset, byte for byte
  EXPECT_EQ(io::manifest_shards((dir_ / "d").string(), io::Split::train), train_before);
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".d."), std::string::npos) << "left behind: " << e.path();
  }
  // Finished, the swap puts the new dataset in place and keeps the user's other files.
  const auto s = io::build_token_dataset(o);
  EXPECT_EQ(Read(dir_ / "d" / "notes.txt"), "mine");
  EXPECT_EQ(io::manifest_shards((dir_ / "d").string(), io::Split::train).size(), static_cast<size_t>(s.train.shards));
  EXPECT_NE(Snapshot(dir_ / "d"), before);
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".d."), std::string::npos) << "left behind: " << e.path();
  }
}

TEST_F(DatasetTest, ForceThroughASymlinkedOutputKeepsTheLink) {
  WriteCorpus(dir_ / "in", 6);
  io::build_token_dataset(Options(dir_ / "in", dir_ / "real"));
  fs::create_directory_symlink(dir_ / "real", dir_ / "link");
  auto o = Options(dir_ / "in", dir_ / "link");
  o.force = true;
  o.seed = 3;
  io::build_token_dataset(o);
  EXPECT_TRUE(fs::is_symlink(dir_ / "link"));
  EXPECT_EQ(Manifest(dir_ / "real").at("options").at("seed"), 3);
}

TEST_F(DatasetTest, BuildsKilledMidSwapAreCleanedUpOrRestored) {
  WriteCorpus(dir_ / "in", 6);
  io::build_token_dataset(Options(dir_ / "in", dir_ / "d"));
  const auto complete = Snapshot(dir_ / "d");
  const std::string dead = std::to_string(DeadPid());
  // Killed half way through a build: a partial build folder with a dead writer's pid.
  Write(dir_ / (".d.tmp." + dead) / "train_000000.bin", "partial");
  // Killed between "old aside" and "new in": the old dataset (and the user's file) aside, no d.
  fs::rename(dir_ / "d", dir_ / (".d.old." + dead));
  Write(dir_ / (".d.old." + dead) / "notes.txt", "mine");
  // A live process's build is not touched.
  const fs::path live = dir_ / (".d.tmp." + std::to_string(::getpid()));
  fs::create_directories(live);

  const auto done = io::clean_stale_dataset_builds((dir_ / "d").string());
  EXPECT_EQ(done.size(), 2u);
  auto restored = complete;
  restored["notes.txt"] = "mine";
  EXPECT_EQ(Snapshot(dir_ / "d"), restored);
  EXPECT_FALSE(fs::exists(dir_ / (".d.tmp." + dead)));
  EXPECT_FALSE(fs::exists(dir_ / (".d.old." + dead)));
  EXPECT_TRUE(fs::exists(live));
  fs::remove(live);

  // Killed after the exchange, before the old folder was emptied: its files go (the user's
  // into d), the folder with them.
  fs::create_directories(dir_ / (".d.tmp." + dead));
  Write(dir_ / (".d.tmp." + dead) / "manifest.json", "{}");
  Write(dir_ / (".d.tmp." + dead) / "val_000003.bin", "old");
  Write(dir_ / (".d.tmp." + dead) / "mine.txt", "keep");
  io::clean_stale_dataset_builds((dir_ / "d").string());
  EXPECT_FALSE(fs::exists(dir_ / (".d.tmp." + dead)));
  EXPECT_EQ(Read(dir_ / "d" / "mine.txt"), "keep");
  EXPECT_EQ(Read(dir_ / "d" / "manifest.json"), complete.at("manifest.json"));
}

}  // namespace

// The training-data pipeline: document splitting and the train/val split, inputs (folders, globs,
// .gz, GNU info) and `nvfp4 data` end to end through the built binary. (Tokenizer, token shards
// and the shard loader: test_token_shards.cpp.)
#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/token_shards.hpp"
#include "nvfp4/tokenizer.hpp"
#include "io/data_test_util.hpp"

namespace fs = std::filesystem;
namespace io = nvfp4::io;

namespace {

using namespace nvfp4::data_test;

// ---- documents and the split ----------------------------------------------------------------

TEST(DataSplit, SmallTextIsOneDocument) {
  EXPECT_TRUE(io::split_documents("", 10).empty());
  const auto d = io::split_documents("hello\n\nworld\n", 64);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0], "hello\n\nworld\n");
}

TEST(DataSplit, BigTextIsCutAtBlankLinesIntoDocumentsOfAboutDocBytes) {
  const std::string text = Prose(1, 400);
  const int64_t limit = 1000;
  const auto docs = io::split_documents(text, limit);
  ASSERT_GT(docs.size(), text.size() / 1000);
  std::string joined;
  for (const auto d : docs) {
    EXPECT_LE(d.size(), 1000u);
    EXPECT_GT(d.size(), 500u - 200u) << "greedy grouping fills documents";  // paragraphs are < 200 bytes here
    joined += d;
  }
  EXPECT_EQ(joined, text);
  // Every document but the last ends at a paragraph boundary (a blank line).
  for (size_t i = 0; i + 1 < docs.size(); ++i) EXPECT_TRUE(docs[i].ends_with("\n\n")) << "document " << i;
}

TEST(DataSplit, OversizedParagraphsAreCutAtNewlinesThenCharacterBoundaries) {
  std::string lines;
  for (int i = 0; i < 50; ++i) lines += "line " + std::to_string(i) + " of one long paragraph\n";
  auto docs = io::split_documents(lines, 100);
  std::string joined;
  for (const auto d : docs) {
    EXPECT_LE(d.size(), 100u);
    EXPECT_TRUE(d.ends_with("\n"));
    joined += d;
  }
  EXPECT_EQ(joined, lines);

  std::string wide;
  for (int i = 0; i < 200; ++i) wide += "é";  // 2-byte characters, no newline
  docs = io::split_documents(wide, 33);
  joined.clear();
  for (const auto d : docs) {
    EXPECT_LE(d.size(), 33u);
    EXPECT_NE(static_cast<unsigned char>(d[0]) & 0xC0, 0x80) << "a document starts inside a character";
    joined += d;
  }
  EXPECT_EQ(joined, wide);
}

TEST(DataSplit, AssignmentIsDeterministicPerSeedAndDiffersAcrossSeeds) {
  const auto a = io::assign_splits(7, 400, 0.05);
  EXPECT_EQ(a, io::assign_splits(7, 400, 0.05));
  const auto b = io::assign_splits(8, 400, 0.05);
  EXPECT_NE(a, b);
  const auto val = std::count(a.begin(), a.end(), io::Split::val);
  EXPECT_GE(val, 8);   // expected 20; this range holds with probability > 0.999
  EXPECT_LE(val, 36);
  // The draw is a function of (seed, index) only: a longer list extends a shorter one.
  const auto longer = io::assign_splits(7, 800, 0.05);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), longer.begin()));
  EXPECT_NE(io::split_draw(7, 0), io::split_draw(7, 1));
  EXPECT_NE(io::split_draw(7, 0), io::split_draw(8, 0));
}

TEST(DataSplit, AtLeastOneValAndOneTrainDocumentFromTwoDocumentsOn) {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    for (int64_t n : {2, 3, 5}) {
      const auto s = io::assign_splits(seed, n, 0.05);
      EXPECT_GE(std::count(s.begin(), s.end(), io::Split::val), 1) << "seed " << seed << " n " << n;
      EXPECT_GE(std::count(s.begin(), s.end(), io::Split::train), 1) << "seed " << seed << " n " << n;
    }
    const auto most = io::assign_splits(seed, 4, 0.999);
    EXPECT_EQ(std::count(most.begin(), most.end(), io::Split::train), 1);
  }
  EXPECT_EQ(io::assign_splits(3, 1, 0.5), std::vector<io::Split>{io::Split::train});
  const auto none = io::assign_splits(3, 50, 0.0);
  EXPECT_EQ(std::count(none.begin(), none.end(), io::Split::val), 0);
  ExpectError([] { io::assign_splits(1, 5, 1.0); }, {"--val-fraction"});
  ExpectError([] { io::assign_splits(1, 5, -0.1); }, {"--val-fraction"});
}

// ---- inputs ---------------------------------------------------------------------------------

class DataInputs : public TempDir {};

TEST_F(DataInputs, FoldersAreWalkedRecursivelyInSortedOrder) {
  write("t/zeta.txt", "z");
  write("t/b/2.txt", "2");
  write("t/a.txt", "a");
  write("t/b/1.txt", "1");
  write("t/.hidden", "h");
  write("t/.git/obj", "o");
  const auto files = io::expand_inputs({path("t")});
  const std::vector<std::string> want = {path("t/a.txt"), path("t/b/1.txt"), path("t/b/2.txt"), path("t/zeta.txt")};
  EXPECT_EQ(files, want);
}

TEST_F(DataInputs, GlobsAreSortedAndFilesAreKeptOnce) {
  write("g/c.txt", "c");
  write("g/a.txt", "a");
  write("g/b.md", "b");
  write("g/b.txt", "b");
  const auto files = io::expand_inputs({path("g/*.txt"), path("g/a.txt")});
  EXPECT_EQ(files, (std::vector<std::string>{path("g/a.txt"), path("g/b.txt"), path("g/c.txt")}));
  // Arguments keep their order; each argument's files are sorted.
  const auto two = io::expand_inputs({path("g/c.txt"), path("g/b.md")});
  EXPECT_EQ(two, (std::vector<std::string>{path("g/c.txt"), path("g/b.md")}));
}

TEST_F(DataInputs, MissingPathsAndEmptyGlobsAreErrors) {
  ExpectError([&] { io::expand_inputs({path("nope.txt")}); }, {path("nope.txt"), "does not exist"});
  ExpectError([&] { io::expand_inputs({path("*.nothing")}); }, {path("*.nothing"), "matches no file"});
}

TEST_F(DataInputs, GzipReadsTheSameTextAsThePlainFile) {
  const std::string text = Prose(3, 300);
  write("p.txt", text);
  write_gz("p.txt.gz", text);
  write_gz("multi.txt.gz", text, 3);  // concatenated gzip members, as `cat a.gz b.gz` makes
  EXPECT_EQ(io::read_input_text(path("p.txt")), text);
  EXPECT_EQ(io::read_input_text(path("p.txt.gz")), text);
  EXPECT_EQ(io::read_input_text(path("multi.txt.gz")), text);
}

TEST_F(DataInputs, CorruptOrTruncatedGzipIsAnErrorNamingTheFile) {
  write_gz("t.gz", Prose(4, 200));
  const std::string whole = read(path("t.gz"));
  write("trunc.gz", whole.substr(0, whole.size() / 2));
  ExpectError([&] { io::read_input_text(path("trunc.gz")); }, {path("trunc.gz"), "truncated"});
  std::string bad = whole;
  for (size_t i = 20; i < 60; ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5A);
  write("bad.gz", bad);
  ExpectError([&] { io::read_input_text(path("bad.gz")); }, {path("bad.gz")});
  write("plain.gz", "not compressed");
  ExpectError([&] { io::read_input_text(path("plain.gz")); }, {path("plain.gz"), "not gzip"});
}

TEST_F(DataInputs, InfoFilesLoseTheirNavigation) {
  EXPECT_TRUE(io::is_info_name("/usr/share/info/python3.11.info.gz"));
  EXPECT_TRUE(io::is_info_name("x.info"));
  EXPECT_TRUE(io::is_info_name("emacs.info-12.gz"));
  EXPECT_FALSE(io::is_info_name("info.txt"));
  EXPECT_FALSE(io::is_info_name("x.info-.gz"));
  const std::string raw =
      "This is x.info, produced by makeinfo.\n\n"
      "\x1f\nFile: x.info,  Node: Top,  Next: Intro,  Up: (dir)\n\nTop text.\n"
      "\x1f\nFile: x.info,  Node: Intro,  Prev: Top\n\nIntro text.\n\nSecond paragraph.\n\n"
      "\x1f\nTag Table:\nNode: Top\x7f" "42\n\x1f\nEnd Tag Table\n\n\x1f\nLocal Variables:\ncoding: utf-8\nEnd:\n";
  EXPECT_EQ(io::clean_info_text(raw),
            "This is x.info, produced by makeinfo.\n\nTop text.\n\nIntro text.\n\nSecond paragraph.\n");
  EXPECT_EQ(io::clean_info_text("no separators\n"), "no separators\n");
  write("x.info", raw);
  write_gz("y.info.gz", raw);
  EXPECT_EQ(io::read_input_text(path("x.info")), io::clean_info_text(raw));
  EXPECT_EQ(io::read_input_text(path("y.info.gz")), io::clean_info_text(raw));
}

// ---- building datasets ----------------------------------------------------------------------

class DataBuild : public TempDir {
 protected:
  // A tree of 12 small files (one document each) and 2 big ones (split into documents).
  void MakeTree() {
    for (int i = 0; i < 12; ++i) write("corpus/small/f" + std::to_string(100 + i) + ".txt", Prose(i, 3));
    write("corpus/big/a.txt", Prose(50, 300));
    write("corpus/big/b.txt", Prose(51, 300));
  }
  io::DataOptions Options(const std::string& out, uint64_t seed = 1) {
    io::DataOptions o;
    o.inputs = {path("corpus")};
    o.out_dir = path(out);
    o.seed = seed;
    o.val_fraction = 0.2;
    o.doc_bytes = 2048;
    o.shard_tokens = 5000;
    return o;
  }
  std::string ShardBytes(const std::string& dir) {
    std::string all;
    for (const auto split : {io::Split::train, io::Split::val}) {
      for (const auto& p : io::manifest_shards(dir, split)) all += read(p);
    }
    return all;
  }
};

TEST_F(DataBuild, EveryDocumentLandsInExactlyOneSplit) {
  MakeTree();
  const auto s = io::build_token_dataset(Options("out"));
  // The documents the inputs hold, in order.
  std::vector<std::string> want;
  for (const auto& f : io::expand_inputs({path("corpus")})) {
    const std::string text = read(f);
    for (const auto d : io::split_documents(text, 2048)) want.emplace_back(d);
  }
  const auto train = Documents(path("out"), io::Split::train);
  const auto val = Documents(path("out"), io::Split::val);
  EXPECT_EQ(static_cast<int64_t>(train.size()), s.train.documents);
  EXPECT_EQ(static_cast<int64_t>(val.size()), s.val.documents);
  ASSERT_EQ(train.size() + val.size(), want.size());
  EXPECT_GE(val.size(), 1u);
  // Each split holds its input documents (by the split rule) in the seeded shuffled order:
  // none lost, none twice.
  const auto splits = io::assign_splits(1, static_cast<int64_t>(want.size()), 0.2);
  std::vector<std::string> want_split[2];
  for (size_t i = 0; i < want.size(); ++i) want_split[splits[i] == io::Split::val].push_back(want[i]);
  for (int k = 0; k < 2; ++k) {
    const auto& got = k ? val : train;
    const auto order = io::document_order(1 + k, static_cast<int64_t>(want_split[k].size()));
    ASSERT_EQ(got.size(), order.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want_split[k][order[i]]) << "split " << k << " document " << i;
  }
  // The order really is shuffled, and --no-shuffle keeps the input order.
  std::vector<int64_t> identity(want_split[0].size());
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<int64_t>(i);
  EXPECT_NE(io::document_order(1, static_cast<int64_t>(identity.size())), identity);
  auto plain = Options("plain");
  plain.shuffle = false;
  io::build_token_dataset(plain);
  EXPECT_EQ(Documents(path("plain"), io::Split::train), want_split[0]);
  EXPECT_EQ(Documents(path("plain"), io::Split::val), want_split[1]);
  std::set<std::string> tset(train.begin(), train.end());
  for (const auto& v : val) EXPECT_FALSE(tset.contains(v)) << "a val document is also in train";
  // Token counts: one end-of-text per document plus one token per byte.
  EXPECT_EQ(s.train.tokens, static_cast<int64_t>(s.train.text_bytes) + s.train.documents);
  EXPECT_EQ(s.val.tokens, static_cast<int64_t>(s.val.text_bytes) + s.val.documents);
}

TEST_F(DataBuild, SameSeedSameBytesOtherSeedOtherSplit) {
  MakeTree();
  io::build_token_dataset(Options("a", 1));
  io::build_token_dataset(Options("b", 1));
  io::build_token_dataset(Options("c", 2));
  EXPECT_EQ(ShardBytes(path("a")), ShardBytes(path("b")));
  EXPECT_EQ(read(path("a/manifest.json")), read(path("b/manifest.json")));  // no time stamps, no absolute out dir
  EXPECT_NE(Documents(path("a"), io::Split::val), Documents(path("c"), io::Split::val));
}

TEST_F(DataBuild, GzipInputGivesTheSameTokensAsThePlainFile) {
  const std::string text = Prose(9, 400);
  write("plain/doc.txt", text);
  write_gz("gz/doc.txt.gz", text);
  io::DataOptions o;
  o.val_fraction = 0.1;
  o.doc_bytes = 1500;
  o.shard_tokens = 4000;
  o.inputs = {path("plain")};
  o.out_dir = path("out_plain");
  io::build_token_dataset(o);
  o.inputs = {path("gz")};
  o.out_dir = path("out_gz");
  const auto s = io::build_token_dataset(o);
  ASSERT_EQ(s.sources.size(), 1u);
  EXPECT_TRUE(s.sources[0].gzip);
  EXPECT_EQ(s.sources[0].text_bytes, text.size());
  EXPECT_LT(s.sources[0].file_bytes, text.size());
  EXPECT_EQ(ShardBytes(path("out_plain")), ShardBytes(path("out_gz")));
}

TEST_F(DataBuild, ShardsHoldAtMostShardTokensAndTheManifestListsThem) {
  MakeTree();
  const auto s = io::build_token_dataset(Options("out"));
  const auto train = io::manifest_shards(path("out"), io::Split::train);
  EXPECT_EQ(static_cast<int64_t>(train.size()), s.train.shards);
  EXPECT_GE(train.size(), 3u);
  int64_t total = 0;
  for (size_t i = 0; i < train.size(); ++i) {
    const auto sh = io::TokenShard::open(train[i]);
    char name[32];
    std::snprintf(name, sizeof name, "train_%06zu.bin", i);
    EXPECT_EQ(fs::path(train[i]).filename().string(), name);
    EXPECT_LE(sh.size(), 5000);
    if (i + 1 < train.size()) {
      EXPECT_EQ(sh.size(), 5000);  // every shard but the last is full
    }
    EXPECT_EQ(sh.header().index, static_cast<int32_t>(i));
    EXPECT_EQ(sh.header().split, io::Split::train);
    EXPECT_EQ(sh.header().vocab_size, 257);
    EXPECT_EQ(sh.header().tokenizer_id, 1);
    total += sh.size();
  }
  EXPECT_EQ(total, s.train.tokens);
  const auto m = nlohmann::json::parse(read(path("out/manifest.json")));
  EXPECT_EQ(m.at("format"), "nvfp4.token_shards");
  EXPECT_EQ(m.at("tokenizer").at("name"), "byte");
  EXPECT_EQ(m.at("options").at("seed"), 1);
  EXPECT_EQ(m.at("options").at("val_fraction"), 0.2);
  EXPECT_EQ(m.at("sources").size(), 14u);
  EXPECT_EQ(m.at("sources")[0].at("path"), path("corpus/big/a.txt"));
  EXPECT_GT(m.at("sources")[0].at("documents").get<int>(), 1);
  EXPECT_EQ(m.at("splits").at("train").at("tokens"), s.train.tokens);
  // The loader reads the dataset straight from the manifest.
  io::ShardLoader L(train, 4, 64, 257);
  EXPECT_EQ(L.next().front(), 256);  // the first window starts with the first document's end-of-text
}

TEST_F(DataBuild, ExistingOutputNeedsForceAndForceRemovesStaleShards) {
  MakeTree();
  auto o = Options("out");
  o.shard_tokens = 2000;
  const auto first = io::build_token_dataset(o);
  ASSERT_GE(first.train.shards, 5);
  write("out/notes.txt", "mine");
  ExpectError([&] { io::build_token_dataset(o); }, {path("out"), "--force"});
  o.shard_tokens = 100000;
  o.force = true;
  const auto second = io::build_token_dataset(o);
  EXPECT_EQ(second.train.shards, 1);
  EXPECT_FALSE(fs::exists(path("out/train_000001.bin")));
  EXPECT_TRUE(fs::exists(path("out/notes.txt")));  // not ours: left alone
  EXPECT_EQ(io::manifest_shards(path("out"), io::Split::train).size(), 1u);
}

TEST_F(DataBuild, EmptyInputAndBinaryFiles) {
  write("empty/a.txt", "");
  write("empty/b.txt", "");
  io::DataOptions o;
  o.inputs = {path("empty")};
  o.out_dir = path("out");
  ExpectError([&] { io::build_token_dataset(o); }, {"no text", "2 input files"});
  EXPECT_FALSE(fs::exists(path("out")));
  write("mixed/a.txt", "some text\n");
  write("mixed/b.bin", std::string("\x01\x00\x02", 3));
  o.inputs = {path("mixed")};
  const auto s = io::build_token_dataset(o);
  ASSERT_EQ(s.skipped.size(), 1u);
  EXPECT_EQ(s.skipped[0].path, path("mixed/b.bin"));
  EXPECT_EQ(s.train.documents, 1);
  EXPECT_EQ(s.val.documents, 0);
  ExpectError([&] { io::manifest_shards(path("out"), io::Split::val); }, {"manifest.json", "no val shards"});
}

// ---- the CLI --------------------------------------------------------------------------------

using RunResult = nvfp4::test::CliResult;
inline RunResult RunCli(const std::string& args) { return nvfp4::test::run_cli(args); }

class DataCli : public TempDir {
 protected:
  void MakeTree() {
    for (int i = 0; i < 6; ++i) write("tree/d" + std::to_string(i) + "/notes.txt", Prose(20 + i, 5));
    write_gz("tree/packed.txt.gz", Prose(30, 200));
  }
};

TEST_F(DataCli, BuildsShardsAndReportsThemAsJson) {
  MakeTree();
  const RunResult r = RunCli("data " + path("tree") + " --out " + path("out") + " --shard-tokens 3000 --doc-bytes 1024 --seed 4 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("inputs"), 7);
  const int64_t train = j.at("splits").at("train").at("tokens"), val = j.at("splits").at("val").at("tokens");
  EXPECT_GT(train, val);
  EXPECT_GT(val, 0);
  int64_t listed = 0;
  for (const auto& s : j.at("shards")) {
    const auto sh = io::TokenShard::open(path("out/" + s.at("file").get<std::string>()));
    EXPECT_EQ(sh.size(), s.at("tokens").get<int64_t>());
    listed += sh.size();
  }
  EXPECT_EQ(listed, train + val);
  const auto m = nlohmann::json::parse(read(path("out/manifest.json")));
  EXPECT_NE(m.at("command").get<std::string>().find("--seed 4"), std::string::npos);
  EXPECT_NE(m.at("created_by").get<std::string>().find("nvfp4"), std::string::npos);
}

TEST_F(DataCli, PrintsASummaryTable) {
  MakeTree();
  const RunResult r = RunCli("data " + path("tree") + " --out " + path("out"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* s : {"split", "documents", "train", "val", "total", "manifest.json"}) {
    EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
  }
}

TEST_F(DataCli, ErrorsNameThePathAndWhatToDo) {
  MakeTree();
  RunResult r = RunCli("data " + path("missing.txt") + " --out " + path("out"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(path("missing.txt") + ": does not exist"), std::string::npos) << r.output;

  ASSERT_EQ(RunCli("data " + path("tree") + " --out " + path("out")).status, 0);
  r = RunCli("data " + path("tree") + " --out " + path("out"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(path("out") + ": exists and is not empty"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  r = RunCli("data " + path("tree") + " --out " + path("out") + " --force");
  EXPECT_EQ(r.status, 0) << r.output;

  write("blank.txt", "");
  r = RunCli("data " + path("blank.txt") + " --out " + path("out2"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no text"), std::string::npos) << r.output;

  r = RunCli("data " + path("tree") + " --out " + path("out3") + " --tokenizer gpt9");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("unknown tokenizer 'gpt9'"), std::string::npos) << r.output;

  r = RunCli("data " + path("tree") + " --out " + path("out4") + " --val-fraction 1.5");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("--val-fraction"), std::string::npos) << r.output;

  r = RunCli("data " + path("tree"));  // --out is required
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--out"), std::string::npos) << r.output;
}

}  // namespace

// The KV cache's block table (src/infer/kv_blocks.hpp) and the CPU engine on a paged pool: blocks
// are handed out lowest first and all-or-none, a full pool is an error that changes nothing, a reset
// gives the slot's blocks back, and a pool far smaller than slots x context computes the same
// logits as the default one while its sequences fit.
#include <gtest/gtest.h>

#include <vector>

#include "infer/kv_blocks.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"
#include "support/test_support.hpp"
#include "tiny_hf_model.hpp"

namespace {

using nvfp4::infer::EngineOptions;
using nvfp4::infer::HfModel;
using nvfp4::infer::KvBlockTable;
using nvfp4::infer::SeqChunk;
using nvfp4::test::error_of;

TEST(KvBlockTable, HandsOutBlocksLowestFirstAndTakesThemBack) {
  KvBlockTable t(3, 10, 4, 5);  // 3 slots of 10 positions: 3 blocks each at most; a pool of 5
  EXPECT_EQ(t.per_seq(), 3);
  EXPECT_EQ(t.free_blocks(), 5);
  const std::vector<int> s = {1, 0}, n = {5, 1};
  EXPECT_TRUE(t.reserve(s, n));  // slot 1: 2 blocks, slot 0: 1
  EXPECT_EQ(t.table(), (std::vector<int32_t>{2, -1, -1, 0, 1, -1, -1, -1, -1}));
  EXPECT_FALSE(t.reserve(std::vector<int>{1}, std::vector<int>{8}));  // still 2 blocks: nothing new
  EXPECT_EQ(t.free_blocks(), 2);
  t.release(1);
  EXPECT_EQ(t.free_blocks(), 4);
  EXPECT_TRUE(t.reserve(std::vector<int>{2}, std::vector<int>{9}));  // the lowest free: 0, 1, 3
  EXPECT_EQ(t.table(), (std::vector<int32_t>{2, -1, -1, -1, -1, -1, 0, 1, 3}));
}

TEST(KvBlockTable, AFullPoolIsAnErrorThatChangesNothing) {
  KvBlockTable t(2, 16, 4, 5);
  EXPECT_TRUE(t.reserve(std::vector<int>{0}, std::vector<int>{12}));  // 3 blocks
  const auto before = t.table();
  EXPECT_EQ(error_of([&] { t.reserve(std::vector<int>{1}, std::vector<int>{12}); }),
            "KV cache full: chunk 0 (slot 1, 12 positions) needs 3 more blocks of 4 positions, the batch 3; 2 of 5 "
            "are free (reset finished sequences, or give the engine more: kv_blocks)");
  EXPECT_EQ(error_of([&] { t.reserve(std::vector<int>{1, 0}, std::vector<int>{8, 13}); }),
            "KV cache full: chunk 1 (slot 0, 13 positions) needs 1 more block of 4 positions, the batch 3; 2 of 5 "
            "are free (reset finished sequences, or give the engine more: kv_blocks)");
  EXPECT_EQ(t.table(), before);
  EXPECT_EQ(t.free_blocks(), 2);
  EXPECT_NE(error_of([] { KvBlockTable(1, 4, 0, 0); }).find("kv_block_size 0"), std::string::npos);
  EXPECT_NE(error_of([] { KvBlockTable(1, 4, 2, -1); }).find("kv_blocks -1"), std::string::npos);
  EXPECT_EQ(KvBlockTable(3, 10, 4, 0).blocks(), 9);  // 0: every slot can reach the context
}

constexpr char kPrefix[] = "nvfp4_kv_blocks_test_";
using PagedEngineTest = nvfp4::test::ScratchDirTest<kPrefix>;

TEST_F(PagedEngineTest, ASmallPoolComputesTheDefaultPoolsLogitsAndRefusesWhatDoesNotFit) {
  const auto c = nvfp4::test::tiny_config("llama");
  nvfp4::test::write_tiny_hf_model(dir_, "llama", c, 21);
  const HfModel m = HfModel::open(dir_.string());
  EngineOptions big, small;
  big.max_sequences = small.max_sequences = 4;
  big.max_context = small.max_context = 32;
  small.kv_block_size = 3;  // blocks that cut the sequences at odd places
  small.kv_blocks = 9;      // 27 positions for 4 slots of 32
  const auto eb = nvfp4::infer::make_cpu_engine(m, big), es = nvfp4::infer::make_cpu_engine(m, small);
  EXPECT_EQ(eb->kv_blocks(), 4 * 2);  // default block size 16: 2 blocks a slot
  EXPECT_EQ(es->kv_blocks(), 9);
  const auto a = nvfp4::test::some_tokens(10, c.vocab, 1), b = nvfp4::test::some_tokens(5, c.vocab, 2);
  const std::vector<SeqChunk> batch = {{3, a, true}, {1, b, true}};
  std::vector<float> lb, ls;
  eb->forward(batch, lb);
  es->forward(batch, ls);
  EXPECT_EQ(lb, ls);  // the same FP32 operations in the same order: the same bits
  EXPECT_EQ(es->kv_free_blocks(), 9 - 4 - 2);
  // 3 free blocks: a 10-token prompt needs 4 — refused, nothing changes; a decode step still runs.
  const auto d = nvfp4::test::some_tokens(10, c.vocab, 3);
  std::vector<float> l;
  EXPECT_NE(error_of([&] { es->forward(std::vector<SeqChunk>{{0, d, false}}, l); }).find("KV cache full"),
            std::string::npos);
  EXPECT_EQ(es->length(0), 0);
  EXPECT_EQ(es->kv_free_blocks(), 3);
  const std::vector<int32_t> next = {7};
  eb->forward(std::vector<SeqChunk>{{3, next, false}}, lb);
  es->forward(std::vector<SeqChunk>{{3, next, false}}, ls);
  EXPECT_EQ(lb, ls);
  // Resetting slot 3 frees its 4 blocks: the prompt fits, and its logits are the default pool's.
  es->reset(3);
  eb->reset(3);
  EXPECT_EQ(es->kv_free_blocks(), 3 + 4);
  eb->forward(std::vector<SeqChunk>{{0, d, true}}, lb);
  es->forward(std::vector<SeqChunk>{{0, d, true}}, ls);
  EXPECT_EQ(lb, ls);
  EXPECT_EQ(es->length(0), 10);
  // Bad pool options are errors naming the option.
  EngineOptions bad = small;
  bad.kv_block_size = 0;
  EXPECT_NE(error_of([&] { nvfp4::infer::make_cpu_engine(m, bad); }).find("kv_block_size 0"), std::string::npos);
  bad = small;
  bad.kv_blocks = -2;
  EXPECT_NE(error_of([&] { nvfp4::infer::make_cpu_engine(m, bad); }).find("kv_blocks -2"), std::string::npos);
}

}  // namespace

// Continuous batching (nvfp4/batcher.hpp) over the CPU engine and a byte-level model: requests
// that join and leave a running batch give the tokens they give alone, chunked prefill changes
// nothing, the streamed text is the decoded tokens cut at a stop string, and the batcher's limits
// (KV budget, queue, cancellation, timeouts, shutdown) hold.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "nvfp4/batcher.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/generate.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/tokenizer.hpp"
#include "support/test_support.hpp"
#include "tiny_hf_model.hpp"

namespace {

using nvfp4::infer::BatchEvent;
using nvfp4::infer::Batcher;
using nvfp4::infer::BatcherOptions;
using nvfp4::infer::BatchRequest;
using nvfp4::infer::HfModel;
using nvfp4::infer::Rejected;
using nvfp4::infer::RequestStream;

constexpr char kPrefix[] = "nvfp4_batcher_test_";
using BatcherTest = nvfp4::test::ScratchDirTest<kPrefix>;

// A byte-level model folder (vocab 257: bytes + end-of-text 256) with random weights.
HfModel byte_model(const std::filesystem::path& dir, uint64_t seed = 41) {
  auto c = nvfp4::test::tiny_config("llama");
  c.vocab = 257;
  c.seq_len = 128;
  nvfp4::test::write_tiny_hf_model(dir, "llama", c, seed);
  std::ofstream(dir / "nvfp4_tokenizer.json") << nvfp4::io::ByteTokenizer().describe() << "\n";
  return HfModel::open(dir.string());
}

struct Outcome {
  std::string text;
  std::vector<std::string> pieces;
  std::vector<int32_t> tokens;  // of the text events
  std::string reason;
  BatchEvent::Kind kind = BatchEvent::Kind::text;
};

Outcome drain(RequestStream& s) {
  Outcome o;
  BatchEvent e;
  while (s.next(e, std::chrono::seconds(60))) {
    if (e.kind == BatchEvent::Kind::text) {
      o.text += e.text;
      o.pieces.push_back(e.text);
      if (e.token >= 0) o.tokens.push_back(e.token);
      continue;
    }
    o.kind = e.kind;
    o.reason = e.finish_reason;
    return o;
  }
  ADD_FAILURE() << "no final event within 60 s";
  return o;
}

BatchRequest greedy(std::vector<int32_t> prompt, int max_tokens) {
  BatchRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

// What generate() gives for one sequence alone (the reference the batcher must reproduce).
std::vector<int32_t> alone(const HfModel& m, const std::vector<int32_t>& prompt, int max_tokens) {
  nvfp4::infer::EngineOptions eo;
  eo.max_context = 128;
  const auto e = nvfp4::infer::make_cpu_engine(m, eo);
  std::vector<int32_t> seq = prompt, out;
  std::vector<float> logits;
  e->reset(0);
  std::vector<int32_t> next = prompt;
  for (int i = 0; i < max_tokens; ++i) {
    const nvfp4::infer::SeqChunk ch{0, next, false};
    e->forward(std::span<const nvfp4::infer::SeqChunk>(&ch, 1), logits);
    const auto best = static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + 257) - logits.begin());
    if (best == 256) break;
    out.push_back(best);
    next = {best};
  }
  return out;
}

TEST_F(BatcherTest, RequestsJoiningARunningBatchGiveWhatTheyGiveAlone) {
  const HfModel m = byte_model(dir_);
  const std::vector<std::vector<int32_t>> prompts = {
      {256, 'h', 'e', 'l', 'l', 'o'}, {256, 'a'}, nvfp4::test::some_tokens(37, 256, 5), {256, 'x', 'y', 'z', '1', '2', '3', '4'}};
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts) want.push_back(alone(m, p, 12));
  for (int step_tokens : {2048, 5}) {  // 5: prompts prefilled in chunks across steps
    nvfp4::infer::EngineOptions eo;
    eo.max_sequences = 3;  // four requests: one waits for a slot
    eo.max_context = 128;
    const auto e = nvfp4::infer::make_cpu_engine(m, eo);
    Batcher b(*e, m, BatcherOptions{16, step_tokens});
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto r = greedy(prompts[i], 12);
      r.ignore_eos = false;
      streams.push_back(b.submit(r));
      std::this_thread::sleep_for(std::chrono::milliseconds(3 * static_cast<int>(i)));  // join at different steps
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      const Outcome o = drain(*streams[i]);
      ASSERT_EQ(o.kind, BatchEvent::Kind::finished) << o.reason;
      EXPECT_EQ(streams[i]->stats().tokens, want[i]) << "request " << i << ", step tokens " << step_tokens;
      EXPECT_EQ(o.reason, want[i].size() == 12 ? "length" : "stop");
      // The streamed pieces are the decoded tokens, in order.
      EXPECT_EQ(o.text, m.tokenizer().decode(want[i]));
      EXPECT_EQ(streams[i]->stats().prompt_tokens, static_cast<int>(prompts[i].size()));
      EXPECT_EQ(streams[i]->stats().itl_s.size() + 1, std::max<size_t>(want[i].size(), 1));
    }
    const auto st = b.stats();
    EXPECT_EQ(st.finished, 4);
    EXPECT_EQ(st.running, 0);
    EXPECT_EQ(st.kv_reserved_blocks, 0);
    EXPECT_EQ(st.kv_free_blocks, st.kv_blocks) << "every block back in the pool";
  }
}

TEST_F(BatcherTest, TextStopsBeforeAStopStringAndNeverStreamsAPartOfIt) {
  const HfModel m = byte_model(dir_);
  const std::vector<int32_t> prompt = {256, 'T', 'h', 'e'};
  const std::vector<int32_t> ref = alone(m, prompt, 20);
  ASSERT_GE(ref.size(), 8u);
  const std::string full = m.tokenizer().decode(ref);
  const std::string stop = full.substr(4, 3);  // spans three tokens
  nvfp4::infer::EngineOptions eo;
  eo.max_context = 128;
  const auto e = nvfp4::infer::make_cpu_engine(m, eo);
  Batcher b(*e, m, BatcherOptions{});
  auto r = greedy(prompt, 20);
  r.stop = {stop, "\x01\x02never"};
  const Outcome o = drain(*b.submit(r));
  EXPECT_EQ(o.reason, "stop");
  EXPECT_EQ(o.text, full.substr(0, full.find(stop)));
  // min_tokens past the stop string's position: the stop string no longer ends it there.
  r.min_tokens = 10;
  r.stop = {stop};
  const Outcome late = drain(*b.submit(r));
  EXPECT_GE(late.text.size(), std::min<size_t>(full.find(stop) + 1, full.size()));
}

TEST_F(BatcherTest, StreamedPiecesAreWholeUtf8Characters) {
  const HfModel m = byte_model(dir_, 7);
  nvfp4::infer::EngineOptions eo;
  eo.max_context = 128;
  const auto e = nvfp4::infer::make_cpu_engine(m, eo);
  Batcher b(*e, m, BatcherOptions{});
  // Sampled bytes at temperature 1 are often not UTF-8: every piece but the last must still end on
  // a character boundary (no piece ends inside a multi-byte sequence that later bytes complete).
  auto r = greedy({256, 'q'}, 60);
  r.sampling.temperature = 1.0;
  r.sampling.top_k = 0;
  r.sampling.seed = 3;
  r.ignore_eos = true;
  const Outcome o = drain(*b.submit(r));
  EXPECT_EQ(o.reason, "length");
  EXPECT_EQ(o.text, m.tokenizer().decode(std::vector<int32_t>(o.tokens.begin(), o.tokens.end())));
  // No boundary between pieces falls inside a valid multi-byte character of the whole text.
  size_t at = 0;
  for (size_t i = 0; i + 1 < o.pieces.size(); ++i) {
    at += o.pieces[i].size();
    for (size_t lead = at >= 3 ? at - 3 : 0; lead < at; ++lead) {
      const auto c = static_cast<unsigned char>(o.text[lead]);
      const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
      if (need == 1 || lead + need <= at || lead + need > o.text.size()) continue;
      bool valid = true;
      for (size_t k = 1; k < need; ++k) valid = valid && (static_cast<unsigned char>(o.text[lead + k]) & 0xC0) == 0x80;
      EXPECT_FALSE(valid) << "the boundary after piece " << i << " splits a character";
    }
  }
}

TEST_F(BatcherTest, IgnoreEosAndMinTokensSuppressEndOfText) {
  const HfModel m = byte_model(dir_);
  nvfp4::infer::EngineOptions eo;
  eo.max_context = 128;
  const auto e = nvfp4::infer::make_cpu_engine(m, eo);
  Batcher b(*e, m, BatcherOptions{});
  for (int seed = 1; seed <= 3; ++seed) {
    auto r = greedy({256, 'a', 'b'}, 40);
    r.sampling.temperature = 2.0;
    r.sampling.top_k = 0;
    r.sampling.seed = static_cast<uint64_t>(seed);
    r.ignore_eos = true;
    const Outcome o = drain(*b.submit(r));
    EXPECT_EQ(o.reason, "length");
    EXPECT_EQ(o.tokens.size(), 40u);
  }
  // keep_logits: the rows the engine gave (the argmax of each is the greedy token).
  auto r = greedy({256, 'a'}, 5);
  r.keep_logits = 3;
  r.ignore_eos = true;
  auto s = b.submit(r);
  drain(*s);
  ASSERT_EQ(s->stats().logits.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const auto& row = s->stats().logits[i];
    ASSERT_EQ(row.size(), 257u);
    EXPECT_EQ(std::max_element(row.begin(), row.end() - 1) - row.begin(), s->stats().tokens[i]) << i;
  }
}

TEST_F(BatcherTest, ForcedTokensAreEmittedAndTheOwnChoiceCounted) {
  const HfModel m = byte_model(dir_);
  nvfp4::infer::EngineOptions eo;
  eo.max_context = 128;
  const auto e = nvfp4::infer::make_cpu_engine(m, eo);
  Batcher b(*e, m, BatcherOptions{});
  const std::vector<int32_t> prompt = {256, 'f', 'o'};
  const std::vector<int32_t> own = alone(m, prompt, 10);
  ASSERT_GE(own.size(), 4u);
  // Forcing the model's own greedy tokens: every choice agrees. Forcing others: the agreement counts
  // only the positions where the forced token is the greedy one under the forced context.
  auto r = greedy(prompt, 1);
  r.forced = own;
  auto s = b.submit(r);
  const Outcome o = drain(*s);
  EXPECT_EQ(o.reason, "length");
  EXPECT_EQ(s->stats().tokens, own);
  EXPECT_EQ(s->stats().forced_agreed, static_cast<int>(own.size()));
  std::vector<int32_t> other = own;
  other[1] = other[1] == 'z' ? 'y' : 'z';
  r.forced = other;
  auto s2 = b.submit(r);
  drain(*s2);
  EXPECT_EQ(s2->stats().tokens, other);
  EXPECT_LT(s2->stats().forced_agreed, static_cast<int>(other.size()));
  EXPECT_GE(s2->stats().forced_agreed, 1) << "the first position's context is the same";
}

TEST_F(BatcherTest, RejectsWhatCanNeverRunAndWhatDoesNotFitTheQueue) {
  const HfModel m = byte_model(dir_);
  nvfp4::infer::EngineOptions eo;
  eo.max_sequences = 1;
  eo.max_context = 64;
  eo.kv_block_size = 16;
  eo.kv_blocks = 3;  // 48 positions: fewer than the context
  const auto e = nvfp4::infer::make_cpu_engine(m, eo);
  Batcher b(*e, m, BatcherOptions{1, 2048});
  auto reason_of = [&](BatchRequest r) {
    try {
      b.submit(std::move(r));
    } catch (const Rejected& x) {
      return std::make_pair(x.reason(), std::string(x.what()));
    }
    return std::make_pair(Rejected::Reason::invalid, std::string("accepted"));
  };
  auto p = reason_of(greedy({256, 'a'}, 70));
  EXPECT_EQ(p.first, Rejected::Reason::too_long);
  EXPECT_NE(p.second.find("context of 64"), std::string::npos) << p.second;
  p = reason_of(greedy({256, 'a'}, 50));
  EXPECT_EQ(p.first, Rejected::Reason::too_long);
  EXPECT_NE(p.second.find("the cache holds 3"), std::string::npos) << p.second;
  EXPECT_NE(reason_of(greedy({256, 300}, 5)).second.find("outside the vocabulary [0, 257)"), std::string::npos);
  EXPECT_NE(reason_of(greedy({}, 5)).second.find("no tokens"), std::string::npos);
  EXPECT_NE(reason_of(greedy({1}, 0)).second.find("max_tokens 0"), std::string::npos);
  auto bad = greedy({1}, 4);
  bad.sampling.top_p = 0;
  EXPECT_EQ(reason_of(bad).first, Rejected::Reason::invalid);

  // One slot: A runs, B waits, C finds the queue (1) full.
  auto long_req = greedy({256, 'a'}, 40);
  long_req.ignore_eos = true;
  auto a = b.submit(long_req);
  BatchEvent first;
  ASSERT_TRUE(a->next(first, std::chrono::seconds(30)));  // A is running
  auto bq = b.submit(greedy({256, 'b'}, 3));
  p = reason_of(greedy({256, 'c'}, 3));
  EXPECT_EQ(p.first, Rejected::Reason::queue_full);
  EXPECT_NE(p.second.find("queue is full"), std::string::npos);
  // A cancelled: it ends "cancelled" and B runs.
  a->cancel();
  EXPECT_EQ(drain(*a).reason, "cancelled");
  EXPECT_EQ(drain(*bq).kind, BatchEvent::Kind::finished);
  EXPECT_EQ(b.stats().kv_reserved_blocks, 0);
  EXPECT_GE(b.stats().rejected, 7);
}

TEST_F(BatcherTest, KvBudgetAdmitsOnlyWhatFitsAndEveryRequestStillCompletes) {
  const HfModel m = byte_model(dir_);
  nvfp4::infer::EngineOptions eo;
  eo.max_sequences = 4;
  eo.max_context = 64;
  eo.kv_block_size = 8;
  eo.kv_blocks = 5;  // one request of 2 + 30 tokens (4 blocks) at a time
  const auto e = nvfp4::infer::make_cpu_engine(m, eo);
  struct Peak : nvfp4::infer::BatcherObserver {
    std::atomic<int> max_seq{0}, finished{0};
    void on_finished(const nvfp4::infer::BatchRequestStats&) override { ++finished; }
    void on_step(double, int, int seqs, int) override { max_seq = std::max(max_seq.load(), seqs); }
  } peak;
  Batcher b(*e, m, BatcherOptions{8, 2048}, &peak);
  std::vector<std::shared_ptr<RequestStream>> s;
  for (int i = 0; i < 3; ++i) {
    auto r = greedy({256, static_cast<int32_t>('a' + i)}, 30);
    r.ignore_eos = true;
    s.push_back(b.submit(r));
  }
  for (auto& x : s) EXPECT_EQ(drain(*x).reason, "length");
  EXPECT_EQ(peak.max_seq.load(), 1) << "the KV budget holds one request at a time";
  EXPECT_EQ(peak.finished.load(), 3);
  for (auto& x : s) EXPECT_EQ(x->stats().tokens.size(), 30u);
}

TEST_F(BatcherTest, TimeoutsAndShutdownEndRequestsCleanly) {
  const HfModel m = byte_model(dir_);
  nvfp4::infer::EngineOptions eo;
  eo.max_sequences = 2;
  eo.max_context = 128;
  const auto e = nvfp4::infer::make_cpu_engine(m, eo);
  auto b = std::make_unique<Batcher>(*e, m, BatcherOptions{});
  // Both slots busy: a request that waits longer than its timeout ends "timeout" without running.
  auto r = greedy({256, 'a'}, 120);
  r.ignore_eos = true;
  auto busy1 = b->submit(r), busy2 = b->submit(r);
  BatchEvent first;
  ASSERT_TRUE(busy1->next(first, std::chrono::seconds(30)));
  ASSERT_TRUE(busy2->next(first, std::chrono::seconds(30)));
  r.timeout_s = 0.001;
  auto late = b->submit(r);
  const Outcome t = drain(*late);
  EXPECT_EQ(t.reason, "timeout");
  EXPECT_EQ(late->stats().generated_tokens, 0);
  drain(*busy1);
  drain(*busy2);
  // Shutdown with a grace period: the request in flight finishes, new ones are refused.
  r.timeout_s = 0;
  r.max_tokens = 10;
  auto inflight = b->submit(r);
  std::thread stopper([&] { b->shutdown(30); });
  const Outcome f = drain(*inflight);
  stopper.join();
  EXPECT_EQ(f.reason, "length");
  try {
    b->submit(r);
    ADD_FAILURE() << "accepted after shutdown";
  } catch (const Rejected& x) {
    EXPECT_EQ(x.reason(), Rejected::Reason::shutting_down);
  }
  // Shutdown without grace cancels what runs.
  auto b2 = std::make_unique<Batcher>(*e, m, BatcherOptions{});
  r.max_tokens = 120;
  auto victim = b2->submit(r);
  BatchEvent started;
  ASSERT_TRUE(victim->next(started, std::chrono::seconds(30)));
  b2->shutdown(0);
  EXPECT_EQ(drain(*victim).reason, "cancelled");
  b2.reset();  // joins its thread
  b.reset();
}

}  // namespace

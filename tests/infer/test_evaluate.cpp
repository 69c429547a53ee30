// Evaluation and generation with the CPU engine: the sliding windows score every token once,
// the perplexity is the CPU model's cross-entropy, KL against itself is zero, per-layer
// sensitivity covers the quantized layers, and generation is deterministic and stops where told;
// the `generate` and `eval` commands print what the library computes.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nvfp4/engine.hpp"
#include "nvfp4/evaluate.hpp"
#include "nvfp4/generate.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/tokenizer.hpp"
#include "support/test_support.hpp"
#include "tiny_hf_model.hpp"

namespace {

using nvfp4::infer::EvalDocument;
using nvfp4::infer::HfModel;
using nvfp4::infer::Precision;
using nvfp4::test::error_of;
using nvfp4::test::some_tokens;

constexpr char kPrefix[] = "nvfp4_eval_test_";
using EvalTest = nvfp4::test::ScratchDirTest<kPrefix>;


TEST(SlidingWindows, ScoreEveryTokenAfterTheFirstExactlyOnce) {
  for (int n : {1, 2, 5, 17, 64}) {
    for (int ctx : {2, 4, 16}) {
      for (int stride : {1, 3, ctx}) {
        if (stride > ctx) continue;
        const std::vector<EvalDocument> docs = {{std::vector<int32_t>(static_cast<size_t>(n), 0), -1, ""}};
        std::vector<int> scored(static_cast<size_t>(n), 0);
        for (const auto& w : nvfp4::infer::sliding_windows(docs, ctx, stride)) {
          ASSERT_LE(w.end - w.begin, ctx);
          ASSERT_GT(w.score_from, w.begin);
          for (int64_t p = w.score_from; p < w.end; ++p) ++scored[static_cast<size_t>(p)];
        }
        for (int p = 0; p < n; ++p) EXPECT_EQ(scored[p], p == 0 ? 0 : 1) << n << " " << ctx << " " << stride << " " << p;
      }
    }
  }
  const std::vector<EvalDocument> one = {{{1, 2, 3}, -1, ""}};
  EXPECT_NE(error_of([&] { nvfp4::infer::sliding_windows(one, 1, 1); }).find("--ctx 1"), std::string::npos);
  EXPECT_NE(error_of([&] { nvfp4::infer::sliding_windows(one, 4, 5); }).find("--stride 5"), std::string::npos);
}

TEST(KlDivergence, IsZeroForEqualAndPositiveForDifferentDistributions) {
  const std::vector<float> a = {1.0f, 2.0f, -3.0f}, b = {1.5f, 2.0f, -3.0f};
  EXPECT_EQ(nvfp4::infer::kl_divergence(a, a), 0.0);
  const double p0 = std::exp(1.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(-3.0));
  EXPECT_NEAR(nvfp4::infer::token_nll(a, 0), -std::log(p0), 1e-12);
  EXPECT_GT(nvfp4::infer::kl_divergence(a, b), 0.0);
}

TEST_F(EvalTest, PerplexityIsTheCpuModelsCrossEntropyAndKlAgainstItselfIsZero) {
  const auto c = nvfp4::test::tiny_config("mistral");
  const auto p = nvfp4::test::write_tiny_hf_model(dir_, "mistral", c, 20);
  const HfModel m = HfModel::open(dir_.string());
  nvfp4::infer::EngineOptions o;
  o.max_sequences = 2;
  o.max_context = 32;
  const auto e = nvfp4::infer::make_cpu_engine(m, o);
  const auto ref = nvfp4::infer::make_cpu_engine(m, o);
  const std::vector<EvalDocument> docs = {{some_tokens(30, c.vocab, 21), 100, "a"}, {some_tokens(9, c.vocab, 22), 28, "b"}};
  nvfp4::infer::EvalOptions eo;
  eo.ctx = 32;
  const auto r = nvfp4::infer::evaluate(*e, ref.get(), docs, eo);
  EXPECT_EQ(r.tokens, 29 + 8);
  // The CPU model's mean cross-entropy over the same predictions.
  double sum = 0;
  for (const auto& d : docs) {
    nvfp4::model::CpuModel cm(c);
    std::copy(p.begin(), p.end(), cm.params().begin());
    const int T = static_cast<int>(d.ids.size()) - 1;
    const std::vector<int32_t> in(d.ids.begin(), d.ids.end() - 1), tgt(d.ids.begin() + 1, d.ids.end());
    sum += static_cast<double>(cm.forward(in.data(), tgt.data(), 1, T)) * T;
  }
  EXPECT_NEAR(r.nll, sum / 37.0, 1e-5);
  EXPECT_NEAR(r.ppl, std::exp(r.nll), 1e-9);
  ASSERT_TRUE(r.bits_per_byte.has_value());
  EXPECT_NEAR(*r.bits_per_byte, r.nll * 37 / std::log(2.0) / 128.0, 1e-9);
  EXPECT_EQ(*r.kl_mean, 0.0);
  EXPECT_EQ(*r.top1_agree, 1.0);
  // Shorter windows with overlap score the same tokens with less context: a different number.
  eo.ctx = 8;
  eo.stride = 4;
  const auto w = nvfp4::infer::evaluate(*e, nullptr, docs, eo);
  EXPECT_EQ(w.tokens, 37);
  EXPECT_NE(w.nll, r.nll);
  EXPECT_FALSE(w.kl_mean.has_value());
}

TEST_F(EvalTest, PerLayerSensitivityQuantizesOneLayerAtATime) {
  const auto c = nvfp4::test::tiny_config("qwen3");
  nvfp4::test::write_tiny_hf_model(dir_, "qwen3", c, 23);
  const HfModel m = HfModel::open(dir_.string());
  nvfp4::infer::EngineOptions o;
  o.precision = Precision::w4a4;
  o.keep_bf16 = {"model.layers.1.mlp.*"};
  o.max_context = 24;
  const auto e = nvfp4::infer::make_cpu_engine(m, o);
  const std::vector<EvalDocument> docs = {{some_tokens(24, c.vocab, 24), -1, ""}};
  nvfp4::infer::EvalOptions eo;
  eo.per_layer = true;
  const auto r = nvfp4::infer::evaluate(*e, nullptr, docs, eo);
  ASSERT_EQ(r.per_layer.size(), 14u - 3u);
  EXPECT_EQ(r.per_layer[0].name, "model.layers.0.self_attn.q_proj");
  for (const auto& s : r.per_layer) {
    EXPECT_GT(s.kl_mean, 0.0) << s.name;
    EXPECT_GT(s.rel_error, 0.01) << s.name;  // NVFP4 weights and activations: a few percent
    EXPECT_LT(s.rel_error, 0.5) << s.name;
    EXPECT_EQ(s.flagged, s.kl_mean > 0.05);
  }
  EXPECT_FALSE(r.bits_per_byte.has_value());
  // The engine's plan is restored.
  EXPECT_EQ(e->linear_plan()[0].precision, Precision::w4a4);
  EXPECT_EQ(e->linear_plan()[11].precision, Precision::fp32);  // model.layers.1.mlp.gate_proj, kept
}

TEST_F(EvalTest, GenerationIsSeededAndStopsAtEosOrLength) {
  const auto c = nvfp4::test::tiny_config("llama");
  nvfp4::test::write_tiny_hf_model(dir_, "llama", c, 25);
  // A byte-level tokenizer description beside it (what `nvfp4 export-hf` writes for byte models)
  // would need vocab 257; this model has 97 ids, so generation runs without text: ids only.
  const HfModel m = HfModel::open(dir_.string());
  EXPECT_NE(error_of([&] {
              nvfp4::infer::EngineOptions o;
              const auto e = nvfp4::infer::make_cpu_engine(m, o);
              nvfp4::infer::generate(*e, m, "hello", {});
            }).find("no tokenizer.json"),
            std::string::npos);
}

// A byte-level model folder as `nvfp4 export-hf` writes one: vocab 257, nvfp4_tokenizer.json.
void write_byte_model(const std::filesystem::path& dir, const std::string& arch, uint64_t seed) {
  auto c = nvfp4::test::tiny_config(arch);
  c.vocab = 257;
  c.seq_len = 128;
  nvfp4::test::write_tiny_hf_model(dir, arch, c, seed);
  std::ofstream(dir / "nvfp4_tokenizer.json") << nvfp4::io::ByteTokenizer().describe() << "\n";
}

TEST_F(EvalTest, GreedyGenerationIsTheArgmaxChainAndStopsAtAStopString) {
  write_byte_model(dir_, "qwen3", 26);
  const HfModel m = HfModel::open(dir_.string());
  EXPECT_EQ(m.encode_prompt("ab"), (std::vector<int32_t>{256, 'a', 'b'}));
  nvfp4::infer::EngineOptions o;
  o.max_sequences = 2;
  o.max_context = 32;
  const auto e = nvfp4::infer::make_cpu_engine(m, o);
  nvfp4::infer::GenerateOptions g;
  g.max_tokens = 6;
  g.batch = 2;
  g.sampling.temperature = 0;
  g.stop_at_eos = false;
  const auto r = nvfp4::infer::generate(*e, m, "ab", g);
  ASSERT_EQ(r.sequences.size(), 2u);
  EXPECT_EQ(r.sequences[0].tokens, r.sequences[1].tokens) << "greedy: the seed does not matter";
  EXPECT_EQ(r.sequences[0].tokens.size(), 6u);
  EXPECT_EQ(r.sequences[0].finish_reason, "length");
  EXPECT_EQ(r.prompt_tokens, 3);
  EXPECT_EQ(r.inter_token.count, 5);
  // The argmax chain, recomputed from scratch for every token.
  std::vector<int32_t> seq = {256, 'a', 'b'};
  for (int i = 0; i < 6; ++i) {
    e->reset(0);
    std::vector<float> l;
    const nvfp4::infer::SeqChunk ch{0, seq, false};
    e->forward(std::span<const nvfp4::infer::SeqChunk>(&ch, 1), l);
    const auto best = std::max_element(l.begin(), l.begin() + 257) - l.begin();
    EXPECT_EQ(r.sequences[0].tokens[i], best) << i;
    seq.push_back(static_cast<int32_t>(best));
  }
  // A stop string made of the third generated byte ends the text before it.
  g.batch = 1;
  g.stop = {std::string(1, static_cast<char>(r.sequences[0].tokens[2]))};
  const auto s = nvfp4::infer::generate(*e, m, "ab", g);
  EXPECT_EQ(s.sequences[0].finish_reason, "stop");
  EXPECT_EQ(s.sequences[0].text.size(), r.sequences[0].text.find(g.stop[0]));
  // Sampling with a seed repeats itself.
  g.stop.clear();
  g.sampling.temperature = 1.0;
  g.sampling.top_p = 0.9;
  EXPECT_EQ(nvfp4::infer::generate(*e, m, "ab", g).sequences[0].tokens,
            nvfp4::infer::generate(*e, m, "ab", g).sequences[0].tokens);
  g.batch = 3;
  EXPECT_NE(error_of([&] { nvfp4::infer::generate(*e, m, "ab", g); }).find("--batch 3"), std::string::npos);
}

// generate and eval on the CPU for every architecture the importer reads (Llama, Mistral with its
// window, Qwen2 with biases, Qwen3 with q/k norms; nvfp4's byte tokenizer), each precision once.
TEST_F(EvalTest, TheCommandsRunEveryArchitecture) {
  const std::string text = "a short text for every architecture, scored in two windows of 40 tokens.";
  std::ofstream(dir_ / "a.txt") << text;
  const char* precisions[] = {"fp32", "w4a16", "w4a4", "fp8"};
  int k = 0;
  for (const auto& arch : nvfp4::test::kTinyArchs) {
    SCOPED_TRACE(arch);
    const std::string m = (dir_ / arch).string(), p = precisions[k++ % 4];
    write_byte_model(dir_ / arch, arch, 50 + k);
    auto r = nvfp4::test::run_cli("generate " + m + " --prompt hello --max-tokens 5 --batch 2 --device cpu --precision " +
                                  p + " --json");
    ASSERT_EQ(r.status, 0) << r.output;
    auto j = nlohmann::json::parse(r.output);
    EXPECT_EQ(j.at("completions").size(), 2u);
    EXPECT_EQ(j.at("generated_tokens"), 10);
    r = nvfp4::test::run_cli("eval " + m + " --text " + (dir_ / "a.txt").string() + " --ctx 40 --device cpu --precision " +
                             p + " --reference fp32 --json");
    ASSERT_EQ(r.status, 0) << r.output;
    j = nlohmann::json::parse(r.output);
    EXPECT_EQ(j.at("tokens"), text.size());  // end-of-text + the bytes, all but the first scored
    EXPECT_TRUE(std::isfinite(j.at("ppl").get<double>()));
    EXPECT_GE(j.at("kl_mean").get<double>(), 0.0);
  }
}

TEST_F(EvalTest, TheCommandsPrintWhatTheLibraryComputes) {
  write_byte_model(dir_ / "m", "llama", 27);
  std::ofstream(dir_ / "a.txt") << "the quick brown fox jumps over the lazy dog; the quick brown fox.";
  std::ofstream(dir_ / "ids.jsonl") << "[256, 1, 2, 3, 4]\n[256, 5]\n";
  auto r = nvfp4::test::run_cli("generate " + (dir_ / "m").string() +
                                " --prompt hello --max-tokens 4 --temperature 0 --device cpu --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("prompt_tokens"), 6);
  EXPECT_EQ(j.at("completions").size(), 1u);
  EXPECT_GT(j.at("itl_ms").at("p99").get<double>(), 0.0);
  EXPECT_EQ(j.at("precision"), "fp32");

  r = nvfp4::test::run_cli("eval " + (dir_ / "m").string() + " --text " + (dir_ / "a.txt").string() +
                           " --precision w4a4 --reference fp32 --per-layer --device cpu --json");
  ASSERT_EQ(r.status, 0) << r.output;
  j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("tokens"), 65);  // end-of-text + 65 bytes, all but the first scored
  EXPECT_EQ(j.at("ctx"), 66);
  EXPECT_NEAR(j.at("bits_per_byte").get<double>(), j.at("nll").get<double>() / std::log(2.0), 1e-9);
  EXPECT_GT(j.at("kl_mean").get<double>(), 0.0);
  EXPECT_GT(j.at("top1_agree").get<double>(), 0.5);
  EXPECT_EQ(j.at("per_layer").size(), 14u);
  EXPECT_EQ(j.at("fallback_rate"), 0.0);
  // The library's number for the same text.
  const HfModel m = HfModel::open((dir_ / "m").string());
  nvfp4::infer::EngineOptions o;
  o.max_context = 66;
  const auto e = nvfp4::infer::make_cpu_engine(m, o);
  std::vector<EvalDocument> docs = {{m.encode_prompt("the quick brown fox jumps over the lazy dog; the quick brown fox."), 65, ""}};
  nvfp4::infer::EvalOptions eo;
  EXPECT_NEAR(nvfp4::infer::evaluate(*e, nullptr, docs, eo).nll, j.at("reference_nll").get<double>(), 1e-12);

  r = nvfp4::test::run_cli("eval " + (dir_ / "m").string() + " --ids " + (dir_ / "ids.jsonl").string() +
                           " --device cpu --json --save-logits " + (dir_ / "logits.safetensors").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).at("tokens"), 5);
  const auto f = nvfp4::io::SafetensorsFile::open((dir_ / "logits.safetensors").string());
  EXPECT_EQ(f.at("logits.0").shape, (std::vector<int64_t>{5, 257}));
  EXPECT_EQ(f.at("logits.1").shape, (std::vector<int64_t>{2, 257}));

  // Bad input: one line each, naming the problem.
  std::ofstream(dir_ / "bad.jsonl") << "[1, 2, 999]\n";
  r = nvfp4::test::run_cli("eval " + (dir_ / "m").string() + " --ids " + (dir_ / "bad.jsonl").string() + " --device cpu");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("bad.jsonl line 1: token 999 is not an id in [0, 257)"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("eval " + (dir_ / "m").string() + " --device cpu");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("exactly one of --text"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("generate " + (dir_ / "m").string() + " --prompt x --precision w3a3 --device cpu");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--precision w3a3"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("generate " + (dir_ / "m").string() + " --prompt x --keep-bf16 '*.nothing' --precision w4a16 --device cpu");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("names no linear layer"), std::string::npos) << r.output;
}

}  // namespace

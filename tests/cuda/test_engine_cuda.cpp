// The CUDA inference engine against the CPU reference engine on the same model folders (every
// architecture, BF16 weights): BF16 logits within BF16 tolerance, decode with the cache equal to a
// full recompute, a batch equal to its sequences alone, the quantized precisions' weights and
// guard as on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <utility>

#include "../infer/tiny_hf_model.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/cuda_gemm_nvfp4.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/calibrate.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/ptq_export.hpp"
#include "nvfp4/quantize_model.hpp"
#include "support/cuda_test.hpp"
#include "support/test_support.hpp"

namespace {

using nvfp4::infer::Engine;
using nvfp4::infer::EngineOptions;
using nvfp4::infer::HfModel;
using nvfp4::infer::Precision;
using nvfp4::infer::SeqChunk;
using nvfp4::test::rel_diff;
using nvfp4::test::some_tokens;
const auto& kArchs = nvfp4::test::kTinyArchs;

constexpr char kPrefix[] = "nvfp4_engine_cuda_test_";
using EngineCudaTest = nvfp4::test::ScratchDirTest<kPrefix>;




// Two CUDA engines on m at precision p, max_context 40: the defaults, and with `off` (an
// EngineOptions bool member) false — the path the first is compared with.
std::pair<std::unique_ptr<Engine>, std::unique_ptr<Engine>> engines_with_and_without(const HfModel& m, Precision p,
                                                                                    bool EngineOptions::*off) {
  EngineOptions o;
  o.precision = p;
  o.max_context = 40;
  auto with = nvfp4::infer::make_cuda_engine(m, o);
  o.*off = false;
  return {std::move(with), nvfp4::infer::make_cuda_engine(m, o)};
}

double argmax_agreement(const std::vector<float>& a, const std::vector<float>& b, int V) {
  const size_t rows = a.size() / static_cast<size_t>(V);
  size_t same = 0;
  for (size_t r = 0; r < rows; ++r) {
    auto ra = a.begin() + r * V, rb = b.begin() + r * V;
    same += std::max_element(ra, ra + V) - ra == std::max_element(rb, rb + V) - rb;
  }
  return static_cast<double>(same) / static_cast<double>(rows);
}


TEST_F(EngineCudaTest, Bf16LogitsMatchTheCpuReferenceForEveryArchitecture) {
  REQUIRE_GPU();
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 31, nvfp4::DType::BF16);
    const HfModel m = HfModel::open((dir_ / arch).string());
    const auto t = some_tokens(40, c.vocab, 32);
    EngineOptions o;
    o.max_context = 48;
    const auto cpu = nvfp4::infer::make_cpu_engine(m, o);
    o.precision = Precision::bf16;
    const auto gpu = nvfp4::infer::make_cuda_engine(m, o);
    const auto want = nvfp4::test::run_chunk(*cpu, 0, t, true), got = nvfp4::test::run_chunk(*gpu, 0, t, true);
    EXPECT_LT(rel_diff(got, want), 0.03) << arch;
    EXPECT_GE(argmax_agreement(got, want, c.vocab), 0.95) << arch;
    // Decode with the cache (the cache-attention kernel) = the prefill (flash attention).
    gpu->reset(0);
    std::vector<float> inc = nvfp4::test::run_chunk(*gpu, 0, {t.begin(), t.begin() + 20}, true);
    for (size_t i = 20; i < t.size(); ++i) {
      const auto s = nvfp4::test::run_chunk(*gpu, 0, {t[i]}, false);
      inc.insert(inc.end(), s.begin(), s.end());
    }
    EXPECT_LT(rel_diff(inc, got), 0.02) << arch;
  }
}

// Decode steps replay a CUDA graph from the second step of a batch size on; an engine that
// captures a layer's output runs every launch itself. The logits are the same bits.
TEST_F(EngineCudaTest, ReplayedDecodeStepsEqualLaunchedOnes) {
  REQUIRE_GPU();
  const auto c = nvfp4::test::tiny_config("qwen3");
  nvfp4::test::write_tiny_hf_model(dir_, "qwen3", c, 39, nvfp4::DType::BF16);
  const HfModel m = HfModel::open(dir_.string());
  for (Precision p : {Precision::bf16, Precision::w4a4}) {
    EngineOptions o;
    o.precision = p;
    o.max_sequences = 2;
    o.max_context = 40;
    const auto graphed = nvfp4::infer::make_cuda_engine(m, o), launched = nvfp4::infer::make_cuda_engine(m, o);
    std::vector<float> sink;
    launched->capture_linear_output(3, &sink);  // layer 0's o_proj: in no fused group, the same GEMMs
    const auto a = some_tokens(9, c.vocab, 40), b = some_tokens(4, c.vocab, 41);
    std::vector<float> lg, ll;
    for (auto* e : {graphed.get(), launched.get()}) e->forward(std::vector<SeqChunk>{{0, a}, {1, b}}, e == graphed.get() ? lg : ll);
    EXPECT_EQ(lg, ll);
    for (int step = 0; step < 5; ++step) {
      const std::vector<int32_t> next = {step % c.vocab, (7 * step + 3) % c.vocab};
      const std::vector<SeqChunk> chunks = {{0, {&next[0], 1}}, {1, {&next[1], 1}}};
      graphed->forward(chunks, lg);
      launched->forward(chunks, ll);
      EXPECT_EQ(lg, ll) << nvfp4::infer::precision_name(p) << " step " << step;
    }
    EXPECT_EQ(graphed->guard_stats().total_rows(), launched->guard_stats().total_rows());
    EXPECT_EQ(graphed->length(0), 14);
  }
}

// A paged KV pool far smaller than slots x context (blocks of 3 positions, 9 of them for 4 slots of
// 40) gives the default pool's logits bit for bit, prefill and replayed decode steps alike; a prompt
// that needs more blocks than are free is refused with nothing changed, and a reset frees its
// slot's blocks.
TEST_F(EngineCudaTest, ASmallKvPoolGivesTheDefaultPoolsBits) {
  REQUIRE_GPU();
  const auto c = nvfp4::test::tiny_config("llama");
  nvfp4::test::write_tiny_hf_model(dir_, "llama", c, 44, nvfp4::DType::BF16);
  const HfModel m = HfModel::open(dir_.string());
  EngineOptions big, small;
  big.precision = small.precision = Precision::bf16;
  big.max_sequences = small.max_sequences = 4;
  big.max_context = small.max_context = 40;
  small.kv_block_size = 3;
  small.kv_blocks = 9;
  const auto eb = nvfp4::infer::make_cuda_engine(m, big), es = nvfp4::infer::make_cuda_engine(m, small);
  const auto a = some_tokens(10, c.vocab, 45), b = some_tokens(5, c.vocab, 46);
  std::vector<float> lb, ls;
  eb->forward(std::vector<SeqChunk>{{3, a, true}, {1, b, true}}, lb);
  es->forward(std::vector<SeqChunk>{{3, a, true}, {1, b, true}}, ls);
  EXPECT_EQ(lb, ls);
  EXPECT_EQ(es->kv_free_blocks(), 9 - 4 - 2);
  for (int step = 0; step < 3; ++step) {  // replayed from the graph after the first
    const std::vector<int32_t> next = {step + 1, step + 2};
    const std::vector<SeqChunk> chunks = {{3, {&next[0], 1}}, {1, {&next[1], 1}}};
    eb->forward(chunks, lb);
    es->forward(chunks, ls);
    EXPECT_EQ(lb, ls) << "step " << step;
  }
  EXPECT_EQ(es->kv_free_blocks(), 9 - 5 - 3);  // 13 and 8 positions
  const auto d = some_tokens(12, c.vocab, 47);
  EXPECT_NE(nvfp4::test::error_of([&] { es->forward(std::vector<SeqChunk>{{0, d}}, ls); }).find("KV cache full"),
            std::string::npos);
  EXPECT_EQ(es->length(0), 0);
  es->reset(3);
  eb->reset(3);
  eb->forward(std::vector<SeqChunk>{{0, d, true}}, lb);
  es->forward(std::vector<SeqChunk>{{0, d, true}}, ls);
  EXPECT_EQ(lb, ls);
}

TEST_F(EngineCudaTest, ABatchEqualsItsSequencesAlone) {
  REQUIRE_GPU();
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 33, nvfp4::DType::BF16);
    const HfModel m = HfModel::open((dir_ / arch).string());
    EngineOptions o;
    o.precision = Precision::bf16;
    o.max_sequences = 3;
    o.max_context = 40;
    const auto e = nvfp4::infer::make_cuda_engine(m, o);
    const auto a = some_tokens(7, c.vocab, 34), b = some_tokens(13, c.vocab, 35), d = some_tokens(1, c.vocab, 36);
    std::vector<float> alone;
    for (const auto* s : {&a, &b, &d}) {
      e->reset(0);
      const auto l = nvfp4::test::run_chunk(*e, 0, *s, true);
      alone.insert(alone.end(), l.begin(), l.end());
    }
    e->reset(0);
    std::vector<float> together;
    e->forward(std::vector<SeqChunk>{{2, a, true}, {0, b, true}, {1, d, true}}, together);
    EXPECT_LT(rel_diff(together, alone), 0.02) << arch;
    EXPECT_EQ(argmax_agreement(together, alone, c.vocab), 1.0) << arch;
  }
}

TEST_F(EngineCudaTest, QuantizedPrecisionsMatchTheCpuEngineAndTheGuardFallsBack) {
  REQUIRE_GPU();
  const auto c = nvfp4::test::tiny_config("qwen2");
  nvfp4::test::write_tiny_hf_model(dir_, "qwen2", c, 37, nvfp4::DType::BF16);
  const HfModel m = HfModel::open(dir_.string());
  const auto t = some_tokens(24, c.vocab, 38);
  for (Precision p : {Precision::w4a16, Precision::w4a4, Precision::fp8}) {
    EngineOptions o;
    o.precision = p;
    const auto cpu = nvfp4::infer::make_cpu_engine(m, o);
    const auto gpu = nvfp4::infer::make_cuda_engine(m, o);
    const auto want = nvfp4::test::run_chunk(*cpu, 0, t, true), got = nvfp4::test::run_chunk(*gpu, 0, t, true);
    if (p != Precision::w4a4) {
      EXPECT_LT(rel_diff(got, want), 0.04) << nvfp4::infer::precision_name(p);
      EXPECT_GE(argmax_agreement(got, want, c.vocab), 0.9) << nvfp4::infer::precision_name(p);
    } else {
      // The activations are BF16 here and FP32 on the CPU: rows a rounding apart quantize to codes
      // and block scales that differ here and there (the quantizer itself is bit-exact with the
      // CPU's on the same rows: CudaOpsQuantizeRows), so the two engines' w4a4 differ by more than
      // BF16 rounding (0.12 of the logits' scale on the H100; on the CPU, rounding only the linear
      // layers' inputs to BF16 before they are quantized moved its own w4a4 logits by 0.16: this
      // 64-wide model has 4 blocks a row, and a block scale rounding the other way moves a quarter
      // of the row). Its w4a4 must still
      // be nearer the CPU's w4a4 than the CPU's w4a16 (0.18 from the CPU's w4a4): the activations
      // really are quantized, as on the CPU.
      EngineOptions o16 = o;
      o16.precision = Precision::w4a16;
      const auto cpu16 = nvfp4::infer::make_cpu_engine(m, o16);
      const auto w16 = nvfp4::test::run_chunk(*cpu16, 0, t, true);
      const double to_w4a4 = rel_diff(got, want), to_w4a16 = rel_diff(got, w16);
      std::printf("    w4a4 here vs the CPU's w4a4: %.4f, vs the CPU's w4a16: %.4f\n", to_w4a4, to_w4a16);
      EXPECT_LT(to_w4a4, 0.2);
      EXPECT_LT(to_w4a4, to_w4a16);
      EXPECT_GE(argmax_agreement(got, want, c.vocab), 0.7);
    }
    if (p == Precision::w4a4) {
      EXPECT_EQ(gpu->guard_stats().total_rows(), 14 * 24);
    }
  }
  // Every row saturating a calibrated amax falls back: exactly w4a16's logits.
  EngineOptions o;
  o.precision = Precision::w4a16;
  const auto w16 = nvfp4::infer::make_cuda_engine(m, o);
  const auto l16 = nvfp4::test::run_chunk(*w16, 0, t, true);
  o.precision = Precision::w4a4;
  const auto w4 = nvfp4::infer::make_cuda_engine(m, o);
  for (size_t i = 0; i + 1 < w4->linear_plan().size(); ++i) w4->set_input_amax(i, 1e-3f);
  EXPECT_EQ(nvfp4::test::run_chunk(*w4, 0, t, true), l16);
  const auto g = w4->guard_stats();
  EXPECT_EQ(g.total_fallbacks(), g.total_rows());
  EXPECT_EQ(g.total_rows(), 14 * 24);
}

// An NVFP4 checkpoint (quantized on the CPU by `nvfp4 quantize`'s code, both formats): the CUDA
// engine runs its stored codes, scales and factors as the CPU engine does — w4a16 within BF16
// tolerance, w4a4 (the stored input factors) nearer the CPU's w4a4 than its w4a16.
TEST_F(EngineCudaTest, Nvfp4CheckpointsRunAsOnTheCpu) {
  REQUIRE_GPU();
  const auto c = nvfp4::test::tiny_config("qwen3");
  nvfp4::test::write_tiny_hf_model(dir_ / "src", "qwen3", c, 41, nvfp4::DType::BF16);
  const HfModel src = HfModel::open((dir_ / "src").string());
  nvfp4::ptq::QuantizeModelOptions qo;
  qo.window = 40;
  const auto t = some_tokens(24, c.vocab, 42);
  for (const auto f : {nvfp4::io::QuantFormat::modelopt, nvfp4::io::QuantFormat::compressed_tensors}) {
    for (const bool w4a4 : {false, true}) {
      qo.w4a4 = w4a4;
      const auto q = nvfp4::ptq::quantize_model(src, some_tokens(80, c.vocab, 43), qo);
      nvfp4::ptq::ExportOptions eo;
      eo.config.format = f;
      eo.config.w4a4 = w4a4;
      eo.config.ignore = q.kept;
      const std::string name = std::string(nvfp4::io::quant_format_name(f)) + (w4a4 ? "-w4a4" : "-w4a16");
      nvfp4::ptq::write_quantized_folder((dir_ / "src").string(), (dir_ / name).string(), q.layers, eo);
      const HfModel m = HfModel::open((dir_ / name).string());
      EngineOptions o;  // the checkpoint's own scheme
      const auto cpu = nvfp4::infer::make_cpu_engine(m, o);
      o.precision = Precision::bf16;
      const auto gpu = nvfp4::infer::make_cuda_engine(m, o);
      EXPECT_EQ(gpu->linear_plan()[0].precision, w4a4 ? Precision::w4a4 : Precision::w4a16) << name;
      const auto want = nvfp4::test::run_chunk(*cpu, 0, t, true), got = nvfp4::test::run_chunk(*gpu, 0, t, true);
      if (!w4a4) {
        EXPECT_LT(rel_diff(got, want), 0.04) << name;
        EXPECT_GE(argmax_agreement(got, want, c.vocab), 0.9) << name;
        continue;
      }
      EngineOptions o16;
      o16.precision = Precision::w4a16;
      const auto cpu16 = nvfp4::infer::make_cpu_engine(m, o16);
      const auto w16 = nvfp4::test::run_chunk(*cpu16, 0, t, true);
      std::printf("    %s here vs the CPU's: %.4f, vs the CPU's w4a16: %.4f\n", name.c_str(), rel_diff(got, want),
                  rel_diff(got, w16));
      EXPECT_LT(rel_diff(got, want), 0.2) << name;
      EXPECT_LT(rel_diff(got, want), rel_diff(got, w16)) << name;
      EXPECT_EQ(gpu->guard_stats().total_rows(), 14 * 24) << name << ": every stored layer quantizes its rows";
    }
  }
}

// Calibration on CUDA (EngineOptions::observer): every projection's BF16 input rows reach the
// observer — the same rows, statistics and Hessians as the CPU engine's FP32 ones up to BF16
// rounding; the LM head sees the rows logits are asked for (here the last one) — and a decode step
// with an observer is launched, not replayed (its rows still arrive).
TEST_F(EngineCudaTest, CalibrationSeesEveryLayersRows) {
  REQUIRE_GPU();
  const auto c = nvfp4::test::tiny_config("qwen3");
  nvfp4::test::write_tiny_hf_model(dir_, "qwen3", c, 45, nvfp4::DType::BF16);
  const HfModel m = HfModel::open(dir_.string());
  const auto t = some_tokens(32, c.vocab, 46);
  nvfp4::ptq::Calibrator on_cpu(15, true), on_gpu(15, true);
  EngineOptions o;
  o.max_context = 40;
  o.observer = &on_cpu;
  nvfp4::test::run_chunk(*nvfp4::infer::make_cpu_engine(m, o), 0, t, false);
  o.observer = &on_gpu;
  o.precision = Precision::bf16;
  const auto gpu = nvfp4::infer::make_cuda_engine(m, o);
  nvfp4::test::run_chunk(*gpu, 0, t, false);
  for (size_t i = 0; i < 15; ++i) {
    EXPECT_EQ(on_gpu.rows(i), i == 14 ? 1 : 32) << i;
    EXPECT_EQ(on_cpu.rows(i), on_gpu.rows(i)) << i;
    const double a = on_cpu.input_stats(i).amax(), b = on_gpu.input_stats(i).amax();
    EXPECT_NEAR(b, a, 0.03 * a) << i;
    if (i == 14) continue;  // the head: no Hessian
    const auto h1 = on_cpu.hessian(i), h2 = on_gpu.hessian(i);
    ASSERT_EQ(h1.size(), h2.size());
    double num = 0, den = 0;
    for (size_t k = 0; k < h1.size(); ++k) num += (h2[k] - h1[k]) * (h2[k] - h1[k]), den += h1[k] * h1[k];
    EXPECT_LT(std::sqrt(num / den), 0.05) << i;
  }
  // Two decode steps: each one's rows observed (a replayed graph would run no host code).
  for (int step = 0; step < 2; ++step) nvfp4::test::run_chunk(*gpu, 0, {t[static_cast<size_t>(step)]}, false);
  EXPECT_EQ(on_gpu.rows(0), 34);
  EXPECT_EQ(on_gpu.rows(6), 34);
}

// The fused NVFP4 GEMV and split-K GEMM (EngineOptions::fused_nvfp4, up to 64 tokens) against
// decode-then-cuBLAS: the same exact BF16 products summed in another order, so logits within BF16
// rounding, the same argmax nearly everywhere, for every architecture, w4a16 and w4a4, a prompt and decode steps.
TEST_F(EngineCudaTest, FusedNvfp4GemvMatchesTheDecodedPath) {
  REQUIRE_GPU();
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 47, nvfp4::DType::BF16);
    const HfModel m = HfModel::open((dir_ / arch).string());
    const auto t = some_tokens(40, c.vocab, 48);
    constexpr size_t kPrompt = 34;  // above 32 rows: the split-K GEMM where C allows
    for (Precision p : {Precision::w4a16, Precision::w4a4}) {
      const auto [fused, decoded] = engines_with_and_without(m, p, &EngineOptions::fused_nvfp4);
      // Which route ran: the fused engine's forwards call nvfp4_gemv (and, for the 34-token prompt,
      // the split-K nvfp4_gemm where C % 64 == 0: every projection but the down one, C = 96), the
      // decoded one's never do. (Bits alone cannot tell: on this tiny model the FP32 sums are often
      // the same in both orders.)
      const auto before = nvfp4::cuda::nvfp4_calls();
      std::vector<float> lf = nvfp4::test::run_chunk(*fused, 0, {t.begin(), t.begin() + kPrompt}, true);
      const auto after_fused_prompt = nvfp4::cuda::nvfp4_calls();
      std::vector<float> ld = nvfp4::test::run_chunk(*decoded, 0, {t.begin(), t.begin() + kPrompt}, true);
      EXPECT_GT(after_fused_prompt.gemm, before.gemm) << arch << ": the 34-token prompt did not run split-K";
      EXPECT_GT(after_fused_prompt.gemv, before.gemv) << arch << ": the down projection (C = 96) did not run the GEMV";
      EXPECT_EQ(nvfp4::cuda::nvfp4_calls().gemv, after_fused_prompt.gemv) << arch << ": the decoded engine ran the fused GEMV";
      EXPECT_EQ(nvfp4::cuda::nvfp4_calls().gemm, after_fused_prompt.gemm) << arch << ": the decoded engine ran the fused GEMM";
      for (size_t i = kPrompt; i < t.size(); ++i) {
        const int64_t c0 = nvfp4::cuda::nvfp4_calls().gemv;
        const auto d = nvfp4::test::run_chunk(*decoded, 0, {t[i]}, false);
        EXPECT_EQ(nvfp4::cuda::nvfp4_calls().gemv, c0) << arch << ": the decoded engine ran the fused GEMV";
        const auto f = nvfp4::test::run_chunk(*fused, 0, {t[i]}, false);
        lf.insert(lf.end(), f.begin(), f.end());
        ld.insert(ld.end(), d.begin(), d.end());
      }
      std::printf("    %s %s fused vs decoded: %.5f\n", arch.c_str(), std::string(nvfp4::infer::precision_name(p)).c_str(),
                  rel_diff(lf, ld));
      EXPECT_LT(rel_diff(lf, ld), p == Precision::w4a16 ? 0.01 : 0.05) << arch;
      EXPECT_GE(argmax_agreement(lf, ld, c.vocab), 0.95) << arch;
    }
  }
}

// EngineOptions::fused_nvfp4_prefill: a prompt of more than 64 tokens runs the warp-specialized
// fused GEMM where C % 64 == 0 (every projection but the down one, C = 96) — counted by
// nvfp4_calls() — with logits within BF16 rounding of decode-then-cuBLAS, w4a16 and w4a4; off (the
// default), no fused GEMM runs for it.
TEST_F(EngineCudaTest, FusedNvfp4PrefillMatchesTheDecodedPath) {
  REQUIRE_GPU();
  for (const auto& arch : kArchs) {
    auto c = nvfp4::test::tiny_config(arch);
    c.seq_len = 128;  // an 80-token prompt: past the 64-token GEMV range, inside the model's positions
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 53, nvfp4::DType::BF16);
    const HfModel m = HfModel::open((dir_ / arch).string());
    const auto t = some_tokens(80, c.vocab, 54);
    for (Precision p : {Precision::w4a16, Precision::w4a4}) {
      EngineOptions o;
      o.precision = p;
      o.max_context = 96;
      const auto plain = nvfp4::infer::make_cuda_engine(m, o);
      o.fused_nvfp4_prefill = true;
      const auto fused = nvfp4::infer::make_cuda_engine(m, o);
      const int64_t g0 = nvfp4::cuda::nvfp4_calls().gemm;
      const auto ld = nvfp4::test::run_chunk(*plain, 0, t, true);
      EXPECT_EQ(nvfp4::cuda::nvfp4_calls().gemm, g0) << arch << ": the default engine ran a fused GEMM for 80 tokens";
      const auto lf = nvfp4::test::run_chunk(*fused, 0, t, true);
      EXPECT_GT(nvfp4::cuda::nvfp4_calls().gemm, g0) << arch << ": the fused prefill did not run";
      std::printf("    %s %s fused prefill vs decoded: %.5f\n", arch.c_str(),
                  std::string(nvfp4::infer::precision_name(p)).c_str(), rel_diff(lf, ld));
      EXPECT_LT(rel_diff(lf, ld), p == Precision::w4a16 ? 0.01 : 0.05) << arch;
      EXPECT_GE(argmax_agreement(lf, ld, c.vocab), 0.95) << arch;
    }
  }
}

// EngineOptions::fuse (one GEMM for q/k/v and for gate/up, the row ops fused) against every op on
// its own: the fused row ops are the separate ops' bits, so w4a16 (whose groups run as one fused
// GEMV, each row summed as its member's alone, the same split on this tiny model) gives the same
// logits; in bf16 only the grouped GEMMs may round differently. Changing one
// member of a group to another precision runs that block's projections apart, and changing it
// back restores the grouped GEMM's logits.
TEST_F(EngineCudaTest, FusedBlocksEqualOpByOp) {
  REQUIRE_GPU();
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 43, nvfp4::DType::BF16);
    const HfModel m = HfModel::open((dir_ / arch).string());
    const auto t = some_tokens(30, c.vocab, 44);
    for (Precision p : {Precision::bf16, Precision::w4a16}) {
      const auto [fused, apart] = engines_with_and_without(m, p, &EngineOptions::fuse);
      std::vector<float> lf = nvfp4::test::run_chunk(*fused, 0, {t.begin(), t.begin() + 24}, true);
      std::vector<float> la = nvfp4::test::run_chunk(*apart, 0, {t.begin(), t.begin() + 24}, true);
      for (size_t i = 24; i < t.size(); ++i) {  // decode steps (replayed graphs from the second on)
        const auto f = nvfp4::test::run_chunk(*fused, 0, {t[i]}, false), a = nvfp4::test::run_chunk(*apart, 0, {t[i]}, false);
        lf.insert(lf.end(), f.begin(), f.end());
        la.insert(la.end(), a.begin(), a.end());
      }
      if (p == Precision::w4a16) {
        EXPECT_EQ(lf, la) << arch;
      } else {
        EXPECT_LT(rel_diff(lf, la), 0.01) << arch;
        EXPECT_GE(argmax_agreement(lf, la, c.vocab), 0.97) << arch;
      }
    }
    // Layer 0's k_proj in w4a16, the rest bf16: that block's projections run apart.
    const auto [e, ref] = engines_with_and_without(m, Precision::bf16, &EngineOptions::fuse);
    const auto before = nvfp4::test::run_chunk(*e, 0, t, true);
    std::vector<Precision> mixed(e->linear_plan().size(), Precision::bf16);
    mixed[1] = Precision::w4a16;
    e->set_linear_precisions(mixed);
    ref->set_linear_precisions(mixed);
    e->reset(0);
    const auto got = nvfp4::test::run_chunk(*e, 0, t, true), want = nvfp4::test::run_chunk(*ref, 0, t, true);
    EXPECT_LT(rel_diff(got, want), 0.01) << arch;
    EXPECT_NE(got, before) << arch << ": k_proj's precision changed nothing";
    std::vector<Precision> all(mixed.size(), Precision::bf16);
    e->set_linear_precisions(all);
    e->reset(0);
    EXPECT_EQ(nvfp4::test::run_chunk(*e, 0, t, true), before) << arch;
  }
}

// w4a16's q|k|v and gate|up run as one fused GEMV each (the engine's NVFP4 groups, stacked rows
// with a factor per row): a decode step makes 4 fused calls a layer against w4a4's 7, whose
// projections run apart. Changing a member's precision ungroups its block (the other members keep
// their rows) and changing it back regroups it, with the first logits again.
TEST_F(EngineCudaTest, Nvfp4GroupsRunAsOneGemvAndSurvivePrecisionChanges) {
  REQUIRE_GPU();
  const std::string arch = "qwen2";  // q|k|v biases: the group's output takes them too
  const auto c = nvfp4::test::tiny_config(arch);
  nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 51, nvfp4::DType::BF16);
  const HfModel m = HfModel::open((dir_ / arch).string());
  const auto t = some_tokens(20, c.vocab, 52);
  int64_t step_calls[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    EngineOptions o;
    o.precision = k == 0 ? Precision::w4a16 : Precision::w4a4;
    o.max_context = 40;
    const auto e = nvfp4::infer::make_cuda_engine(m, o);
    nvfp4::test::run_chunk(*e, 0, {t.begin(), t.begin() + 8}, true);
    const int64_t c0 = nvfp4::cuda::nvfp4_calls().gemv;
    nvfp4::test::run_chunk(*e, 0, {t[8]}, false);  // the first decode step: run, then recorded
    step_calls[k] = nvfp4::cuda::nvfp4_calls().gemv - c0;
  }
  // The first decode step runs its layers, then records them into the graph the next steps replay:
  // every call twice. w4a16: q|k|v, o, gate|up, down; w4a4: the 7 projections apart.
  EXPECT_EQ(step_calls[0], 2 * 4 * c.n_layer) << "w4a16";
  EXPECT_EQ(step_calls[1], 2 * 7 * c.n_layer) << "w4a4";

  const auto [e, decoded] = engines_with_and_without(m, Precision::w4a16, &EngineOptions::fused_nvfp4);
  const auto before = nvfp4::test::run_chunk(*e, 0, t, true);
  EXPECT_LT(rel_diff(before, nvfp4::test::run_chunk(*decoded, 0, t, true)), 0.01);
  std::vector<Precision> p;
  for (const auto& l : e->linear_plan()) p.push_back(l.precision);
  ASSERT_EQ(p[1], Precision::w4a16);
  for (const size_t member : {size_t{1}, size_t{5}}) {  // layer 0's k_proj (q|k|v), up_proj (gate|up)
    SCOPED_TRACE("linear " + std::to_string(member));
    std::vector<Precision> mixed = p;
    mixed[member] = Precision::bf16;
    e->set_linear_precisions(mixed);
    decoded->set_linear_precisions(mixed);
    e->reset(0);
    decoded->reset(0);
    const auto got = nvfp4::test::run_chunk(*e, 0, t, true);
    EXPECT_LT(rel_diff(got, nvfp4::test::run_chunk(*decoded, 0, t, true)), 0.01);
    EXPECT_NE(got, before) << "the member's precision changed nothing";
    e->set_linear_precisions(p);
    decoded->set_linear_precisions(p);
    e->reset(0);
    decoded->reset(0);
    EXPECT_EQ(nvfp4::test::run_chunk(*e, 0, t, true), before) << "regrouped";
  }
}

// Programmatic dependent launch (the step's kernels may start while the previous one ends and
// wait on the device) changes when kernels run, never what they compute: the same logits bits
// with it off, for prefill, launched and replayed decode steps, fused and apart, bf16 and w4a4.
TEST_F(EngineCudaTest, DependentLaunchChangesNoBits) {
  REQUIRE_GPU();
  struct Restore {
    ~Restore() { nvfp4::cuda::set_dependent_launch(true); }
  } restore;
  for (const auto& arch : kArchs) {
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir_ / arch, arch, c, 47, nvfp4::DType::BF16);
    const HfModel m = HfModel::open((dir_ / arch).string());
    const auto t = some_tokens(30, c.vocab, 48);
    for (Precision p : {Precision::bf16, Precision::w4a4}) {
      for (bool fuse : {true, false}) {
        std::vector<float> runs[2];
        for (int r = 0; r < 2; ++r) {
          nvfp4::cuda::set_dependent_launch(r == 0);
          EngineOptions o;
          o.precision = p;
          o.fuse = fuse;
          o.max_context = 40;
          const auto e = nvfp4::infer::make_cuda_engine(m, o);
          runs[r] = nvfp4::test::run_chunk(*e, 0, {t.begin(), t.begin() + 20}, true);
          for (size_t i = 20; i < t.size(); ++i) {
            const auto s = nvfp4::test::run_chunk(*e, 0, {t[i]}, false);
            runs[r].insert(runs[r].end(), s.begin(), s.end());
          }
        }
        EXPECT_EQ(runs[0], runs[1]) << arch << " " << nvfp4::infer::precision_name(p) << (fuse ? " fused" : " apart");
      }
    }
  }
}

}  // namespace

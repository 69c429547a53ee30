// Training speed of the CUDA model (issue 4's measurement): a GPT-2-small-sized Llama
// (12 layers, d_model 768, 12 heads, seq 1024, vocabulary 50304) on random token ids; one
// step = forward + backward + gradient norm + AdamW, as the trainer runs it. Reports tokens/s,
// model FLOPs utilization against the cuBLAS BF16 GEMM rate measured in the same run (8192^3
// through the same cuBLASLt wrapper), and device memory. Timing: wall clock around whole steps
// (each step synchronizes: it reads the loss), after 3 warm-up steps, median of --steps.
//
// With --recipes, the same for each precision recipe (issue 5's measurement), plus a per-phase
// breakdown from CUDA events around every linear layer's operand work (quantize + decode) and
// its GEMM, over 3 more steps; "rest" is the step time minus those two.
//
// --profile-step brackets the first timed step with cudaProfilerStart/Stop, for
// `ncu --profile-from-start off` (a per-kernel breakdown of one training step).
// --host-wait 1 also times forward and backward with the host enqueuing each pass ahead of the
// GPU (behind a 50 ms host callback): what the GPU spends waiting for launches.
//
// --layers and --vocab change the model's depth and vocabulary (docs/results.md's experiment:
// --layers 8 --vocab 257, its byte-level model).
//
// A recipe spelled NAME+fused (e.g. nvfp4+fused) runs its NVFP4 x NVFP4 GEMMs on the fused kernel
// (QuantizedLinearCuda::set_fused_nvfp4) instead of decode-then-cuBLAS; NAME+fused-ws on its
// warp-specialized version (cuda::Nvfp4GemmNtKernel::wgmma_ws).
//
//   bench_train_cuda [--batch B] [--steps N] [--seq T] [--recipes bf16,fp8,nvfp4,nvfp4+fused,...] [--profile-step 1]
//                    [--host-wait 1] [--layers L] [--vocab V]
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include "cuda_check.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "nvfp4/model_cuda.hpp"
#include "nvfp4/quantized_linear_cuda.hpp"
#include "nvfp4/recipe.hpp"
#include "train/trainer.hpp"

namespace {


// cuBLAS BF16 rate (TFLOP/s) on an n^3 GEMM with random BF16 data: median of 20 after warm-up.
double cublas_bf16_tflops(int64_t n) {
  std::vector<uint16_t> h(static_cast<size_t>(n * n));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& x : h) {
    const float f = nd(rng);
    uint32_t b;
    std::memcpy(&b, &f, 4);
    x = static_cast<uint16_t>(b >> 16);
  }
  uint16_t *a, *b, *c;
  CK(cudaMalloc(&a, n * n * 2));
  CK(cudaMalloc(&b, n * n * 2));
  CK(cudaMalloc(&c, n * n * 2));
  CK(cudaMemcpy(a, h.data(), n * n * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(b, h.data(), n * n * 2, cudaMemcpyHostToDevice));
  nvfp4::cuda::Blas blas;
  const double t = nvfp4::bench::median_event_seconds([&] { blas.matmul_forward(c, a, b, n, n, n, nullptr); }, 3, 20);
  CK(cudaFree(a));
  CK(cudaFree(b));
  CK(cudaFree(c));
  return 2.0 * n * n * n / t / 1e12;
}

}  // namespace

struct Result {
  std::string recipe;
  double step_ms = 0, tok_s = 0, quantize_ms = 0, gemm_ms = 0, loss = 0;
  int64_t bytes = 0;   // what the model allocated (its linear layers' buffers included)
  int64_t in_use = 0;  // device memory in use at the end of the run (cudaMemGetInfo)
  // --host-wait: forward and backward as they run, and with the host enqueuing ahead (medians).
  double fwd_ms = 0, fwd_ahead_ms = 0, bwd_ms = 0, bwd_ahead_ms = 0;
};

// Median step time of `steps` steps after 3 warm-up steps, then 3 timed steps for the phases.
bool g_profile_step = false;
bool g_host_wait = false;

// Holds the stream (the model's: the legacy default one) for 50 ms from the host.
constexpr double kHoldMs = 50.0;
void CUDART_CB hold_stream(void*) { std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(kHoldMs)); }

// Whether the GPU waits for the host: each pass timed as it runs (it ends in a synchronization),
// and again behind a 50 ms host callback on the stream, so that the host has enqueued the whole
// pass before the GPU starts it. The difference (minus the 50 ms) is the time the GPU spent
// waiting for launches. Median of 5 of each.
void host_wait(nvfp4::model::CudaModel& m, std::vector<int32_t>& in, std::vector<int32_t>& tgt, int B, int T,
               Result& r) {
  std::vector<double> t[4];
  for (int rep = 0; rep < 5; ++rep) {
    for (int ahead = 0; ahead < 2; ++ahead) {
      m.zero_grad();
      CK(cudaDeviceSynchronize());
      if (ahead) CK(cudaLaunchHostFunc(nullptr, hold_stream, nullptr));
      auto t0 = std::chrono::steady_clock::now();
      m.forward(in.data(), tgt.data(), B, T);
      t[ahead].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() -
                         (ahead ? kHoldMs : 0.0));
      if (ahead) CK(cudaLaunchHostFunc(nullptr, hold_stream, nullptr));
      t0 = std::chrono::steady_clock::now();
      m.backward();
      t[2 + ahead].push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() -
                             (ahead ? kHoldMs : 0.0));
    }
  }
  for (auto& v : t) std::sort(v.begin(), v.end());
  r.fwd_ms = t[0][2];
  r.fwd_ahead_ms = t[1][2];
  r.bwd_ms = t[2][2];
  r.bwd_ahead_ms = t[3][2];
}

Result run_recipe(const nvfp4::model::ModelConfig& c, const std::string& recipe, int B, int T, int steps) {
  nvfp4::model::CudaModel m(c);
  // "NAME+fused": the recipe with its NVFP4 x NVFP4 GEMMs on the fused kernel (set_fused_nvfp4);
  // "NAME+fused-ws": on its warp-specialized version.
  const bool ws = recipe.size() > 9 && recipe.ends_with("+fused-ws");
  const bool fused = ws || (recipe.size() > 6 && recipe.ends_with("+fused"));
  const std::string name = ws ? recipe.substr(0, recipe.size() - 9) : fused ? recipe.substr(0, recipe.size() - 6) : recipe;
  if (!name.empty()) m.set_recipe(nvfp4::recipe::preset(name, c.n_layer), 1234);
  if (fused) m.linear().set_fused_nvfp4(true, ws);
  std::vector<float> params(static_cast<size_t>(m.num_params()));
  nvfp4::model::init_params(c, params, 1);
  m.set_params(params);
  std::mt19937_64 rng(7);
  std::vector<int32_t> in(size_t(B) * T), tgt(size_t(B) * T);
  std::vector<double> secs;
  Result r;
  r.recipe = recipe.empty() ? "native" : recipe;
  const int phase_steps = 3;
  for (int s = 0; s < steps + 3 + phase_steps; ++s) {
    const bool phases = s >= steps + 3;
    if (s == steps + 3) {
      m.linear().enable_timing(true);
      m.linear().reset_timing();
    }
    for (auto& t : in) t = static_cast<int32_t>(rng() % c.vocab);  // fresh random ids each step
    for (auto& t : tgt) t = static_cast<int32_t>(rng() % c.vocab);
    m.set_step(static_cast<uint32_t>(s), 0.0);
    const bool profiled = g_profile_step && s == 3;
    if (profiled) CK(cudaProfilerStart());
    const auto t0 = std::chrono::steady_clock::now();
    m.zero_grad();
    r.loss = m.forward(in.data(), tgt.data(), B, T);
    m.backward();
    const auto n2 = m.grad_norms_squared();
    (void)n2;
    m.adamw(3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, s + 1);
    CK(cudaDeviceSynchronize());
    if (profiled) CK(cudaProfilerStop());
    if (s >= 3 && !phases) secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const auto t = m.linear().timing();
  m.linear().enable_timing(false);
  if (g_host_wait) host_wait(m, in, tgt, B, T, r);
  std::sort(secs.begin(), secs.end());
  r.step_ms = secs[secs.size() / 2] * 1e3;
  r.tok_s = double(B) * T / (r.step_ms * 1e-3);
  r.quantize_ms = t.quantize_ms / phase_steps;
  r.gemm_ms = t.gemm_ms / phase_steps;
  r.bytes = m.device_bytes();
  size_t free_b = 0, total_b = 0;
  CK(cudaMemGetInfo(&free_b, &total_b));
  r.in_use = static_cast<int64_t>(total_b - free_b);
  return r;
}

int main(int argc, char** argv) {
  int B = 16, steps = 10, T = 1024, layers = 0, vocab = 0;
  std::string recipes;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--batch") B = std::atoi(argv[i + 1]);
    else if (k == "--steps") steps = std::atoi(argv[i + 1]);
    else if (k == "--seq") T = std::atoi(argv[i + 1]);
    else if (k == "--recipes") recipes = argv[i + 1];
    else if (k == "--profile-step") g_profile_step = std::atoi(argv[i + 1]) != 0;
    else if (k == "--host-wait") g_host_wait = std::atoi(argv[i + 1]) != 0;
    else if (k == "--layers") layers = std::atoi(argv[i + 1]);
    else if (k == "--vocab") vocab = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_train_cuda: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (nvfp4::cuda::device_count() == 0) {
    std::printf("no CUDA device: %s\n", nvfp4::cuda::unavailable_reason().c_str());
    return 1;
  }
  std::printf("device: %s\n", nvfp4::cuda::device_description(0).c_str());
  const double peak = cublas_bf16_tflops(8192);
  std::printf("cuBLAS BF16 8192^3: %.1f TFLOP/s\n", peak);

  auto c = nvfp4::train::model_preset("gpt2-small");
  c.seq_len = T;
  if (layers > 0) c.n_layer = layers;
  if (vocab > 0) c.vocab = vocab;
  std::printf("model: %d layers x %d, %d heads, ffn %d, vocabulary %d, sequence %d\n", c.n_layer, c.d_model, c.n_head,
              c.ffn(), c.vocab, c.seq_len);
  const double flops = c.flops_per_token(T);
  if (!recipes.empty()) {
    std::vector<Result> rs;
    std::string item;
    for (size_t p = 0; p <= recipes.size(); ++p) {
      if (p == recipes.size() || recipes[p] == ',') {
        rs.push_back(run_recipe(c, item, B, T, steps));
        std::printf("%s: step %.1f ms, loss %.4f\n", rs.back().recipe.c_str(), rs.back().step_ms, rs.back().loss);
        item.clear();
      } else {
        item += recipes[p];
      }
    }
    const double base = rs.front().tok_s;
    std::printf("\nbatch %d x %d tokens, %d steps (median); phases: mean of 3 steps with events\n", B, T, steps);
    std::printf("%-10s %10s %8s %6s %9s %11s %9s %9s %8s\n", "recipe", "tokens/s", "vs", "MFU", "step ms",
                "quantize ms", "GEMM ms", "rest ms", "mem GiB");
    for (const auto& r : rs) {
      std::printf("%-10s %10.0f %7.2fx %5.1f%% %9.1f %11.1f %9.1f %9.1f %8.2f\n", r.recipe.c_str(), r.tok_s,
                  r.tok_s / base, 100.0 * flops * r.tok_s / 1e12 / peak, r.step_ms, r.quantize_ms, r.gemm_ms,
                  r.step_ms - r.quantize_ms - r.gemm_ms, r.bytes / 1073741824.0);
    }
    std::printf("(ratios vs %s, the first recipe listed)\n", rs.front().recipe.c_str());
    if (g_host_wait) {
      std::printf("\n%-10s %9s %14s %10s %14s  (ms; ahead: the host enqueued the pass before the GPU ran it)\n",
                  "recipe", "forward", "forward ahead", "backward", "backward ahead");
      for (const auto& r : rs) {
        std::printf("%-10s %9.2f %14.2f %10.2f %14.2f\n", r.recipe.c_str(), r.fwd_ms, r.fwd_ahead_ms, r.bwd_ms,
                    r.bwd_ahead_ms);
      }
    }
    return 0;
  }

  // Without --recipes: the native BF16 model, the measurement of issue 4.
  const Result r = run_recipe(c, "", B, T, steps);
  const double achieved = flops * r.tok_s / 1e12;
  std::printf("model: %lld parameters, %.3f GFLOP per token (6N + attention)\n", static_cast<long long>(c.num_params()),
              flops / 1e9);
  std::printf("batch %d x %d tokens: step %.1f ms (median of %d), last loss %.4f\n", B, T, r.step_ms, steps, r.loss);
  std::printf("\n%-28s %12s\n", "metric", "value");
  std::printf("%-28s %12.0f\n", "tokens/s", r.tok_s);
  std::printf("%-28s %12.1f\n", "model TFLOP/s", achieved);
  std::printf("%-28s %11.1f%%\n", "MFU vs measured cuBLAS BF16", 100.0 * achieved / peak);
  std::printf("%-28s %12.2f\n", "model device memory GiB", r.bytes / 1073741824.0);
  std::printf("%-28s %12.2f\n", "device memory in use GiB", r.in_use / 1073741824.0);
  return 0;
}

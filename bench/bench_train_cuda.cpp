// Training speed of the CUDA model (issue 4's measurement): a GPT-2-small-sized Llama
// (12 layers, d_model 768, 12 heads, seq 1024, vocabulary 50304) on random token ids; one
// step = forward + backward + gradient norm + AdamW, as the trainer runs it. Reports tokens/s,
// model FLOPs utilization against the cuBLAS BF16 GEMM rate measured in the same run (8192^3
// through the same cuBLASLt wrapper), and device memory. Timing: wall clock around whole steps
// (each step synchronizes: it reads the loss), after 3 warm-up steps, median of --steps.
//
//   bench_train_cuda [--batch B] [--steps N] [--seq T]
#include <cuda_runtime.h>

#include "cuda_check.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "nvfp4/model_cuda.hpp"
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
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) blas.matmul_forward(c, a, b, n, n, n, nullptr);
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    CK(cudaEventRecord(e0));
    blas.matmul_forward(c, a, b, n, n, n, nullptr);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float t = 0;
    CK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  CK(cudaFree(a));
  CK(cudaFree(b));
  CK(cudaFree(c));
  return 2.0 * n * n * n / (ms[ms.size() / 2] * 1e-3) / 1e12;
}

}  // namespace

int main(int argc, char** argv) {
  int B = 16, steps = 10, T = 1024;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--batch") B = std::atoi(argv[i + 1]);
    else if (k == "--steps") steps = std::atoi(argv[i + 1]);
    else if (k == "--seq") T = std::atoi(argv[i + 1]);
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
  nvfp4::model::CudaModel m(c);
  std::vector<float> params(static_cast<size_t>(m.num_params()));
  nvfp4::model::init_params(c, params, 1);
  m.set_params(params);
  std::mt19937_64 rng(7);
  std::vector<int32_t> in(size_t(B) * T), tgt(size_t(B) * T);
  std::vector<double> secs;
  double loss = 0;
  for (int s = 0; s < steps + 3; ++s) {
    for (auto& t : in) t = static_cast<int32_t>(rng() % 50257);  // fresh random ids each step
    for (auto& t : tgt) t = static_cast<int32_t>(rng() % 50257);
    const auto t0 = std::chrono::steady_clock::now();
    m.zero_grad();
    loss = m.forward(in.data(), tgt.data(), B, T);
    m.backward();
    const auto n2 = m.grad_norms_squared();
    (void)n2;
    m.adamw(3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, s + 1);
    CK(cudaDeviceSynchronize());
    if (s >= 3) secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(secs.begin(), secs.end());
  const double step_s = secs[secs.size() / 2];
  const double tok_s = double(B) * T / step_s;
  const double flops = c.flops_per_token(T);
  const double achieved = flops * tok_s / 1e12;
  size_t free_b = 0, total_b = 0;
  CK(cudaMemGetInfo(&free_b, &total_b));
  std::printf("model: %lld parameters, %.3f GFLOP per token (6N + attention)\n", static_cast<long long>(m.num_params()),
              flops / 1e9);
  std::printf("batch %d x %d tokens: step %.1f ms (median of %d), last loss %.4f\n", B, T, step_s * 1e3, steps, loss);
  std::printf("\n%-28s %12s\n", "metric", "value");
  std::printf("%-28s %12.0f\n", "tokens/s", tok_s);
  std::printf("%-28s %12.1f\n", "model TFLOP/s", achieved);
  std::printf("%-28s %11.1f%%\n", "MFU vs measured cuBLAS BF16", 100.0 * achieved / peak);
  std::printf("%-28s %12.2f\n", "model device memory GiB", m.device_bytes() / 1073741824.0);
  std::printf("%-28s %12.2f\n", "device memory in use GiB", (total_b - free_b) / 1073741824.0);
  return 0;
}

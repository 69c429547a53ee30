// Training attention (cuda::attention_forward + attention_backward, issue 18): causal GQA forward
// and forward + backward times on the issue's shapes, to set beside torch's
// scaled_dot_product_attention measured in the same call (tests/hf/bench_sdpa.py prints the same
// table). The automatic forward (on an H100 the wgmma kernel for HS 64 and 128) and, in the last
// two columns, the FlashAttention-2 (mma.sync) forward forced. Each shape is checked first: the
// output's row 0 against the exact softmax of its one visible key (v itself), and a second run's
// bits against the first. Random BF16 inputs, CUDA events, median of repetitions (L2 not flushed:
// the working set is one layer's activations, as in a training step).
//
//   bench_attention_train [--shapes B,T,NH,NKV,HS;...] [--reps 20] [--warmup 5]
//   default shapes: 16,1024,12,12,64 (GPT-2 small, the issue's) and 4,4096,16,16,128 and 1,4096,32,8,128
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda_check.hpp"
#include "format/scalar.hpp"
#include "nvfp4/cuda_ops.hpp"

namespace {

struct Shape {
  int64_t B, T, NH, NKV, HS;
};

std::vector<Shape> parse_shapes(const std::string& s) {
  std::vector<Shape> out;
  size_t at = 0;
  while (at < s.size()) {
    const size_t end = std::min(s.find(';', at), s.size());
    Shape x{};
    if (std::sscanf(s.substr(at, end - at).c_str(), "%ld,%ld,%ld,%ld,%ld", &x.B, &x.T, &x.NH, &x.NKV, &x.HS) != 5 ||
        x.B < 1 || x.T < 1 || x.NKV < 1 || x.NH % x.NKV != 0) {
      std::fprintf(stderr, "bench_attention_train: bad shape '%s' (B,T,NH,NKV,HS with NKV dividing NH)\n",
                   s.substr(at, end - at).c_str());
      std::exit(2);
    }
    out.push_back(x);
    at = end + 1;
  }
  return out;
}

uint16_t* upload_random(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint16_t> h(n);
  for (auto& x : h) x = nvfp4::fmt::bf16_encode(normal(rng));
  uint16_t* d = nullptr;
  CK(cudaMalloc(&d, n * 2));
  CK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
  return d;
}

std::vector<uint16_t> download(const uint16_t* d, size_t n) {
  std::vector<uint16_t> h(n);
  CK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<Shape> shapes = {{16, 1024, 12, 12, 64}, {4, 4096, 16, 16, 128}, {1, 4096, 32, 8, 128}};
  int reps = 20, warmup = 5;
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (i + 1 == argc) {
      std::fprintf(stderr, "bench_attention_train: %s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--shapes") shapes = parse_shapes(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--warmup") warmup = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_attention_train: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (reps < 1 || warmup < 0) {
    std::fprintf(stderr, "bench_attention_train: --reps >= 1, --warmup >= 0\n");
    return 2;
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s; causal attention, BF16 in, FP32 softmax; FLOPs counted as 4 B NH T^2 HS / 2 (forward)\n",
              prop.name);
  std::printf("%3s %6s %4s %4s %4s %12s %12s %12s %10s %12s %12s\n", "B", "T", "NH", "NKV", "HS", "fwd ms",
              "fwd+bwd ms", "fwd TFLOP/s", "bwd/fwd", "fwd FA2 ms", "f+b FA2 ms");
  std::mt19937_64 rng(7);
  for (const Shape& s : shapes) {
    const size_t nq = static_cast<size_t>(s.B * s.T * s.NH * s.HS), nk = static_cast<size_t>(s.B * s.T * s.NKV * s.HS);
    uint16_t *q = upload_random(nq, rng), *k = upload_random(nk, rng), *v = upload_random(nk, rng),
             *dout = upload_random(nq, rng);
    uint16_t *out = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
    float* lse = nullptr;
    void* scratch = nullptr;
    CK(cudaMalloc(&out, nq * 2));
    CK(cudaMalloc(&dq, nq * 2));
    CK(cudaMalloc(&dk, nk * 2));
    CK(cudaMalloc(&dv, nk * 2));
    CK(cudaMalloc(&lse, static_cast<size_t>(s.B * s.NH * s.T) * 4));
    CK(cudaMalloc(&scratch, nvfp4::cuda::attention_backward_scratch_bytes(s.B, s.T, s.NH)));
    using nvfp4::cuda::AttentionKernel;
    AttentionKernel kernel = AttentionKernel::automatic;
    const auto fwd = [&] {
      nvfp4::cuda::attention_forward(out, lse, q, k, v, s.B, s.T, s.NH, s.NKV, s.HS, nullptr, nullptr, 0, nullptr, 0,
                                     kernel);
    };
    const auto both = [&] {
      fwd();
      nvfp4::cuda::attention_backward(dq, dk, dv, dout, out, q, k, v, lse, s.B, s.T, s.NH, s.NKV, s.HS, scratch,
                                      nullptr);
    };
    // Check: row 0 of every (b, head) sees only key 0, so its output is v's row 0 of the KV head;
    // the second run gives the same bits (deterministic).
    both();
    CK(cudaDeviceSynchronize());
    const auto o1 = download(out, nq), g1 = download(dq, nq);
    const auto hv = download(v, nk);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.NH; ++h)
        for (int64_t d = 0; d < s.HS; ++d) {
          const uint16_t got = o1[static_cast<size_t>(((b * s.T) * s.NH + h) * s.HS + d)];
          const uint16_t want = hv[static_cast<size_t>(((b * s.T) * s.NKV + h / (s.NH / s.NKV)) * s.HS + d)];
          if (got != want) {
            std::printf("CHECK FAILED: B %ld T %ld: row 0 of batch %ld head %ld is not v's row 0\n", s.B, s.T, b, h);
            return 1;
          }
        }
    both();
    CK(cudaDeviceSynchronize());
    if (download(out, nq) != o1 || download(dq, nq) != g1) {
      std::printf("CHECK FAILED: B %ld T %ld: a second run gave other bits\n", s.B, s.T);
      return 1;
    }
    const double t_fwd = nvfp4::bench::median_event_seconds(fwd, warmup, reps);
    const double t_both = nvfp4::bench::median_event_seconds(both, warmup, reps);
    const double flops = 4.0 * s.B * s.NH * double(s.T) * s.T * s.HS / 2.0;
    // The FlashAttention-2 forward (mma.sync) beside the automatic choice: checked the same way.
    kernel = AttentionKernel::mma_sync;
    both();
    CK(cudaDeviceSynchronize());
    const auto o2 = download(out, nq);
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.NH; ++h)
        for (int64_t d = 0; d < s.HS; ++d)
          if (o2[static_cast<size_t>(((b * s.T) * s.NH + h) * s.HS + d)] !=
              hv[static_cast<size_t>(((b * s.T) * s.NKV + h / (s.NH / s.NKV)) * s.HS + d)]) {
            std::printf("CHECK FAILED (mma.sync): B %ld T %ld: row 0 of batch %ld head %ld is not v's row 0\n", s.B,
                        s.T, b, h);
            return 1;
          }
    const double t_fwd2 = nvfp4::bench::median_event_seconds(fwd, warmup, reps);
    const double t_both2 = nvfp4::bench::median_event_seconds(both, warmup, reps);
    std::printf("%3ld %6ld %4ld %4ld %4ld %12.4f %12.4f %12.1f %10.2f %12.4f %12.4f\n", s.B, s.T, s.NH, s.NKV, s.HS,
                t_fwd * 1e3, t_both * 1e3, flops / t_fwd / 1e12, (t_both - t_fwd) / t_fwd, t_fwd2 * 1e3,
                t_both2 * 1e3);
    for (void* p : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(dout),
                    static_cast<void*>(out), static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv),
                    static_cast<void*>(lse), scratch})
      CK(cudaFree(p));
  }
  return 0;
}

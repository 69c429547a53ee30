// bench_gemm_shapes: the GEMMs of one transformer block's linear layers, BF16 and FP8, through
// cuBLASLt — the heuristic's first algorithm (what Blas::gemm runs) against the fastest of the
// heuristic's candidates, each timed on random operands (CUDA events, median of repeats).
//
//   bench_gemm_shapes [--tokens 16384] [--d 768] [--ffn 2048] [--algos 16] [--reps 20]
//
// Shapes, row-major out (M, N) = a (M, K) · b (N, K)^T as Blas::gemm takes them, for a linear
// layer (OC, C) over T tokens: fprop (T, OC, C), dgrad (T, C, OC), wgrad (OC, C, T). The layers:
// q/k/v/o (d, d), gate/up (ffn, d), down (d, ffn), and the fused q|k|v (3d, d) and gate|up
// (2 ffn, d) that Transformer Engine's fused layers run.
#include <cublasLt.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda_check.hpp"

namespace {

void ckb(cublasStatus_t s, const char* w) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "%s: cuBLAS status %d\n", w, int(s));
    std::exit(1);
  }
}

__global__ void fill_kernel(uint8_t* p, size_t n, uint64_t seed, int kind) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float u = float(x >> 40) / float(1u << 24) * 2.0f - 1.0f;  // [-1, 1)
    if (kind == 0) {  // bf16 pairs
      reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(u);
    } else if (kind == 1) {
      p[i] = __nv_cvt_float_to_fp8(u * 200.0f, __NV_SATFINITE, __NV_E4M3);
    } else {
      p[i] = __nv_cvt_float_to_fp8(u * 200.0f, __NV_SATFINITE, __NV_E5M2);
    }
  }
}

struct Args {
  long tokens = 16384, d = 768, ffn = 2048;
  int algos = 16, reps = 20;
};

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Result {
  float first_us = 0, best_us = 0;
  int n = 0, best = 0;
};

// Column-major D (m, n) = op(A) (m, k) · op(B) (k, n), laid out as Blas::gemm lays out row-major
// out (n, m) = a (n, k) · b (m, k)^T: b is cuBLASLt's A, a its B; an operand stored (rows, K) is
// K-major. FP8 needs both K-major ("TN"); the BF16 dgrad reads W as stored, the BF16 wgrad dY and X.
Result run(cublasLtHandle_t h, bool fp8, bool e5m2_b, bool out_f32, long m, long n, long k, bool a_kmajor,
           bool b_kmajor, void* A, void* B, void* D, const float* scales, void* ws, size_t ws_bytes, const Args& a,
           cudaStream_t st) {
  cublasLtMatmulDesc_t desc;
  ckb(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
  // a_kmajor: Blas's b (cuBLASLt's A); b_kmajor: Blas's a (cuBLASLt's B).
  const bool trans_a = a_kmajor, trans_b = !b_kmajor;
  const cublasOperation_t opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  ckb(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)), "ta");
  ckb(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)), "tb");
  const cudaDataType_t ta = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
  const cudaDataType_t tb = fp8 ? (e5m2_b ? CUDA_R_8F_E5M2 : CUDA_R_8F_E4M3) : CUDA_R_16BF;
  const cudaDataType_t td = out_f32 ? CUDA_R_32F : CUDA_R_16BF;
  if (fp8) {
    ckb(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scales, sizeof(scales)), "sa");
    ckb(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scales, sizeof(scales)), "sb");
  }
  cublasLtMatrixLayout_t la, lb, ld;
  ckb(cublasLtMatrixLayoutCreate(&la, ta, trans_a ? k : m, trans_a ? m : k, trans_a ? k : m), "la");
  ckb(cublasLtMatrixLayoutCreate(&lb, tb, trans_b ? n : k, trans_b ? k : n, trans_b ? n : k), "lb");
  ckb(cublasLtMatrixLayoutCreate(&ld, td, m, n, m), "ld");
  cublasLtMatmulPreference_t pref;
  ckb(cublasLtMatmulPreferenceCreate(&pref), "pref");
  ckb(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)),
      "ws");
  cublasLtMatmulHeuristicResult_t res[64];
  int found = 0;
  ckb(cublasLtMatmulAlgoGetHeuristic(h, desc, la, lb, ld, ld, pref, std::min(a.algos, 64), res, &found), "heuristic");
  const float alpha = 1.0f, beta = out_f32 ? 1.0f : 0.0f;  // wgrad accumulates into FP32
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  Result r;
  r.n = found;
  r.best_us = 1e30f;
  for (int i = 0; i < found; ++i) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
    bool ok = true;
    for (int w = 0; w < 3 && ok; ++w)
      ok = cublasLtMatmul(h, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &res[i].algo, ws, ws_bytes, st) ==
           CUBLAS_STATUS_SUCCESS;
    if (!ok) continue;
    std::vector<float> ts;
    for (int rep = 0; rep < a.reps; ++rep) {
      CK(cudaEventRecord(e0, st));
      ckb(cublasLtMatmul(h, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &res[i].algo, ws, ws_bytes, st), "mm");
      CK(cudaEventRecord(e1, st));
      CK(cudaEventSynchronize(e1));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      ts.push_back(ms * 1000.0f);
    }
    const float us = median(ts);
    if (i == 0) r.first_us = us;
    if (us < r.best_us) {
      r.best_us = us;
      r.best = i;
    }
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatmulDescDestroy(desc);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const long v = std::atol(argv[i + 1]);
    if (k == "--tokens") a.tokens = v;
    else if (k == "--d") a.d = v;
    else if (k == "--ffn") a.ffn = v;
    else if (k == "--algos") a.algos = int(v);
    else if (k == "--reps") a.reps = int(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  cublasLtHandle_t h;
  ckb(cublasLtCreate(&h), "create");
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  const size_t ws_bytes = size_t(32) << 20;
  void* ws;
  CK(cudaMalloc(&ws, ws_bytes));
  const long T = a.tokens, d = a.d, f = a.ffn;
  const size_t maxel = size_t(T) * std::max(2 * f, 3 * d);
  uint8_t *A, *B, *D;
  CK(cudaMalloc(&A, maxel * 2));
  CK(cudaMalloc(&B, maxel * 2));
  CK(cudaMalloc(&D, maxel * 4));
  float* scales;
  CK(cudaMalloc(&scales, 16));
  const float s1[4] = {1e-3f, 1e-3f, 1e-3f, 1e-3f};
  CK(cudaMemcpy(scales, s1, 16, cudaMemcpyHostToDevice));
  CK(cudaMemset(D, 0, maxel * 4));

  // Warm-up: about half a second of GEMMs, so that the clocks have risen before the first timing.
  {
    fill_kernel<<<1024, 256>>>(A, maxel, 5, 0);
    fill_kernel<<<1024, 256>>>(B, maxel, 6, 0);
    Args w = a;
    w.algos = 1;
    w.reps = 200;
    for (int i = 0; i < 3; ++i) run(h, false, false, false, 2 * f, T, d, true, true, A, B, D, scales, ws, ws_bytes, w, st);
  }

  struct Layer {
    const char* name;
    long OC, C;
    int count;  // per block
  } layers[] = {{"q|k|v|o (d x d)", d, d, 4}, {"gate|up (ffn x d)", f, d, 2}, {"down (d x ffn)", d, f, 1},
                {"fused qkv (3d x d)", 3 * d, d, 0}, {"fused gate/up (2ffn x d)", 2 * f, d, 0}};
  std::printf("tokens %ld, d %ld, ffn %ld; us per GEMM (heuristic's first / best of its candidates), TFLOP/s\n", T, d, f);
  std::printf("%-26s %-6s %-5s %14s %14s %8s %8s\n", "layer", "gemm", "type", "first us", "best us [i/n]", "TF first",
              "TF best");
  double sum_first[2] = {0, 0}, sum_best[2] = {0, 0};
  for (const auto& L : layers) {
    const struct {
      const char* g;
      long M, N, K;  // Blas::gemm's row-major out (M, N)
    } gemms[] = {{"fprop", T, L.OC, L.C}, {"dgrad", T, L.C, L.OC}, {"wgrad", L.OC, L.C, T}};
    for (const auto& g : gemms) {
      for (int fp8 = 0; fp8 < 2; ++fp8) {
        const bool e5 = fp8 && std::strcmp(g.g, "fprop") != 0;
        const bool f32 = std::strcmp(g.g, "wgrad") == 0;
        // Column-major (N, M) = b-view (N, K) · a-view: cuBLASLt's A is b (N rows), its B is a (M rows).
        const int kind = fp8 ? 1 : 0;
        fill_kernel<<<1024, 256>>>(B, size_t(g.M) * g.K, 1234 + g.M, e5 ? 2 : kind);
        fill_kernel<<<1024, 256>>>(A, size_t(g.N) * g.K, 99 + g.N, kind);
        CK(cudaDeviceSynchronize());
        // BF16 as the recipe's GEMMs hold their operands: dgrad's W as stored (OC, C), wgrad's dY
        // and X as stored (T, rows); FP8 always K-major (the quantizer writes the transposes).
        const bool a_km = fp8 || std::strcmp(g.g, "wgrad") != 0;  // a: X, dY, dY^T
        const bool b_km = fp8 || std::strcmp(g.g, "fprop") == 0;  // b: W, W^T, X^T
        const Result r = run(h, fp8, e5, f32, g.N, g.M, g.K, b_km, a_km, A, B, D, scales, ws, ws_bytes, a, st);
        const double flop = 2.0 * g.M * g.N * g.K;
        std::printf("%-26s %-6s %-5s %14.1f %9.1f [%d/%d] %8.0f %8.0f\n", L.name, g.g, fp8 ? "fp8" : "bf16", r.first_us,
                    r.best_us, r.best, r.n, flop / r.first_us * 1e-6, flop / r.best_us * 1e-6);
        if (L.count) {
          sum_first[fp8] += L.count * r.first_us;
          sum_best[fp8] += L.count * r.best_us;
        }
      }
    }
  }
  std::printf("per block (7 linears x 3 GEMMs): bf16 first %.1f us best %.1f us; fp8 first %.1f us best %.1f us\n",
              sum_first[0], sum_best[0], sum_first[1], sum_best[1]);
  return 0;
}

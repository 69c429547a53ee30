// The CPU reference matmuls (nn.Linear without bias) through OpenBLAS, and the plain-loop one
// that checks them (ops.hpp; CUDA twin: src/kernels/cuda/gemm.cu).
#include "kernels/cpu/ops.hpp"

#include <cblas.h>

#include <climits>
#include <cstring>
#include <string>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

namespace {

// cblas takes 32-bit ints (Debian's OpenBLAS is built without USE_64BITINT).
int blas_int(const char* op, const char* name, int64_t value) {
  require(value <= INT_MAX, op,
          std::string(name) + " = " + std::to_string(value) + " does not fit the 32-bit BLAS interface");
  return static_cast<int>(value);
}

// NOTE: OpenBLAS runs single-threaded. Its threaded sgemm is not bit-identical across thread
// counts: on a CPU its DYNAMIC_ARCH build does not recognize (the GPU host's Xeon, which gets
// the Prescott kernels) rows of out and dinp changed between 1 and 2 threads. One thread, set
// once before the first GEMM, keeps the matmuls deterministic; the other ops use OpenMP.
void blas_single_threaded() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

}  // namespace

// ---- matmul ---------------------------------------------------------------------------

void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) {
  require_nonnegative("matmul_forward", {{"N", N}, {"C", C}, {"OC", OC}});
  if (N == 0 || OC == 0) return;
  if (C == 0) {  // an empty contraction: BLAS would reject lda = 0
    std::memset(out, 0, sizeof(float) * static_cast<size_t>(N * OC));
    return;
  }
  blas_single_threaded();
  const int n = blas_int("matmul_forward", "N", N), c = blas_int("matmul_forward", "C", C),
            oc = blas_int("matmul_forward", "OC", OC);
  // out (N, OC) = inp (N, C) · weight (OC, C)ᵀ
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, oc, c, 1.0f, inp, c, weight, c, 0.0f, out, oc);
}

void matmul_forward_naive(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) {
  require_nonnegative("matmul_forward_naive", {{"N", N}, {"C", C}, {"OC", OC}});
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;  // (C)
    for (int64_t o = 0; o < OC; ++o) {
      const float* w = weight + o * C;  // (C)
      float acc = 0.0f;
      for (int64_t c = 0; c < C; ++c) acc += x[c] * w[c];
      out[n * OC + o] = acc;
    }
  }
}

void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                     int64_t N, int64_t C, int64_t OC) {
  require_nonnegative("matmul_backward", {{"N", N}, {"C", C}, {"OC", OC}});
  if (N == 0 || C == 0 || OC == 0) return;  // every product is empty or adds zero
  blas_single_threaded();
  const int n = blas_int("matmul_backward", "N", N), c = blas_int("matmul_backward", "C", C),
            oc = blas_int("matmul_backward", "OC", OC);
  // dinp (N, C) += dout (N, OC) · weight (OC, C)
  if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, c, oc, 1.0f, dout, oc, weight, c, 1.0f, dinp, c);
  // dweight (OC, C) += dout (N, OC)ᵀ · inp (N, C)
  if (dweight)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, oc, c, n, 1.0f, dout, oc, inp, c, 1.0f, dweight, c);
}

}  // namespace nvfp4::cpu

// CUDA matmuls through cuBLASLt: the BF16 nn.Linear products and the FP8 GEMM of the quantized
// layers (cuda::Blas, include/nvfp4/cuda_ops.hpp; CPU twin: src/kernels/cpu/gemm.cpp).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

// ---- cuBLASLt helpers -------------------------------------------------------------------------

void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLASLt error in ") + what + ": " + cublasLtGetStatusString(st) + " (" +
                std::to_string(static_cast<int>(st)) + ")");
}

uint32_t ptr_alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align /= 2;
  return align;
}

// RAII owners of the per-call cuBLASLt descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() {
    if (d) cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t d = nullptr;
  ~Layout() {
    if (d) cublasLtMatrixLayoutDestroy(d);
  }
};
struct Preference {
  cublasLtMatmulPreference_t d = nullptr;
  ~Preference() {
    if (d) cublasLtMatmulPreferenceDestroy(d);
  }
};

// FP8 block scales from this project's layout — (R, C) row-major, R the operand's rows (1x128)
// or row blocks (128x128), C its K blocks — into cuBLASLt's: out[r * row_stride + c * col_stride],
// the padding zero-filled by the caller.
__global__ void relayout_scales_kernel(float* __restrict__ out, const float* __restrict__ in, int64_t R, int64_t C,
                                       int64_t row_stride, int64_t col_stride) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= R * C) return;
  const int64_t r = i / C, c = i % C;
  out[r * row_stride + c * col_stride] = in[i];
}

}  // namespace

// ---- Blas ----------------------------------------------------------------------------------------

struct Blas::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t{32} << 20;
  float* consts = nullptr;         // device {0, 1}: beta when alpha is a device pointer
  float* block_scales = nullptr;   // FP8 block scales in cuBLASLt's layout (grown on demand)
  size_t block_scales_floats = 0;

  // One GEMM operand as cuBLASLt sees it.
  struct Op {
    const void* data;
    cudaDataType_t type;
    bool trans;
    int64_t ld;
    const float* scale = nullptr;  // FP8: decode factor(s) in cuBLASLt's layout
    int scale_mode = -1;           // cublasLtMatmulMatrixScale_t; -1: cuBLASLt's default (one scalar)
  };

  struct Key {
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldd;
    int type_a, type_b, dtype_d, mode_a, mode_b;
    bool device_alpha, fast_accum;
    uint32_t align_a, align_b, align_d;
    auto operator<=>(const Key&) const = default;
  };
  std::map<Key, cublasLtMatmulAlgo_t> algos;

  // Column-major D (m, n) = alpha * op(A) (m, k) · op(B) (k, n) + beta * D; D BF16 or FP32.
  // alpha: a device float, or nullptr for 1. fast_accum: FP8 fast accumulation (Blas::gemm).
  void gemm(const char* op, int64_t m, int64_t n, int64_t k, const Op& A, const Op& B, void* D,
            cudaDataType_t dtype_d, int64_t ldd, const float* alpha, float beta, Stream stream,
            bool fast_accum = false) {
    MatmulDesc desc;
    check_blas(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), op);
    const cublasOperation_t opa = A.trans ? CUBLAS_OP_T : CUBLAS_OP_N, opb = B.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)), op);
    check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)), op);
    if (fast_accum) {
      const int8_t on = 1;
      check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &on, sizeof(on)), op);
    }
    if (alpha) {
      const cublasLtPointerMode_t pm = CUBLASLT_POINTER_MODE_DEVICE;
      check_blas(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof(pm)), op);
    }
    for (const auto& [o, ptr_attr, mode_attr] :
         {std::tuple{&A, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, CUBLASLT_MATMUL_DESC_A_SCALE_MODE},
          std::tuple{&B, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, CUBLASLT_MATMUL_DESC_B_SCALE_MODE}}) {
      if (!o->scale) continue;
      check_blas(cublasLtMatmulDescSetAttribute(desc.d, ptr_attr, &o->scale, sizeof(o->scale)), op);
      if (o->scale_mode < 0) continue;  // the default: one scalar
      const auto mode = static_cast<cublasLtMatmulMatrixScale_t>(o->scale_mode);
      check_blas(cublasLtMatmulDescSetAttribute(desc.d, mode_attr, &mode, sizeof(mode)), op);
    }
    Layout la, lb, ld;
    check_blas(cublasLtMatrixLayoutCreate(&la.d, A.type, A.trans ? k : m, A.trans ? m : k, A.ld), op);
    check_blas(cublasLtMatrixLayoutCreate(&lb.d, B.type, B.trans ? n : k, B.trans ? k : n, B.ld), op);
    check_blas(cublasLtMatrixLayoutCreate(&ld.d, dtype_d, m, n, ldd), op);

    const Key key{A.trans, B.trans, m, n, k, A.ld, B.ld, ldd, static_cast<int>(A.type), static_cast<int>(B.type),
                  static_cast<int>(dtype_d), A.scale_mode, B.scale_mode, alpha != nullptr, fast_accum, ptr_alignment(A.data),
                  ptr_alignment(B.data), ptr_alignment(D)};
    auto it = algos.find(key);
    if (it == algos.end()) {
      Preference pref;
      check_blas(cublasLtMatmulPreferenceCreate(&pref.d), op);
      check_blas(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace_bytes, sizeof(workspace_bytes)),
                 op);
      // The heuristic assumes 256-byte aligned operands unless told otherwise.
      const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d}};
      for (const auto& [attr, value] : aligns)
        check_blas(cublasLtMatmulPreferenceSetAttribute(pref.d, attr, &value, sizeof(value)), op);
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      check_blas(cublasLtMatmulAlgoGetHeuristic(handle, desc.d, la.d, lb.d, ld.d, ld.d, pref.d, 1, &result, &found),
                 op);
      if (found == 0)
        throw Error(std::string("cuda::") + op + ": cuBLASLt has no algorithm for m=" + std::to_string(m) +
                    " n=" + std::to_string(n) + " k=" + std::to_string(k) + "; check the operand alignment");
      it = algos.emplace(key, result.algo).first;
    }
    const float one = 1.0f;
    const void* pa = alpha ? static_cast<const void*>(alpha) : &one;
    const void* pb = alpha ? static_cast<const void*>(consts + (beta == 0.0f ? 0 : 1)) : &beta;
    if (alpha && beta != 0.0f && beta != 1.0f) throw Error(std::string("cuda::") + op + ": beta must be 0 or 1");
    check_blas(cublasLtMatmul(handle, desc.d, pa, A.data, la.d, B.data, lb.d, pb, D, ld.d, D, ld.d, &it->second,
                              workspace, workspace_bytes, stream),
               op);
  }

  // The BF16 GEMMs of matmul_forward/backward.
  void gemm(const char* op, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
            const void* B, int64_t ldb, void* D, cudaDataType_t dtype_d, int64_t ldd, float beta, Stream stream) {
    gemm(op, m, n, k, Op{A, CUDA_R_16BF, ta, lda}, Op{B, CUDA_R_16BF, tb, ldb}, D, dtype_d, ldd, nullptr, beta, stream);
  }
};

Blas::Blas() : impl_(std::make_unique<Impl>()) {
  check_blas(cublasLtCreate(&impl_->handle), "Blas (cublasLtCreate)");
  cudaError_t e = cudaMalloc(&impl_->workspace, impl_->workspace_bytes);
  if (e == cudaSuccess) e = cudaMalloc(&impl_->consts, 2 * sizeof(float));
  const float consts[2] = {0.0f, 1.0f};
  if (e == cudaSuccess) e = cudaMemcpy(impl_->consts, consts, sizeof(consts), cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    cudaFree(impl_->workspace);
    cudaFree(impl_->consts);
    cublasLtDestroy(impl_->handle);
    check(e, "Blas (workspace cudaMalloc)");
  }
}

Blas::~Blas() {
  if (!impl_) return;
  cudaFree(impl_->workspace);
  cudaFree(impl_->consts);
  cudaFree(impl_->block_scales);
  cublasLtDestroy(impl_->handle);
}

// Row-major (N, OC) = (N, C) · (OC, C)ᵀ is column-major (OC, N) = W^T-view (OC, C) · inp-view (C, N):
// the row-major weight (OC, C) IS a column-major (C, OC) matrix, so it enters transposed ("TN").
void Blas::matmul_forward(uint16_t* out, const uint16_t* inp, const uint16_t* weight, int64_t N, int64_t C, int64_t OC,
                          Stream stream) {
  constexpr const char* op = "matmul_forward";
  require_nonnegative(op, {{"N", N}, {"C", C}, {"OC", OC}});
  if (N == 0 || OC == 0) return;
  require_ptr(out, op, "out");
  if (C == 0) {  // an empty contraction: zeros
    check(cudaMemsetAsync(out, 0, sizeof(uint16_t) * static_cast<size_t>(N * OC), stream), op);
    return;
  }
  require_ptr(inp, op, "inp");
  require_ptr(weight, op, "weight");
  impl_->gemm(op, true, false, OC, N, C, weight, C, inp, C, out, CUDA_R_16BF, OC, 0.0f, stream);
}

void Blas::matmul_backward(uint16_t* dinp, float* dweight, const uint16_t* dout, const uint16_t* inp,
                           const uint16_t* weight, int64_t N, int64_t C, int64_t OC, bool accumulate_dinp,
                           Stream stream) {
  constexpr const char* op = "matmul_backward";
  require_nonnegative(op, {{"N", N}, {"C", C}, {"OC", OC}});
  if (N == 0 || C == 0) return;  // dinp is empty, dweight gets zero added
  if (OC == 0) {
    if (dinp && !accumulate_dinp)
      check(cudaMemsetAsync(dinp, 0, sizeof(uint16_t) * static_cast<size_t>(N * C), stream), op);
    return;
  }
  require_ptr(dout, op, "dout");
  // dinp (N, C) = dout (N, OC) · weight (OC, C): column-major (C, N) = weight-view (C, OC) · dout-view (OC, N)
  if (dinp) {
    require_ptr(weight, op, "weight");
    impl_->gemm(op, false, false, C, N, OC, weight, C, dout, OC, dinp, CUDA_R_16BF, C, accumulate_dinp ? 1.0f : 0.0f,
                stream);
  }
  // dweight (OC, C) += dout (N, OC)ᵀ · inp (N, C): column-major (C, OC) = inp-view (C, N) · dout-view (OC, N)ᵀ
  if (dweight) {
    require_ptr(inp, op, "inp");
    impl_->gemm(op, false, true, C, OC, N, inp, C, dout, OC, dweight, CUDA_R_32F, C, 1.0f, stream);
  }
}

namespace {
cudaDataType_t blas_type(DType d, const char* op) {
  switch (d) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F32: return CUDA_R_32F;
    case DType::F8_E4M3: return CUDA_R_8F_E4M3;
    case DType::F8_E5M2: return CUDA_R_8F_E5M2;
    default: throw Error(std::string("cuda::") + op + ": dtype " + std::string(dtype_name(d)) + " is not supported");
  }
}
}  // namespace

void Blas::gemm(void* out, DType out_dtype, const GemmOperand& a, const GemmOperand& b, int64_t M, int64_t N, int64_t K,
                const float* alpha, bool accumulate, Stream stream, bool fast_accumulation) {
  constexpr const char* op = "Blas::gemm";
  require_nonnegative(op, {{"M", M}, {"N", N}, {"K", K}});
  require_bf16_or_f32_out(op, out_dtype);
  if (M == 0 || N == 0) return;
  require_ptr(out, op, "out");
  if (K == 0) {
    if (!accumulate) check(cudaMemsetAsync(out, 0, dtype_size(out_dtype) * static_cast<size_t>(M * N), stream), op);
    return;
  }
  require_ptr(a.data, op, "a");
  require_ptr(b.data, op, "b");
  const bool fp8a = a.dtype == DType::F8_E4M3 || a.dtype == DType::F8_E5M2;
  const bool fp8b = b.dtype == DType::F8_E4M3 || b.dtype == DType::F8_E5M2;
  require(fp8a == fp8b, op, "the operands must be both FP8 or both BF16");
  require(fp8a || (a.dtype == DType::BF16 && b.dtype == DType::BF16), op, "operands must be BF16 or FP8");
  // Row-major out (M, N) is column-major (N, M) = b-view · a-view: b enters as cuBLASLt's A.
  Impl::Op A{b.data, blas_type(b.dtype, op), b.k_major, b.k_major ? K : N};
  Impl::Op B{a.data, blas_type(a.dtype, op), !a.k_major, a.k_major ? K : M};
  if (fp8a) {
    require(a.k_major && b.k_major, op, "FP8 operands must be contiguous along K");
    require(!(a.dtype == DType::F8_E5M2 && b.dtype == DType::F8_E5M2), op, "cuBLASLt has no E5M2 x E5M2 GEMM");
    require(a.scale_inv && b.scale_inv, op, "FP8 operands need their scale_inv");
    // Measured (cuBLAS 13.0, H100): a 4-byte aligned scale pointer is "not supported".
    require(aligned16(a.scale_inv) && aligned16(b.scale_inv), op, "FP8 scale_inv pointers must be 16-byte aligned");
    require(!fast_accumulation || (a.block.per_tensor() && b.block.per_tensor()), op,
            "fast accumulation needs per-tensor scales (cuBLASLt has none with block scales on sm_90)");
    // Block scales: relaid into this Blas's buffer, b's first.
    struct Need {
      const GemmOperand* g;
      Impl::Op* o;
      int64_t rows;
      int64_t R, C, row_stride, col_stride, floats;
    };
    Need needs[2] = {{&b, &A, N}, {&a, &B, M}};
    size_t total = 0;
    for (Need& n : needs) {
      const BlockShape bl = n.g->block;
      n.o->scale = n.g->scale_inv;
      if (bl.per_tensor()) {  // cuBLASLt's default scale mode: one float
        n.floats = 0;
        continue;
      }
      // The layouts cuBLASLt reads (cuBLAS 13.0 on sm_90; found by comparing against an FP64
      // product of the decoded operands, tests/cuda/test_quantized_linear_cuda.cpp):
      //   1x128     transposed: (K blocks, rows), rows padded to a multiple of 4
      //   128x128   as written: (row blocks, K blocks), K blocks padded to a multiple of 4
      const int64_t kb = (K + 127) / 128;
      if (bl == BlockShape{1, 128}) {
        n.o->scale_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
        n.R = n.rows;
        n.C = kb;
        const int64_t padded = (n.R + 3) / 4 * 4;
        n.row_stride = 1;
        n.col_stride = padded;
        n.floats = padded * kb;
      } else if (bl == BlockShape{128, 128}) {
        n.o->scale_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
        n.R = (n.rows + 127) / 128;
        n.C = kb;
        const int64_t padded = (kb + 3) / 4 * 4;
        n.row_stride = padded;
        n.col_stride = 1;
        n.floats = n.R * padded;
      } else {
        throw Error(std::string("cuda::") + op + ": FP8 block " + block_name(bl) +
                    " has no cuBLASLt scale mode; use per tensor, 1x128 or 128x128");
      }
      n.floats = (n.floats + 3) / 4 * 4;  // keep the next operand's scales 16-byte aligned
      total += static_cast<size_t>(n.floats);
    }
    if (total > impl_->block_scales_floats) {
      cudaFree(impl_->block_scales);
      impl_->block_scales = nullptr;
      impl_->block_scales_floats = 0;
      check(cudaMalloc(&impl_->block_scales, total * sizeof(float)), "Blas::gemm (cudaMalloc)");
      impl_->block_scales_floats = total;
    }
    float* dst = impl_->block_scales;
    if (total > 0) check(cudaMemsetAsync(dst, 0, total * sizeof(float), stream), op);
    for (Need& n : needs) {
      if (n.floats == 0) continue;
      const int64_t count = n.R * n.C;
      relayout_scales_kernel<<<static_cast<unsigned>((count + 255) / 256), 256, 0, stream>>>(dst, n.g->scale_inv, n.R, n.C,
                                                                                          n.row_stride, n.col_stride);
      check_launch(op);
      n.o->scale = dst;
      dst += n.floats;
    }
  } else {
    require(!a.scale_inv && !b.scale_inv, op, "BF16 operands take no scale_inv (use alpha)");
    require(!fast_accumulation, op, "fast accumulation is for FP8 operands only");
  }
  impl_->gemm(op, N, M, K, A, B, out, blas_type(out_dtype, op), N, alpha, accumulate ? 1.0f : 0.0f, stream,
              fast_accumulation);
}

// ---- GEMV ------------------------------------------------------------------------------------------

namespace {

constexpr int kGemvWarps = kThreads / 32;

// acc[r] += the 8 products of a 16-byte piece of a weight row and x row r.
__device__ __forceinline__ void unpack8(const uint4 u, float (&v)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    v[2 * e] = __uint_as_float(w[e] << 16);
    v[2 * e + 1] = __uint_as_float(w[e] & 0xFFFF0000u);
  }
}

template <int R, bool kF32>
__global__ void __launch_bounds__(kThreads) gemv_bf16_kernel(void* __restrict__ out, const uint16_t* __restrict__ x,
                                                             const uint16_t* __restrict__ w,
                                                             const uint16_t* __restrict__ bias, int64_t C,
                                                             int64_t OC) {
  const int lane = threadIdx.x & 31;
  const int64_t pieces = C / 8;
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  // Launched with launch_dependent: while the previous kernel finishes, start this warp's first
  // row (the part its first loop iteration reads: 128 pieces of 16 bytes, into L2), which depends
  // on nothing; then wait for x.
  {
    const int64_t o = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;
    const int64_t line = lane * 8;  // pieces: 8 per 128-byte line
    if (o < OC && line < pieces && line < 128) {
      asm volatile("prefetch.global.L2 [%0];" ::"l"(w + o * C + line * 8));
    }
  }
  dependent_wait();
  dependent_trigger();
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32; o < OC;
       o += static_cast<int64_t>(gridDim.x) * kGemvWarps) {
    const uint4* wr = reinterpret_cast<const uint4*>(w + o * C);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    int64_t p = lane;
    // Four pieces in flight per lane, then the rest one by one (same order of additions either way:
    // piece by piece, each piece's 8 products in order).
    for (; p + 96 < pieces; p += 128) {
      uint4 wq[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) wq[u] = __ldcs(wr + p + 32 * u);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float wf[8];
        unpack8(wq[u], wf);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float xf[8];
          unpack8(__ldg(xv + r * pieces + p + 32 * u), xf);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r] = __fmaf_rn(wf[e], xf[e], acc[r]);
        }
      }
    }
    for (; p < pieces; p += 32) {
      float wf[8];
      unpack8(__ldcs(wr + p), wf);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float xf[8];
        unpack8(__ldg(xv + r * pieces + p), xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r] = __fmaf_rn(wf[e], xf[e], acc[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
      const float b = bias ? __uint_as_float(static_cast<uint32_t>(bias[o]) << 16) : 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float y = bias ? __fadd_rn(acc[r], b) : acc[r];
        if constexpr (kF32) static_cast<float*>(out)[r * OC + o] = y;
        else static_cast<uint16_t*>(out)[r * OC + o] = f32_to_bf16(y);
      }
    }
  }
}

template <int R>
void launch_gemv(void* out, bool f32, const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t C,
                 int64_t OC, Stream stream) {
  // Enough warps to keep every SM's memory pipe full, each warp then taking several rows.
  const auto kernel = f32 ? gemv_bf16_kernel<R, true> : gemv_bf16_kernel<R, false>;
  const int64_t blocks =
      std::min<int64_t>((OC + kGemvWarps - 1) / kGemvWarps, resident_blocks(reinterpret_cast<const void*>(kernel)));
  launch_dependent(kernel, dim3(static_cast<unsigned>(std::max<int64_t>(blocks, 1))), dim3(kThreads), 0, stream, out, x,
                   w, bias, C, OC);
}

}  // namespace

bool gemv_bf16_supported(const uint16_t* x, const uint16_t* w, int64_t N, int64_t C) {
  return N >= 1 && N <= kGemvMaxRows && C > 0 && C % 8 == 0 && aligned16(x) && aligned16(w);
}

void gemv_bf16(void* out, DType out_dtype, const uint16_t* x, const uint16_t* w, const uint16_t* bias, int64_t N,
               int64_t C, int64_t OC, Stream stream) {
  constexpr const char* op = "gemv_bf16";
  require_nonnegative(op, {{"N", N}, {"C", C}, {"OC", OC}});
  require_bf16_or_f32_out(op, out_dtype);
  if (N == 0 || OC == 0) return;
  require_ptr(out, op, "out");
  require_ptr(x, op, "x");
  require_ptr(w, op, "w");
  require(gemv_bf16_supported(x, w, N, C), op,
          "N = " + std::to_string(N) + ", C = " + std::to_string(C) +
              ": needs 1 <= N <= 8, C a positive multiple of 8 and 16-byte aligned x and w (use Blas::gemm)");
  const bool f32 = out_dtype == DType::F32;
  switch (N) {
    case 1: launch_gemv<1>(out, f32, x, w, bias, C, OC, stream); break;
    case 2: launch_gemv<2>(out, f32, x, w, bias, C, OC, stream); break;
    case 3: launch_gemv<3>(out, f32, x, w, bias, C, OC, stream); break;
    case 4: launch_gemv<4>(out, f32, x, w, bias, C, OC, stream); break;
    case 5: launch_gemv<5>(out, f32, x, w, bias, C, OC, stream); break;
    case 6: launch_gemv<6>(out, f32, x, w, bias, C, OC, stream); break;
    case 7: launch_gemv<7>(out, f32, x, w, bias, C, OC, stream); break;
    default: launch_gemv<8>(out, f32, x, w, bias, C, OC, stream); break;
  }
  check_launch(op);
}

}  // namespace nvfp4::cuda

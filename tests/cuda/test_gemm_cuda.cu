// cuda::Blas (src/kernels/cuda/gemm.cu) against the CPU matmuls: BF16 products, determinism, the
// FP8 fast-accumulation rule; cuda::gemv_bf16 against double-precision dot products. Harness and tolerance rule: test_ops_cuda_support.hpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace cuda_ops_test;

struct MatmulShape {
  int64_t N, C, OC;
};

// OC = 257: rows of dout are 514 bytes (not 16-byte aligned), like the byte tokenizer's lm_head.
const MatmulShape kMatmulShapes[] = {{154, 200, 72}, {256, 384, 257}, {512, 768, 1024}};

TEST(CudaOps, MatmulMatchesCpu) {
  REQUIRE_GPU();
  cu::Blas blas;
  uint64_t seed = 1;
  for (const auto& s : kMatmulShapes) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " OC=" + std::to_string(s.OC));
    const auto inp = randn_bf16(s.N * s.C, ++seed), w = randn_bf16(s.OC * s.C, ++seed, 0.05f);
    const auto dout = randn_bf16(s.N * s.OC, ++seed), dinp0 = randn_bf16(s.N * s.C, ++seed);
    const auto dw0 = randn_f32(s.OC * s.C, ++seed);
    DeviceBuffer<uint16_t> d_inp(to_bits(inp)), d_w(to_bits(w)), d_dout(to_bits(dout)), d_out(s.N * s.OC),
        d_dinp(s.N * s.C), d_dinp_acc(to_bits(dinp0));
    DeviceBuffer<float> d_dw(dw0);

    blas.matmul_forward(d_out.ptr, d_inp.ptr, d_w.ptr, s.N, s.C, s.OC, nullptr);
    blas.matmul_backward(d_dinp.ptr, d_dw.ptr, d_dout.ptr, d_inp.ptr, d_w.ptr, s.N, s.C, s.OC, false, nullptr);
    blas.matmul_backward(d_dinp_acc.ptr, nullptr, d_dout.ptr, d_inp.ptr, d_w.ptr, s.N, s.C, s.OC, true, nullptr);
    CUDA_OK(cudaDeviceSynchronize());

    std::vector<float> out(s.N * s.OC), dinp(s.N * s.C, 0.0f), dinp_acc = dinp0, dw = dw0;
    cpu::matmul_forward(out.data(), inp.data(), w.data(), s.N, s.C, s.OC);
    cpu::matmul_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), s.N, s.C, s.OC);
    cpu::matmul_backward(dinp_acc.data(), nullptr, dout.data(), inp.data(), w.data(), s.N, s.C, s.OC);
    // sum |terms| of each element: the same products on |inputs|
    std::vector<float> mag_out(s.N * s.OC), mag_dinp(s.N * s.C, 0.0f), mag_dw = abs_of(dw0);
    const auto ainp = abs_of(inp), aw = abs_of(w), adout = abs_of(dout);
    cpu::matmul_forward(mag_out.data(), ainp.data(), aw.data(), s.N, s.C, s.OC);
    cpu::matmul_backward(mag_dinp.data(), mag_dw.data(), adout.data(), ainp.data(), aw.data(), s.N, s.C, s.OC);
    auto mag_dinp_acc = mag_dinp;
    for (size_t i = 0; i < mag_dinp_acc.size(); ++i) mag_dinp_acc[i] += std::fabs(dinp0[i]);

    EXPECT_TRUE(close("out", download_bf16(d_out), out, 1, reassoc(s.C, mag_out)));
    EXPECT_TRUE(close("dinp", download_bf16(d_dinp), dinp, 1, reassoc(s.OC, mag_dinp)));
    // accumulate_dinp: cuBLASLt's BF16 epilogue with beta = 1 rounds the product to BF16 before
    // adding the old value (measured on an H100, CUDA 13.0): one more rounding, of |product|.
    auto extra_acc = reassoc(s.OC + 1, mag_dinp_acc);
    for (size_t i = 0; i < extra_acc.size(); ++i) extra_acc[i] += kBf16 * std::fabs(dinp[i]);
    EXPECT_TRUE(close("dinp (accumulate)", download_bf16(d_dinp_acc), dinp_acc, 1, extra_acc));
    EXPECT_TRUE(close("dweight (fp32, +=)", d_dw.download(), dw, 0, reassoc(s.N + 1, mag_dw)));
  }
}

TEST(CudaOps, MatmulBackwardDeterministic) {
  REQUIRE_GPU();
  cu::Blas blas;
  const int64_t N = 1024, C = 768, OC = 2304;
  const auto inp = randn_bf16(N * C, 11), w = randn_bf16(OC * C, 12, 0.05f), dout = randn_bf16(N * OC, 13);
  const auto dw0 = randn_f32(OC * C, 14);
  DeviceBuffer<uint16_t> d_inp(to_bits(inp)), d_w(to_bits(w)), d_dout(to_bits(dout)), d_dinp(N * C);
  DeviceBuffer<float> d_dw(dw0);
  std::vector<uint16_t> dinp[2];
  std::vector<float> dw[2];
  for (int run = 0; run < 2; ++run) {
    d_dw.upload(dw0);
    d_dinp.poison();
    blas.matmul_backward(d_dinp.ptr, d_dw.ptr, d_dout.ptr, d_inp.ptr, d_w.ptr, N, C, OC, false, nullptr);
    dinp[run] = d_dinp.download();
    dw[run] = d_dw.download();
  }
  EXPECT_EQ(first_diff(dinp[0], dinp[1]), -1);
  EXPECT_EQ(first_diff(f32_bits(dw[0]), f32_bits(dw[1])), -1);
}

TEST(CudaOps, GemmFastAccumulationIsForPerTensorFp8Only) {
  REQUIRE_GPU();
  // cuBLASLt (13.0, sm_90) answers "not supported" for fast accumulation with block scales;
  // Blas::gemm refuses it, and BF16 operands, with a message naming the option.
  cu::Blas blas;
  const int64_t M = 128, N = 128, K = 128;
  std::vector<uint8_t> codes(size_t(M * K));
  std::mt19937 rng(5);
  for (auto& c : codes) c = static_cast<uint8_t>(rng() % 0x7e);  // finite E4M3
  DeviceBuffer<uint8_t> d_a(codes), d_b(codes);
  DeviceBuffer<float> d_scale(std::vector<float>(4, 1.0f));
  DeviceBuffer<uint16_t> d_out(size_t(M * N)), d_bf(to_bits(randn_bf16(M * K, 6)));
  const auto expect_refused = [&](const cu::GemmOperand& a, const cu::GemmOperand& b) {
    try {
      blas.gemm(d_out.ptr, nvfp4::DType::BF16, a, b, M, N, K, nullptr, false, nullptr, true);
      ADD_FAILURE() << "fast accumulation accepted";
    } catch (const nvfp4::Error& e) {
      EXPECT_NE(std::string(e.what()).find("fast accumulation"), std::string::npos) << e.what();
    }
  };
  const cu::GemmOperand tensor_a{d_a.ptr, nvfp4::DType::F8_E4M3, true, d_scale.ptr, {0, 0}};
  const cu::GemmOperand tensor_b{d_b.ptr, nvfp4::DType::F8_E4M3, true, d_scale.ptr, {0, 0}};
  const cu::GemmOperand block_a{d_a.ptr, nvfp4::DType::F8_E4M3, true, d_scale.ptr, {1, 128}};
  expect_refused(block_a, tensor_b);
  expect_refused({d_bf.ptr, nvfp4::DType::BF16, true}, {d_bf.ptr, nvfp4::DType::BF16, true});
  // Per-tensor FP8 runs with it.
  blas.gemm(d_out.ptr, nvfp4::DType::BF16, tensor_a, tensor_b, M, N, K, nullptr, false, nullptr, true);
  CUDA_OK(cudaDeviceSynchronize());
}

// gemv_bf16: every row count 1..8, BF16 and F32 out, with and without a bias, against double dot
// products (FP32 accumulation: up to C roundings of the running sum); deterministic; shapes it
// does not take are errors.
TEST(CudaOps, GemvMatchesDoubleDotProducts) {
  REQUIRE_GPU();
  struct Shape {
    int64_t N, C, OC;
  };
  uint64_t seed = 1200;
  for (const auto& sh : {Shape{1, 2048, 3072}, Shape{3, 14336, 40}, Shape{8, 4096, 1000}, Shape{2, 8, 5},
                         Shape{5, 136, 77}, Shape{4, 1000, 33}, Shape{6, 520, 9}, Shape{7, 264, 100}}) {
    const int64_t N = sh.N, C = sh.C, OC = sh.OC;
    const auto x = randn_bf16(static_cast<size_t>(N * C), ++seed), w = randn_bf16(OC * C, ++seed, 0.05f);
    const auto b = randn_bf16(static_cast<size_t>(OC), ++seed);
    DeviceBuffer<uint16_t> dx(to_bits(x)), dw(to_bits(w)), db(to_bits(b)), out16(N * OC), again(N * OC);
    DeviceBuffer<float> out32(N * OC);
    ASSERT_TRUE(cu::gemv_bf16_supported(dx.ptr, dw.ptr, N, C));
    for (const bool bias : {false, true}) {
      SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C) + " OC=" + std::to_string(OC) +
                   (bias ? " bias" : ""));
      std::vector<float> ref(static_cast<size_t>(N * OC));
      std::vector<double> extra(ref.size());
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t o = 0; o < OC; ++o) {
          double sum = 0, mag = 0;
          for (int64_t c = 0; c < C; ++c) {
            sum += static_cast<double>(x[n * C + c]) * w[o * C + c];
            mag += std::fabs(static_cast<double>(x[n * C + c]) * w[o * C + c]);
          }
          if (bias) sum += b[o], mag += std::fabs(b[o]);
          ref[n * OC + o] = static_cast<float>(sum);
          extra[n * OC + o] = static_cast<double>(C + 1) * 0x1p-24 * mag;
        }
      }
      const uint16_t* bp = bias ? db.ptr : nullptr;
      cu::gemv_bf16(out16.ptr, nvfp4::DType::BF16, dx.ptr, dw.ptr, bp, N, C, OC, nullptr);
      cu::gemv_bf16(out32.ptr, nvfp4::DType::F32, dx.ptr, dw.ptr, bp, N, C, OC, nullptr);
      cu::gemv_bf16(again.ptr, nvfp4::DType::BF16, dx.ptr, dw.ptr, bp, N, C, OC, nullptr);
      EXPECT_TRUE(close("gemv bf16 out", download_bf16(out16), ref, 1, extra));
      EXPECT_TRUE(close("gemv f32 out", out32.download(), ref, 0, extra));
      EXPECT_EQ(first_diff(again.download(), out16.download()), -1) << "not deterministic";
      // The BF16 output is the F32 one rounded once.
      EXPECT_EQ(first_diff(out16.download(), to_bits(out32.download())), -1);
    }
  }
  DeviceBuffer<uint16_t> a(64 * 16), w(64 * 16);
  DeviceBuffer<float> o(64 * 16);
  EXPECT_FALSE(cu::gemv_bf16_supported(a.ptr, w.ptr, 9, 16));
  EXPECT_FALSE(cu::gemv_bf16_supported(a.ptr, w.ptr, 1, 12));
  EXPECT_FALSE(cu::gemv_bf16_supported(a.ptr + 1, w.ptr, 1, 16));
  EXPECT_THROW(cu::gemv_bf16(o.ptr, nvfp4::DType::F32, a.ptr, w.ptr, nullptr, 9, 16, 4, nullptr), nvfp4::Error);
  EXPECT_THROW(cu::gemv_bf16(o.ptr, nvfp4::DType::F32, a.ptr, w.ptr, nullptr, 1, 12, 4, nullptr), nvfp4::Error);
  EXPECT_THROW(cu::gemv_bf16(o.ptr, nvfp4::DType::F16, a.ptr, w.ptr, nullptr, 1, 16, 4, nullptr), nvfp4::Error);
}

}  // namespace

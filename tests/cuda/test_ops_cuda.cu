// CUDA training operators (include/nvfp4/cuda_ops.hpp) against their CPU twins
// (src/kernels/cpu/ops.hpp), on fresh random inputs, odd shapes, both the vectorized and the
// scalar (misaligned / ragged) paths. Skips cleanly without a GPU.
//
// Inputs are rounded to BF16 once, on the host, and BOTH sides read those values: the CPU op
// in FP32, the CUDA op from the BF16 bits. What may then differ, and the tolerance it gives
// (one rule for every op, never tuned per tensor):
//
//   |gpu_i - ref_i| <= R * 2^-8 * |ref_i|  +  K * 2^-22 * mag_i  (+ op-specific terms below)
//
//   R * 2^-8 |ref|   R BF16 roundings of the output (half an ulp is at most 2^-8 relative; the
//                    CPU keeps FP32). R = 1 for a BF16 output, 0 for an FP32 one.
//   K * 2^-22 mag    FP32 re-association of a reduction of K terms: at most K * u32 * sum|terms|
//                    (u32 = 2^-24), times 4 for the tensor cores' alignment in cuBLASLt and a
//                    few-ulp expf/powf/sincosf; mag_i = sum of |terms| of element i, computed
//                    in double in the test from the same inputs.
// Attention's backward adds 2 * 2^-8 * (its terms scaled by sum|dO * O|): D = rowsum(dO * O)
// is computed from the BF16 forward output, as FlashAttention does (the CPU op uses exact att).
// Attention runs on the tensor cores with BF16 operands, so the probabilities P (in P·V and
// Pᵀ·dO) and dS (in dS·K and dSᵀ·Q) are rounded to BF16 before their product, as FlashAttention
// does: one more rounding of every term, i.e. + 2^-8 * mag_i for out, dq, dk and dv.
// Ops whose arithmetic is the same sequence of IEEE operations on both sides are compared bit
// for bit: encoder (forward and backward), residual, AdamW, the gradient norm, conversions.
// Every output buffer is poisoned (NaN bits) first, so an unwritten element cannot pass.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "support/cuda_test.hpp"
#include "support/test_support.hpp"

namespace {

namespace cu = nvfp4::cuda;
namespace cpu = nvfp4::cpu;
using nvfp4::fmt::bf16_decode;
using nvfp4::fmt::bf16_encode;
using nvfp4::fmt::bf16_round;


constexpr double kBf16 = 1.0 / 256.0;        // 2^-8: one BF16 rounding, relative
constexpr double kReassoc = 1.0 / 4194304.0;  // 2^-22 per term of an FP32 reduction

using nvfp4::test::DeviceBuffer;

// N(0, scale^2) values rounded to BF16 (what both sides read).
std::vector<float> randn_bf16(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = bf16_round(d(rng));
  return x;
}

// FP32 values (parameters, gradient accumulators): not rounded.
std::vector<float> randn_f32(size_t n, uint64_t seed, float scale = 1.0f) { return nvfp4::test::randn(n, seed, scale); }

std::vector<uint16_t> to_bits(const std::vector<float>& x) {
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = bf16_encode(x[i]);
  return b;
}

std::vector<float> from_bits(const std::vector<uint16_t>& b) {
  std::vector<float> x(b.size());
  for (size_t i = 0; i < b.size(); ++i) x[i] = bf16_decode(b[i]);
  return x;
}

std::vector<float> download_bf16(const DeviceBuffer<uint16_t>& d) { return from_bits(d.download()); }

std::vector<float> abs_of(const std::vector<float>& x) {
  std::vector<float> a(x.size());
  for (size_t i = 0; i < x.size(); ++i) a[i] = std::fabs(x[i]);
  return a;
}

// The tolerance rule above: |gpu - ref| <= R * 2^-8 * |ref| + extra_i (extra empty: 0).
::testing::AssertionResult close(const char* what, const std::vector<float>& gpu, const std::vector<float>& ref,
                                 double R, const std::vector<double>& extra) {
  if (gpu.size() != ref.size()) return ::testing::AssertionFailure() << what << ": size mismatch";
  size_t bad = 0;
  double worst = 0.0;
  std::ostringstream first;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double tol = R * kBf16 * std::fabs(ref[i]) + (extra.empty() ? 0.0 : extra[i]);
    const double err = std::fabs(static_cast<double>(gpu[i]) - ref[i]);
    const bool ok = std::isfinite(gpu[i]) && err <= tol;
    if (std::isfinite(gpu[i]) && tol > 0) worst = std::max(worst, err / tol);
    if (!ok && bad++ < 5)
      first << "\n  [" << i << "] gpu " << gpu[i] << " ref " << ref[i] << " err " << err << " tol " << tol;
  }
  if (bad) return ::testing::AssertionFailure() << what << ": " << bad << " of " << ref.size() << " outside" << first.str();
  std::printf("    %-22s worst err/tol %.3f over %zu elements\n", what, worst, ref.size());
  return ::testing::AssertionSuccess();
}

// K * 2^-22 * mag_i
std::vector<double> reassoc(double K, const std::vector<double>& mag) {
  std::vector<double> e(mag.size());
  for (size_t i = 0; i < mag.size(); ++i) e[i] = K * kReassoc * mag[i];
  return e;
}
std::vector<double> reassoc(double K, const std::vector<float>& mag) {
  return reassoc(K, std::vector<double>(mag.begin(), mag.end()));
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

std::vector<uint32_t> f32_bits(const std::vector<float>& x) {
  std::vector<uint32_t> b(x.size());
  std::memcpy(b.data(), x.data(), x.size() * sizeof(float));
  return b;
}

// Index of the first differing element, or -1.
template <typename T>
int64_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<int64_t>(i);
  return a.size() == b.size() ? -1 : static_cast<int64_t>(std::min(a.size(), b.size()));
}

// ---- matmul ----------------------------------------------------------------------------------------

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

// The CLI prints "nvfp4: " + what(): neither an op's argument check nor the CUDA error check
// may carry that prefix itself (ops.cu's did: "nvfp4: nvfp4: cuda::..."). Both throw before
// any device work, so this runs without a GPU.
TEST(CudaOps, ErrorsNameTheOpWithoutTheCliPrefix) {
  try {
    cu::residual_forward(nullptr, nullptr, nullptr, -1, nullptr);
    FAIL() << "n = -1 was accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_EQ(std::string(e.what()), "cuda::residual_forward: n = -1 is negative");
  }
  try {
    cu::check(cudaErrorInvalidValue, "cudaMemcpy");
    FAIL() << "cudaErrorInvalidValue was accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_EQ(std::string(e.what()), std::string("CUDA error in cudaMemcpy: ") + cudaGetErrorString(cudaErrorInvalidValue));
  }
  EXPECT_NO_THROW(cu::check(cudaSuccess, "cudaMemcpy"));
}

// ---- RMSNorm ------------------------------------------------------------------------------------

struct RowShape {
  int64_t N, C;
};
// C = 1000 is not a multiple of 8: the scalar path.
const RowShape kNormShapes[] = {{77, 256}, {300, 1000}, {2048, 768}};

TEST(CudaOps, RmsNormMatchesCpu) {
  REQUIRE_GPU();
  const float eps = 1e-5f;
  uint64_t seed = 100;
  for (const auto& s : kNormShapes) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " C=" + std::to_string(s.C));
    const int64_t N = s.N, C = s.C;
    const auto x = randn_bf16(N * C, ++seed, 2.0f), w = randn_bf16(C, ++seed), dy = randn_bf16(N * C, ++seed);
    const auto dx0 = randn_bf16(N * C, ++seed), dw0 = randn_f32(C, ++seed);
    std::vector<float> out(N * C), rstd(N), dx = dx0, dw = dw0;
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    cpu::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);

    DeviceBuffer<uint16_t> d_x(to_bits(x)), d_w(to_bits(w)), d_dy(to_bits(dy)), d_out(N * C), d_dx(to_bits(dx0));
    DeviceBuffer<float> d_rstd(N), d_rstd_cpu(rstd), d_dw(dw0);
    DeviceBuffer<uint8_t> scratch(cu::rmsnorm_backward_scratch_bytes(N, C));
    cu::rmsnorm_forward(d_out.ptr, d_rstd.ptr, d_x.ptr, d_w.ptr, N, C, eps, nullptr);
    // The backward reads the CPU's rstd, so both sides start from the same saved statistics.
    cu::rmsnorm_backward(d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd_cpu.ptr, N, C, scratch.ptr, nullptr);
    CUDA_OK(cudaDeviceSynchronize());

    // Sum of squares: C positive terms; out inherits its relative error.
    EXPECT_TRUE(close("out", download_bf16(d_out), out, 1, reassoc(C, abs_of(out))));
    EXPECT_TRUE(close("rstd", d_rstd.download(), rstd, 0, reassoc(C, abs_of(rstd))));
    std::vector<double> mag_dx(N * C), mag_dw(C);
    for (int64_t n = 0; n < N; ++n) {
      double sabs = 0.0;
      for (int64_t c = 0; c < C; ++c) sabs += std::fabs(double(dy[n * C + c]) * w[c] * x[n * C + c] * rstd[n]);
      for (int64_t c = 0; c < C; ++c) {
        const double g = std::fabs(double(dy[n * C + c]) * w[c]), xh = std::fabs(double(x[n * C + c]) * rstd[n]);
        mag_dx[n * C + c] = std::fabs(dx0[n * C + c]) + rstd[n] * (g + xh * sabs / C);
        mag_dw[c] += std::fabs(double(dy[n * C + c]) * x[n * C + c] * rstd[n]);
      }
    }
    for (int64_t c = 0; c < C; ++c) mag_dw[c] += std::fabs(dw0[c]);
    EXPECT_TRUE(close("dinp (+=)", download_bf16(d_dx), dx, 1, reassoc(C + 2, mag_dx)));
    EXPECT_TRUE(close("dweight (+=)", d_dw.download(), dw, 0, reassoc(N + 1, mag_dw)));
  }
}

TEST(CudaOps, RmsNormBackwardDeterministic) {
  REQUIRE_GPU();
  const int64_t N = 4096, C = 768;
  const auto x = randn_bf16(N * C, 21), w = randn_bf16(C, 22), dy = randn_bf16(N * C, 23);
  std::vector<float> rstd(N, 0.7f);
  const auto dw0 = randn_f32(C, 24);
  DeviceBuffer<uint16_t> d_x(to_bits(x)), d_w(to_bits(w)), d_dy(to_bits(dy)), d_dx(N * C);
  DeviceBuffer<float> d_rstd(rstd), d_dw(C);
  DeviceBuffer<uint8_t> scratch(cu::rmsnorm_backward_scratch_bytes(N, C));
  std::vector<uint16_t> dx[2];
  std::vector<float> dw[2];
  for (int run = 0; run < 2; ++run) {
    CUDA_OK(cudaMemset(d_dx.ptr, 0, N * C * 2));
    d_dw.upload(dw0);
    cu::rmsnorm_backward(d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, N, C, scratch.ptr, nullptr);
    dx[run] = d_dx.download();
    dw[run] = d_dw.download();
  }
  EXPECT_EQ(first_diff(dx[0], dx[1]), -1);
  EXPECT_EQ(first_diff(f32_bits(dw[0]), f32_bits(dw[1])), -1);
}

// ---- RoPE ----------------------------------------------------------------------------------------

struct HeadShape {
  int64_t B, T, NH, HS;
};
const HeadShape kRopeShapes[] = {{2, 100, 4, 64}, {1, 300, 3, 128}, {3, 17, 2, 6}};

// Extra tolerance of a rotated element at position t: |x1| + |x2| times the angle's error.
// The angle t * inv_freq carries the few-ulp error of powf (relative), so its absolute error
// grows with t: 2^-20 * (1 + t) covers 8 ulp of the angle plus 8 ulp of sin/cos.
std::vector<double> rope_extra(const std::vector<float>& x, const HeadShape& s) {
  std::vector<double> e(x.size());
  const int64_t half = s.HS / 2;
  for (int64_t row = 0; row < s.B * s.T * s.NH; ++row) {
    const int64_t t = (row / s.NH) % s.T;
    for (int64_t i = 0; i < half; ++i) {
      const double a = std::fabs(x[row * s.HS + i]) + std::fabs(x[row * s.HS + i + half]);
      e[row * s.HS + i] = e[row * s.HS + i + half] = std::ldexp(1.0, -20) * (1.0 + t) * a;
    }
  }
  return e;
}

TEST(CudaOps, RopeMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 200;
  for (const auto& s : kRopeShapes) {
    SCOPED_TRACE("B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " NH=" + std::to_string(s.NH) +
                 " HS=" + std::to_string(s.HS));
    const int64_t n = s.B * s.T * s.NH * s.HS;
    const auto x = randn_bf16(n, ++seed), dy = randn_bf16(n, ++seed), dx0 = randn_bf16(n, ++seed);
    std::vector<float> out(n), dx = dx0;
    cpu::rope_forward(out.data(), x.data(), s.B, s.T, s.NH, s.HS, 10000.0f);
    cpu::rope_backward(dx.data(), dy.data(), s.B, s.T, s.NH, s.HS, 10000.0f);

    DeviceBuffer<uint16_t> d_x(to_bits(x)), d_out(n), d_inplace(to_bits(x)), d_dy(to_bits(dy)), d_dx(to_bits(dx0));
    cu::rope_forward(d_out.ptr, d_x.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
    cu::rope_forward(d_inplace.ptr, d_inplace.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
    cu::rope_backward(d_dx.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    const auto gout = d_out.download();
    EXPECT_TRUE(close("out", from_bits(gout), out, 1, rope_extra(x, s)));
    EXPECT_EQ(first_diff(gout, d_inplace.download()), -1) << "in place differs from out of place";
    // The old dinp enters one FP32 addition, rounded once with the output.
    EXPECT_TRUE(close("dinp (+=)", download_bf16(d_dx), dx, 1, rope_extra(dy, s)));
    // accumulate = false writes dinp without reading it (NaN there stays out of the result):
    // the bits of accumulating onto zeros.
    DeviceBuffer<uint16_t> d_zero(std::vector<uint16_t>(n, 0)), d_nan(std::vector<uint16_t>(n, 0x7FC0));
    cu::rope_backward(d_zero.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr);
    cu::rope_backward(d_nan.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr, nullptr, false);
    EXPECT_EQ(first_diff(d_zero.download(), d_nan.download()), -1) << "rope_backward without accumulation";
  }
}

// ---- attention ---------------------------------------------------------------------------------

struct AttShape {
  int64_t B, T, NH, NKV, HS;
  int64_t offset;  // BF16 elements before every BF16 tensor: 1 makes them misaligned (scalar path)
};
// T = 100, 257 and 130: not multiples of the 64-row tile; NKV < NH (grouped) and = NH; T = 1.
const AttShape kAttShapes[] = {
    {2, 100, 4, 2, 64, 0}, {1, 257, 8, 2, 128, 0}, {2, 64, 4, 4, 32, 0}, {1, 1, 2, 1, 64, 0}, {1, 130, 6, 3, 32, 1}};

TEST(CudaOps, AttentionMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 300;
  for (const auto& s : kAttShapes) {
    const int64_t B = s.B, T = s.T, NH = s.NH, NKV = s.NKV, HS = s.HS, G = NH / NKV;
    SCOPED_TRACE("B=" + std::to_string(B) + " T=" + std::to_string(T) + " NH=" + std::to_string(NH) +
                 " NKV=" + std::to_string(NKV) + " HS=" + std::to_string(HS) + " offset=" + std::to_string(s.offset));
    const int64_t nq = B * T * NH * HS, nk = B * T * NKV * HS;
    const auto q = randn_bf16(nq, ++seed, 1.5f), k = randn_bf16(nk, ++seed, 1.5f), v = randn_bf16(nk, ++seed);
    const auto dout = randn_bf16(nq, ++seed);
    std::vector<float> out(nq), att(B * NH * T * T), dq(nq, 0.0f), dk(nk, 0.0f), dv(nk, 0.0f), datt(B * NH * T * T);
    cpu::attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, HS);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), datt.data(), dout.data(), q.data(), k.data(), v.data(),
                            att.data(), B, T, NH, NKV, HS);

    const int64_t off = s.offset;
    auto padded = [&](const std::vector<float>& x) {
      std::vector<uint16_t> b(off, 0);
      const auto bits = to_bits(x);
      b.insert(b.end(), bits.begin(), bits.end());
      return b;
    };
    auto unpadded = [&](const DeviceBuffer<uint16_t>& d) {
      const auto x = download_bf16(d);
      return std::vector<float>(x.begin() + off, x.end());
    };
    DeviceBuffer<uint16_t> d_q(padded(q)), d_k(padded(k)), d_v(padded(v)), d_dout(padded(dout)), d_out(nq + off),
        d_dq(nq + off), d_dk(nk + off), d_dv(nk + off);
    DeviceBuffer<float> d_lse(B * NH * T);
    DeviceBuffer<uint8_t> scratch(cu::attention_backward_scratch_bytes(B, T, NH));
    cu::attention_forward(d_out.ptr + off, d_lse.ptr, d_q.ptr + off, d_k.ptr + off, d_v.ptr + off, B, T, NH, NKV, HS,
                          nullptr);
    cu::attention_backward(d_dq.ptr + off, d_dk.ptr + off, d_dv.ptr + off, d_dout.ptr + off, d_out.ptr + off,
                           d_q.ptr + off, d_k.ptr + off, d_v.ptr + off, d_lse.ptr, B, T, NH, NKV, HS, scratch.ptr,
                           nullptr);
    CUDA_OK(cudaDeviceSynchronize());

    // Magnitudes in double from the CPU's probabilities (see the file comment).
    const double scale = 1.0 / std::sqrt(double(HS));
    std::vector<double> mag_out(nq, 0.0), lse_ref(B * NH * T), lse_mag(B * NH * T);
    std::vector<double> mag_dq(nq, 0.0), magD_dq(nq, 0.0), mag_dk(nk, 0.0), magD_dk(nk, 0.0), mag_dv(nk, 0.0);
    std::vector<double> sc(T), dp(T);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t kvh = h / G;
          const float* qr = &q[((b * T + t) * NH + h) * HS];
          const float* dor = &dout[((b * T + t) * NH + h) * HS];
          const float* orow = &out[((b * T + t) * NH + h) * HS];
          const float* arow = &att[((b * NH + h) * T + t) * T];
          double mx = -INFINITY, D = 0.0, absD = 0.0, maxabs = 0.0;
          for (int64_t i = 0; i < HS; ++i) D += double(dor[i]) * orow[i], absD += std::fabs(double(dor[i]) * orow[i]);
          for (int64_t t2 = 0; t2 <= t; ++t2) {
            const float* kr = &k[((b * T + t2) * NKV + kvh) * HS];
            const float* vr = &v[((b * T + t2) * NKV + kvh) * HS];
            double dot = 0.0, dpv = 0.0;
            for (int64_t i = 0; i < HS; ++i) dot += double(qr[i]) * kr[i], dpv += double(dor[i]) * vr[i];
            sc[t2] = dot * scale;
            dp[t2] = dpv;
            mx = std::max(mx, sc[t2]);
            maxabs = std::max(maxabs, std::fabs(sc[t2]));
          }
          double sum = 0.0;
          for (int64_t t2 = 0; t2 <= t; ++t2) sum += std::exp(sc[t2] - mx);
          const int64_t row = (b * NH + h) * T + t;
          lse_ref[row] = mx + std::log(sum);
          lse_mag[row] = 1.0 + std::fabs(lse_ref[row]) + maxabs;
          for (int64_t t2 = 0; t2 <= t; ++t2) {
            const double p = arow[t2];
            const double ds = p * (std::fabs(dp[t2]) + std::fabs(D)), dsD = p * absD;
            const int64_t ko = ((b * T + t2) * NKV + kvh) * HS, qo = ((b * T + t) * NH + h) * HS;
            for (int64_t i = 0; i < HS; ++i) {
              mag_out[qo + i] += p * std::fabs(v[ko + i]);
              mag_dq[qo + i] += scale * ds * std::fabs(k[ko + i]);
              magD_dq[qo + i] += scale * dsD * std::fabs(k[ko + i]);
              mag_dk[ko + i] += scale * ds * std::fabs(q[qo + i]);
              magD_dk[ko + i] += scale * dsD * std::fabs(q[qo + i]);
              mag_dv[ko + i] += p * std::fabs(dout[qo + i]);
            }
          }
        }
    // + 2^-8 mag: the BF16 rounding of P (dS) before the tensor-core product (file comment).
    auto with_P = [&](std::vector<double> e, const std::vector<double>& mag) {
      for (size_t i = 0; i < e.size(); ++i) e[i] += kBf16 * mag[i];
      return e;
    };
    EXPECT_TRUE(close("out", unpadded(d_out), out, 1, with_P(reassoc(double(T + HS), mag_out), mag_out)));
    const std::vector<float> lse_ref_f(lse_ref.begin(), lse_ref.end());
    EXPECT_TRUE(close("lse", d_lse.download(), lse_ref_f, 0, reassoc(double(T + HS), lse_mag)));
    // K = 4 (G T + HS): the reductions, x4 for the recomputed probabilities (lse, scores).
    const double Kb = 4.0 * double(G * T + HS);
    auto with_D = [&](std::vector<double> e, const std::vector<double>& magD) {
      for (size_t i = 0; i < e.size(); ++i) e[i] += 2.0 * kBf16 * magD[i];
      return e;
    };
    EXPECT_TRUE(close("dq", unpadded(d_dq), dq, 1, with_P(with_D(reassoc(Kb, mag_dq), magD_dq), mag_dq)));
    EXPECT_TRUE(close("dk", unpadded(d_dk), dk, 1, with_P(with_D(reassoc(Kb, mag_dk), magD_dk), mag_dk)));
    EXPECT_TRUE(close("dv", unpadded(d_dv), dv, 1, with_P(reassoc(Kb, mag_dv), mag_dv)));
  }
}

TEST(CudaOps, AttentionCausalAndDeterministic) {
  REQUIRE_GPU();
  const int64_t B = 2, T = 200, NH = 8, NKV = 2, HS = 64;
  const int64_t nq = B * T * NH * HS, nk = B * T * NKV * HS;
  auto q = randn_bf16(nq, 41), k = randn_bf16(nk, 42), v = randn_bf16(nk, 43);
  const auto dout = randn_bf16(nq, 44);
  DeviceBuffer<uint16_t> d_q(to_bits(q)), d_k(to_bits(k)), d_v(to_bits(v)), d_dout(to_bits(dout)), d_out(nq),
      d_dq(nq), d_dk(nk), d_dv(nk);
  DeviceBuffer<float> d_lse(B * NH * T);
  DeviceBuffer<uint8_t> scratch(cu::attention_backward_scratch_bytes(B, T, NH));
  cu::attention_forward(d_out.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr);
  const auto out0 = d_out.download();
  std::vector<uint16_t> g[2][3];
  for (int run = 0; run < 2; ++run) {
    d_dq.poison(), d_dk.poison(), d_dv.poison();
    cu::attention_backward(d_dq.ptr, d_dk.ptr, d_dv.ptr, d_dout.ptr, d_out.ptr, d_q.ptr, d_k.ptr, d_v.ptr, d_lse.ptr, B,
                           T, NH, NKV, HS, scratch.ptr, nullptr);
    g[run][0] = d_dq.download(), g[run][1] = d_dk.download(), g[run][2] = d_dv.download();
  }
  for (int i = 0; i < 3; ++i) EXPECT_EQ(first_diff(g[0][i], g[1][i]), -1) << "gradient " << i << " differs between runs";

  // Causality: changing k and v at positions >= 150 leaves every output row t < 150 bit-identical.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 150; t < T; ++t)
      for (int64_t i = 0; i < NKV * HS; ++i) {
        k[(b * T + t) * NKV * HS + i] = bf16_round(k[(b * T + t) * NKV * HS + i] + 1.0f);
        v[(b * T + t) * NKV * HS + i] = bf16_round(-v[(b * T + t) * NKV * HS + i]);
      }
  d_k.upload(to_bits(k));
  d_v.upload(to_bits(v));
  cu::attention_forward(d_out.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr);
  const auto out1 = d_out.download();
  for (int64_t b = 0; b < B; ++b) {
    const size_t lo = size_t(b * T) * NH * HS, hi = lo + size_t(150) * NH * HS;
    EXPECT_TRUE(std::equal(out0.begin() + lo, out0.begin() + hi, out1.begin() + lo)) << "batch " << b;
  }
}

// ---- SwiGLU, residual, conversions -------------------------------------------------------------

TEST(CudaOps, SwigluMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 400;
  // offset 1: misaligned pointers and a ragged tail take the scalar path.
  for (const auto& [n, offset] : {std::pair<int64_t, int64_t>{65536, 0}, {1003, 1}, {5, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    const auto gate = randn_bf16(n, ++seed, 3.0f), up = randn_bf16(n, ++seed), dy = randn_bf16(n, ++seed);
    std::vector<float> out(n), dg(n, 0.0f), du(n, 0.0f);
    cpu::swiglu_forward(out.data(), gate.data(), up.data(), n);
    cpu::swiglu_backward(dg.data(), du.data(), dy.data(), gate.data(), up.data(), n);
    auto pad = [&](const std::vector<float>& x) {
      std::vector<uint16_t> b(n + offset, 0);
      const auto bits = to_bits(x);
      std::copy(bits.begin(), bits.end(), b.begin() + offset);
      return b;
    };
    DeviceBuffer<uint16_t> d_g(pad(gate)), d_u(pad(up)), d_dy(pad(dy)), d_out(n + offset), d_dg(n + offset),
        d_du(n + offset);
    cu::swiglu_forward(d_out.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n, nullptr);
    cu::swiglu_backward(d_dg.ptr + offset, d_du.ptr + offset, d_dy.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n,
                        nullptr);
    auto get = [&](const DeviceBuffer<uint16_t>& d) {
      auto x = download_bf16(d);
      return std::vector<float>(x.begin() + offset, x.end());
    };
    // Elementwise: K = 16 covers a few ulp of expf and the 1 / (1 + e) chain.
    std::vector<double> mag_g(n);
    for (int64_t i = 0; i < n; ++i) mag_g[i] = std::fabs(double(dy[i]) * up[i]) * (1.0 + std::fabs(gate[i]));
    EXPECT_TRUE(close("out", get(d_out), out, 1, reassoc(16, abs_of(out))));
    EXPECT_TRUE(close("dgate", get(d_dg), dg, 1, reassoc(16, mag_g)));
    EXPECT_TRUE(close("dup", get(d_du), du, 1, reassoc(16, abs_of(du))));
  }
}

// The producer amax of every op that takes one: max |output| exactly as stored (the BF16
// values downloaded), folded into a caller-zeroed float; an op given a non-zero float only
// raises it; each op's output bits are the same with and without it.
TEST(CudaOps, ProducerAmaxIsTheMaxOfTheStoredOutput) {
  REQUIRE_GPU();
  auto max_abs = [](const std::vector<float>& x) {
    float m = 0.0f;
    for (float v : x) m = std::max(m, std::fabs(v));
    return m;
  };
  DeviceBuffer<float> amax(std::vector<float>(2, 0.0f));
  auto read = [&](int i) { return amax.download()[i]; };
  auto zero = [&] { amax.upload(std::vector<float>(2, 0.0f)); };
  uint64_t seed = 900;
  // With an amax the kernels run one resident wave (as many blocks as the occupancy calculator
  // fits: 132 SMs x 5-8 blocks of 256 threads on an H100), looping over the rest: N = 40000 rows and n = 4e6 elements take several rounds; their outputs must
  // equal those of the one-item-per-thread launch without an amax.
  std::vector<RowShape> norm_shapes(std::begin(kNormShapes), std::end(kNormShapes));
  norm_shapes.push_back({40000, 256});
  for (const auto& s : norm_shapes) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " C=" + std::to_string(s.C));
    const int64_t N = s.N, C = s.C;
    const auto x = randn_bf16(N * C, ++seed, 2.0f), w = randn_bf16(C, ++seed), dy = randn_bf16(N * C, ++seed);
    const auto dx0 = randn_bf16(N * C, ++seed);
    DeviceBuffer<uint16_t> d_x(to_bits(x)), d_w(to_bits(w)), d_dy(to_bits(dy)), d_out(N * C), d_out2(N * C),
        d_dx(to_bits(dx0)), d_dx2(to_bits(dx0));
    DeviceBuffer<float> d_rstd(N), d_dw(C);
    DeviceBuffer<uint8_t> scratch(cu::rmsnorm_backward_scratch_bytes(N, C));
    zero();
    cu::rmsnorm_forward(d_out.ptr, d_rstd.ptr, d_x.ptr, d_w.ptr, N, C, 1e-5f, nullptr, amax.ptr);
    cu::rmsnorm_forward(d_out2.ptr, d_rstd.ptr, d_x.ptr, d_w.ptr, N, C, 1e-5f, nullptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_out))) << "rmsnorm_forward";
    EXPECT_TRUE(same_bits(d_out.download(), d_out2.download()));
    zero();
    cu::rmsnorm_backward(d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, N, C, scratch.ptr, nullptr, amax.ptr);
    cu::rmsnorm_backward(d_dx2.ptr, nullptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, N, C, scratch.ptr, nullptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_dx))) << "rmsnorm_backward (after the accumulation)";
    EXPECT_TRUE(same_bits(d_dx.download(), d_dx2.download()));
  }
  for (const auto& [n, offset] : {std::pair<int64_t, int64_t>{65536, 0}, {1003, 1}, {4000000, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    const auto gate = randn_bf16(n + offset, ++seed, 3.0f), up = randn_bf16(n + offset, ++seed);
    const auto dy = randn_bf16(n + offset, ++seed);
    DeviceBuffer<uint16_t> d_g(to_bits(gate)), d_u(to_bits(up)), d_dy(to_bits(dy)), d_out(n + offset),
        d_dg(n + offset), d_du(n + offset);
    auto tail = [&](const DeviceBuffer<uint16_t>& d) {
      auto v = download_bf16(d);
      return std::vector<float>(v.begin() + offset, v.end());
    };
    zero();
    cu::swiglu_forward(d_out.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n, nullptr, amax.ptr);
    EXPECT_EQ(read(0), max_abs(tail(d_out))) << "swiglu_forward";
    DeviceBuffer<uint16_t> d_out2(n + offset);
    cu::swiglu_forward(d_out2.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n, nullptr);
    EXPECT_TRUE(same_bits(d_out.download(), d_out2.download())) << "swiglu_forward with and without amax";
    zero();
    cu::swiglu_backward(d_dg.ptr + offset, d_du.ptr + offset, d_dy.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n,
                        nullptr, amax.ptr, amax.ptr + 1);
    EXPECT_EQ(read(0), max_abs(tail(d_dg))) << "swiglu_backward dgate";
    EXPECT_EQ(read(1), max_abs(tail(d_du))) << "swiglu_backward dup";
    DeviceBuffer<uint16_t> d_dg2(n + offset), d_du2(n + offset);
    cu::swiglu_backward(d_dg2.ptr + offset, d_du2.ptr + offset, d_dy.ptr + offset, d_g.ptr + offset, d_u.ptr + offset,
                        n, nullptr);
    EXPECT_TRUE(same_bits(d_dg.download(), d_dg2.download())) << "swiglu_backward dgate with and without amax";
    EXPECT_TRUE(same_bits(d_du.download(), d_du2.download())) << "swiglu_backward dup with and without amax";
    // A larger value already there stays (atomicMax): the caller zeroes.
    amax.upload({1e30f, 0.0f});
    cu::swiglu_forward(d_out.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n, nullptr, amax.ptr);
    EXPECT_EQ(read(0), 1e30f);
  }
  for (const auto& s : kRopeShapes) {
    const int64_t n = s.B * s.T * s.NH * s.HS;
    const auto dy = randn_bf16(n, ++seed), dx0 = randn_bf16(n, ++seed);
    DeviceBuffer<uint16_t> d_dy(to_bits(dy)), d_dx(to_bits(dx0));
    zero();
    cu::rope_backward(d_dx.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr, amax.ptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_dx))) << "rope_backward (after the accumulation)";
  }
  // Attention: out (forward) and dv (backward), head sizes 32/64/128, a ragged last tile, GQA.
  for (const auto& [T, NH, NKV, HS] : {std::array<int64_t, 4>{200, 8, 2, 64}, {70, 4, 4, 128}, {130, 6, 3, 32}}) {
    SCOPED_TRACE("attention T=" + std::to_string(T) + " HS=" + std::to_string(HS));
    const int64_t B = 2, nq = B * T * NH * HS, nk = B * T * NKV * HS;
    DeviceBuffer<uint16_t> d_q(to_bits(randn_bf16(nq, ++seed))), d_k(to_bits(randn_bf16(nk, ++seed))),
        d_v(to_bits(randn_bf16(nk, ++seed))), d_dout(to_bits(randn_bf16(nq, ++seed))), d_out(nq), d_out2(nq), d_dq(nq),
        d_dk(nk), d_dv(nk);
    DeviceBuffer<float> d_lse(B * NH * T);
    DeviceBuffer<uint8_t> scratch(cu::attention_backward_scratch_bytes(B, T, NH));
    zero();
    cu::attention_forward(d_out.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr, amax.ptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_out))) << "attention_forward out";
    cu::attention_forward(d_out2.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr);
    EXPECT_TRUE(same_bits(d_out.download(), d_out2.download()));
    zero();
    cu::attention_backward(d_dq.ptr, d_dk.ptr, d_dv.ptr, d_dout.ptr, d_out.ptr, d_q.ptr, d_k.ptr, d_v.ptr, d_lse.ptr, B,
                           T, NH, NKV, HS, scratch.ptr, nullptr, amax.ptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_dv))) << "attention_backward dv";
  }
}

TEST(CudaOps, ResidualAndConversionsBitExact) {
  REQUIRE_GPU();
  uint64_t seed = 500;
  for (const auto& [n, offset] : {std::pair<int64_t, int64_t>{4096, 0}, {1003, 1}, {3, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    const auto a = randn_bf16(n + offset, ++seed), b = randn_bf16(n + offset, ++seed);
    const auto f = randn_f32(n + offset, ++seed);
    DeviceBuffer<uint16_t> d_a(to_bits(a)), d_b(to_bits(b)), d_out(n + offset), d_f2b(n + offset);
    DeviceBuffer<float> d_f(f), d_b2f(n + offset);
    cu::residual_forward(d_out.ptr + offset, d_a.ptr + offset, d_b.ptr + offset, n, nullptr);
    cu::residual_forward(d_a.ptr + offset, d_a.ptr + offset, d_b.ptr + offset, n, nullptr);  // in place
    cu::convert_f32_to_bf16(d_f2b.ptr + offset, d_f.ptr + offset, n, nullptr);
    cu::convert_bf16_to_f32(d_b2f.ptr + offset, d_b.ptr + offset, n, nullptr);
    const auto out = d_out.download(), inplace = d_a.download(), f2b = d_f2b.download();
    const auto b2f = d_b2f.download();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = i + offset;
      std::vector<float> sum(1);
      cpu::residual_forward(sum.data(), &a[j], &b[j], 1);
      ASSERT_EQ(out[j], bf16_encode(sum[0])) << "residual at " << i;
      ASSERT_EQ(inplace[j], out[j]) << "in-place residual at " << i;
      ASSERT_EQ(f2b[j], bf16_encode(f[j])) << "f32 -> bf16 at " << i;
      ASSERT_EQ(std::memcmp(&b2f[j], &b[j], 4), 0) << "bf16 -> f32 at " << i;
    }
  }
}

// ---- token embedding -------------------------------------------------------------------------

struct EncShape {
  int64_t B, T, C, V, token_range;  // tokens drawn from [0, token_range): small ranges repeat a lot
};
// The last: two tokens over 4096 positions, runs of ~2048 rows (byte-level text's space character).
const EncShape kEncShapes[] = {
    {4, 64, 256, 1000, 1000}, {2, 300, 200, 50304, 50304}, {8, 256, 64, 50304, 7}, {4, 1024, 768, 257, 2}};

TEST(CudaOps, EncoderMatchesCpuBitExact) {
  REQUIRE_GPU();
  uint64_t seed = 600;
  for (const auto& s : kEncShapes) {
    SCOPED_TRACE("B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " C=" + std::to_string(s.C) +
                 " V=" + std::to_string(s.V) + " tokens<" + std::to_string(s.token_range));
    const int64_t N = s.B * s.T;
    std::mt19937_64 rng(++seed);
    std::vector<int32_t> tokens(N);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % s.token_range);
    const auto wte = randn_bf16(s.V * s.C, ++seed), dy = randn_bf16(N * s.C, ++seed);
    const auto dwte0 = randn_f32(s.V * s.C, ++seed);
    std::vector<float> out(N * s.C), dwte = dwte0;
    cpu::encoder_forward(out.data(), tokens.data(), wte.data(), s.B, s.T, s.C, s.V);
    cpu::encoder_backward(dwte.data(), dy.data(), tokens.data(), s.B, s.T, s.C, s.V);

    DeviceBuffer<int32_t> d_tok(tokens);
    DeviceBuffer<uint16_t> d_wte(to_bits(wte)), d_dy(to_bits(dy)), d_out(N * s.C);
    DeviceBuffer<float> d_dwte(dwte0);
    DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
    DeviceBuffer<uint8_t> scratch(cu::encoder_backward_scratch_bytes(s.B, s.T, s.C, s.V));
    cu::encoder_forward(d_out.ptr, d_tok.ptr, d_wte.ptr, s.B, s.T, s.C, s.V, status.ptr, nullptr);
    cu::encoder_backward(d_dwte.ptr, d_dy.ptr, d_tok.ptr, s.B, s.T, s.C, s.V, scratch.ptr, status.ptr, nullptr);
    EXPECT_EQ(first_diff(to_bits(out), d_out.download()), -1) << "forward";
    const auto g1 = d_dwte.download();
    EXPECT_EQ(first_diff(f32_bits(dwte), f32_bits(g1)), -1) << "backward (same additions in the same order)";
    // determinism: once more from the same start
    d_dwte.upload(dwte0);
    cu::encoder_backward(d_dwte.ptr, d_dy.ptr, d_tok.ptr, s.B, s.T, s.C, s.V, scratch.ptr, status.ptr, nullptr);
    EXPECT_EQ(first_diff(f32_bits(g1), f32_bits(d_dwte.download())), -1) << "second run";
    EXPECT_EQ(status.download()[0], 0u);
  }
}

TEST(CudaOps, EncoderFlagsBadTokens) {
  REQUIRE_GPU();
  const int64_t B = 1, T = 4, C = 16, V = 10;
  const std::vector<int32_t> tokens = {1, 10, -3, 2};
  DeviceBuffer<int32_t> d_tok(tokens);
  DeviceBuffer<uint16_t> d_wte(to_bits(randn_bf16(V * C, 1))), d_dy(to_bits(randn_bf16(B * T * C, 2))),
      d_out(B * T * C);
  DeviceBuffer<float> d_dwte(std::vector<float>(V * C, 0.0f));
  DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
  DeviceBuffer<uint8_t> scratch(cu::encoder_backward_scratch_bytes(B, T, C, V));
  cu::encoder_forward(d_out.ptr, d_tok.ptr, d_wte.ptr, B, T, C, V, status.ptr, nullptr);
  EXPECT_EQ(status.download()[0], cu::kStatusBadToken);
  const auto out = from_bits(d_out.download());
  for (int64_t c = 0; c < C; ++c) EXPECT_EQ(out[1 * C + c], 0.0f) << "bad token row is zero";
  status.upload({0});
  cu::encoder_backward(d_dwte.ptr, d_dy.ptr, d_tok.ptr, B, T, C, V, scratch.ptr, status.ptr, nullptr);
  EXPECT_EQ(status.download()[0], cu::kStatusBadToken);
}

// ---- cross-entropy -------------------------------------------------------------------------------

struct CeShape {
  int64_t N, V;
  bool in_place;
};
const CeShape kCeShapes[] = {{64, 50304, false}, {64, 50304, true}, {37, 257, false}};

TEST(CudaOps, CrossEntropyMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 700;
  for (const auto& s : kCeShapes) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " V=" + std::to_string(s.V) + (s.in_place ? " in place" : ""));
    const int64_t N = s.N, V = s.V;
    const float dloss_scale = 1.0f / static_cast<float>(N);
    const auto logits = randn_bf16(N * V, ++seed, 2.0f);
    std::mt19937_64 rng(++seed);
    std::vector<int32_t> targets(N);
    for (auto& t : targets) t = static_cast<int32_t>(rng() % V);
    std::vector<float> losses(N), dlogits(N * V, 0.0f);
    cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), N, V);
    cpu::crossentropy_softmax_backward(dlogits.data(), logits.data(), targets.data(), N, V, dloss_scale);

    DeviceBuffer<uint16_t> d_logits(to_bits(logits)), d_dlogits(N * V);
    DeviceBuffer<int32_t> d_t(targets);
    DeviceBuffer<float> d_losses(N);
    DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
    uint16_t* dl = s.in_place ? d_logits.ptr : d_dlogits.ptr;
    cu::crossentropy_forward_backward(d_losses.ptr, dl, d_logits.ptr, d_t.ptr, N, V, dloss_scale, status.ptr, nullptr);
    const auto gl = d_losses.download();
    const auto gd = from_bits(s.in_place ? d_logits.download() : d_dlogits.download());
    EXPECT_EQ(status.download()[0], 0u);

    // losses: log of a V-term sum, K = V against the CPU op (its sequential sum is the loose side).
    EXPECT_TRUE(close("losses vs cpu", gl, losses, 0, reassoc(V, std::vector<double>(N, 1.0))));
    // and against double: a GPU thread sums V / 512 terms in order (plus a rescale per 8), then
    // 5 shuffle levels and 16 warps: K = V / 512 + 64 terms of relative error in the sum,
    // magnitude 1 + |loss|.
    std::vector<double> mag_ref(N);
    std::vector<float> ref_d(N);
    for (int64_t n = 0; n < N; ++n) {
      double m = -INFINITY, sum = 0.0;
      for (int64_t i = 0; i < V; ++i) m = std::max(m, double(logits[n * V + i]));
      for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[n * V + i]) - m);
      ref_d[n] = static_cast<float>(std::log(sum) - (logits[n * V + targets[n]] - m));
      mag_ref[n] = 1.0 + std::fabs(ref_d[n]);
    }
    EXPECT_TRUE(close("losses vs double", gl, ref_d, 0, reassoc(double(V / 512 + 64), mag_ref)));
    // dlogits: each p carries the sum's relative error (K = V); the onehot entry is exact.
    std::vector<double> mag_d(N * V);
    for (int64_t i = 0; i < N * V; ++i) {
      const int64_t n = i / V;
      mag_d[i] = std::fabs(dlogits[i] + (i % V == targets[n] ? dloss_scale : 0.0f));  // p * dloss_scale
    }
    EXPECT_TRUE(close("dlogits", gd, dlogits, 1, reassoc(V, mag_d)));
  }
}

TEST(CudaOps, CrossEntropyDeterministicAndFlagsBadTargets) {
  REQUIRE_GPU();
  const int64_t N = 6, V = 50304;
  const auto logits = randn_bf16(N * V, 77, 2.0f);
  std::vector<int32_t> targets = {0, 5, 50303, 17, 9, 1};
  DeviceBuffer<uint16_t> d_logits(to_bits(logits)), d_dl(N * V);
  DeviceBuffer<int32_t> d_t(targets);
  DeviceBuffer<float> d_losses(N);
  DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
  cu::crossentropy_forward_backward(d_losses.ptr, d_dl.ptr, d_logits.ptr, d_t.ptr, N, V, 0.5f, status.ptr, nullptr);
  const auto l1 = d_losses.download();
  const auto g1 = d_dl.download();
  cu::crossentropy_forward_backward(d_losses.ptr, d_dl.ptr, d_logits.ptr, d_t.ptr, N, V, 0.5f, status.ptr, nullptr);
  EXPECT_EQ(first_diff(f32_bits(l1), f32_bits(d_losses.download())), -1);
  EXPECT_EQ(first_diff(g1, d_dl.download()), -1);
  EXPECT_EQ(status.download()[0], 0u) << "valid targets must not set the flag";

  targets[1] = static_cast<int32_t>(V);  // one past the end
  targets[4] = -1;
  d_t.upload(targets);
  cu::crossentropy_forward_backward(d_losses.ptr, d_dl.ptr, d_logits.ptr, d_t.ptr, N, V, 0.5f, status.ptr, nullptr);
  EXPECT_EQ(status.download()[0], cu::kStatusBadTarget);
  const auto l2 = d_losses.download();
  const auto g2 = from_bits(d_dl.download());
  EXPECT_TRUE(std::isnan(l2[1]) && std::isnan(l2[4]));
  EXPECT_EQ(l2[0], l1[0]) << "valid rows are unaffected";
  for (int64_t i = 0; i < V; ++i) ASSERT_EQ(g2[1 * V + i], 0.0f) << "bad row's gradient is zero";
}

// ---- optimizer ----------------------------------------------------------------------------------

TEST(CudaOps, AdamwBitExact) {
  REQUIRE_GPU();
  for (const int64_t n : {int64_t{10007}, int64_t{3}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto p = randn_f32(n, 801, 0.1f), m = std::vector<float>(n, 0.0f), v = std::vector<float>(n, 0.0f);
    DeviceBuffer<float> d_p(p), d_m(m), d_v(v), d_g(n);
    DeviceBuffer<uint16_t> d_pb(n);
    for (int64_t step = 1; step <= 12; ++step) {
      const auto g = randn_f32(n, 900 + step, step == 7 ? 1e-6f : 0.5f);
      d_g.upload(g);
      const float lr = 3e-4f * step, wd = step % 2 ? 0.1f : 0.0f;
      cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, lr, 0.9f, 0.95f, 1e-8f, wd, step);
      cu::adamw_update(d_p.ptr, d_pb.ptr, d_g.ptr, d_m.ptr, d_v.ptr, n, lr, 0.9f, 0.95f, 1e-8f, wd, step, nullptr);
    }
    EXPECT_EQ(first_diff(f32_bits(p), f32_bits(d_p.download())), -1) << "params";
    EXPECT_EQ(first_diff(f32_bits(m), f32_bits(d_m.download())), -1) << "m";
    EXPECT_EQ(first_diff(f32_bits(v), f32_bits(d_v.download())), -1) << "v";
    EXPECT_EQ(first_diff(to_bits(p), d_pb.download()), -1) << "params_bf16";
  }
}

// The GPU adds in a fixed tree (fast, deterministic), the CPU chunk-serially: equal to double
// rounding, and the GPU's bits identical run to run.
TEST(CudaOps, GlobalNormMatchesCpuAndIsDeterministic) {
  REQUIRE_GPU();
  for (const auto& [n, offset] : {std::pair<int64_t, int64_t>{1000003, 0}, {3 * 4096, 1}, {5, 0}, {0, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    const auto g = randn_f32(n + offset, 1000 + n, 1e-2f);
    DeviceBuffer<float> d_g(g);
    DeviceBuffer<double> d_out(1);
    DeviceBuffer<uint8_t> scratch(cu::global_norm_scratch_bytes(n));
    cu::global_norm_squared(d_out.ptr, d_g.ptr + offset, n, scratch.ptr, nullptr);
    const double gpu = std::sqrt(d_out.download()[0]);
    const double ref = cpu::global_norm(g.data() + offset, n);
    EXPECT_LE(std::abs(gpu - ref), 1e-13 * ref) << "gpu " << gpu << " cpu " << ref;
    cu::global_norm_squared(d_out.ptr, d_g.ptr + offset, n, scratch.ptr, nullptr);
    const double again = std::sqrt(d_out.download()[0]);
    EXPECT_EQ(std::memcmp(&gpu, &again, sizeof(double)), 0) << "not deterministic";
  }
}

}  // namespace

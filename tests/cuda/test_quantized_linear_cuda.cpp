// The CUDA quantized linear layers (include/nvfp4/quantized_linear_cuda.hpp) against the CPU
// recipe path, on the GPU machine:
//   - every operand of every GEMM holds exactly the bits the CPU format core gives for the same
//     tensor, recipe setting and SR key (so CPU and CUDA layers hold the same quantized values);
//   - each GEMM output equals the FP64 product of the held operands (up to FP32 summation and
//     the BF16 rounding of a BF16 output);
//   - outputs track QuantizedLinearCpu on the same inputs;
//   - a NaN reaching a quantizer is a NonFiniteError naming the layer, GEMM and operand;
//   - training under every preset on the GPU is stable, and nvfp4 tracks the CPU recipe run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"
#include "nvfp4/quantized_linear.hpp"
#include "nvfp4/cuda_gemm_nvfp4.hpp"
#include "nvfp4/quantized_linear_cuda.hpp"
#include "support/cuda_test.hpp"
#include "support/test_support.hpp"
#include "support/tiny_run.hpp"

namespace {

using nvfp4::recipe::Gemm;
using nvfp4::recipe::Operand;
using nvfp4::test::DeviceBuffer;

constexpr int kLayers = 4;
constexpr int kLayer = 1;  // quantized under every preset (nvfp4 keeps blocks 0, 2, 3 in BF16)
// Shapes: multiples of 32 (MXFP4 blocks run along every dimension in some GEMM), not of 128 (FP8
// 1x128 / 128x128 blocks are partial at the edges).
constexpr int64_t N = 192, C = 160, OC = 96;

std::vector<float> bf16_values(std::vector<float> x) {
  for (float& v : x) v = nvfp4::fmt::bf16_round(v);
  return x;
}
std::vector<uint16_t> bf16_bits(const std::vector<float>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    uint32_t b;
    std::memcpy(&b, &x[i], 4);
    out[i] = static_cast<uint16_t>(b >> 16);  // x is BF16-representable
  }
  return out;
}
std::vector<float> from_bf16(const std::vector<uint16_t>& h) {
  std::vector<float> out(h.size());
  for (size_t i = 0; i < h.size(); ++i) {
    const uint32_t b = uint32_t(h[i]) << 16;
    std::memcpy(&out[i], &b, 4);
  }
  return out;
}

// What the CPU format core holds for operand (g, o): x (rows, cols), or its transpose.
std::vector<float> cpu_held(const nvfp4::recipe::Recipe& r, Gemm g, Operand o, nvfp4::model::LinearId id,
                            uint64_t seed, uint32_t step, const std::vector<float>& x, int64_t rows, int64_t cols,
                            bool column, nvfp4::DType dtype) {
  const auto q = nvfp4::recipe::operand_quant(r, kLayers, id.layer, nvfp4::model::linear_name(id.kind), g, o, 0.0);
  if (!q) {
    std::vector<float> out(x.size());
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const float v = nvfp4::fmt::bf16_round(x[i * cols + j]);
        if (column) out[j * rows + i] = v;
        else out[i * cols + j] = v;
      }
    return out;
  }
  // The SR key, written out: role = 3 x the linear's kind + the tensor (X 0, W 1, dY 2).
  const uint32_t role = 3u * static_cast<uint32_t>(id.kind) + static_cast<uint32_t>(nvfp4::recipe::operand_tensor(g, o));
  const auto opts = nvfp4::recipe::quantize_options(*q, column, nvfp4::SrKey{seed, step, uint32_t(id.layer), role});
  const auto t = nvfp4::quantize(x, rows, cols, opts, dtype);
  return nvfp4::dequantize(column ? *t.col : *t.row, t.options, true);
}

// out (M, Nn) = a (M, K) · b (Nn, K)ᵀ in FP64, and sum |a||b| per element (the error scale).
void product(const std::vector<float>& a, const std::vector<float>& b, int64_t M, int64_t Nn, int64_t K,
             std::vector<double>& out, std::vector<double>& mag) {
  out.assign(size_t(M * Nn), 0.0);
  mag.assign(size_t(M * Nn), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < Nn; ++j) {
      double s = 0, m = 0;
      for (int64_t k = 0; k < K; ++k) {
        s += double(a[i * K + k]) * b[j * K + k];
        m += std::fabs(double(a[i * K + k]) * b[j * K + k]);
      }
      out[i * Nn + j] = s;
      mag[i * Nn + j] = m;
    }
}

// |got - want| <= rel |want| + abs_rel * mag, element by element; returns the number of misses.
int misses(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& mag, double rel,
           double abs_rel, const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = rel * std::fabs(want[i]) + abs_rel * mag[i] + 1e-30;
    if (!(std::fabs(got[i] - want[i]) <= tol)) {
      if (bad < 3) ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " vs " << want[i] << " (tol " << tol << ")";
      ++bad;
    }
  }
  return bad;
}

struct Case {
  const char* preset;
  nvfp4::recipe::Switches sw;
  const char* label;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.label; }

std::vector<Case> cases() {
  nvfp4::recipe::Switches none, no_rht, no_sr, no_2d;
  no_rht.no_rht = true;
  no_sr.no_sr = true;
  no_2d.no_2d = true;
  return {{"bf16", none, "bf16"},           {"fp8", none, "fp8"},
          {"fp8-block", none, "fp8-block"}, {"nvfp4", none, "nvfp4"},
          {"nvfp4", no_rht, "nvfp4:no-rht"}, {"nvfp4", no_sr, "nvfp4:no-sr"},
          {"nvfp4", no_2d, "nvfp4:no-2d"},   {"mxfp4", none, "mxfp4"},
          {"mxfp4-ocp", none, "mxfp4-ocp"}};
}

class QuantizedLinearCudaTest : public ::testing::TestWithParam<Case> {};

using Pass = nvfp4::model::QuantizedLinearCuda::Pass;

// One layer's forward and backward under the case's recipe, checked three ways. training: the
// passes are begun as the model begins them (a training forward pass keeps the column-wise
// copies of X and W for the backward pass), else as separate passes (every operand quantized
// where its GEMM reads it). The bits must not depend on it.
void check_layer(const Case& cs, bool training) {
  const auto r = nvfp4::recipe::apply(nvfp4::recipe::preset(cs.preset, kLayers), cs.sw);
  const uint64_t seed = 77;
  const uint32_t step = 5;
  const nvfp4::model::LinearId id{kLayer, nvfp4::model::LinearKind::gate};

  // Inputs: activations and gradients are BF16 on the GPU; the weight is an FP32 master.
  const auto x = bf16_values(nvfp4::test::randn(size_t(N * C), 1));
  const auto w = nvfp4::test::randn(size_t(OC * C), 2, 0.05f);
  auto dy = bf16_values(nvfp4::test::randn(size_t(N * OC), 3, 1e-3f));
  dy[7] *= 40.0f;  // an outlier: block and tensor scales differ across the tensor
  const auto dw0 = nvfp4::test::randn(size_t(OC * C), 4, 1e-3f);

  DeviceBuffer<uint16_t> d_x(bf16_bits(x)), d_dy(bf16_bits(dy)), d_wb(bf16_bits(bf16_values(w)));
  DeviceBuffer<float> d_w(w), d_dw(dw0);
  DeviceBuffer<uint16_t> d_out(size_t(N * OC)), d_dx(size_t(N * C));
  nvfp4::cuda::Blas blas;
  nvfp4::model::QuantizedLinearCuda lin(r, kLayers, seed);
  lin.set_step(step, 0.0);

  lin.begin_pass(training ? Pass::training_forward : Pass::forward);
  lin.forward(blas, id, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, nullptr);
  const auto fx = lin.held(Gemm::fprop, Operand::a), fw = lin.held(Gemm::fprop, Operand::b);
  const auto out = from_bf16(d_out.download());
  lin.begin_pass(Pass::backward);
  lin.backward(blas, id, d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, false, nullptr);
  EXPECT_NO_THROW(lin.check_nonfinite(nullptr));
  const auto ga = lin.held(Gemm::dgrad, Operand::a), gb = lin.held(Gemm::dgrad, Operand::b);
  const auto wa = lin.held(Gemm::wgrad, Operand::a), wb = lin.held(Gemm::wgrad, Operand::b);
  const auto dx = from_bf16(d_dx.download());
  const auto dw = d_dw.download();

  // 1. The held bits are the CPU format core's (BF16 activations, FP32 weights).
  using nvfp4::DType;
  const struct {
    const std::vector<float>& got;
    std::vector<float> want;
    const char* name;
  } held[] = {
      {fx, cpu_held(r, Gemm::fprop, Operand::a, id, seed, step, x, N, C, false, DType::BF16), "fprop X"},
      {fw, cpu_held(r, Gemm::fprop, Operand::b, id, seed, step, w, OC, C, false, DType::F32), "fprop W"},
      {ga, cpu_held(r, Gemm::dgrad, Operand::a, id, seed, step, dy, N, OC, false, DType::BF16), "dgrad dY"},
      {gb, cpu_held(r, Gemm::dgrad, Operand::b, id, seed, step, w, OC, C, true, DType::F32), "dgrad W^T"},
      {wa, cpu_held(r, Gemm::wgrad, Operand::a, id, seed, step, dy, N, OC, true, DType::BF16), "wgrad dY^T"},
      {wb, cpu_held(r, Gemm::wgrad, Operand::b, id, seed, step, x, N, C, true, DType::BF16), "wgrad X^T"},
  };
  for (const auto& h : held) {
    ASSERT_EQ(h.got.size(), h.want.size()) << h.name;
    size_t diff = 0, first = 0;
    for (size_t i = 0; i < h.got.size(); ++i) {
      if (std::memcmp(&h.got[i], &h.want[i], 4) != 0 && diff++ == 0) first = i;
    }
    EXPECT_EQ(diff, 0u) << cs.label << " " << h.name << ": " << diff << " values differ from the CPU's, first at " << first
                        << " (" << h.got[first] << " vs " << h.want[first] << ")";
  }

  // 2. Each GEMM computes the product of what it held: FP32 accumulation (error <= ~1e-6 of
  // sum |a b| here) for BF16 tensor-core GEMMs; Hopper's FP8 tensor cores accumulate with fewer
  // bits inside each 128-long K chunk (measured here up to 4.6e-5 of sum |a b|; DeepSeek-V3
  // reports ~14 bits), so FP8 GEMMs get 5e-4.
  const bool fp8 = r.fprop.a.quantized && (r.fprop.a.format == nvfp4::Format::fp8_e4m3);
  const double acc = fp8 ? 5e-4 : 1e-5;
  std::vector<double> want, mag;
  product(fx, fw, N, OC, C, want, mag);
  EXPECT_EQ(misses(out, want, mag, 1.0 / 256, acc, std::string(cs.label) + " fprop"), 0);
  product(ga, gb, N, C, OC, want, mag);
  EXPECT_EQ(misses(dx, want, mag, 1.0 / 256, acc, std::string(cs.label) + " dgrad"), 0);
  product(wa, wb, OC, C, N, want, mag);
  for (size_t i = 0; i < want.size(); ++i) want[i] += dw0[i];
  EXPECT_EQ(misses(dw, want, mag, 1e-6, acc, std::string(cs.label) + " wgrad"), 0);

  // 3. And tracks the CPU recipe layer on the same values. The CPU layer reads activations as
  // FP32, so its RHT copies are not rounded to BF16: their amax, hence every scale, differs
  // slightly, and dW is a different (equally valid) quantization: measured 4.6% apart in
  // relative L2. (Same-input bit equality, including the SR keys, is part 1.)
  nvfp4::model::QuantizedLinearCpu cpu(r, kLayers, seed);
  cpu.set_step(step, 0.0);
  std::vector<float> c_out(size_t(N * OC)), c_dx(size_t(N * C), 0.0f), c_dw = dw0;
  cpu.forward(id, c_out.data(), x.data(), w.data(), N, C, OC);
  cpu.backward(id, c_dx.data(), c_dw.data(), dy.data(), x.data(), w.data(), N, C, OC);
  auto rel_l2 = [](const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>* base) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double o = base ? (*base)[i] : 0.0;
      num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      den += (double(b[i]) - o) * (double(b[i]) - o);
    }
    return std::sqrt(num / den);
  };
  const double tol = r.wgrad.a.rht ? 0.1 : fp8 ? 1e-2 : 4e-3;
  EXPECT_LT(rel_l2(out, c_out, nullptr), 4e-3) << cs.label;
  EXPECT_LT(rel_l2(dx, c_dx, nullptr), 4e-3) << cs.label;
  EXPECT_LT(rel_l2(dw, c_dw, &dw0), tol) << cs.label;
}

TEST_P(QuantizedLinearCudaTest, HoldsTheCpuBitsAndMultipliesThem) {
  REQUIRE_GPU();
  check_layer(GetParam(), false);
}

TEST_P(QuantizedLinearCudaTest, HoldsTheSameBitsWhenTheForwardPassKeepsColumnCopies) {
  REQUIRE_GPU();
  check_layer(GetParam(), true);
}

TEST(QuantizedLinearCuda, TheBackwardPassTakesTheColumnCopiesATrainingForwardPassKept) {
  REQUIRE_GPU();
  // Proof that the kept copies are what wgrad and dgrad read: X and W are rewritten between the
  // passes (which a model never does), and the backward pass still holds the old ones exactly
  // where the recipe pairs the copies (X^T under fp8 and nvfp4 — NVFP4's RHT is made in the
  // same kernel — but not under mxfp4, whose 32-point RHT is a pass of its own; W^T under all
  // three). After a plain forward pass nothing is kept.
  const uint64_t seed = 5;
  const nvfp4::model::LinearId id{kLayer, nvfp4::model::LinearKind::down};
  const auto x0 = bf16_values(nvfp4::test::randn(size_t(N * C), 11));
  const auto x1 = bf16_values(nvfp4::test::randn(size_t(N * C), 12));
  const auto w0 = nvfp4::test::randn(size_t(OC * C), 13, 0.05f);
  const auto w1 = nvfp4::test::randn(size_t(OC * C), 14, 0.05f);
  const auto dy = bf16_values(nvfp4::test::randn(size_t(N * OC), 15, 1e-3f));
  for (const char* preset : {"fp8", "nvfp4", "mxfp4"}) {
    for (bool training : {true, false}) {
      const auto r = nvfp4::recipe::preset(preset, kLayers);
      DeviceBuffer<uint16_t> d_x(bf16_bits(x0)), d_dy(bf16_bits(dy)), d_wb(bf16_bits(bf16_values(w0)));
      DeviceBuffer<float> d_w(w0), d_dw(std::vector<float>(size_t(OC * C), 0.0f));
      DeviceBuffer<uint16_t> d_out(size_t(N * OC)), d_dx(size_t(N * C));
      nvfp4::cuda::Blas blas;
      nvfp4::model::QuantizedLinearCuda lin(r, kLayers, seed);
      lin.set_step(2, 0.0);
      lin.begin_pass(training ? Pass::training_forward : Pass::forward);
      lin.forward(blas, id, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, nullptr);
      d_x.upload(bf16_bits(x1));
      d_w.upload(w1);
      d_wb.upload(bf16_bits(bf16_values(w1)));
      lin.begin_pass(Pass::backward);
      lin.backward(blas, id, d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, false, nullptr);
      lin.check_nonfinite(nullptr);
      const bool x_kept = training && std::string(preset) != "mxfp4", w_kept = training;
      using nvfp4::DType;
      EXPECT_EQ(lin.held(Gemm::wgrad, Operand::b),
                cpu_held(r, Gemm::wgrad, Operand::b, id, seed, 2, x_kept ? x0 : x1, N, C, true, DType::BF16))
          << preset << (training ? " training" : " plain") << ": wgrad X^T";
      EXPECT_EQ(lin.held(Gemm::dgrad, Operand::b),
                cpu_held(r, Gemm::dgrad, Operand::b, id, seed, 2, w_kept ? w0 : w1, OC, C, true, DType::F32))
          << preset << (training ? " training" : " plain") << ": dgrad W^T";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, QuantizedLinearCudaTest, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string n = info.param.label;
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

// set_fused_nvfp4: under the nvfp4 recipe the GEMMs whose two operands are NVFP4 (K % 64 == 0)
// run on cuda::nvfp4_gemm_nt — the same decoded values, FP32 sums in another order — so forward
// output and dX (BF16) agree with decode-then-cuBLAS within one BF16 step of the result's largest
// |value| (2^-7 of it), dW (FP32, K = 192) within 2^-12 of it; the quantized copies held are the
// same bits. nvfp4_calls() shows the fused kernel ran for all three GEMMs (the bits cannot: sums of
// NVFP4 products are often exact in FP32, in any order). Then a layer the recipe keeps in BF16
// after an NVFP4 one: its GEMMs take the BF16 operands (no NVFP4 slot left over from the last layer).
// The warp-specialized fused kernel gives the fused results' bits.
TEST(QuantizedLinearCuda, FusedNvfp4GemmsMatchDecodeThenCublas) {
  REQUIRE_GPU();
  constexpr int64_t n = 192, c = 256, oc = 128;  // every GEMM's K a multiple of 64
  const nvfp4::model::LinearId id{kLayer, nvfp4::model::LinearKind::up};
  const auto x = bf16_values(nvfp4::test::randn(size_t(n * c), 21));
  const auto w = nvfp4::test::randn(size_t(oc * c), 22, 0.05f);
  const auto dy = bf16_values(nvfp4::test::randn(size_t(n * oc), 23, 1e-3f));
  const auto r = nvfp4::recipe::preset("nvfp4", kLayers);
  struct Result {
    std::vector<float> out, dx, dw, held_x, bf16_out;
  };
  const auto run = [&](bool fused, bool warp_specialized = false) {
    DeviceBuffer<uint16_t> d_x(bf16_bits(x)), d_dy(bf16_bits(dy)), d_wb(bf16_bits(bf16_values(w)));
    DeviceBuffer<float> d_w(w), d_dw(std::vector<float>(size_t(oc * c), 0.0f));
    DeviceBuffer<uint16_t> d_out(size_t(n * oc)), d_dx(size_t(n * c));
    nvfp4::cuda::Blas blas;
    nvfp4::model::QuantizedLinearCuda lin(r, kLayers, 9);
    lin.set_fused_nvfp4(fused, warp_specialized);
    lin.set_step(3, 0.0);
    lin.begin_pass(Pass::training_forward);
    lin.forward(blas, id, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, n, c, oc, nullptr);
    Result res;
    res.held_x = lin.held(Gemm::fprop, Operand::a);
    lin.begin_pass(Pass::backward);
    lin.backward(blas, id, d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, n, c, oc, false, nullptr);
    lin.check_nonfinite(nullptr);
    res.out = from_bf16(d_out.download());
    res.dx = from_bf16(d_dx.download());
    res.dw = d_dw.download();
    // Block 2 runs in BF16 under the nvfp4 recipe: after block kLayer's NVFP4 GEMMs.
    lin.begin_pass(Pass::training_forward);
    lin.forward(blas, {2, nvfp4::model::LinearKind::up}, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, n, c, oc, nullptr);
    res.bf16_out = from_bf16(d_out.download());
    return res;
  };
  const int64_t before = nvfp4::cuda::nvfp4_calls().gemm_nt;
  const Result ref = run(false);
  EXPECT_EQ(nvfp4::cuda::nvfp4_calls().gemm_nt, before) << "decode-then-cuBLAS ran the fused GEMM";
  const Result got = run(true);
  // fprop, dgrad and wgrad: all three GEMMs have two NVFP4 operands and K % 64 == 0.
  EXPECT_EQ(nvfp4::cuda::nvfp4_calls().gemm_nt, before + 3) << "the fused path did not run for every GEMM";
  EXPECT_EQ(got.held_x, ref.held_x);
  const auto close = [](const std::vector<float>& a, const std::vector<float>& b, const char* what, double rel) {
    ASSERT_EQ(a.size(), b.size());
    double top = 0, worst = 0;
    for (size_t i = 0; i < a.size(); ++i) top = std::max(top, std::fabs(double(b[i])));
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
    std::printf("    %s: max |fused - decoded| = %.3g of %.3g\n", what, worst, top);
    EXPECT_GT(top, 0.0) << what;
    EXPECT_LE(worst, top * rel) << what;
  };
  close(got.out, ref.out, "forward out (bf16)", 0x1p-7);
  close(got.dx, ref.dx, "dX (bf16)", 0x1p-7);
  close(got.dw, ref.dw, "dW (fp32)", 0x1p-12);
  EXPECT_EQ(got.bf16_out, ref.bf16_out) << "a BF16 layer after a fused NVFP4 one";
  // The warp-specialized kernel: the same three GEMMs, the same bits.
  const Result ws = run(true, true);
  EXPECT_EQ(nvfp4::cuda::nvfp4_calls().gemm_nt, before + 6) << "the warp-specialized kernel did not run for every GEMM";
  EXPECT_EQ(ws.out, got.out);
  EXPECT_EQ(ws.dx, got.dx);
  EXPECT_EQ(ws.dw, got.dw);
}

TEST(QuantizedLinearCuda, NanReachingAQuantizerNamesTheLayerGemmAndOperand) {
  REQUIRE_GPU();
  const auto r = nvfp4::recipe::preset("nvfp4", kLayers);
  auto x = bf16_values(nvfp4::test::randn(size_t(N * C), 1));
  x[100] = std::nanf("");
  const auto w = nvfp4::test::randn(size_t(OC * C), 2, 0.05f);
  DeviceBuffer<uint16_t> d_x(bf16_bits(x)), d_wb(bf16_bits(bf16_values(w))), d_out(size_t(N * OC));
  DeviceBuffer<float> d_w(w);
  nvfp4::cuda::Blas blas;
  nvfp4::model::QuantizedLinearCuda lin(r, kLayers, 1);
  lin.forward(blas, {kLayer, nvfp4::model::LinearKind::up}, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, nullptr);
  try {
    lin.check_nonfinite(nullptr);
    FAIL() << "no NonFiniteError";
  } catch (const nvfp4::NonFiniteError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1 mlp.up_proj fprop X"), std::string::npos) << e.what();
    EXPECT_EQ(e.count(), 1);
  }
  // The counters were reset: a clean pass checks clean.
  x[100] = 0.5f;
  d_x.upload(bf16_bits(x));
  lin.begin_pass();  // the input was rewritten
  lin.forward(blas, {kLayer, nvfp4::model::LinearKind::up}, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, nullptr);
  EXPECT_NO_THROW(lin.check_nonfinite(nullptr));
  const auto held = lin.held(Gemm::fprop, Operand::a);
  EXPECT_NEAR(held[100], 0.5f, 0.25f) << "the second pass must quantize the rewritten input";
}

TEST(QuantizedLinearCuda, LayersReadingOneInputShareItsQuantizationWithinAPass) {
  REQUIRE_GPU();
  // q, k and v read the same input: the k and v calls reuse q's quantized X (round-to-nearest,
  // so the key does not matter) and still hold exactly the CPU's bits; after begin_pass() a
  // rewritten input is quantized afresh.
  const auto r = nvfp4::recipe::preset("nvfp4", kLayers);
  auto x = bf16_values(nvfp4::test::randn(size_t(N * C), 5));
  const auto w = nvfp4::test::randn(size_t(OC * C), 6, 0.05f);
  DeviceBuffer<uint16_t> d_x(bf16_bits(x)), d_wb(bf16_bits(bf16_values(w))), d_out(size_t(N * OC));
  DeviceBuffer<float> d_w(w);
  nvfp4::cuda::Blas blas;
  nvfp4::model::QuantizedLinearCuda lin(r, kLayers, 9);
  lin.set_step(3, 0.0);
  using nvfp4::model::LinearKind;
  for (LinearKind k : {LinearKind::q, LinearKind::k, LinearKind::v}) {
    lin.forward(blas, {kLayer, k}, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, nullptr);
    const auto want = cpu_held(r, Gemm::fprop, Operand::a, {kLayer, k}, 9, 3, x, N, C, false, nvfp4::DType::BF16);
    EXPECT_EQ(lin.held(Gemm::fprop, Operand::a), want) << nvfp4::model::linear_name(k);
  }
  for (float& v : x) v = -v;
  d_x.upload(bf16_bits(x));
  lin.begin_pass();
  lin.forward(blas, {kLayer, LinearKind::q}, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, nullptr);
  EXPECT_EQ(lin.held(Gemm::fprop, Operand::a),
            cpu_held(r, Gemm::fprop, Operand::a, {kLayer, LinearKind::q}, 9, 3, x, N, C, false, nvfp4::DType::BF16));
  lin.check_nonfinite(nullptr);
}

TEST(QuantizedLinearCuda, AProducerAmaxStandsInForTheQuantizersOwnPass) {
  REQUIRE_GPU();
  // producer_amax is offered where the plan has an operand's scale come from max |x| of the
  // whole tensor as its producer stores it (FP8 current scaling), and nowhere else. Given the tensor's true amax, every copy holds the CPU's
  // bits; given a wrong one, the bits follow it — so it is what the quantizer used.
  const nvfp4::model::LinearId id{kLayer, nvfp4::model::LinearKind::o};
  const auto x = bf16_values(nvfp4::test::randn(size_t(N * C), 21));
  const auto w = nvfp4::test::randn(size_t(OC * C), 22, 0.05f);
  const auto dy = bf16_values(nvfp4::test::randn(size_t(N * OC), 23, 1e-3f));
  DeviceBuffer<uint16_t> d_x(bf16_bits(x)), d_dy(bf16_bits(dy)), d_wb(bf16_bits(bf16_values(w)));
  DeviceBuffer<float> d_w(w), d_dw(std::vector<float>(size_t(OC * C), 0.0f));
  DeviceBuffer<uint16_t> d_out(size_t(N * OC)), d_dx(size_t(N * C));
  nvfp4::cuda::Blas blas;
  for (const char* preset : {"bf16", "fp8-block", "nvfp4", "mxfp4"}) {
    nvfp4::model::QuantizedLinearCuda lin(nvfp4::recipe::preset(preset, kLayers), kLayers, 1);
    lin.begin_pass(Pass::training_forward);
    EXPECT_EQ(lin.producer_amax(id, nvfp4::recipe::Tensor::x, nullptr), nullptr) << preset;
    EXPECT_EQ(lin.producer_amax(id, nvfp4::recipe::Tensor::dy, nullptr), nullptr) << preset;
  }
  auto max_abs = [](const std::vector<float>& v) {
    float m = 0.0f;
    for (float e : v) m = std::max(m, std::fabs(e));
    return m;
  };
  auto put = [](float* dev, float v) { ASSERT_EQ(cudaMemcpy(dev, &v, 4, cudaMemcpyHostToDevice), cudaSuccess); };
  const auto r = nvfp4::recipe::preset("fp8", kLayers);
  using nvfp4::DType;
  for (const float factor : {1.0f, 3.0f}) {
    nvfp4::model::QuantizedLinearCuda lin(r, kLayers, 1);
    lin.begin_pass(Pass::training_forward);
    float* ax = lin.producer_amax(id, nvfp4::recipe::Tensor::x, nullptr);
    ASSERT_NE(ax, nullptr);
    put(ax, factor * max_abs(x));
    lin.forward(blas, id, d_out.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, nullptr);
    const auto fx = lin.held(Gemm::fprop, Operand::a);
    lin.begin_pass(Pass::backward);
    float* ady = lin.producer_amax(id, nvfp4::recipe::Tensor::dy, nullptr);
    ASSERT_NE(ady, nullptr);
    put(ady, factor * max_abs(dy));
    lin.backward(blas, id, d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_wb.ptr, N, C, OC, false, nullptr);
    lin.check_nonfinite(nullptr);
    const struct {
      std::vector<float> got, want;
      const char* name;
    } held[] = {
        {fx, cpu_held(r, Gemm::fprop, Operand::a, id, 1, 0, x, N, C, false, DType::BF16), "fprop X"},
        {lin.held(Gemm::wgrad, Operand::b), cpu_held(r, Gemm::wgrad, Operand::b, id, 1, 0, x, N, C, true, DType::BF16),
         "wgrad X^T (kept)"},
        {lin.held(Gemm::dgrad, Operand::a), cpu_held(r, Gemm::dgrad, Operand::a, id, 1, 0, dy, N, OC, false, DType::BF16),
         "dgrad dY"},
        {lin.held(Gemm::wgrad, Operand::a), cpu_held(r, Gemm::wgrad, Operand::a, id, 1, 0, dy, N, OC, true, DType::BF16),
         "wgrad dY^T"},
    };
    for (const auto& h : held) {
      if (factor == 1.0f) EXPECT_EQ(h.got, h.want) << h.name << ": the true amax gives the CPU's bits";
      else EXPECT_NE(h.got, h.want) << h.name << ": a wrong amax must change the bits";
    }
  }
}

TEST(QuantizedLinearCuda, PreparedWeightsAreTheOnesTheGemmsRead) {
  REQUIRE_GPU();
  // prepare_weights quantizes the listed weights for the pass (fprop W, and dgrad's W^T in a
  // training forward pass) in multi-tensor launches. They hold the CPU's bits, and they are what
  // forward/backward read: the weights are rewritten after prepare_weights (which a model never
  // does) and the GEMMs still hold the prepared ones. A plain forward pass prepares W only (W^T
  // is quantized in the backward, from the weight as it is then). Only FP8 per-tensor weights
  // are prepared: under nvfp4 the rewritten weight is what forward() quantizes.
  using nvfp4::DType;
  using nvfp4::model::LinearKind;
  const uint64_t seed = 3;
  const std::vector<LinearKind> kinds = {LinearKind::gate, LinearKind::up, LinearKind::down};
  std::vector<std::vector<float>> w0, w1;
  for (size_t i = 0; i < kinds.size(); ++i) {
    w0.push_back(nvfp4::test::randn(size_t(OC * C), 30 + i, 0.05f));
    w1.push_back(nvfp4::test::randn(size_t(OC * C), 40 + i, 0.05f));
  }
  const auto x = bf16_values(nvfp4::test::randn(size_t(N * C), 50));
  const auto dy = bf16_values(nvfp4::test::randn(size_t(N * OC), 51, 1e-3f));
  for (const char* preset : {"fp8", "nvfp4"}) {
    for (bool training : {true, false}) {
      const auto r = nvfp4::recipe::preset(preset, kLayers);
      const bool prepared = std::string(preset) == "fp8";
      std::vector<float> all0, all1;  // the three weights back to back (as in a model's parameters)
      for (size_t i = 0; i < kinds.size(); ++i) {
        all0.insert(all0.end(), w0[i].begin(), w0[i].end());
        all1.insert(all1.end(), w1[i].begin(), w1[i].end());
      }
      DeviceBuffer<float> d_w(all0), d_dw(std::vector<float>(size_t(OC * C), 0.0f));
      DeviceBuffer<uint16_t> d_wb(bf16_bits(bf16_values(all0))), d_x(bf16_bits(x)), d_dy(bf16_bits(dy));
      DeviceBuffer<uint16_t> d_out(size_t(N * OC)), d_dx(size_t(N * C));
      nvfp4::cuda::Blas blas;
      nvfp4::model::QuantizedLinearCuda lin(r, kLayers, seed);
      lin.begin_pass(training ? Pass::training_forward : Pass::forward);
      std::vector<nvfp4::model::QuantizedLinearCuda::WeightRef> refs;
      for (size_t i = 0; i < kinds.size(); ++i) refs.push_back({{kLayer, kinds[i]}, d_w.ptr + i * OC * C, OC, C});
      lin.prepare_weights(refs, nullptr);
      d_w.upload(all1);
      d_wb.upload(bf16_bits(bf16_values(all1)));
      for (size_t i = 0; i < kinds.size(); ++i) {
        const nvfp4::model::LinearId id{kLayer, kinds[i]};
        const std::string what = std::string(preset) + (training ? " training " : " plain ") +
                                 nvfp4::model::linear_name(kinds[i]);
        lin.forward(blas, id, d_out.ptr, d_x.ptr, d_w.ptr + i * OC * C, d_wb.ptr + i * OC * C, N, C, OC, nullptr);
        EXPECT_EQ(lin.held(Gemm::fprop, Operand::b),
                  cpu_held(r, Gemm::fprop, Operand::b, id, seed, 0, prepared ? w0[i] : w1[i], OC, C, false, DType::F32))
            << what << ": fprop W";
      }
      lin.begin_pass(Pass::backward);
      for (size_t i = 0; i < kinds.size(); ++i) {
        const nvfp4::model::LinearId id{kLayer, kinds[i]};
        lin.backward(blas, id, d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr + i * OC * C, d_wb.ptr + i * OC * C, N, C,
                     OC, false, nullptr);
        // nvfp4's W^T is kept by forward() from the weight it read then (the rewritten one).
        const bool old_wt = prepared && training;
        EXPECT_EQ(lin.held(Gemm::dgrad, Operand::b),
                  cpu_held(r, Gemm::dgrad, Operand::b, id, seed, 0, old_wt ? w0[i] : w1[i], OC, C, true, DType::F32))
            << preset << (training ? " training " : " plain ") << nvfp4::model::linear_name(kinds[i]) << ": dgrad W^T";
      }
      lin.check_nonfinite(nullptr);
    }
  }
}

TEST(QuantizedLinearCuda, RejectsAGemmMixingFp8AndOtherOperands) {
  auto r = nvfp4::recipe::preset("fp8", kLayers);
  r.fprop.b = nvfp4::recipe::preset("nvfp4", kLayers).fprop.b;
  try {
    nvfp4::model::QuantizedLinearCuda lin(r, kLayers, 1);
    FAIL() << "accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fprop"), std::string::npos) << e.what();
  }
}

// ---- whole training runs ---------------------------------------------------------------------

nvfp4::train::TrainOptions run(const std::string& device, const std::string& recipe, const std::string& out) {
  nvfp4::train::TrainOptions o = nvfp4::test::tiny_run(device, out);
  o.recipe = nvfp4::recipe::preset(recipe, o.model.n_layer);
  // The tiny model has 2 blocks: the presets' BF16 blocks (first 1, last 2) would cover both.
  o.recipe->bf16_first = o.recipe->bf16_last = 0;
  return o;
}

std::string fresh(const std::string& name) { return nvfp4::test::fresh_run_dir("nvfp4_qlcuda_", name); }

TEST(QuantizedLinearCuda, EveryPresetTrainsOnTheGpuAndNvfp4TracksTheCpu) {
  REQUIRE_GPU();
  for (const char* name : {"bf16", "fp8", "fp8-block", "nvfp4", "mxfp4", "mxfp4-ocp"}) {
    const auto res = nvfp4::train::train(run("cuda", name, fresh(name)));
    EXPECT_FALSE(res.diverged) << name << ": " << res.divergence;
    ASSERT_FALSE(res.history.empty());
    EXPECT_LT(res.history.back().val_loss, res.unigram_val_loss - 0.2) << name;  // it learned
    std::printf("%-10s final val loss %.4f (unigram %.4f)\n", name, res.history.back().val_loss, res.unigram_val_loss);
  }
  const auto cpu = nvfp4::train::train(run("cpu", "nvfp4", fresh("cpu-nvfp4")));
  const auto gpu = nvfp4::train::train(run("cuda", "nvfp4", fresh("gpu-nvfp4")));
  const auto again = nvfp4::train::train(run("cuda", "nvfp4", fresh("gpu-nvfp4-2")));
  ASSERT_EQ(gpu.history.size(), again.history.size());
  for (size_t i = 0; i < gpu.history.size(); ++i) {
    EXPECT_EQ(gpu.history[i].loss, again.history[i].loss) << "step " << gpu.history[i].step;  // deterministic SR
  }
  EXPECT_NEAR(gpu.history.back().val_loss, cpu.history.back().val_loss, 0.05 * cpu.history.back().val_loss);
  std::printf("nvfp4 final val loss cpu %.4f cuda %.4f\n", cpu.history.back().val_loss, gpu.history.back().val_loss);
}

}  // namespace

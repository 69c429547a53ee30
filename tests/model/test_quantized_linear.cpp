// Quantized linear layers (CPU) against an FP64 emulation of the recipe: each operand
// quantized and decoded by the format core exactly as the recipe says (checked here by building
// the operands independently from nvfp4::quantize with the documented layouts and keys), the
// products in FP64. Tolerance: FP32 summation of K terms, |err| <= K * 2^-23 * sum |a b|.
// Plus: each switch changes only the GEMMs it names, BF16 blocks really are BF16, SR keys
// make results reproducible and step-dependent.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "format/scalar.hpp"
#include "nvfp4/quantize.hpp"
#include "nvfp4/quantized_linear.hpp"
#include "support/test_support.hpp"

namespace {

using namespace nvfp4;
using recipe::Gemm;
using recipe::Operand;

using nvfp4::test::randn;

// The operand values by hand: quantize + dequantize (row copy, or column copy = transpose).
std::vector<float> emulate(const std::vector<float>& x, int64_t rows, int64_t cols, bool column,
                           const std::optional<recipe::OperandQuant>& q, SrKey key) {
  if (!q) {
    std::vector<float> out(x.size());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) (column ? out[c * rows + r] : out[r * cols + c]) = fmt::bf16_round(x[r * cols + c]);
    return out;
  }
  const QuantizeOptions o = recipe::quantize_options(*q, column, key);
  const auto t = quantize(x, rows, cols, o);
  return dequantize(column ? *t.col : *t.row, t.options, true);
}

// out (M, Ncols) = a (M, K) · b (Ncols, K)ᵀ in FP64, and the bound sum |a b| per element.
void ref_matmul(const std::vector<float>& a, const std::vector<float>& b, int64_t M, int64_t K, int64_t Nc,
                std::vector<double>& out, std::vector<double>& mag) {
  out.assign(static_cast<size_t>(M * Nc), 0.0);
  mag.assign(out.size(), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < Nc; ++j)
      for (int64_t k = 0; k < K; ++k) {
        const double p = double(a[i * K + k]) * b[j * K + k];
        out[i * Nc + j] += p;
        mag[i * Nc + j] += std::abs(p);
      }
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& mag,
                  int64_t K, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = double(K) * std::ldexp(1.0, -23) * mag[i] + 1e-30;
    if (std::abs(got[i] - want[i]) > tol && bad++ < 3) ADD_FAILURE() << what << "[" << i << "] " << got[i] << " vs " << want[i];
  }
  EXPECT_EQ(bad, 0) << what;
}

constexpr int64_t N = 64, C = 96, OC = 64;  // contraction dims multiples of 32 (MXFP4) and 16
constexpr int kLayers = 8, kLayer = 3;      // a block the presets quantize

struct LayerRun {
  std::vector<float> y, dx, dw;
};

LayerRun run_layer(const recipe::Recipe& r, uint32_t step, const std::vector<float>& x, const std::vector<float>& w,
              const std::vector<float>& dy, int layer = kLayer) {
  model::QuantizedLinearCpu q(r, kLayers, 77);
  q.set_step(step, 0.0);
  LayerRun out;
  out.y.assign(N * OC, 0.0f);
  out.dx.assign(N * C, 0.0f);
  out.dw.assign(OC * C, 0.0f);
  const model::LinearId id{layer, model::LinearKind::up};
  q.forward(id, out.y.data(), x.data(), w.data(), N, C, OC);
  q.backward(id, out.dx.data(), out.dw.data(), dy.data(), x.data(), w.data(), N, C, OC);
  return out;
}

class QuantizedLinear : public ::testing::TestWithParam<const char*> {};

TEST_P(QuantizedLinear, MatchesAnFp64EmulationOfTheRecipe) {
  const recipe::Recipe r = recipe::preset(GetParam(), kLayers);
  const auto x = randn(N * C, 1), w = randn(OC * C, 2, 0.05f), dy = randn(N * OC, 3, 1e-3f);
  const uint32_t step = 5;
  const LayerRun got = run_layer(r, step, x, w, dy);
  auto qz = [&](Gemm g, Operand o) { return recipe::operand_quant(r, kLayers, kLayer, "mlp.up_proj", g, o, 0.0); };
  // Role = 3 x kind + tensor: X 0, W 1, dY 2 (row- and column-wise copies of a tensor share it).
  auto key = [&](Gemm g, Operand o) {
    const int tensor = (g == Gemm::fprop && o == Operand::a) || (g == Gemm::wgrad && o == Operand::b) ? 0
                       : o == Operand::b                                                               ? 1
                                                                                                       : 2;
    return SrKey{77, step, kLayer, static_cast<uint32_t>(3 * int(model::LinearKind::up) + tensor)};
  };
  std::vector<double> want, mag;
  // fprop: X (N, C) · W (OC, C)ᵀ
  ref_matmul(emulate(x, N, C, false, qz(Gemm::fprop, Operand::a), key(Gemm::fprop, Operand::a)),
             emulate(w, OC, C, false, qz(Gemm::fprop, Operand::b), key(Gemm::fprop, Operand::b)), N, C, OC, want, mag);
  expect_close(got.y, want, mag, C, "fprop");
  // dgrad: dY (N, OC) · (Wᵀ (C, OC))ᵀ... = dY · W, via W's column-wise copy
  ref_matmul(emulate(dy, N, OC, false, qz(Gemm::dgrad, Operand::a), key(Gemm::dgrad, Operand::a)),
             emulate(w, OC, C, true, qz(Gemm::dgrad, Operand::b), key(Gemm::dgrad, Operand::b)), N, OC, C, want, mag);
  expect_close(got.dx, want, mag, OC, "dgrad");
  // wgrad: dYᵀ (OC, N) · (Xᵀ (C, N))ᵀ
  ref_matmul(emulate(dy, N, OC, true, qz(Gemm::wgrad, Operand::a), key(Gemm::wgrad, Operand::a)),
             emulate(x, N, C, true, qz(Gemm::wgrad, Operand::b), key(Gemm::wgrad, Operand::b)), OC, N, C, want, mag);
  expect_close(got.dw, want, mag, N, "wgrad");
}

INSTANTIATE_TEST_SUITE_P(Presets, QuantizedLinear,
                         ::testing::Values("bf16", "fp8", "fp8-block", "nvfp4", "mxfp4", "mxfp4-ocp"));

// The quantization really happens (NVFP4's error is far above BF16's) and the unquantized path
// is FP32 math on BF16-rounded operands.
TEST(QuantizedLinearSwitches, Nvfp4IsCoarserThanBf16AndBf16BlocksAreBf16) {
  const auto x = randn(N * C, 1), w = randn(OC * C, 2, 0.05f), dy = randn(N * OC, 3, 1e-3f);
  const LayerRun bf = run_layer(recipe::preset("bf16", kLayers), 1, x, w, dy);
  const LayerRun fp4 = run_layer(recipe::preset("nvfp4", kLayers), 1, x, w, dy);
  double num = 0, den = 0;
  for (size_t i = 0; i < bf.y.size(); ++i) {
    num += (fp4.y[i] - bf.y[i]) * double(fp4.y[i] - bf.y[i]);
    den += double(bf.y[i]) * bf.y[i];
  }
  EXPECT_GT(std::sqrt(num / den), 0.05);  // NVFP4 on Gaussian data: ~10% relative error per operand
  // Layer 0 and the last two blocks are BF16 in the nvfp4 preset: identical to the bf16 recipe.
  for (int layer : {0, kLayers - 1}) {
    const LayerRun a = run_layer(recipe::preset("nvfp4", kLayers), 1, x, w, dy, layer);
    const LayerRun b = run_layer(recipe::preset("bf16", kLayers), 1, x, w, dy, layer);
    EXPECT_EQ(a.y, b.y) << layer;
    EXPECT_EQ(a.dx, b.dx) << layer;
    EXPECT_EQ(a.dw, b.dw) << layer;
  }
}

// Each switch changes only the GEMMs whose operands it names.
TEST(QuantizedLinearSwitches, EachSwitchChangesOnlyItsGemms) {
  const auto x = randn(N * C, 1), w = randn(OC * C, 2, 0.05f), dy = randn(N * OC, 3, 1e-3f);
  const recipe::Recipe base = recipe::preset("nvfp4", kLayers);
  const LayerRun b = run_layer(base, 1, x, w, dy);
  auto with = [&](auto set) {
    recipe::Switches s;
    set(s);
    return run_layer(recipe::apply(base, s), 1, x, w, dy);
  };
  const LayerRun no_sr = with([](recipe::Switches& s) { s.no_sr = true; });
  EXPECT_EQ(no_sr.y, b.y);  // fprop has no SR
  EXPECT_NE(no_sr.dx, b.dx);
  EXPECT_NE(no_sr.dw, b.dw);
  const LayerRun no_rht = with([](recipe::Switches& s) { s.no_rht = true; });
  EXPECT_EQ(no_rht.y, b.y);
  EXPECT_EQ(no_rht.dx, b.dx);  // the RHT is on the wgrad operands only
  EXPECT_NE(no_rht.dw, b.dw);
  const LayerRun no_2d = with([](recipe::Switches& s) { s.no_2d = true; });
  EXPECT_NE(no_2d.y, b.y);  // W in fprop and Wᵀ in dgrad
  EXPECT_NE(no_2d.dx, b.dx);
  EXPECT_EQ(no_2d.dw, b.dw);
}

TEST(QuantizedLinearSwitches, StochasticRoundingIsKeyedByStep) {
  const auto x = randn(N * C, 1), w = randn(OC * C, 2, 0.05f), dy = randn(N * OC, 3, 1e-3f);
  const recipe::Recipe r = recipe::preset("nvfp4", kLayers);
  const LayerRun a = run_layer(r, 1, x, w, dy), again = run_layer(r, 1, x, w, dy), next = run_layer(r, 2, x, w, dy);
  EXPECT_EQ(a.dx, again.dx);
  EXPECT_EQ(a.dw, again.dw);
  EXPECT_NE(a.dx, next.dx);  // a new step draws new bits
  EXPECT_EQ(a.y, next.y);    // fprop is RNE: independent of the step
}

}  // namespace

// QuantizedLinearCpu (see include/nvfp4/quantized_linear.hpp).
#include "nvfp4/quantized_linear.hpp"

#include <span>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"

namespace nvfp4::model {

namespace {

using recipe::Gemm;
using recipe::Operand;

// x (rows, cols) row-major, as the GEMM reads it. column = false: the operand is x itself
// (contiguous along cols); column = true: the operand is xᵀ (cols, rows), contiguous along
// rows — the column-wise copy. Returns the values the GEMM multiplies, in the operand's layout.
std::vector<float> hold(const float* x, int64_t rows, int64_t cols, bool column, const std::optional<recipe::OperandQuant>& q,
                        SrKey key, const std::string& what) {
  const int64_t n = rows * cols;
  if (!q) {  // BF16
    std::vector<float> out(static_cast<size_t>(n));
    if (!column) {
      for (int64_t i = 0; i < n; ++i) out[i] = fmt::bf16_round(x[i]);
    } else {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = fmt::bf16_round(x[r * cols + c]);
    }
    return out;
  }
  const QuantizeOptions o = recipe::quantize_options(*q, column, key);
  try {
    const QuantizedTensor t = quantize(std::span<const float>(x, static_cast<size_t>(n)), rows, cols, o);
    return dequantize(column ? *t.col : *t.row, t.options, true);
  } catch (const NonFiniteError& e) {  // keep the type: the trainer turns it into a divergence
    throw NonFiniteError(what + ": " + e.what(), e.first_index(), e.count());
  } catch (const Error& e) {
    throw Error(what + ": " + e.what());
  }
}

}  // namespace

SrKey linear_sr_key(uint64_t seed, uint32_t step, LinearId id, recipe::Gemm g, recipe::Operand o) {
  // The tensor an operand quantizes: X (fprop a, wgrad b), W (fprop b, dgrad b), dY (dgrad a, wgrad a).
  const uint32_t tensor = g == Gemm::fprop ? (o == Operand::a ? 0u : 1u) : g == Gemm::dgrad ? (o == Operand::a ? 2u : 1u)
                                                                                          : (o == Operand::a ? 2u : 0u);
  return SrKey{seed, step, static_cast<uint32_t>(id.layer), 3u * static_cast<uint32_t>(id.kind) + tensor};
}

QuantizedLinearCpu::QuantizedLinearCpu(recipe::Recipe r, int n_layer, uint64_t seed)
    : r_(std::move(r)), n_layer_(n_layer), seed_(seed) {
  recipe::validate(r_, n_layer);
}

void QuantizedLinearCpu::forward(LinearId id, float* out, const float* inp, const float* weight, int64_t N, int64_t C,
                                 int64_t OC) {
  const std::string name = linear_name(id.kind);
  auto quant = [&](Operand o) { return recipe::operand_quant(r_, n_layer_, id.layer, name, Gemm::fprop, o, progress_); };
  auto key = [&](Operand o) { return linear_sr_key(seed_, step_, id, Gemm::fprop, o); };
  const std::string where = "layer " + std::to_string(id.layer) + " " + name + " fprop";
  const auto x = hold(inp, N, C, false, quant(Operand::a), key(Operand::a), where + " X");
  const auto w = hold(weight, OC, C, false, quant(Operand::b), key(Operand::b), where + " W");
  cpu::matmul_forward(out, x.data(), w.data(), N, C, OC);
}

void QuantizedLinearCpu::backward(LinearId id, float* dinp, float* dweight, const float* dout, const float* inp,
                                  const float* weight, int64_t N, int64_t C, int64_t OC) {
  const std::string name = linear_name(id.kind);
  const std::string where = "layer " + std::to_string(id.layer) + " " + name;
  auto quant = [&](Gemm g, Operand o) { return recipe::operand_quant(r_, n_layer_, id.layer, name, g, o, progress_); };
  auto key = [&](Gemm g, Operand o) { return linear_sr_key(seed_, step_, id, g, o); };
  if (dinp) {
    // dgrad: dX (N, C) += dY (N, OC) · W (OC, C), contraction over OC: dY row-wise, W's
    // column-wise copy (C, OC), turned back into (OC, C) for the matmul.
    const auto dy = hold(dout, N, OC, false, quant(Gemm::dgrad, Operand::a), key(Gemm::dgrad, Operand::a), where + " dgrad dY");
    const auto wt = hold(weight, OC, C, true, quant(Gemm::dgrad, Operand::b), key(Gemm::dgrad, Operand::b), where + " dgrad W^T");
    std::vector<float> w(static_cast<size_t>(OC * C));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t o = 0; o < OC; ++o) w[o * C + c] = wt[c * OC + o];
    cpu::matmul_backward(dinp, nullptr, dy.data(), nullptr, w.data(), N, C, OC);
  }
  if (dweight) {
    // wgrad: dW (OC, C) += dYᵀ (OC, N) · X (N, C), contraction over N: the column-wise copies
    // of dY and X, (OC, N) and (C, N); dW = dYᵀ_hat · (Xᵀ_hat)ᵀ.
    const auto dyt = hold(dout, N, OC, true, quant(Gemm::wgrad, Operand::a), key(Gemm::wgrad, Operand::a), where + " wgrad dY^T");
    const auto xt = hold(inp, N, C, true, quant(Gemm::wgrad, Operand::b), key(Gemm::wgrad, Operand::b), where + " wgrad X^T");
    std::vector<float> dw(static_cast<size_t>(OC * C));
    cpu::matmul_forward(dw.data(), dyt.data(), xt.data(), OC, N, C);
    for (int64_t i = 0; i < OC * C; ++i) dweight[i] += dw[i];
  }
}

}  // namespace nvfp4::model

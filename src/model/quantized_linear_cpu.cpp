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

// x (rows, cols) row-major, as the GEMM reads it: the operand is x itself (contiguous along
// cols) or, for a column-wise operand, xᵀ (cols, rows), contiguous along rows. Returns the
// values the GEMM multiplies, in the operand's layout.
std::vector<float> hold(const float* x, int64_t rows, int64_t cols, const recipe::OperandPlan& op,
                        const QuantizeOptions& options, const std::string& label, const char* what) {
  const int64_t n = rows * cols;
  if (!op.quantized) {  // BF16
    std::vector<float> out(static_cast<size_t>(n));
    if (!op.column) {
      for (int64_t i = 0; i < n; ++i) out[i] = fmt::bf16_round(x[i]);
    } else {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = fmt::bf16_round(x[r * cols + c]);
    }
    return out;
  }
  try {
    const QuantizedTensor t = quantize(std::span<const float>(x, static_cast<size_t>(n)), rows, cols, options);
    return dequantize(op.column ? *t.col : *t.row, t.options, true);
  } catch (const NonFiniteError& e) {  // keep the type: the trainer turns it into a divergence
    throw NonFiniteError(label + " " + what + ": " + e.what(), e.first_index(), e.count());
  } catch (const Error& e) {
    throw Error(label + " " + what + ": " + e.what());
  }
}

}  // namespace

QuantizedLinearCpu::QuantizedLinearCpu(recipe::Plan plan, uint64_t seed) : plan_(std::move(plan)), seed_(seed) {}

QuantizedLinearCpu::QuantizedLinearCpu(const recipe::Recipe& r, int n_layer, uint64_t seed)
    : QuantizedLinearCpu(resolve_plan(r, n_layer), seed) {}

void QuantizedLinearCpu::forward(LinearId id, float* out, const float* inp, const float* weight, int64_t N, int64_t C,
                                 int64_t OC) {
  const size_t li = linear_index(id);
  const std::string& label = plan_.linear(li).label;
  auto op = [&](Operand o) -> const recipe::OperandPlan& { return plan_.operand(li, phase_, Gemm::fprop, o); };
  auto opt = [&](Operand o) { return op(o).options(seed_, step_, static_cast<uint32_t>(id.layer)); };
  const auto x = hold(inp, N, C, op(Operand::a), opt(Operand::a), label, "fprop X");
  const auto w = hold(weight, OC, C, op(Operand::b), opt(Operand::b), label, "fprop W");
  cpu::matmul_forward(out, x.data(), w.data(), N, C, OC);
}

void QuantizedLinearCpu::backward(LinearId id, float* dinp, float* dweight, const float* dout, const float* inp,
                                  const float* weight, int64_t N, int64_t C, int64_t OC) {
  const size_t li = linear_index(id);
  const std::string& label = plan_.linear(li).label;
  auto op = [&](Gemm g, Operand o) -> const recipe::OperandPlan& { return plan_.operand(li, phase_, g, o); };
  auto opt = [&](Gemm g, Operand o) { return op(g, o).options(seed_, step_, static_cast<uint32_t>(id.layer)); };
  if (dinp) {
    // dgrad: dX (N, C) += dY (N, OC) · W (OC, C), contraction over OC: dY row-wise, W's
    // column-wise copy (C, OC), turned back into (OC, C) for the matmul.
    const auto dy = hold(dout, N, OC, op(Gemm::dgrad, Operand::a), opt(Gemm::dgrad, Operand::a), label, "dgrad dY");
    const auto wt = hold(weight, OC, C, op(Gemm::dgrad, Operand::b), opt(Gemm::dgrad, Operand::b), label, "dgrad W^T");
    std::vector<float> w(static_cast<size_t>(OC * C));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t o = 0; o < OC; ++o) w[o * C + c] = wt[c * OC + o];
    cpu::matmul_backward(dinp, nullptr, dy.data(), nullptr, w.data(), N, C, OC);
  }
  if (dweight) {
    // wgrad: dW (OC, C) += dYᵀ (OC, N) · X (N, C), contraction over N: the column-wise copies
    // of dY and X, (OC, N) and (C, N); dW = dYᵀ_hat · (Xᵀ_hat)ᵀ.
    const auto dyt = hold(dout, N, OC, op(Gemm::wgrad, Operand::a), opt(Gemm::wgrad, Operand::a), label, "wgrad dY^T");
    const auto xt = hold(inp, N, C, op(Gemm::wgrad, Operand::b), opt(Gemm::wgrad, Operand::b), label, "wgrad X^T");
    std::vector<float> dw(static_cast<size_t>(OC * C));
    cpu::matmul_forward(dw.data(), dyt.data(), xt.data(), OC, N, C);
    for (int64_t i = 0; i < OC * C; ++i) dweight[i] += dw[i];
  }
}

}  // namespace nvfp4::model

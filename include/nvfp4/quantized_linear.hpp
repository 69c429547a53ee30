// Quantized linear layers on the CPU: a LinearPrecision (model.hpp) that holds every GEMM
// operand the way a precision recipe says and computes the product in FP32.
//
// An operand the recipe quantizes is quantized by the format core (nvfp4::quantize) and decoded
// back (codes x block scale x tensor scale): exactly the values an NVFP4 / MXFP4 / FP8 GEMM
// multiplies, so an FP32 product of them is the emulated low-precision GEMM (up to FP32
// summation order). An operand kept in BF16 is rounded to BF16. Operand layouts follow
// include/nvfp4/recipe.hpp: dgrad reads W's column-wise copy (for 16x16 weights, the exact
// transpose of the row-wise codes); wgrad reads the column-wise copies of dY and X, Hadamard-
// transformed along N when the recipe says RHT (H is orthogonal, so dW = (H dY)ᵀ (H X) needs no
// inverse transform). Stochastic rounding draws are keyed by (seed, step, layer, role) (see
// linear_sr_key), so they are reproducible.
#pragma once

#include <cstdint>

#include "nvfp4/model.hpp"
#include "nvfp4/plan.hpp"

namespace nvfp4::model {

// SR keys come from the plan: role = 3 x linear kind + the tensor an operand quantizes (X 0,
// W 1, dY 2). The row-wise and column-wise copies of one tensor share the key (the quantizer
// draws the column-wise copy with role | 128), as one quantization of the tensor makes both,
// in TE and in our kernels. The CPU and CUDA layers both read it, so they draw the same bits.
class QuantizedLinearCpu final : public LinearPrecision {
 public:
  // plan: resolved for this model's linear layers (model::resolve_plan).
  QuantizedLinearCpu(recipe::Plan plan, uint64_t seed);
  // The plan of r for n_layer blocks (throws nvfp4::Error if it does not resolve).
  QuantizedLinearCpu(const recipe::Recipe& r, int n_layer, uint64_t seed);
  const recipe::Plan& plan() const { return plan_; }
  const recipe::Recipe& recipe() const { return plan_.recipe(); }

  // The optimizer step about to run (SR keys) and the fraction of the run's tokens done before
  // it (the late BF16 switch).
  void set_step(uint32_t step, double progress) {
    step_ = step;
    phase_ = plan_.phase(progress);
  }

  void forward(LinearId id, float* out, const float* inp, const float* weight, int64_t N, int64_t C,
               int64_t OC) override;
  void backward(LinearId id, float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                int64_t N, int64_t C, int64_t OC) override;

 private:
  recipe::Plan plan_;
  uint64_t seed_;
  uint32_t step_ = 0;
  int phase_ = 0;
};

}  // namespace nvfp4::model

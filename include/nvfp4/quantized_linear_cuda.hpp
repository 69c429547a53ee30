// Quantized linear layers on a CUDA GPU: the GPU twin of QuantizedLinearCpu
// (include/nvfp4/quantized_linear.hpp), used by CudaModel for every linear layer.
//
// Per GEMM, each operand is held the way the quantization plan says (include/nvfp4/plan.hpp),
// quantized by the Hopper kernels (include/nvfp4/cuda_quantize.hpp) with the plan's SR keys, as
// the CPU layer, so both hold the same bits:
//   BF16          the BF16 tensor itself (a transposed operand enters cuBLASLt transposed)
//   NVFP4, MXFP4  codes x block scale decoded to BF16 — exact (docs/numerics.md §1) — then a BF16
//                 cuBLASLt GEMM with FP32 accumulation; NVFP4's per-tensor factors
//                 (amax_a / 2688) (amax_b / 2688) are its alpha: the GEMM an NVFP4 tensor core
//                 computes, up to FP32 summation order ("decode-then-cuBLAS")
//   FP8           native on Hopper's FP8 tensor cores (cuBLASLt), per-tensor or 1x128/128x128
//                 block scales
// Weights are quantized from the FP32 masters (as the CPU layer does); activations and
// gradients from their BF16 storage (an RHT copy is rounded to BF16, as TE does).
//
// Plain C++ header (no CUDA types); device pointers are raw.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/plan.hpp"

namespace nvfp4::model {

class QuantizedLinearCuda {
 public:
  // plan: resolved for this model's linear layers (model::resolve_plan). Throws nvfp4::Error if
  // its recipe pairs an FP8 operand with a non-FP8 one in a GEMM (no such cuBLASLt GEMM).
  QuantizedLinearCuda(recipe::Plan plan, uint64_t seed);
  // The plan of r for n_layer blocks.
  QuantizedLinearCuda(const recipe::Recipe& r, int n_layer, uint64_t seed);
  ~QuantizedLinearCuda();
  QuantizedLinearCuda(const QuantizedLinearCuda&) = delete;
  QuantizedLinearCuda& operator=(const QuantizedLinearCuda&) = delete;

  const recipe::Recipe& recipe() const;
  const recipe::Plan& plan() const;
  // The optimizer step about to run (SR keys) and the fraction of the run's tokens done before it.
  void set_step(uint32_t step, double progress);

  // out (N, OC) bf16 OVERWRITTEN = inp (N, C) bf16 · W (OC, C)ᵀ. weight: the FP32 master the
  // quantizers read; weight_bf16: its BF16 copy (what a BF16 operand is).
  void forward(cuda::Blas& blas, LinearId id, uint16_t* out, const uint16_t* inp, const float* weight,
               const uint16_t* weight_bf16, int64_t N, int64_t C, int64_t OC, cuda::Stream stream);
  // dinp (N, C) bf16 = dout (N, OC) · W: OVERWRITTEN, or added when accumulate_dinp; may be null.
  // dweight (OC, C) fp32 += dout (N, OC)ᵀ · inp (N, C): ACCUMULATED; may be null.
  void backward(cuda::Blas& blas, LinearId id, uint16_t* dinp, float* dweight, const uint16_t* dout,
                const uint16_t* inp, const float* weight, const uint16_t* weight_bf16, int64_t N, int64_t C,
                int64_t OC, bool accumulate_dinp, cuda::Stream stream);

  // Starts a pass. Within a pass, consecutive layers reading the same input buffer with the same
  // round-to-nearest settings (q/k/v, gate/up) share one quantization of it; a new pass (or
  // anything that rewrites activations) must call this first. A training forward pass (one the
  // backward pass of the same inputs and weights follows, nothing rewritten in between) also
  // makes, in the same kernel calls, the column-wise copies of X and W that wgrad and dgrad
  // read, where the recipe quantizes them like the row-wise ones with round-to-nearest; the
  // backward pass takes them instead of reading those tensors again. Bits are the same either way.
  enum class Pass { forward, training_forward, backward };
  void begin_pass(Pass p = Pass::forward);

  // A device float for the kernel about to write linear layer id's input X (tensor x) or its
  // output gradient dY (tensor dy) to fold max |value| into (the ops' `amax` parameters,
  // include/nvfp4/cuda_ops.hpp): the plan's amax slot for that tensor, when the plan has its
  // readers take their amax from the producer (FP8 current scaling) — they then skip the pass
  // that would find it. nullptr when the plan has no such use. Linear layers sharing an input
  // (q, k, v) share the slot: ask with any one of them. Zeroed on `stream` here; valid for this
  // pass (begin_pass() starts the next); the kernel it is given to must be the one writing the
  // tensor the layer reads next.
  float* producer_amax(LinearId id, recipe::Tensor tensor, cuda::Stream stream);

  // Quantizes, for the pass just begun, every listed weight whose fprop copy the recipe scales by
  // its amax (FP8 current scaling) — and in a training forward pass dgrad's W^T beside it, as
  // forward() would keep it — in a few multi-tensor launches: one by one, a model's many small
  // weights are launch-bound. forward() then takes these copies (same bits); weights not
  // prepared are quantized there as before. The weights must not change until the pass ends.
  struct WeightRef {
    LinearId id;
    const float* weight = nullptr;  // the FP32 master (OC, C)
    int64_t OC = 0, C = 0;
  };
  void prepare_weights(std::span<const WeightRef> weights, cuda::Stream stream);

  // Whether a quantizer met NaN/Inf since the last check: synchronizes `stream`, resets the
  // counters, and throws NonFiniteError naming the first layer, GEMM and operand that did.
  void check_nonfinite(cuda::Stream stream);

  // For tests: the values the last GEMM g multiplied as operand o — (rows, K), K contiguous —
  // decoded to FP32 with every scale applied (for NVFP4, bit-identical to nvfp4::dequantize of
  // the same copy). Synchronizes.
  std::vector<float> held(recipe::Gemm g, recipe::Operand o) const;

  // Device memory of the quantized operands' buffers (they grow to the largest operand seen).
  int64_t device_bytes() const;

  // Per-phase time, when enabled: CUDA events around the operand work (quantize + decode) and
  // around the GEMMs of every call. timing() synchronizes and returns the sums since reset.
  struct Timing {
    double quantize_ms = 0;
    double gemm_ms = 0;
  };
  void enable_timing(bool on);
  // NVFP4 x NVFP4 GEMMs (K % 64 == 0) on the fused kernel cuda::nvfp4_gemm_nt, which reads the
  // codes and scales, instead of decode-then-cuBLAS (the same exact products, FP32 sums in another
  // order). Off by default: slower (H100, docs/perf.md: nvfp4+fused trained at 0.51x bf16 against
  // decode-then-cuBLAS's 0.76x; the kernel at 0.34-0.37x cuBLAS BF16, wgmma_ws 0.29-0.31x).
  // warp_specialized: its wgmma_ws kernel (cuda::Nvfp4GemmNtKernel), the same bits.
  void set_fused_nvfp4(bool on, bool warp_specialized = false);
  Timing timing();
  void reset_timing();

  struct State;

 private:
  std::unique_ptr<State> s_;
};

}  // namespace nvfp4::model

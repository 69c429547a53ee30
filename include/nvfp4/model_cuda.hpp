// The model on a CUDA GPU: BF16 weights and activations, FP32 master weights, gradients and
// optimizer state, FP32 accumulation in every GEMM (cuBLASLt) and reduction. Same parameter
// layout (param_specs) and the same math as the CPU reference model (include/nvfp4/model.hpp),
// every feature of ModelConfig included (head size, q/k/v biases, q/k norms, tied embeddings, a
// sliding window, RoPE scaling), so checkpoints move between the two;
// tests/cuda/test_model_cuda.cpp and test_model_features_cuda.cpp compare them.
//
// Plain C++ header (no CUDA types). Host spans are FP32 in param_specs() order.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "nvfp4/model.hpp"
#include "nvfp4/recipe.hpp"

namespace nvfp4::model {

class QuantizedLinearCuda;

class CudaModel {
 public:
  // Allocates parameters, gradients and optimizer state on the current device, and uploads the
  // RoPE frequency table (config.rope_inv_freq()). The attention kernels take head sizes 32, 64
  // and 128: another one is an nvfp4::Error naming it.
  explicit CudaModel(const ModelConfig& config);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  const ModelConfig& config() const;
  const std::vector<ParamSpec>& specs() const;
  int64_t num_params() const;

  void set_params(std::span<const float> host);  // FP32 masters and their BF16 copy
  void get_params(std::span<float> host) const;
  void get_grads(std::span<float> host) const;
  void set_optimizer_state(std::span<const float> m, std::span<const float> v);
  void get_optimizer_state(std::span<float> m, std::span<float> v) const;

  // Forward over tokens (B, T) (host arrays). With targets: returns the mean cross-entropy and
  // prepares backward() for the gradient of loss_scale x that mean (the fused loss kernel
  // writes the logits' gradient in place of the logits). Without: returns 0 and keeps the
  // logits (read them with logits()).
  float forward(const int32_t* tokens, const int32_t* targets, int B, int T, float loss_scale = 1.0f);
  std::vector<float> logits() const;  // (B, T, V) of the last forward without targets
  void backward();                    // accumulates into the gradients
  void zero_grad();

  // Squared L2 norm of each parameter tensor's gradient, in specs() order (deterministic).
  std::vector<double> grad_norms_squared();
  void scale_grads(float s);
  // AdamW on every tensor (decay only where ParamSpec::decay); refreshes the BF16 copy.
  void adamw(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step);

  int64_t device_bytes() const;  // what this model allocated on the device, its linear layers' buffers included

  // The quantization plan of the linear layers (include/nvfp4/plan.hpp, quantized_linear_cuda.hpp),
  // resolved for this model's config; the default is "bf16"'s (every operand BF16). seed keys
  // stochastic rounding. A quantizer meeting NaN/Inf makes forward()/backward() throw
  // NonFiniteError naming the layer, GEMM and operand. set_recipe resolves r's plan first.
  void set_plan(recipe::Plan plan, uint64_t seed);
  void set_recipe(const recipe::Recipe& r, uint64_t seed);
  // The optimizer step about to run and the fraction of the run's tokens done (SR keys, late switch).
  void set_step(uint32_t step, double progress);
  QuantizedLinearCuda& linear();  // the linear layers (per-phase timing, held operands)

  struct State;

 private:
  std::unique_ptr<State> s_;
};

}  // namespace nvfp4::model

// CPU reference SwiGLU (src/kernels/cpu/elementwise.cpp): the gradient check. Harness:
// test_cpu_ops_support.hpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/test_cpu_ops_support.hpp"
#include "nvfp4/error.hpp"

namespace {

using namespace cpu_ops_test;

Vd ref_swiglu(const Vd& gate, const Vd& up) {
  Vd out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return out;
}

TEST(CpuOpsGrad, SwiGlu) {
  GradCase gc;
  gc.name = "swiglu";
  gc.inputs = {randn(N * F, 9, 2.0f), randn(N * F, 10)};
  gc.input_names = {"gate", "up"};
  gc.K = 8;
  gc.ref = [](const std::vector<Vd>& x) { return ref_swiglu(x[0], x[1]); };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out(N * F);
    cpu::swiglu_forward(out.data(), x[0].data(), x[1].data(), N * F);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
    cpu::swiglu_backward(g[0].data(), g[1].data(), dout.data(), x[0].data(), x[1].data(), N * F);
  };
  run_grad_case(gc);
}

}  // namespace

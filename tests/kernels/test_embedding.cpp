// CPU reference token embedding (src/kernels/cpu/embedding.cpp): the gradient check, bad tokens.
// Harness: test_cpu_ops_support.hpp.
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

Vd ref_encoder(const Ints& tokens, const Vd& wte, int64_t C) {
  Vd out;
  for (int32_t tok : tokens)
    for (int64_t c = 0; c < C; ++c) out.push_back(wte[tok * C + c]);
  return out;
}

TEST(CpuOpsGrad, Encoder) {
  Ints tokens = randint(N, V, 11);
  tokens[3] = tokens[7] = tokens[8] = 5;  // repeated tokens: their gradients must add up
  GradCase gc;
  gc.name = "encoder";
  gc.inputs = {randn(V * C, 12)};
  gc.input_names = {"wte"};
  gc.K = N;
  gc.ref = [tokens](const std::vector<Vd>& x) { return ref_encoder(tokens, x[0], C); };
  gc.fwd = [tokens](const std::vector<Vf>& x) {
    Vf out(N * C);
    cpu::encoder_forward(out.data(), tokens.data(), x[0].data(), B, T, C, V);
    return out;
  };
  gc.bwd = [tokens](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>&) {
    cpu::encoder_backward(g[0].data(), dout.data(), tokens.data(), B, T, C, V);
  };
  run_grad_case(gc);
}

TEST(CpuOpsEncoder, TokenOutsideVocabularyNamesThePosition) {
  const Vf wte(V * C, 1.0f);
  Vf out(2 * 3 * C);
  const Ints tokens = {0, 1, 2, 3, static_cast<int32_t>(V) + 4, 5};  // (B=2, T=3): b=1, t=1
  try {
    cpu::encoder_forward(out.data(), tokens.data(), wte.data(), 2, 3, C, V);
    ADD_FAILURE() << "no error";
  } catch (const nvfp4::Error& e) {
    EXPECT_NE(std::string(e.what()).find("b=1, t=1"), std::string::npos) << e.what();
  }
}

}  // namespace

// CUDA token embedding (src/kernels/cuda/embedding.cu) against the CPU op, bit for bit; bad tokens.
// Harness: test_ops_cuda_support.hpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace cuda_ops_test;

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

}  // namespace

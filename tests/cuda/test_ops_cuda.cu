// Across the CUDA training operators (src/kernels/cuda/): error messages, and the producer amax of
// every op that folds one. The ops' own tests: test_<family>_cuda.cu; the harness:
// test_ops_cuda_support.hpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace cuda_ops_test;

// The CLI prints "nvfp4: " + what(): neither an op's argument check nor the CUDA error check
// may carry that prefix itself (ops.cu's did: "nvfp4: nvfp4: cuda::..."). Both throw before
// any device work, so this runs without a GPU.
TEST(CudaOps, ErrorsNameTheOpWithoutTheCliPrefix) {
  try {
    cu::residual_forward(nullptr, nullptr, nullptr, -1, nullptr);
    FAIL() << "n = -1 was accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_EQ(std::string(e.what()), "cuda::residual_forward: n = -1 is negative");
  }
  try {
    cu::check(cudaErrorInvalidValue, "cudaMemcpy");
    FAIL() << "cudaErrorInvalidValue was accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              std::string("CUDA error in cudaMemcpy: ") + cudaGetErrorString(cudaErrorInvalidValue));
  }
  EXPECT_NO_THROW(cu::check(cudaSuccess, "cudaMemcpy"));
}

// The producer amax of every op that takes one: max |output| exactly as stored (the BF16
// values downloaded), folded into a caller-zeroed float; an op given a non-zero float only
// raises it; each op's output bits are the same with and without it.
TEST(CudaOps, ProducerAmaxIsTheMaxOfTheStoredOutput) {
  REQUIRE_GPU();
  auto max_abs = [](const std::vector<float>& x) {
    float m = 0.0f;
    for (float v : x) m = std::max(m, std::fabs(v));
    return m;
  };
  DeviceBuffer<float> amax(std::vector<float>(2, 0.0f));
  auto read = [&](int i) { return amax.download()[i]; };
  auto zero = [&] { amax.upload(std::vector<float>(2, 0.0f)); };
  uint64_t seed = 900;
  // With an amax the kernels run one resident wave (as many blocks as the occupancy calculator
  // fits: 132 SMs x 5-8 blocks of 256 threads on an H100), looping over the rest: N = 40000 rows and n = 4e6 elements take several rounds; their outputs must
  // equal those of the one-item-per-thread launch without an amax.
  std::vector<RowShape> norm_shapes(std::begin(kNormShapes), std::end(kNormShapes));
  norm_shapes.push_back({40000, 256});
  for (const auto& s : norm_shapes) {
    SCOPED_TRACE("N=" + std::to_string(s.N) + " C=" + std::to_string(s.C));
    const int64_t N = s.N, C = s.C;
    const auto x = randn_bf16(N * C, ++seed, 2.0f), w = randn_bf16(C, ++seed), dy = randn_bf16(N * C, ++seed);
    const auto dx0 = randn_bf16(N * C, ++seed);
    DeviceBuffer<uint16_t> d_x(to_bits(x)), d_w(to_bits(w)), d_dy(to_bits(dy)), d_out(N * C), d_out2(N * C),
        d_dx(to_bits(dx0)), d_dx2(to_bits(dx0));
    DeviceBuffer<float> d_rstd(N), d_dw(C);
    DeviceBuffer<uint8_t> scratch(cu::rmsnorm_backward_scratch_bytes(N, C));
    zero();
    cu::rmsnorm_forward(d_out.ptr, d_rstd.ptr, d_x.ptr, d_w.ptr, N, C, 1e-5f, nullptr, amax.ptr);
    cu::rmsnorm_forward(d_out2.ptr, d_rstd.ptr, d_x.ptr, d_w.ptr, N, C, 1e-5f, nullptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_out))) << "rmsnorm_forward";
    EXPECT_TRUE(same_bits(d_out.download(), d_out2.download()));
    zero();
    cu::rmsnorm_backward(d_dx.ptr, d_dw.ptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, N, C, scratch.ptr, nullptr, amax.ptr);
    cu::rmsnorm_backward(d_dx2.ptr, nullptr, d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, N, C, scratch.ptr, nullptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_dx))) << "rmsnorm_backward (after the accumulation)";
    EXPECT_TRUE(same_bits(d_dx.download(), d_dx2.download()));
  }
  for (const auto& [n, offset] : {std::pair<int64_t, int64_t>{65536, 0}, {1003, 1}, {4000000, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    const auto gate = randn_bf16(n + offset, ++seed, 3.0f), up = randn_bf16(n + offset, ++seed);
    const auto dy = randn_bf16(n + offset, ++seed);
    DeviceBuffer<uint16_t> d_g(to_bits(gate)), d_u(to_bits(up)), d_dy(to_bits(dy)), d_out(n + offset),
        d_dg(n + offset), d_du(n + offset);
    auto tail = [&](const DeviceBuffer<uint16_t>& d) {
      auto v = download_bf16(d);
      return std::vector<float>(v.begin() + offset, v.end());
    };
    zero();
    cu::swiglu_forward(d_out.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n, nullptr, amax.ptr);
    EXPECT_EQ(read(0), max_abs(tail(d_out))) << "swiglu_forward";
    DeviceBuffer<uint16_t> d_out2(n + offset);
    cu::swiglu_forward(d_out2.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n, nullptr);
    EXPECT_TRUE(same_bits(d_out.download(), d_out2.download())) << "swiglu_forward with and without amax";
    zero();
    cu::swiglu_backward(d_dg.ptr + offset, d_du.ptr + offset, d_dy.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n,
                        nullptr, amax.ptr, amax.ptr + 1);
    EXPECT_EQ(read(0), max_abs(tail(d_dg))) << "swiglu_backward dgate";
    EXPECT_EQ(read(1), max_abs(tail(d_du))) << "swiglu_backward dup";
    DeviceBuffer<uint16_t> d_dg2(n + offset), d_du2(n + offset);
    cu::swiglu_backward(d_dg2.ptr + offset, d_du2.ptr + offset, d_dy.ptr + offset, d_g.ptr + offset, d_u.ptr + offset,
                        n, nullptr);
    EXPECT_TRUE(same_bits(d_dg.download(), d_dg2.download())) << "swiglu_backward dgate with and without amax";
    EXPECT_TRUE(same_bits(d_du.download(), d_du2.download())) << "swiglu_backward dup with and without amax";
    // A larger value already there stays (atomicMax): the caller zeroes.
    amax.upload({1e30f, 0.0f});
    cu::swiglu_forward(d_out.ptr + offset, d_g.ptr + offset, d_u.ptr + offset, n, nullptr, amax.ptr);
    EXPECT_EQ(read(0), 1e30f);
  }
  for (const auto& s : kRopeShapes) {
    const int64_t n = s.B * s.T * s.NH * s.HS;
    const auto dy = randn_bf16(n, ++seed), dx0 = randn_bf16(n, ++seed);
    DeviceBuffer<uint16_t> d_dy(to_bits(dy)), d_dx(to_bits(dx0));
    zero();
    cu::rope_backward(d_dx.ptr, d_dy.ptr, s.B, s.T, s.NH, s.HS, 10000.0f, nullptr, amax.ptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_dx))) << "rope_backward (after the accumulation)";
  }
  // Attention: out (forward) and dv (backward), head sizes 32/64/128, a ragged last tile, GQA.
  for (const auto& [T, NH, NKV, HS] : {std::array<int64_t, 4>{200, 8, 2, 64}, {70, 4, 4, 128}, {130, 6, 3, 32}}) {
    SCOPED_TRACE("attention T=" + std::to_string(T) + " HS=" + std::to_string(HS));
    const int64_t B = 2, nq = B * T * NH * HS, nk = B * T * NKV * HS;
    DeviceBuffer<uint16_t> d_q(to_bits(randn_bf16(nq, ++seed))), d_k(to_bits(randn_bf16(nk, ++seed))),
        d_v(to_bits(randn_bf16(nk, ++seed))), d_dout(to_bits(randn_bf16(nq, ++seed))), d_out(nq), d_out2(nq), d_dq(nq),
        d_dk(nk), d_dv(nk);
    DeviceBuffer<float> d_lse(B * NH * T);
    DeviceBuffer<uint8_t> scratch(cu::attention_backward_scratch_bytes(B, T, NH));
    zero();
    cu::attention_forward(d_out.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr, amax.ptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_out))) << "attention_forward out";
    cu::attention_forward(d_out2.ptr, d_lse.ptr, d_q.ptr, d_k.ptr, d_v.ptr, B, T, NH, NKV, HS, nullptr);
    EXPECT_TRUE(same_bits(d_out.download(), d_out2.download()));
    zero();
    cu::attention_backward(d_dq.ptr, d_dk.ptr, d_dv.ptr, d_dout.ptr, d_out.ptr, d_q.ptr, d_k.ptr, d_v.ptr, d_lse.ptr, B,
                           T, NH, NKV, HS, scratch.ptr, nullptr, amax.ptr);
    EXPECT_EQ(read(0), max_abs(download_bf16(d_dv))) << "attention_backward dv";
  }
}

}  // namespace

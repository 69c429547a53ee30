// CUDA NVFP4 row fake quantization (src/kernels/cuda/quantize_rows.cu) against the CPU op run on the
// same BF16 values widened to FP32: bit for bit (outputs, row factors, flags), and the flagged-row
// count. Rows of every kind: Gaussian, outliers, zeros, tiny, huge, NaN, Inf, above a calibrated
// amax. Harness: test_ops_cuda_support.hpp.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace cuda_ops_test;

// N rows of K BF16 values, row n of kind n % 8: N(0, 1); outliers 100x; zeros; tiny (1e-30, the
// block scales underflow); huge (1e30); a NaN; an Inf; N(0, 1) with one value of 40.
std::vector<float> mixed_rows(int64_t N, int64_t K, uint64_t seed) {
  std::vector<float> x = randn_bf16(N * K, seed);
  std::mt19937_64 rng(seed + 1);
  for (int64_t n = 0; n < N; ++n) {
    float* r = x.data() + n * K;
    const int64_t at = static_cast<int64_t>(rng() % K);
    switch (n % 8) {
      case 1:
        for (int i = 0; i < 3; ++i) {
          float& v = r[rng() % K];
          v = bf16_round(v * 100.0f);
        }
        break;
      case 2:
        for (int64_t k = 0; k < K; ++k) r[k] = 0.0f;
        break;
      case 3:
        for (int64_t k = 0; k < K; ++k) r[k] = bf16_round(r[k] * 1e-30f);
        break;
      case 4:
        for (int64_t k = 0; k < K; ++k) r[k] = bf16_round(r[k] * 1e30f);
        break;
      case 5:
        r[at] = std::numeric_limits<float>::quiet_NaN();
        break;
      case 6:
        r[at] = (rng() & 1) ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
        break;
      case 7:
        r[at] = 40.0f;
        break;
      default:
        break;
    }
  }
  return x;
}

TEST(CudaOpsQuantizeRows, MatchesCpuBitForBit) {
  REQUIRE_GPU();
  struct Shape {
    int64_t N, K, offset;  // offset: BF16 elements before in and out (1: the scalar path)
  };
  uint64_t seed = 1000;
  for (const auto& s : {Shape{300, 2048, 0}, Shape{17, 16, 0}, Shape{40, 4096 + 48, 1}}) {
    const int64_t n = s.N * s.K, off = s.offset;
    const std::vector<float> x = mixed_rows(s.N, s.K, ++seed);
    std::vector<uint16_t> xbits(off, 0);
    const auto b = to_bits(x);
    xbits.insert(xbits.end(), b.begin(), b.end());
    // {}: each row's own amax; 10: rows 7 (a 40) and 4 (1e30) are above it; 1e31: none are; stored
    // factors of an amax of 10 as ModelOpt's input_scale gives them (encode = 1 / decode)
    using IS = nvfp4::fmt::Nvfp4InputScale;
    for (const IS input : {IS{}, IS{10.0f}, IS{1e31f}, IS{0.0f, 1.0f / (10.0f / 2688.0f), 10.0f / 2688.0f}})
      for (const bool fallback : {false, true}) {
        const float input_amax = input.amax > 0.0f ? input.amax : input.decode * 2688.0f;
        SCOPED_TRACE("N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) + " offset=" + std::to_string(off) +
                     " input_amax=" + std::to_string(input_amax) + " stored=" + std::to_string(input.encode > 0) +
                     " fallback=" + std::to_string(fallback));
        std::vector<float> want(n), want_factor(s.N);
        std::vector<uint8_t> want_flags(s.N);
        cpu::nvfp4_quantize_rows(want.data(), want_factor.data(), want_flags.data(), x.data(), s.N, s.K, input,
                                 fallback);
        uint32_t flagged = 0;
        for (const uint8_t f : want_flags) flagged += f != 0;
        if (std::fabs(input_amax - 10.0f) < 1e-3f) EXPECT_GT(flagged, 2u * (s.N / 8)) << "the calibrated amax flags saturating rows";

        DeviceBuffer<uint16_t> d_in(xbits), d_out(n + off), d_inplace(xbits);
        DeviceBuffer<float> d_factor(s.N), d_factor2(s.N);
        DeviceBuffer<uint8_t> d_flags(s.N);
        DeviceBuffer<uint32_t> count(std::vector<uint32_t>{5});
        cu::nvfp4_quantize_rows(d_out.ptr + off, d_factor.ptr, d_flags.ptr, d_in.ptr + off, s.N, s.K, input, fallback,
                                count.ptr, nullptr);
        cu::nvfp4_quantize_rows(d_inplace.ptr + off, d_factor2.ptr, nullptr, d_inplace.ptr + off, s.N, s.K,
                                input, fallback, nullptr, nullptr);
        const auto out = d_out.download();
        const std::vector<uint16_t> got(out.begin() + off, out.end());
        // The CPU values are BF16 values (decoded codes x scales, input rows, NaN): compare their bits.
        std::vector<uint32_t> got_bits(n), want_bits = f32_bits(want);
        for (int64_t i = 0; i < n; ++i) got_bits[i] = static_cast<uint32_t>(got[i]) << 16;
        const int64_t diff = first_diff(got_bits, want_bits);
        EXPECT_EQ(diff, -1) << "first differing value at row " << diff / s.K << ", column " << diff % s.K << ": got "
                            << (diff >= 0 ? bf16_decode(got[diff]) : 0.0f) << ", want "
                            << (diff >= 0 ? want[diff] : 0.0f);
        EXPECT_EQ(first_diff(f32_bits(d_factor.download()), f32_bits(want_factor)), -1) << "row_factor";
        EXPECT_EQ(first_diff(d_flags.download(), want_flags), -1) << "row_flags";
        EXPECT_EQ(count.download()[0], 5u + flagged) << "flagged_count adds the flagged rows";
        const auto inplace = d_inplace.download();
        EXPECT_EQ(first_diff(std::vector<uint16_t>(inplace.begin() + off, inplace.end()), got), -1) << "in place";
        EXPECT_EQ(first_diff(f32_bits(d_factor2.download()), f32_bits(want_factor)), -1) << "row_factor in place";
      }
  }
}

TEST(CudaOpsQuantizeRows, BadArgumentsAreExplained) {
  try {
    cu::nvfp4_quantize_rows(nullptr, nullptr, nullptr, nullptr, 2, 40, {}, true, nullptr, nullptr);
    FAIL() << "K = 40 was accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cuda::nvfp4_quantize_rows: K = 40 is not a multiple of 16, the NVFP4 block; pad the rows or keep this "
              "GEMM's input in BF16");
  }
  using IS = nvfp4::fmt::Nvfp4InputScale;
  for (const IS bad : {IS{-1.0f}, IS{0.0f, 1.0f, 0.0f}, IS{1.0f, 1.0f, 1.0f}})
    EXPECT_THROW(cu::nvfp4_quantize_rows(nullptr, nullptr, nullptr, nullptr, 2, 32, bad, true, nullptr, nullptr),
                 nvfp4::Error);
}

}  // namespace

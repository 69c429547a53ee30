// The harness of the CUDA training operators' tests (tests/cuda/test_<family>_cuda.cu, one per op
// family as in src/kernels/cuda/; one executable, test_cuda_ops): inputs, the tolerance rule,
// bit comparisons, and the shapes two files share.
//
// CUDA training operators (include/nvfp4/cuda_ops.hpp) against their CPU twins
// (src/kernels/cpu/ops.hpp), on fresh random inputs, odd shapes, both the vectorized and the
// scalar (misaligned / ragged) paths. Skips cleanly without a GPU.
//
// Inputs are rounded to BF16 once, on the host, and BOTH sides read those values: the CPU op
// in FP32, the CUDA op from the BF16 bits. What may then differ, and the tolerance it gives
// (one rule for every op, never tuned per tensor):
//
//   |gpu_i - ref_i| <= R * 2^-8 * |ref_i|  +  K * 2^-22 * mag_i  (+ op-specific terms below)
//
//   R * 2^-8 |ref|   R BF16 roundings of the output (half an ulp is at most 2^-8 relative; the
//                    CPU keeps FP32). R = 1 for a BF16 output, 0 for an FP32 one.
//   K * 2^-22 mag    FP32 re-association of a reduction of K terms: at most K * u32 * sum|terms|
//                    (u32 = 2^-24), times 4 for the tensor cores' alignment in cuBLASLt and a
//                    few-ulp expf/powf/sincosf; mag_i = sum of |terms| of element i, computed
//                    in double in the test from the same inputs.
// Attention's backward adds 2 * 2^-8 * (its terms scaled by sum|dO * O|): D = rowsum(dO * O)
// is computed from the BF16 forward output, as FlashAttention does (the CPU op uses exact att).
// Attention runs on the tensor cores with BF16 operands, so the probabilities P (in P·V and
// Pᵀ·dO) and dS (in dS·K and dSᵀ·Q) are rounded to BF16 before their product, as FlashAttention
// does: one more rounding of every term, i.e. + 2^-8 * mag_i for out, dq, dk and dv.
// Ops whose arithmetic is the same sequence of IEEE operations on both sides are compared bit
// for bit: encoder (forward and backward), residual, AdamW, the gradient norm, conversions.
// Every output buffer is poisoned (NaN bits) first, so an unwritten element cannot pass.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "support/cuda_test.hpp"
#include "support/test_support.hpp"

namespace cuda_ops_test {

namespace cu = nvfp4::cuda;
namespace cpu = nvfp4::cpu;
using nvfp4::fmt::bf16_decode;
using nvfp4::fmt::bf16_encode;
using nvfp4::fmt::bf16_round;

constexpr double kBf16 = 1.0 / 256.0;        // 2^-8: one BF16 rounding, relative
constexpr double kReassoc = 1.0 / 4194304.0;  // 2^-22 per term of an FP32 reduction

using nvfp4::test::DeviceBuffer;

// N(0, scale^2) values rounded to BF16 (what both sides read).
inline std::vector<float> randn_bf16(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = bf16_round(d(rng));
  return x;
}

// FP32 values (parameters, gradient accumulators): not rounded.
inline std::vector<float> randn_f32(size_t n, uint64_t seed, float scale = 1.0f) { return nvfp4::test::randn(n, seed, scale); }

inline std::vector<uint16_t> to_bits(const std::vector<float>& x) {
  std::vector<uint16_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = bf16_encode(x[i]);
  return b;
}

inline std::vector<float> from_bits(const std::vector<uint16_t>& b) {
  std::vector<float> x(b.size());
  for (size_t i = 0; i < b.size(); ++i) x[i] = bf16_decode(b[i]);
  return x;
}

inline std::vector<float> download_bf16(const DeviceBuffer<uint16_t>& d) { return from_bits(d.download()); }

inline std::vector<float> abs_of(const std::vector<float>& x) {
  std::vector<float> a(x.size());
  for (size_t i = 0; i < x.size(); ++i) a[i] = std::fabs(x[i]);
  return a;
}

// The tolerance rule above: |gpu - ref| <= R * 2^-8 * |ref| + extra_i (extra empty: 0).
inline ::testing::AssertionResult close(const char* what, const std::vector<float>& gpu, const std::vector<float>& ref,
                                 double R, const std::vector<double>& extra) {
  if (gpu.size() != ref.size()) return ::testing::AssertionFailure() << what << ": size mismatch";
  size_t bad = 0;
  double worst = 0.0;
  std::ostringstream first;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double tol = R * kBf16 * std::fabs(ref[i]) + (extra.empty() ? 0.0 : extra[i]);
    const double err = std::fabs(static_cast<double>(gpu[i]) - ref[i]);
    const bool ok = std::isfinite(gpu[i]) && err <= tol;
    if (std::isfinite(gpu[i]) && tol > 0) worst = std::max(worst, err / tol);
    if (!ok && bad++ < 5)
      first << "\n  [" << i << "] gpu " << gpu[i] << " ref " << ref[i] << " err " << err << " tol " << tol;
  }
  if (bad) return ::testing::AssertionFailure() << what << ": " << bad << " of " << ref.size() << " outside" << first.str();
  std::printf("    %-22s worst err/tol %.3f over %zu elements\n", what, worst, ref.size());
  return ::testing::AssertionSuccess();
}

// K * 2^-22 * mag_i
inline std::vector<double> reassoc(double K, const std::vector<double>& mag) {
  std::vector<double> e(mag.size());
  for (size_t i = 0; i < mag.size(); ++i) e[i] = K * kReassoc * mag[i];
  return e;
}

inline std::vector<double> reassoc(double K, const std::vector<float>& mag) {
  return reassoc(K, std::vector<double>(mag.begin(), mag.end()));
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

inline std::vector<uint32_t> f32_bits(const std::vector<float>& x) {
  std::vector<uint32_t> b(x.size());
  std::memcpy(b.data(), x.data(), x.size() * sizeof(float));
  return b;
}

// Index of the first differing element, or -1.
template <typename T>
int64_t first_diff(const std::vector<T>& a, const std::vector<T>& b) {
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<int64_t>(i);
  return a.size() == b.size() ? -1 : static_cast<int64_t>(std::min(a.size(), b.size()));
}

// ---- shapes of the RMSNorm and RoPE tests, which the producer-amax test (test_ops_cuda.cu) reuses ----

struct RowShape {
  int64_t N, C;
};

// C = 1000 is not a multiple of 8: the scalar path.
const RowShape kNormShapes[] = {{77, 256}, {300, 1000}, {2048, 768}};

struct HeadShape {
  int64_t B, T, NH, HS;
};

const HeadShape kRopeShapes[] = {{2, 100, 4, 64}, {1, 300, 3, 128}, {3, 17, 2, 6}};

}  // namespace cuda_ops_test

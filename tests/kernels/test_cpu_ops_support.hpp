// The harness of the CPU reference operators' tests (tests/kernels/test_<family>.cpp, one per op
// family as in src/kernels/cpu/; one executable, test_cpu_ops).
//
// What this is: every op with a backward checked against central finite differences of a
// DOUBLE-precision forward written here, independently of the ops; the FP32 forward checked
// against the same double forward; then the properties a model relies on (BLAS == naive
// loops, causality, GQA == MHA on repeated heads, RoPE convention, log V, AdamW by hand,
// accumulation, determinism across runs and thread counts, errors naming the position).
//
// Tolerance (one rule for every op, style.md #10): an FP32 result r computed through a chain
// of at most K roundings (K = the longest reduction in that op plus a few elementwise steps,
// stated per case) is accepted when |r - ref| <= 8 * K * eps32 * max|ref| over the tensor,
// with eps32 = 2^-23. The finite differences (h = 1e-5, in double) are accurate to ~1e-10,
// far below that, so the tolerance measures the FP32 op alone; a wrong formula is off by O(1).
#pragma once

#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "nvfp4/error.hpp"

namespace cpu_ops_test {

namespace cpu = nvfp4::cpu;

using Vf = std::vector<float>;
using Vd = std::vector<double>;
using Ints = std::vector<int32_t>;

constexpr double kEps32 = FLT_EPSILON;  // 2^-23
constexpr double kFdStep = 1e-5;

inline Vf randn(int64_t n, uint64_t seed, float sigma = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  Vf v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

inline Ints randint(int64_t n, int32_t hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, hi - 1);
  Ints v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

inline Vd to_double(const Vf& v) { return Vd(v.begin(), v.end()); }

inline bool same_bits(const Vf& a, const Vf& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- the comparison rule --------------------------------------------------------------------

struct Closeness {
  double worst = 0.0;  // max over elements of |got - want| / tol (<= 1 passes)
  size_t at = 0;
  double tol = 0.0;
  std::string report(const Vf& got, const Vd& want) const {
    if (got.empty()) return "empty";
    return "worst element " + std::to_string(at) + ": got " + std::to_string(got[at]) + ", want " +
           std::to_string(want[at]) + ", tolerance " + std::to_string(tol) + " (error/tolerance " +
           std::to_string(worst) + ")";
  }
};

// |got - want| <= 8 * K * eps32 * max|want|, element by element.
inline Closeness compare(const Vf& got, const Vd& want, double K) {
  EXPECT_EQ(got.size(), want.size());
  double scale = 0.0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  Closeness c;
  c.tol = 8.0 * K * kEps32 * scale;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]);
    const double ratio = c.tol > 0 ? err / c.tol : (err > 0 ? INFINITY : 0.0);
    if (!(ratio <= c.worst)) {  // also catches NaN
      c.worst = std::isnan(ratio) ? INFINITY : ratio;
      c.at = i;
    }
  }
  return c;
}

#define EXPECT_CLOSE(got, want, K, what)                                 \
  do {                                                                   \
    const Closeness c_ = compare((got), (want), (K));                   \
    EXPECT_LE(c_.worst, 1.0) << (what) << ": " << c_.report((got), (want)); \
  } while (0)

// ---- finite-difference harness ------------------------------------------------------------------

// One op under test. The scalar loss is L = sum(out * R) with R ~ N(0, 1) (or a constant R
// where the op's backward takes a scalar upstream gradient, as the cross-entropy does).
struct GradCase {
  std::string name;
  std::vector<Vf> inputs;  // the differentiable inputs; integer inputs are captured
  std::vector<std::string> input_names;
  double K = 1;           // longest FP32 rounding chain of one output or gradient element
  bool constant_R = false;
  std::function<Vd(const std::vector<Vd>&)> ref;         // double forward
  std::function<Vf(const std::vector<Vf>&)> fwd;         // the FP32 op's forward
  // the FP32 op's backward: ACCUMULATES into grads (shaped like inputs), dout shaped like out
  std::function<void(std::vector<Vf>& grads, const Vf& dout, const std::vector<Vf>& in)> bwd;
};

inline std::vector<Vd> finite_difference_grads(const GradCase& gc, const Vd& R) {
  std::vector<Vd> x;
  for (const auto& in : gc.inputs) x.push_back(to_double(in));
  auto loss = [&] {
    const Vd out = gc.ref(x);
    double L = 0.0;
    for (size_t i = 0; i < out.size(); ++i) L += out[i] * R[i];
    return L;
  };
  std::vector<Vd> g;
  for (auto& xi : x) {
    Vd gi(xi.size());
    for (size_t j = 0; j < xi.size(); ++j) {
      const double saved = xi[j];
      xi[j] = saved + kFdStep;
      const double Lp = loss();
      xi[j] = saved - kFdStep;
      const double Lm = loss();
      xi[j] = saved;
      gi[j] = (Lp - Lm) / (2.0 * kFdStep);
    }
    g.push_back(std::move(gi));
  }
  return g;
}

inline void run_grad_case(const GradCase& gc) {
  SCOPED_TRACE(gc.name);
  // forward: FP32 vs double
  std::vector<Vd> xd;
  for (const auto& in : gc.inputs) xd.push_back(to_double(in));
  const Vd ref_out = gc.ref(xd);
  const Vf out = gc.fwd(gc.inputs);
  ASSERT_EQ(out.size(), ref_out.size());
  EXPECT_CLOSE(out, ref_out, gc.K, "forward");

  // upstream gradient R and the finite-difference gradients of L = sum(out * R)
  Vf Rf = gc.constant_R ? Vf(out.size(), 0.37f) : randn(static_cast<int64_t>(out.size()), 7);
  const Vd R = to_double(Rf);
  const std::vector<Vd> fd = finite_difference_grads(gc, R);

  // backward into zeroed buffers, then once more into the same buffers: accumulation doubles it
  std::vector<Vf> grads;
  for (const auto& in : gc.inputs) grads.emplace_back(in.size(), 0.0f);
  gc.bwd(grads, Rf, gc.inputs);
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_CLOSE(grads[i], fd[i], gc.K, "d" + gc.input_names[i]);
  gc.bwd(grads, Rf, gc.inputs);
  for (size_t i = 0; i < grads.size(); ++i) {
    Vd twice = fd[i];
    for (auto& g : twice) g *= 2.0;
    EXPECT_CLOSE(grads[i], twice, gc.K + 1, "d" + gc.input_names[i] + " after a second, accumulating call");
  }
}

// ---- small shapes for the gradient checks ---------------------------------------------------------

constexpr int64_t B = 2, T = 5, NH = 4, NKV = 2, HS = 8, C = 16, V = 23, F = 24;
constexpr int64_t N = B * T;

}  // namespace cpu_ops_test

// CPU reference operators (src/kernels/cpu/ops.hpp).
//
// What this is: every op with a backward checked against central finite differences of a
// DOUBLE-precision forward written here, independently of ops.cpp; the FP32 forward checked
// against the same double forward; then the properties a model relies on (BLAS == naive
// loops, causality, GQA == MHA on repeated heads, RoPE convention, log V, AdamW by hand,
// accumulation, determinism across runs and thread counts, errors naming the position).
//
// Tolerance (one rule for every op, style.md #10): an FP32 result r computed through a chain
// of at most K roundings (K = the longest reduction in that op plus a few elementwise steps,
// stated per case) is accepted when |r - ref| <= 8 * K * eps32 * max|ref| over the tensor,
// with eps32 = 2^-23. The finite differences (h = 1e-5, in double) are accurate to ~1e-10,
// far below that, so the tolerance measures the FP32 op alone; a wrong formula is off by O(1).
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

namespace {

namespace cpu = nvfp4::cpu;
using Vf = std::vector<float>;
using Vd = std::vector<double>;
using Ints = std::vector<int32_t>;

constexpr double kEps32 = FLT_EPSILON;  // 2^-23
constexpr double kFdStep = 1e-5;

Vf randn(int64_t n, uint64_t seed, float sigma = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  Vf v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

Ints randint(int64_t n, int32_t hi, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, hi - 1);
  Ints v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

Vd to_double(const Vf& v) { return Vd(v.begin(), v.end()); }

bool same_bits(const Vf& a, const Vf& b) {
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
Closeness compare(const Vf& got, const Vd& want, double K) {
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

std::vector<Vd> finite_difference_grads(const GradCase& gc, const Vd& R) {
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

void run_grad_case(const GradCase& gc) {
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

// ---- double-precision reference forwards (independent of ops.cpp) -------------------------------

Vd ref_matmul(const Vd& inp, const Vd& w, int64_t N, int64_t C, int64_t OC) {
  Vd out(static_cast<size_t>(N * OC), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t c = 0; c < C; ++c) out[n * OC + o] += inp[n * C + c] * w[o * C + c];
  return out;
}

Vd ref_rmsnorm(const Vd& inp, const Vd& w, int64_t N, int64_t C, double eps) {
  Vd out(inp.size());
  for (int64_t n = 0; n < N; ++n) {
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) ss += inp[n * C + c] * inp[n * C + c];
    const double r = 1.0 / std::sqrt(ss / C + eps);
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = inp[n * C + c] * r * w[c];
  }
  return out;
}

// HF Llama: cos/sin of cat(freqs, freqs), q * cos + rotate_half(q) * sin, rotate_half(x) = cat(-x2, x1).
Vd ref_rope(const Vd& inp, int64_t B, int64_t T, int64_t NH, int64_t HS, double theta) {
  Vd out(inp.size());
  const int64_t half = HS / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t d = 0; d < HS; ++d) {
          const int64_t base = ((b * T + t) * NH + h) * HS;
          const double angle = t / std::pow(theta, 2.0 * (d % half) / HS);
          const double rot = d < half ? -inp[base + d + half] : inp[base + d - half];
          out[base + d] = inp[base + d] * std::cos(angle) + rot * std::sin(angle);
        }
  return out;
}

// Plain causal attention written head by head; kv head of query head h is h / (NH / NKV).
Vd ref_attention(const Vd& q, const Vd& k, const Vd& v, int64_t B, int64_t T, int64_t NH, int64_t NKV,
                 int64_t HS) {
  Vd out(static_cast<size_t>(B * T * NH * HS), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NH; ++h) {
      const int64_t kvh = h / (NH / NKV);
      for (int64_t t = 0; t < T; ++t) {
        Vd s(static_cast<size_t>(t + 1));
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          double dot = 0.0;
          for (int64_t i = 0; i < HS; ++i) dot += q[((b * T + t) * NH + h) * HS + i] * k[((b * T + t2) * NKV + kvh) * HS + i];
          s[t2] = dot / std::sqrt(static_cast<double>(HS));
        }
        double sum = 0.0;
        for (auto& x : s) sum += (x = std::exp(x));  // no max subtraction needed in double here
        for (int64_t t2 = 0; t2 <= t; ++t2)
          for (int64_t i = 0; i < HS; ++i)
            out[((b * T + t) * NH + h) * HS + i] += s[t2] / sum * v[((b * T + t2) * NKV + kvh) * HS + i];
      }
    }
  return out;
}

Vd ref_swiglu(const Vd& gate, const Vd& up) {
  Vd out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) out[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
  return out;
}

Vd ref_encoder(const Ints& tokens, const Vd& wte, int64_t C) {
  Vd out;
  for (int32_t tok : tokens)
    for (int64_t c = 0; c < C; ++c) out.push_back(wte[tok * C + c]);
  return out;
}

Vd ref_crossentropy(const Vd& logits, const Ints& targets, int64_t N, int64_t V) {
  Vd losses(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0.0;
    for (int64_t i = 0; i < V; ++i) sum += std::exp(logits[n * V + i]);
    losses[n] = std::log(sum) - logits[n * V + targets[n]];
  }
  return losses;
}

// ---- small shapes for the gradient checks ---------------------------------------------------------

constexpr int64_t B = 2, T = 5, NH = 4, NKV = 2, HS = 8, C = 16, V = 23, F = 24;
constexpr int64_t N = B * T;

// ---- gradient checks, one per op with a backward --------------------------------------------------

TEST(CpuOpsGrad, Matmul) {
  constexpr int64_t OC = 12;
  GradCase gc;
  gc.name = "matmul";
  gc.inputs = {randn(N * C, 1), randn(OC * C, 2)};
  gc.input_names = {"inp", "weight"};
  gc.K = C;  // the longest reduction: C (forward), OC (dinp), N (dweight)
  gc.ref = [](const std::vector<Vd>& x) { return ref_matmul(x[0], x[1], N, C, OC); };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out(N * OC);
    cpu::matmul_forward(out.data(), x[0].data(), x[1].data(), N, C, OC);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
    cpu::matmul_backward(g[0].data(), g[1].data(), dout.data(), x[0].data(), x[1].data(), N, C, OC);
  };
  run_grad_case(gc);
}

TEST(CpuOpsGrad, RmsNorm) {
  constexpr float eps = 1e-5f;
  GradCase gc;
  gc.name = "rmsnorm";
  gc.inputs = {randn(N * C, 3), randn(C, 4)};
  gc.input_names = {"inp", "weight"};
  gc.K = C + 8;
  gc.ref = [](const std::vector<Vd>& x) { return ref_rmsnorm(x[0], x[1], N, C, eps); };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out(N * C), rstd(N);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x[0].data(), x[1].data(), N, C, eps);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
    Vf out(N * C), rstd(N);
    cpu::rmsnorm_forward(out.data(), rstd.data(), x[0].data(), x[1].data(), N, C, eps);
    cpu::rmsnorm_backward(g[0].data(), g[1].data(), dout.data(), x[0].data(), x[1].data(), rstd.data(), N, C);
  };
  run_grad_case(gc);
}

TEST(CpuOpsGrad, Rope) {
  GradCase gc;
  gc.name = "rope";
  gc.inputs = {randn(B * T * NH * HS, 5)};
  gc.input_names = {"inp"};
  gc.K = 8;
  gc.ref = [](const std::vector<Vd>& x) { return ref_rope(x[0], B, T, NH, HS, 10000.0); };
  gc.fwd = [](const std::vector<Vf>& x) {
    Vf out(x[0].size());
    cpu::rope_forward(out.data(), x[0].data(), B, T, NH, HS);
    return out;
  };
  gc.bwd = [](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>&) {
    cpu::rope_backward(g[0].data(), dout.data(), B, T, NH, HS);
  };
  run_grad_case(gc);
}

// Grouped (NKV = 2), plain multi-head (NKV = NH) and multi-query (NKV = 1) attention.
TEST(CpuOpsGrad, Attention) {
  for (int64_t nkv : {NKV, NH, int64_t{1}}) {
    GradCase gc;
    gc.name = "attention NH=" + std::to_string(NH) + " NKV=" + std::to_string(nkv);
    gc.inputs = {randn(B * T * NH * HS, 6), randn(B * T * nkv * HS, 7), randn(B * T * nkv * HS, 8)};
    gc.input_names = {"q", "k", "v"};
    gc.K = HS + 3 * T + 8;  // q·k, softmax sum, weighted sum; backward adds a dot over T
    gc.ref = [nkv](const std::vector<Vd>& x) { return ref_attention(x[0], x[1], x[2], B, T, NH, nkv, HS); };
    gc.fwd = [nkv](const std::vector<Vf>& x) {
      Vf out(B * T * NH * HS), att(B * NH * T * T);
      cpu::attention_forward(out.data(), att.data(), x[0].data(), x[1].data(), x[2].data(), B, T, NH, nkv, HS);
      return out;
    };
    gc.bwd = [nkv](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
      Vf out(B * T * NH * HS), att(B * NH * T * T);
      cpu::attention_forward(out.data(), att.data(), x[0].data(), x[1].data(), x[2].data(), B, T, NH, nkv, HS);
      Vf scratch(att.size(), NAN);  // must be overwritten, never read
      cpu::attention_backward(g[0].data(), g[1].data(), g[2].data(), scratch.data(), dout.data(), x[0].data(),
                              x[1].data(), x[2].data(), att.data(), B, T, NH, nkv, HS);
    };
    run_grad_case(gc);
  }
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

TEST(CpuOpsGrad, CrossEntropy) {
  const Ints targets = randint(N, V, 13);
  GradCase gc;
  gc.name = "crossentropy";
  gc.inputs = {randn(N * V, 14, 3.0f)};
  gc.input_names = {"logits"};
  gc.K = V + 8;
  gc.constant_R = true;  // the backward takes one scalar dloss_scale: L = 0.37 * sum(losses)
  gc.ref = [targets](const std::vector<Vd>& x) { return ref_crossentropy(x[0], targets, N, V); };
  gc.fwd = [targets](const std::vector<Vf>& x) {
    Vf losses(N);
    cpu::crossentropy_forward(losses.data(), x[0].data(), targets.data(), N, V);
    return losses;
  };
  gc.bwd = [targets](std::vector<Vf>& g, const Vf& dout, const std::vector<Vf>& x) {
    cpu::crossentropy_softmax_backward(g[0].data(), x[0].data(), targets.data(), N, V, dout[0]);
  };
  run_grad_case(gc);
}

// The harness must be able to fail: a gradient off by 0.1% in one element, a gradient with
// the wrong sign, a backward that overwrites instead of accumulating are all rejected.
TEST(CpuOpsGrad, HarnessRejectsWrongGradients) {
  const Vf inp = randn(N * C, 1), w = randn(12 * C, 2), dout = randn(N * 12, 3);
  Vf dinp(N * C, 0.0f);
  cpu::matmul_backward(dinp.data(), nullptr, dout.data(), inp.data(), w.data(), N, C, 12);
  Vd want = to_double(dinp);
  EXPECT_LE(compare(dinp, want, C).worst, 1.0);
  double scale = 0.0;
  for (double x : want) scale = std::max(scale, std::abs(x));
  Vf off = dinp;
  off[17] += static_cast<float>(1e-3 * scale);
  EXPECT_GT(compare(off, want, C).worst, 1.0);
  Vf neg = dinp;
  for (auto& x : neg) x = -x;
  EXPECT_GT(compare(neg, want, C).worst, 1.0);
  Vf nan = dinp;
  nan[3] = NAN;
  EXPECT_GT(compare(nan, want, C).worst, 1.0);
}

// ---- matmul ----------------------------------------------------------------------------------------

// The BLAS call (row-major, weight transposed, leading dimensions) against three plain loops.
// Bound: each of the two FP32 dot products is within gamma_C * sum_c |x_c w_c| of the exact
// value (gamma_C = C u / (1 - C u), u = 2^-24), so they differ by at most twice that.
TEST(CpuOpsMatmul, BlasMatchesNaive) {
  struct Shape { int64_t n, c, oc; };
  for (const Shape s : {Shape{37, 53, 29}, Shape{1, 1, 1}, Shape{64, 300, 70}, Shape{5, 1000, 3}}) {
    SCOPED_TRACE("N=" + std::to_string(s.n) + " C=" + std::to_string(s.c) + " OC=" + std::to_string(s.oc));
    const Vf x = randn(s.n * s.c, 21), w = randn(s.oc * s.c, 22);
    Vf blas(s.n * s.oc, NAN), naive(s.n * s.oc, NAN);  // NaN: beta = 0 must not read out
    cpu::matmul_forward(blas.data(), x.data(), w.data(), s.n, s.c, s.oc);
    cpu::matmul_forward_naive(naive.data(), x.data(), w.data(), s.n, s.c, s.oc);
    const double u = kEps32 / 2, gamma = s.c * u / (1 - s.c * u);
    int bad = 0;
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t o = 0; o < s.oc; ++o) {
        double abs_sum = 0.0;
        for (int64_t c = 0; c < s.c; ++c) abs_sum += std::abs(double(x[n * s.c + c]) * w[o * s.c + c]);
        const double diff = std::abs(double(blas[n * s.oc + o]) - naive[n * s.oc + o]);
        if (!(diff <= 2 * gamma * abs_sum)) ++bad;
      }
    EXPECT_EQ(bad, 0);
  }
}

TEST(CpuOpsMatmul, EmptyShapesAndSkippedGradients) {
  Vf out(6, NAN);
  cpu::matmul_forward(out.data(), nullptr, nullptr, 2, 0, 3);  // empty contraction: zeros
  for (float o : out) EXPECT_EQ(o, 0.0f);
  cpu::matmul_forward(nullptr, nullptr, nullptr, 0, 4, 3);    // no rows: nothing happens
  // dinp = nullptr: only dweight is computed
  const Vf x = randn(4 * 3, 1), w = randn(2 * 3, 2), dout = randn(4 * 2, 3);
  Vf dw(2 * 3, 0.0f);
  cpu::matmul_backward(nullptr, dw.data(), dout.data(), x.data(), w.data(), 4, 3, 2);
  Vd want(6, 0.0);
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t n = 0; n < 4; ++n) want[o * 3 + c] += double(dout[n * 2 + o]) * x[n * 3 + c];
  EXPECT_CLOSE(dw, want, 4, "dweight");
  EXPECT_THROW(cpu::matmul_forward(out.data(), x.data(), w.data(), -1, 3, 2), nvfp4::Error);
}

// The CLI prints "nvfp4: " + what(): an op's message names the op and the value, and must not
// carry that prefix itself (it did: "nvfp4: nvfp4: cpu::matmul_forward: ...").
TEST(CpuOpsMatmul, ErrorNamesTheOpWithoutTheCliPrefix) {
  try {
    cpu::matmul_forward(nullptr, nullptr, nullptr, -1, 3, 2);
    FAIL() << "N = -1 was accepted";
  } catch (const nvfp4::Error& e) {
    EXPECT_EQ(std::string(e.what()), "cpu::matmul_forward: N = -1 is negative");
  }
}

// ---- attention ----------------------------------------------------------------------------------

// Changing the keys and values of a future position leaves every earlier output bit-identical
// (and changes the outputs at and after it, so the test sees the change at all).
TEST(CpuOpsAttention, CausalFutureDoesNotLeak) {
  const Vf q = randn(B * T * NH * HS, 31);
  Vf k = randn(B * T * NKV * HS, 32), v = randn(B * T * NKV * HS, 33);
  Vf out1(B * T * NH * HS), att1(B * NH * T * T), out2(out1.size()), att2(att1.size());
  cpu::attention_forward(out1.data(), att1.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, HS);
  const int64_t tf = 3;  // the "future" position
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < NKV * HS; ++i) {
      k[(b * T + tf) * NKV * HS + i] += 1.5f;
      v[(b * T + tf) * NKV * HS + i] -= 2.0f;
    }
  cpu::attention_forward(out2.data(), att2.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, HS);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const size_t at = static_cast<size_t>((b * T + t) * NH * HS), len = static_cast<size_t>(NH * HS);
      const bool same = std::memcmp(out1.data() + at, out2.data() + at, len * sizeof(float)) == 0;
      if (t < tf) {
        EXPECT_TRUE(same) << "b=" << b << " t=" << t << " saw position " << tf;
      } else {
        EXPECT_FALSE(same) << "b=" << b << " t=" << t << " did not see position " << tf;
      }
    }
  // the saved probabilities: exactly zero above the diagonal, each row sums to 1
  for (int64_t r = 0; r < B * NH * T; ++r) {
    const int64_t t = r % T;
    double sum = 0.0;
    for (int64_t t2 = 0; t2 < T; ++t2) {
      if (t2 > t) {
        EXPECT_EQ(att1[r * T + t2], 0.0f);
      }
      sum += att1[r * T + t2];
    }
    EXPECT_NEAR(sum, 1.0, 8 * T * kEps32);
  }
}

// k, v (B, T, NKV, HS) -> (B, T, NH, HS) with each kv head repeated NH/NKV times (HF repeat_kv).
Vf repeat_kv(const Vf& x, int64_t nkv) {
  Vf out(B * T * NH * HS);
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < HS; ++i) out[(bt * NH + h) * HS + i] = x[(bt * nkv + h / (NH / nkv)) * HS + i];
  return out;
}

// Grouped-query attention is multi-head attention on repeated kv heads: the forward is
// bit-identical, and dk/dv are the sums over each group of the multi-head dk/dv.
TEST(CpuOpsAttention, GqaEqualsMhaOnRepeatedHeads) {
  const Vf q = randn(B * T * NH * HS, 41), k = randn(B * T * NKV * HS, 42), v = randn(B * T * NKV * HS, 43);
  const Vf dout = randn(B * T * NH * HS, 44);
  const Vf k_rep = repeat_kv(k, NKV), v_rep = repeat_kv(v, NKV);
  Vf out_g(B * T * NH * HS), att_g(B * NH * T * T), out_m(out_g.size()), att_m(att_g.size()), scratch(att_g.size());
  cpu::attention_forward(out_g.data(), att_g.data(), q.data(), k.data(), v.data(), B, T, NH, NKV, HS);
  cpu::attention_forward(out_m.data(), att_m.data(), q.data(), k_rep.data(), v_rep.data(), B, T, NH, NH, HS);
  EXPECT_TRUE(same_bits(out_g, out_m));
  EXPECT_TRUE(same_bits(att_g, att_m));

  Vf dq_g(q.size(), 0.0f), dk_g(k.size(), 0.0f), dv_g(v.size(), 0.0f);
  Vf dq_m(q.size(), 0.0f), dk_m(k_rep.size(), 0.0f), dv_m(v_rep.size(), 0.0f);
  cpu::attention_backward(dq_g.data(), dk_g.data(), dv_g.data(), scratch.data(), dout.data(), q.data(), k.data(),
                          v.data(), att_g.data(), B, T, NH, NKV, HS);
  cpu::attention_backward(dq_m.data(), dk_m.data(), dv_m.data(), scratch.data(), dout.data(), q.data(),
                          k_rep.data(), v_rep.data(), att_m.data(), B, T, NH, NH, HS);
  EXPECT_TRUE(same_bits(dq_g, dq_m));
  Vd dk_sum(k.size(), 0.0), dv_sum(v.size(), 0.0);
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < HS; ++i) {
        dk_sum[(bt * NKV + h / (NH / NKV)) * HS + i] += dk_m[(bt * NH + h) * HS + i];
        dv_sum[(bt * NKV + h / (NH / NKV)) * HS + i] += dv_m[(bt * NH + h) * HS + i];
      }
  EXPECT_CLOSE(dk_g, dk_sum, T * NH / NKV, "dk");
  EXPECT_CLOSE(dv_g, dv_sum, T * NH / NKV, "dv");
}

TEST(CpuOpsAttention, RejectsHeadsNotAMultipleOfKvHeads) {
  Vf buf(1024);
  EXPECT_THROW(cpu::attention_forward(buf.data(), buf.data(), buf.data(), buf.data(), buf.data(), 1, 2, 3, 2, 4),
               nvfp4::Error);
}

// ---- RoPE ----------------------------------------------------------------------------------------------

TEST(CpuOpsRope, PositionZeroIsIdentityAndNormsArePreserved) {
  constexpr int64_t T6 = 6;
  const Vf x = randn(B * T6 * NH * HS, 51);
  Vf y(x.size());
  cpu::rope_forward(y.data(), x.data(), B, T6, NH, HS);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T6; ++t)
      for (int64_t h = 0; h < NH; ++h) {
        const int64_t base = ((b * T6 + t) * NH + h) * HS;
        double nx = 0.0, ny = 0.0;
        for (int64_t i = 0; i < HS; ++i) {
          nx += double(x[base + i]) * x[base + i];
          ny += double(y[base + i]) * y[base + i];
          if (t == 0) {
            EXPECT_EQ(std::bit_cast<uint32_t>(y[base + i]), std::bit_cast<uint32_t>(x[base + i]));
          }
        }
        EXPECT_NEAR(std::sqrt(ny), std::sqrt(nx), 8 * kEps32 * std::sqrt(nx)) << "b=" << b << " t=" << t;
      }
  // in place gives the same bits
  Vf z = x;
  cpu::rope_forward(z.data(), z.data(), B, T6, NH, HS);
  EXPECT_TRUE(same_bits(z, y));
}

// rotate_half, not interleaved: at t = 1, e_0 rotates by 1 radian into component HS/2 (not 1).
TEST(CpuOpsRope, PairsIWithIPlusHalf) {
  Vf x(2 * HS, 0.0f);  // (B=1, T=2, NH=1, HS)
  x[HS + 0] = 1.0f;    // position 1, component 0
  Vf y(x.size());
  cpu::rope_forward(y.data(), x.data(), 1, 2, 1, HS);
  EXPECT_NEAR(y[HS + 0], std::cos(1.0), 4 * kEps32);
  EXPECT_NEAR(y[HS + HS / 2], std::sin(1.0), 4 * kEps32);
  for (int64_t i = 1; i < HS; ++i)
    if (i != HS / 2) {
      EXPECT_EQ(y[HS + i], 0.0f) << i;
    }
  // the last pair turns slowest: angle = 1 / theta^((HS-2)/HS)
  Vf x2(2 * HS, 0.0f), y2(x2.size());
  x2[HS + HS / 2 - 1] = 1.0f;
  cpu::rope_forward(y2.data(), x2.data(), 1, 2, 1, HS);
  const double a = 1.0 / std::pow(10000.0, double(HS - 2) / HS);
  EXPECT_NEAR(y2[HS + HS / 2 - 1], std::cos(a), 4 * kEps32);
  EXPECT_NEAR(y2[HS + HS - 1], std::sin(a), 4 * kEps32);
  EXPECT_THROW(cpu::rope_forward(y.data(), x.data(), 1, 2, 1, 7), nvfp4::Error);  // odd HS
}

// ---- cross-entropy and embedding -------------------------------------------------------------------

TEST(CpuOpsCrossEntropy, UniformLogitsGiveLogV) {
  for (int64_t vocab : {int64_t{2}, V, int64_t{50257}}) {
    SCOPED_TRACE("V=" + std::to_string(vocab));
    const Vf logits(3 * vocab, 3.75f);
    const Ints targets = {0, static_cast<int32_t>(vocab / 2), static_cast<int32_t>(vocab - 1)};
    Vf losses(3);
    cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), 3, vocab);
    for (float l : losses) EXPECT_NEAR(l, std::log(double(vocab)), 4 * kEps32 * std::log(double(vocab)) + 1e-6);
    Vf dlogits(logits.size(), 0.0f);
    cpu::crossentropy_softmax_backward(dlogits.data(), logits.data(), targets.data(), 3, vocab, 0.5f);
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t i = 0; i < vocab; ++i) {
        const double want = ((1.0 / vocab) - (i == targets[n] ? 1.0 : 0.0)) * 0.5;
        ASSERT_NEAR(dlogits[n * vocab + i], want, 1e-6 * std::abs(want) + 1e-9) << n << " " << i;
      }
  }
}

// Huge logits: the max subtraction keeps the loss finite.
TEST(CpuOpsCrossEntropy, StableForLargeLogits) {
  const Vf logits = {1000.0f, 999.0f, -1000.0f};
  const Ints target = {1};
  float loss = NAN;
  cpu::crossentropy_forward(&loss, logits.data(), target.data(), 1, 3);
  EXPECT_NEAR(loss, 1.0 + std::log1p(std::exp(-1.0)), 1e-5);
}

TEST(CpuOpsCrossEntropy, TargetOutsideVocabularyNamesThePosition) {
  const Vf logits(4 * V, 0.0f);
  Vf losses(4), dlogits(logits.size());
  for (int32_t bad : {static_cast<int32_t>(V), -1}) {
    const Ints targets = {0, 1, 2, bad};
    try {
      cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), 4, V);
      ADD_FAILURE() << "no error for target " << bad;
    } catch (const nvfp4::Error& e) {
      EXPECT_NE(std::string(e.what()).find("position 3"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::to_string(bad)), std::string::npos) << e.what();
    }
    EXPECT_THROW(cpu::crossentropy_softmax_backward(dlogits.data(), logits.data(), targets.data(), 4, V, 1.0f),
                 nvfp4::Error);
  }
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

// ---- AdamW and the global norm ---------------------------------------------------------------------

// By hand, with hyperparameters that are exact binary fractions so that m, v and the bias
// corrections are exact in FP32: lr 1/8, betas (7/8, 15/16), eps 2^-20, weight decay 1/16.
//  step 1, p = 1, g = 1/2:  m = 1/16, v = 1/64, mhat = 1/2, vhat = 1/4,
//          p = 1 - 1/8 * (1/2 / (1/2 + 2^-20) + 1/16 * 1) = 0.867187738...
//  step 2, g = -1/4:        m = 3/128, v = 19/1024, corrections 15/64 and 31/256,
//          mhat = 1/10, vhat = 19/124, p -= 1/8 * (mhat / (sqrt(vhat) + 2^-20) + 1/16 * p)
//  decoupled decay alone (g = 0, so m = v = 0): p = 2 - 1/8 * 1/16 * 2 = 1.984375 exactly;
//  L2 decay coupled into the gradient would instead move p by about lr (Adam normalizes it).
TEST(CpuOpsAdamW, MatchesHandComputedSteps) {
  constexpr float lr = 0.125f, b1 = 0.875f, b2 = 0.9375f, wd = 0.0625f;
  const float eps = std::ldexp(1.0f, -20);
  float p[2] = {1.0f, 2.0f}, m[2] = {0.0f, 0.0f}, v[2] = {0.0f, 0.0f};
  const float g1[2] = {0.5f, 0.0f};
  cpu::adamw_update(p, g1, m, v, 2, lr, b1, b2, eps, wd, 1);
  EXPECT_EQ(m[0], 1.0f / 16);
  EXPECT_EQ(v[0], 1.0f / 64);
  const double p1 = 1.0 - 0.125 * (0.5 / (0.5 + std::ldexp(1.0, -20)) + 0.0625);
  EXPECT_NEAR(p[0], p1, 2 * kEps32);
  EXPECT_EQ(p[1], 1.984375f);
  EXPECT_EQ(m[1], 0.0f);
  EXPECT_EQ(v[1], 0.0f);

  const float g2[2] = {-0.25f, 0.0f};
  cpu::adamw_update(p, g2, m, v, 2, lr, b1, b2, eps, wd, 2);
  EXPECT_EQ(m[0], 3.0f / 128);
  EXPECT_EQ(v[0], 19.0f / 1024);
  const double mhat = 0.1, vhat = 19.0 / 124;
  const double p2 = p1 - 0.125 * (mhat / (std::sqrt(vhat) + std::ldexp(1.0, -20)) + 0.0625 * p1);
  EXPECT_NEAR(p[0], p2, 4 * kEps32);
  EXPECT_THROW(cpu::adamw_update(p, g2, m, v, 2, lr, b1, b2, eps, wd, 0), nvfp4::Error);
}

TEST(CpuOpsAdamW, GlobalNorm) {
  const float g[2] = {3.0f, 4.0f};
  EXPECT_EQ(cpu::global_norm(g, 2), 5.0);
  EXPECT_EQ(cpu::global_norm(g, 0), 0.0);
  const Vf x = randn(10001, 61);  // three chunks, the last partial
  double want = 0.0;
  for (float f : x) want += double(f) * f;
  EXPECT_NEAR(cpu::global_norm(x.data(), 10001), std::sqrt(want), 1e-12 * std::sqrt(want));
}

// ---- determinism ------------------------------------------------------------------------------------------

// Every op's outputs and gradients, flattened into one list, on shapes large enough for OpenMP
// to split the work. The matmul is above OpenBLAS's threading threshold: a threaded sgemm
// failed this test on the GPU host (Prescott kernels), which is why ops.cpp pins BLAS to one.
std::vector<Vf> run_everything() {
  constexpr int64_t b = 2, t = 33, nh = 8, nkv = 2, hs = 16, c = 96, f = 160, vocab = 301, n = b * t;
  std::vector<Vf> r;
  const Vf x = randn(n * c, 71), w = randn(f * c, 72), dy = randn(n * f, 73);
  Vf y(n * f), dx(n * c, 0.0f), dw(f * c, 0.0f);
  cpu::matmul_forward(y.data(), x.data(), w.data(), n, c, f);
  cpu::matmul_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), n, c, f);
  r.insert(r.end(), {y, dx, dw});

  const Vf nw = randn(c, 74), dn = randn(n * c, 75);
  Vf yn(n * c), rstd(n), dxn(n * c, 0.0f), dnw(c, 0.0f);
  cpu::rmsnorm_forward(yn.data(), rstd.data(), x.data(), nw.data(), n, c, 1e-5f);
  cpu::rmsnorm_backward(dxn.data(), dnw.data(), dn.data(), x.data(), nw.data(), rstd.data(), n, c);
  r.insert(r.end(), {yn, rstd, dxn, dnw});

  const Vf q = randn(n * nh * hs, 76), k = randn(n * nkv * hs, 77), v = randn(n * nkv * hs, 78);
  const Vf da = randn(n * nh * hs, 79);
  Vf qr(q.size()), dqr(q.size(), 0.0f), ya(q.size()), att(b * nh * t * t), scratch(att.size());
  Vf dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
  cpu::rope_forward(qr.data(), q.data(), b, t, nh, hs);
  cpu::rope_backward(dqr.data(), da.data(), b, t, nh, hs);
  cpu::attention_forward(ya.data(), att.data(), qr.data(), k.data(), v.data(), b, t, nh, nkv, hs);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), scratch.data(), da.data(), qr.data(), k.data(),
                          v.data(), att.data(), b, t, nh, nkv, hs);
  r.insert(r.end(), {qr, dqr, ya, att, scratch, dq, dk, dv});

  const Vf up = randn(n * f, 80);
  Vf ys(n * f), dg(n * f, 0.0f), du(n * f, 0.0f), res(n * f);
  cpu::swiglu_forward(ys.data(), y.data(), up.data(), n * f);
  cpu::swiglu_backward(dg.data(), du.data(), dy.data(), y.data(), up.data(), n * f);
  cpu::residual_forward(res.data(), ys.data(), up.data(), n * f);
  r.insert(r.end(), {ys, dg, du, res});

  const Ints tokens = randint(n, vocab, 81);
  const Vf wte = randn(vocab * c, 82);
  Vf emb(n * c), dwte(vocab * c, 0.0f);
  cpu::encoder_forward(emb.data(), tokens.data(), wte.data(), b, t, c, vocab);
  cpu::encoder_backward(dwte.data(), dn.data(), tokens.data(), b, t, c, vocab);
  r.insert(r.end(), {emb, dwte});

  const Vf logits = randn(n * vocab, 83, 2.0f);
  Vf losses(n), dlogits(n * vocab, 0.0f);
  cpu::crossentropy_forward(losses.data(), logits.data(), tokens.data(), n, vocab);
  cpu::crossentropy_softmax_backward(dlogits.data(), logits.data(), tokens.data(), n, vocab, 1.0f / n);
  r.insert(r.end(), {losses, dlogits});

  Vf p = w, m(w.size(), 0.0f), vv(w.size(), 0.0f);
  for (int step = 1; step <= 3; ++step)
    cpu::adamw_update(p.data(), dw.data(), m.data(), vv.data(), int64_t(p.size()), 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
  const double norm = cpu::global_norm(dlogits.data(), int64_t(dlogits.size()));
  Vf norm_bits(2);  // the double's bits, compared like the rest
  std::memcpy(norm_bits.data(), &norm, sizeof norm);
  r.insert(r.end(), {p, m, vv, norm_bits});
  return r;
}

TEST(CpuOpsDeterminism, SameBitsRunToRunAndForAnyThreadCount) {
  cpu::set_num_threads(2);
  const auto a = run_everything();
  const auto a2 = run_everything();
  cpu::set_num_threads(1);
  const auto one = run_everything();
  cpu::set_num_threads(2);
  ASSERT_EQ(a.size(), one.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(same_bits(a[i], a2[i])) << "result " << i << " differs between two runs";
    EXPECT_TRUE(same_bits(a[i], one[i])) << "result " << i << " differs between 1 and 2 threads";
  }
  EXPECT_THROW(cpu::set_num_threads(0), nvfp4::Error);
}

}  // namespace

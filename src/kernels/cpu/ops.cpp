// CPU reference operators (see ops.hpp for what each computes, its shapes and conventions).
//
// What it is: the oracle, written to be read. FP32 arithmetic throughout (global_norm sums in
// double); OpenBLAS, single-threaded, for the three GEMMs; OpenMP only over loops whose iterations write
// disjoint outputs, with every reduction inside one iteration in a fixed order, so the bits
// never depend on the thread count.
// What it is not: fast. No blocking, no fusion, no vector intrinsics.
#include "kernels/cpu/ops.hpp"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <utility>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
// NVFP4_OMP("omp parallel for") expands to the pragma with OpenMP and to nothing without it.
#define NVFP4_OMP(directive) _Pragma(directive)
#else
#define NVFP4_OMP(directive)
#endif

#include "nvfp4/error.hpp"

namespace nvfp4::cpu {

namespace {

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string("cpu::") + op + ": " + what);
}

void require_nonnegative(const char* op, std::initializer_list<std::pair<const char*, int64_t>> dims) {
  for (const auto& [name, value] : dims)
    require(value >= 0, op, std::string(name) + " = " + std::to_string(value) + " is negative");
}

// cblas takes 32-bit ints (Debian's OpenBLAS is built without USE_64BITINT).
int blas_int(const char* op, const char* name, int64_t value) {
  require(value <= INT_MAX, op,
          std::string(name) + " = " + std::to_string(value) + " does not fit the 32-bit BLAS interface");
  return static_cast<int>(value);
}

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// NOTE: OpenBLAS runs single-threaded. Its threaded sgemm is not bit-identical across thread
// counts: on a CPU its DYNAMIC_ARCH build does not recognize (the GPU host's Xeon, which gets
// the Prescott kernels) rows of out and dinp changed between 1 and 2 threads. One thread, set
// once before the first GEMM, keeps the matmuls deterministic; the other ops use OpenMP.
void blas_single_threaded() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

}  // namespace

// ---- threads -------------------------------------------------------------------------

void set_num_threads(int n) {
  require(n >= 1, "set_num_threads", "n = " + std::to_string(n) + " must be at least 1");
#if defined(_OPENMP)
  omp_set_num_threads(n);
#endif
}

// ---- matmul ---------------------------------------------------------------------------

void matmul_forward(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) {
  require_nonnegative("matmul_forward", {{"N", N}, {"C", C}, {"OC", OC}});
  if (N == 0 || OC == 0) return;
  if (C == 0) {  // an empty contraction: BLAS would reject lda = 0
    std::memset(out, 0, sizeof(float) * static_cast<size_t>(N * OC));
    return;
  }
  blas_single_threaded();
  const int n = blas_int("matmul_forward", "N", N), c = blas_int("matmul_forward", "C", C),
            oc = blas_int("matmul_forward", "OC", OC);
  // out (N, OC) = inp (N, C) · weight (OC, C)ᵀ
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, oc, c, 1.0f, inp, c, weight, c, 0.0f, out, oc);
}

void matmul_forward_naive(float* out, const float* inp, const float* weight, int64_t N, int64_t C, int64_t OC) {
  require_nonnegative("matmul_forward_naive", {{"N", N}, {"C", C}, {"OC", OC}});
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;  // (C)
    for (int64_t o = 0; o < OC; ++o) {
      const float* w = weight + o * C;  // (C)
      float acc = 0.0f;
      for (int64_t c = 0; c < C; ++c) acc += x[c] * w[c];
      out[n * OC + o] = acc;
    }
  }
}

void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                     int64_t N, int64_t C, int64_t OC) {
  require_nonnegative("matmul_backward", {{"N", N}, {"C", C}, {"OC", OC}});
  if (N == 0 || C == 0 || OC == 0) return;  // every product is empty or adds zero
  blas_single_threaded();
  const int n = blas_int("matmul_backward", "N", N), c = blas_int("matmul_backward", "C", C),
            oc = blas_int("matmul_backward", "OC", OC);
  // dinp (N, C) += dout (N, OC) · weight (OC, C)
  if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, c, oc, 1.0f, dout, oc, weight, c, 1.0f, dinp, c);
  // dweight (OC, C) += dout (N, OC)ᵀ · inp (N, C)
  if (dweight)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, oc, c, n, 1.0f, dout, oc, inp, c, 1.0f, dweight, c);
}

// ---- RMSNorm --------------------------------------------------------------------------

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int64_t C,
                     float eps) {
  require_nonnegative("rmsnorm_forward", {{"N", N}, {"C", C}});
  require(C > 0 || N == 0, "rmsnorm_forward", "C = 0: a row without channels has no RMS");
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;  // (C)
    float* o = out + n * C;        // (C)
    float ss = 0.0f;
    for (int64_t c = 0; c < C; ++c) ss += x[c] * x[c];
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(C) + eps);
    for (int64_t c = 0; c < C; ++c) o[c] = (x[c] * r) * weight[c];
    rstd[n] = r;
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C) {
  require_nonnegative("rmsnorm_backward", {{"N", N}, {"C", C}});
  // dinp: rows are independent.
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;    // (C)
    const float* dy = dout + n * C;  // (C)
    float* dx = dinp + n * C;        // (C)
    const float r = rstd[n];
    // mean_c(g * xhat) with g = dy * w, xhat = x * r
    float dot = 0.0f;
    for (int64_t c = 0; c < C; ++c) dot += (dy[c] * weight[c]) * (x[c] * r);
    const float mean = dot / static_cast<float>(C);
    for (int64_t c = 0; c < C; ++c) dx[c] += r * ((dy[c] * weight[c]) - (x[c] * r) * mean);
  }
  // dweight: a sum over rows, so split over channels instead; each channel sums n = 0..N-1.
  NVFP4_OMP("omp parallel for")
  for (int64_t c = 0; c < C; ++c) {
    float acc = 0.0f;
    for (int64_t n = 0; n < N; ++n) acc += dout[n * C + c] * (inp[n * C + c] * rstd[n]);
    dweight[c] += acc;
  }
}

// ---- RoPE -------------------------------------------------------------------------------

namespace {

// (cos, sin) of the angle of pair i at position t, computed as HF LlamaRotaryEmbedding does in
// FP32: inv_freq = 1 / theta^(2i/HS), angle = float(t) * inv_freq.
void rope_cos_sin(int64_t t, int64_t i, int64_t HS, float theta, float* cs, float* sn) {
  const float inv_freq = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(HS));
  const float angle = static_cast<float>(t) * inv_freq;
  *cs = std::cos(angle);
  *sn = std::sin(angle);
}

void rope_check(const char* op, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta) {
  require_nonnegative(op, {{"B", B}, {"T", T}, {"NH", NH}, {"HS", HS}});
  require(HS % 2 == 0, op, "HS = " + std::to_string(HS) + " is odd; rotate_half pairs i with i + HS/2");
  require(theta > 0.0f, op, "theta = " + std::to_string(theta) + " must be positive");
}

}  // namespace

namespace {

// Rotates each pair (x[i], x[i + HS/2]) of inp by +angle (sign = 1) or -angle (sign = -1, the
// transpose: the backward) into out, overwriting or, with kAccumulate, adding.
template <bool kAccumulate>
void rope_rotate(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta, float sign) {
  const int64_t half = HS / 2;
  NVFP4_OMP("omp parallel for collapse(2)")
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        float cs, sn;
        rope_cos_sin(t, i, HS, theta, &cs, &sn);
        sn *= sign;  // exact
        for (int64_t h = 0; h < NH; ++h) {
          const int64_t base = ((b * T + t) * NH + h) * HS;
          const float x1 = inp[base + i], x2 = inp[base + i + half];  // read both first: out may be inp
          const float y1 = x1 * cs - x2 * sn, y2 = x2 * cs + x1 * sn;
          if constexpr (kAccumulate) {
            out[base + i] += y1;
            out[base + i + half] += y2;
          } else {
            out[base + i] = y1;
            out[base + i + half] = y2;
          }
        }
      }
    }
  }
}

}  // namespace

void rope_forward(float* out, const float* inp, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta) {
  rope_check("rope_forward", B, T, NH, HS, theta);
  rope_rotate<false>(out, inp, B, T, NH, HS, theta, 1.0f);
}

void rope_backward(float* dinp, const float* dout, int64_t B, int64_t T, int64_t NH, int64_t HS, float theta) {
  rope_check("rope_backward", B, T, NH, HS, theta);
  // The transpose of the rotation [[c, -s], [s, c]] is the rotation by -angle.
  rope_rotate<true>(dinp, dout, B, T, NH, HS, theta, -1.0f);
}

// ---- attention ---------------------------------------------------------------------------

namespace {

void attention_check(const char* op, int64_t B, int64_t T, int64_t NH, int64_t NKV, int64_t HS) {
  require_nonnegative(op, {{"B", B}, {"T", T}, {"NH", NH}, {"NKV", NKV}, {"HS", HS}});
  require(NKV > 0 || NH == 0, op, "NKV = 0 with NH = " + std::to_string(NH) + " query heads");
  require(NKV == 0 || NH % NKV == 0, op,
          "NH = " + std::to_string(NH) + " is not a multiple of NKV = " + std::to_string(NKV) +
              "; each key/value head must serve the same number of query heads");
  require(HS > 0 || NH == 0, op, "HS = 0: the score scale 1/sqrt(HS) is undefined");
}

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, int64_t B,
                       int64_t T, int64_t NH, int64_t NKV, int64_t HS) {
  attention_check("attention_forward", B, T, NH, NKV, HS);
  if (NH == 0) return;
  const int64_t group = NH / NKV;  // query heads per kv head
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  NVFP4_OMP("omp parallel for collapse(3)")
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t kvh = h / group;
        const float* qrow = q + ((b * T + t) * NH + h) * HS;  // (HS)
        float* arow = att + ((b * NH + h) * T + t) * T;      // (T)
        // scores and their max over the visible positions t2 <= t
        float maxval = -INFINITY;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* krow = k + ((b * T + t2) * NKV + kvh) * HS;
          float dot = 0.0f;
          for (int64_t i = 0; i < HS; ++i) dot += qrow[i] * krow[i];
          arow[t2] = dot * scale;
          if (arow[t2] > maxval) maxval = arow[t2];
        }
        // softmax, stable: exp(s - max) <= 1
        float sum = 0.0f;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          arow[t2] = std::exp(arow[t2] - maxval);
          sum += arow[t2];
        }
        const float inv = 1.0f / sum;
        for (int64_t t2 = 0; t2 < T; ++t2) arow[t2] = t2 <= t ? arow[t2] * inv : 0.0f;  // causal mask
        // weighted sum of values
        float* orow = out + ((b * T + t) * NH + h) * HS;  // (HS)
        for (int64_t i = 0; i < HS; ++i) orow[i] = 0.0f;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* vrow = v + ((b * T + t2) * NKV + kvh) * HS;
          for (int64_t i = 0; i < HS; ++i) orow[i] += arow[t2] * vrow[i];
        }
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, float* datt_scratch, const float* dout, const float* q,
                        const float* k, const float* v, const float* att, int64_t B, int64_t T, int64_t NH,
                        int64_t NKV, int64_t HS) {
  attention_check("attention_backward", B, T, NH, NKV, HS);
  if (NH == 0) return;
  const int64_t group = NH / NKV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));

  // Phase 1, per query row (b, h, t): the score gradient and dq. Rows write disjoint data.
  NVFP4_OMP("omp parallel for collapse(3)")
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const int64_t kvh = h / group;
        const float* arow = att + ((b * NH + h) * T + t) * T;      // (T)
        float* drow = datt_scratch + ((b * NH + h) * T + t) * T;   // (T)
        const float* dorow = dout + ((b * T + t) * NH + h) * HS;   // (HS)
        // datt[t2] = dout · v[t2]
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* vrow = v + ((b * T + t2) * NKV + kvh) * HS;
          float dot = 0.0f;
          for (int64_t i = 0; i < HS; ++i) dot += dorow[i] * vrow[i];
          drow[t2] = dot;
        }
        // softmax backward: dscore[t2] = att[t2] * (datt[t2] - sum_t3 att[t3] * datt[t3])
        float adot = 0.0f;
        for (int64_t t2 = 0; t2 <= t; ++t2) adot += arow[t2] * drow[t2];
        for (int64_t t2 = 0; t2 < T; ++t2) drow[t2] = t2 <= t ? arow[t2] * (drow[t2] - adot) : 0.0f;
        // dq += scale * sum_t2 dscore[t2] * k[t2]
        float* dqrow = dq + ((b * T + t) * NH + h) * HS;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* krow = k + ((b * T + t2) * NKV + kvh) * HS;
          const float d = drow[t2] * scale;
          for (int64_t i = 0; i < HS; ++i) dqrow[i] += d * krow[i];
        }
      }
    }
  }

  // Phase 2, per key/value row (b, t2, kvh): sum over the group's query heads, then over the
  // query positions t >= t2 that see it, in that fixed order.
  NVFP4_OMP("omp parallel for collapse(3)")
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t2 = 0; t2 < T; ++t2) {
      for (int64_t kvh = 0; kvh < NKV; ++kvh) {
        float* dkrow = dk + ((b * T + t2) * NKV + kvh) * HS;  // (HS)
        float* dvrow = dv + ((b * T + t2) * NKV + kvh) * HS;  // (HS)
        for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
          for (int64_t t = t2; t < T; ++t) {
            const int64_t row = ((b * NH + h) * T + t) * T;
            const float d = datt_scratch[row + t2] * scale;
            const float a = att[row + t2];
            const float* qrow = q + ((b * T + t) * NH + h) * HS;
            const float* dorow = dout + ((b * T + t) * NH + h) * HS;
            for (int64_t i = 0; i < HS; ++i) {
              dkrow[i] += d * qrow[i];
              dvrow[i] += a * dorow[i];
            }
          }
        }
      }
    }
  }
}

// ---- SwiGLU ------------------------------------------------------------------------------

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  require_nonnegative("swiglu_forward", {{"n", n}});
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i) out[i] = (gate[i] * sigmoid(gate[i])) * up[i];
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int64_t n) {
  require_nonnegative("swiglu_backward", {{"n", n}});
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i) {
    const float s = sigmoid(gate[i]);
    // d silu / dx = s + x * s * (1 - s) = s * (1 + x * (1 - s))
    dgate[i] += dout[i] * up[i] * (s * (1.0f + gate[i] * (1.0f - s)));
    dup[i] += dout[i] * (gate[i] * s);
  }
}

// ---- token embedding -----------------------------------------------------------------------

namespace {

void check_tokens(const char* op, const int32_t* tokens, int64_t B, int64_t T, int64_t V) {
  for (int64_t i = 0; i < B * T; ++i) {
    require(tokens[i] >= 0 && tokens[i] < V, op,
            "token " + std::to_string(tokens[i]) + " at position (b=" + std::to_string(i / T) +
                ", t=" + std::to_string(i % T) + ") is outside the vocabulary [0, " + std::to_string(V) +
                "); check the tokenizer's vocabulary size against the model's");
  }
}

}  // namespace

void encoder_forward(float* out, const int32_t* tokens, const float* wte, int64_t B, int64_t T, int64_t C,
                     int64_t V) {
  require_nonnegative("encoder_forward", {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  check_tokens("encoder_forward", tokens, B, T, V);
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < B * T; ++i)
    std::memcpy(out + i * C, wte + static_cast<int64_t>(tokens[i]) * C, sizeof(float) * static_cast<size_t>(C));
}

void encoder_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t B, int64_t T, int64_t C,
                      int64_t V) {
  require_nonnegative("encoder_backward", {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  check_tokens("encoder_backward", tokens, B, T, V);
  // The order of the additions (cuda::encoder_backward's too, bit for bit): the positions sorted
  // by token, stably (a counting sort), cut into chunks of kEncoderChunk sorted positions; in a
  // chunk, each token's rows summed from zero in position order (a piece); each token's pieces
  // added into its row in order. Serial: it keeps the bits independent of the thread count.
  const int64_t N = B * T;
  std::vector<int64_t> next(static_cast<size_t>(V) + 1, 0);
  for (int64_t i = 0; i < N; ++i) ++next[static_cast<size_t>(tokens[i]) + 1];
  for (int64_t v = 0; v < V; ++v) next[v + 1] += next[v];
  std::vector<int64_t> sorted(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) sorted[next[tokens[i]]++] = i;
  std::vector<float> piece(static_cast<size_t>(C));
  for (int64_t a = 0; a < N;) {
    const int32_t tok = tokens[sorted[a]];
    const int64_t chunk_end = std::min(N, (a / kEncoderChunk + 1) * kEncoderChunk);
    std::fill(piece.begin(), piece.end(), 0.0f);
    int64_t b = a;
    for (; b < chunk_end && tokens[sorted[b]] == tok; ++b) {
      const float* g = dout + sorted[b] * C;
      for (int64_t c = 0; c < C; ++c) piece[c] += g[c];
    }
    float* row = dwte + static_cast<int64_t>(tok) * C;
    for (int64_t c = 0; c < C; ++c) row[c] += piece[c];
    a = b;
  }
}

// ---- residual -------------------------------------------------------------------------------

void residual_forward(float* out, const float* a, const float* b, int64_t n) {
  require_nonnegative("residual_forward", {{"n", n}});
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// ---- cross-entropy ---------------------------------------------------------------------------

namespace {

void check_targets(const char* op, const int32_t* targets, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    require(targets[n] >= 0 && targets[n] < V, op,
            "target " + std::to_string(targets[n]) + " at position " + std::to_string(n) +
                " is outside the vocabulary [0, " + std::to_string(V) + ")");
  }
}

// max and sum_v exp(x[v] - max) of one row of logits (V).
void row_max_sumexp(const float* x, int64_t V, float* maxval, float* sum) {
  float m = -INFINITY;
  for (int64_t i = 0; i < V; ++i) m = x[i] > m ? x[i] : m;
  float s = 0.0f;
  for (int64_t i = 0; i < V; ++i) s += std::exp(x[i] - m);
  *maxval = m;
  *sum = s;
}

}  // namespace

void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N, int64_t V) {
  require_nonnegative("crossentropy_forward", {{"N", N}, {"V", V}});
  check_targets("crossentropy_forward", targets, N, V);
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * V;  // (V)
    float m, s;
    row_max_sumexp(x, V, &m, &s);
    // -log softmax[target] = log sum exp(x - max) - (x[target] - max)
    // NOTE: subtract the max from x[target] first: (max + log s) - x[target] would round
    // log s to the ulp of the max (6e-5 at |max| = 1000).
    losses[n] = std::log(s) - (x[targets[n]] - m);
  }
}

void crossentropy_softmax_backward(float* dlogits, const float* logits, const int32_t* targets, int64_t N,
                                   int64_t V, float dloss_scale) {
  require_nonnegative("crossentropy_softmax_backward", {{"N", N}, {"V", V}});
  check_targets("crossentropy_softmax_backward", targets, N, V);
  NVFP4_OMP("omp parallel for")
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * V;  // (V)
    float* dx = dlogits + n * V;      // (V)
    float m, s;
    row_max_sumexp(x, V, &m, &s);
    const float inv = 1.0f / s;
    for (int64_t i = 0; i < V; ++i) {
      const float p = std::exp(x[i] - m) * inv;
      dx[i] += (p - (i == targets[n] ? 1.0f : 0.0f)) * dloss_scale;
    }
  }
}

// ---- optimizer --------------------------------------------------------------------------------

void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t step) {
  require_nonnegative("adamw_update", {{"n", n}});
  require(step >= 1, "adamw_update", "step = " + std::to_string(step) + "; steps count from 1 (bias correction)");
  const float correction1 = 1.0f - std::pow(beta1, static_cast<float>(step));
  const float correction2 = 1.0f - std::pow(beta2, static_cast<float>(step));
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i];
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * (g * g);
    const float mhat = m[i] / correction1;
    const float vhat = v[i] / correction2;
    // NOTE: decoupled weight decay: wd * p is added to the Adam direction, not to the gradient.
    params[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + weight_decay * params[i]);
  }
}

double global_norm(const float* grads, int64_t n) {
  require_nonnegative("global_norm", {{"n", n}});
  constexpr int64_t kChunk = 4096;  // fixed, NOT derived from the thread count
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  NVFP4_OMP("omp parallel for")
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t end = std::min(n, (ch + 1) * kChunk);
    double acc = 0.0;
    for (int64_t i = ch * kChunk; i < end; ++i) acc += static_cast<double>(grads[i]) * grads[i];
    partial[static_cast<size_t>(ch)] = acc;
  }
  double total = 0.0;
  for (const double p : partial) total += p;
  return std::sqrt(total);
}

}  // namespace nvfp4::cpu

// NVFP4 weight quantization for PTQ (include/nvfp4/ptq.hpp): round to nearest under a block-scale
// rule, and GPTQ. The per-block arithmetic is the format core's (src/format/nvfp4.hpp).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "format/nvfp4.hpp"
#include "format/scalar.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/ptq.hpp"

extern "C" {
// LAPACK (OpenBLAS's): Cholesky factorization of a symmetric positive definite matrix, and the
// inverse from it. Column-major; for a symmetric matrix, the same bytes as row-major.
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void dpotri_(const char* uplo, const int* n, double* a, const int* lda, int* info);
}

namespace nvfp4::ptq {

namespace {

constexpr int kBlock = fmt::kNvfp4Block;
constexpr std::string_view kRuleNames[] = {"max", "mse", "4over6"};

void check_shape(const char* what, std::span<const float> w, int64_t rows, int64_t cols) {
  if (rows < 0 || cols <= 0 || cols % kBlock != 0) {
    throw Error(std::string(what) + ": a weight of " + std::to_string(rows) + " x " + std::to_string(cols) +
                " cannot be NVFP4 (the input dimension must be a positive multiple of 16; such a layer stays BF16)");
  }
  if (static_cast<int64_t>(w.size()) != rows * cols) {
    throw Error(std::string(what) + ": " + std::to_string(w.size()) + " values for a " + std::to_string(rows) + " x " +
                std::to_string(cols) + " weight");
  }
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(w[i])) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++bad;
    }
  }
  if (bad) {
    throw NonFiniteError(std::string(what) + ": the weight holds " + std::to_string(bad) + " NaN/Inf values (the first at row " +
                             std::to_string(first / cols) + ", column " + std::to_string(first % cols) + ")",
                         first, bad);
  }
}

float resolve_amax(const char* what, std::span<const float> w, float amax) {
  float m = 0.0f;
  for (float v : w) m = std::max(m, std::fabs(v));
  if (amax < 0.0f) return m;
  if (!(amax >= m) || !std::isfinite(amax)) {
    throw Error(std::string(what) + ": the shared tensor amax " + std::to_string(amax) + " is below the weight's own (" +
                std::to_string(m) + "); a group's amax is the largest of its members'");
  }
  return amax;
}

struct TensorScale {
  fmt::Nvfp4TensorScale t;
  float decode;
};
TensorScale tensor_scale(ScaleRule rule, float amax) {
  const float range = scale_rule_range(rule);
  return {fmt::nvfp4_tensor_scale_for_range(amax, range), amax / range};
}

// The scale code of one block of 16 values under `rule`.
uint8_t block_scale(const float* x, ScaleRule rule, const TensorScale& ts) {
  float bamax = 0.0f;
  for (int j = 0; j < kBlock; ++j) bamax = std::max(bamax, std::fabs(x[j]));
  switch (rule) {
    case ScaleRule::mse: return fmt::nvfp4_block_scale_mse(x, kBlock, bamax, ts.t, ts.decode);
    case ScaleRule::four_over_six: return fmt::nvfp4_block_scale_four_over_six(x, kBlock, bamax, ts.t, ts.decode);
    case ScaleRule::max: break;
  }
  return fmt::nvfp4_block_scale(bamax, ts.t);
}

void put_code(std::vector<uint8_t>& codes, int64_t at, uint8_t code) {
  uint8_t& byte = codes[static_cast<size_t>(at / 2)];
  byte = at % 2 == 0 ? static_cast<uint8_t>((byte & 0xF0) | code) : static_cast<uint8_t>((byte & 0x0F) | (code << 4));
}

Nvfp4Weight empty_weight(int64_t rows, int64_t cols, float amax, const TensorScale& ts) {
  Nvfp4Weight q;
  q.rows = rows;
  q.cols = cols;
  q.codes.assign(static_cast<size_t>(rows * cols / 2), 0);
  q.scales.assign(static_cast<size_t>(rows * cols / kBlock), 0);
  q.amax = amax;
  q.decode = ts.decode;
  q.encode = ts.t.s_enc;
  return q;
}

// U, upper triangular with H^-1 = U^T U, of the damped Hessian (column-major: U(i, k) at i + k n).
// Throws if H is not positive definite even with 100x the damping.
std::vector<double> inverse_cholesky(std::vector<double> H, int n, double damp) {
  openblas_set_num_threads(1);  // deterministic LAPACK (see src/kernels/cpu/gemm.cpp)
  double mean = 0;
  for (int j = 0; j < n; ++j) mean += H[static_cast<size_t>(j) * n + j];
  mean /= n;
  for (double d = damp; d <= damp * 100.0 * (1 + 1e-9); d *= 10.0) {
    std::vector<double> A = H;
    for (int j = 0; j < n; ++j) A[static_cast<size_t>(j) * n + j] += d * mean;
    int info = 0;
    const char up = 'U';
    dpotrf_(&up, &n, A.data(), &n, &info);
    if (info != 0) continue;
    dpotri_(&up, &n, A.data(), &n, &info);  // H^-1 in the upper triangle
    if (info != 0) continue;
    for (int k = 0; k < n; ++k) {
      for (int i = k + 1; i < n; ++i) A[static_cast<size_t>(k) * n + i] = A[static_cast<size_t>(i) * n + k];
    }
    dpotrf_(&up, &n, A.data(), &n, &info);  // H^-1 = U^T U
    if (info != 0) continue;
    return A;
  }
  throw Error("gptq: the layer input's Hessian is not positive definite even with damping " + std::to_string(damp * 100) +
              " x its mean diagonal (too few calibration tokens for this layer's width? raise --calib-tokens or the damping)");
}

}  // namespace

std::string_view scale_rule_name(ScaleRule r) { return kRuleNames[static_cast<size_t>(r)]; }

ScaleRule parse_scale_rule(std::string_view name, std::string_view option) {
  for (size_t i = 0; i < std::size(kRuleNames); ++i) {
    if (name == kRuleNames[i]) return static_cast<ScaleRule>(i);
  }
  throw Error(std::string(option) + " " + std::string(name) + ": not a scale rule (max, mse, 4over6)");
}

float scale_rule_range(ScaleRule r) {
  return r == ScaleRule::max ? fmt::kNvfp4AmaxRange : fmt::kNvfp4FourOverSixRange;
}

std::vector<float> dequantize(const Nvfp4Weight& w) {
  std::vector<float> out(static_cast<size_t>(w.rows * w.cols));
  for (int64_t i = 0; i < w.rows * w.cols; ++i) {
    const uint8_t byte = w.codes[static_cast<size_t>(i / 2)];
    const uint8_t code = i % 2 == 0 ? (byte & 0x0F) : (byte >> 4);
    out[static_cast<size_t>(i)] = fmt::nvfp4_decode(code, w.scales[static_cast<size_t>(i / kBlock)], w.decode);
  }
  return out;
}

Nvfp4Weight quantize_weight(std::span<const float> w, int64_t rows, int64_t cols, ScaleRule rule, float amax) {
  check_shape("quantize_weight", w, rows, cols);
  amax = resolve_amax("quantize_weight", w, amax);
  const TensorScale ts = tensor_scale(rule, amax);
  Nvfp4Weight q = empty_weight(rows, cols, amax, ts);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / kBlock; ++b) {
      const float* x = w.data() + r * cols + b * kBlock;
      const uint8_t s = block_scale(x, rule, ts);
      q.scales[static_cast<size_t>(r * (cols / kBlock) + b)] = s;
      const float e = fmt::nvfp4_block_encode_factor(s, ts.t);
      for (int j = 0; j < kBlock; ++j) put_code(q.codes, r * cols + b * kBlock + j, fmt::nvfp4_encode_rne(x[j], e));
    }
  }
  return q;
}

GptqResult gptq_quantize(std::span<const float> w, int64_t rows, int64_t cols, std::span<const double> H,
                         const GptqOptions& o, float amax) {
  check_shape("gptq", w, rows, cols);
  if (static_cast<int64_t>(H.size()) != cols * cols) {
    throw Error("gptq: the Hessian has " + std::to_string(H.size()) + " values; a " + std::to_string(cols) +
                "-input layer needs " + std::to_string(cols) + " x " + std::to_string(cols));
  }
  if (cols > 65536) throw Error("gptq: " + std::to_string(cols) + " inputs exceed the 32-bit LAPACK interface");
  if (!(o.damp > 0.0) || !std::isfinite(o.damp)) throw Error("gptq: the damping must be positive");
  for (double h : H) {
    if (!std::isfinite(h)) throw Error("gptq: the Hessian holds NaN/Inf (the calibration activations overflowed)");
  }
  amax = resolve_amax("gptq", w, amax);
  const TensorScale ts = tensor_scale(o.rule, amax);
  const int n = static_cast<int>(cols);

  // Dead inputs (zero on every calibration token): their weights cannot matter; H gets a 1 there.
  std::vector<double> Hd(H.begin(), H.end());
  std::vector<bool> dead(static_cast<size_t>(n), false);
  GptqResult result;
  for (int j = 0; j < n; ++j) {
    double& d = Hd[static_cast<size_t>(j) * n + j];
    if (d == 0.0) {
      d = 1.0;
      dead[static_cast<size_t>(j)] = true;
      ++result.dead_columns;
    } else if (d < 0.0) {
      throw Error("gptq: the Hessian's diagonal is negative at input " + std::to_string(j) + " (not X^T X)");
    }
  }
  // The order the columns are quantized in (act_order: decreasing diag(H), ties by index).
  std::vector<int> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (o.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](int a, int b) {
      return Hd[static_cast<size_t>(a) * n + a] > Hd[static_cast<size_t>(b) * n + b];
    });
  }
  std::vector<double> Hp(static_cast<size_t>(n) * n);
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < n; ++k) Hp[static_cast<size_t>(i) * n + k] = Hd[static_cast<size_t>(perm[i]) * n + perm[k]];
  }
  const std::vector<double> U = inverse_cholesky(std::move(Hp), n, o.damp);
  const auto u = [&](int i, int k) { return U[static_cast<size_t>(i) + static_cast<size_t>(k) * n]; };

  Nvfp4Weight& q = result.weight = empty_weight(rows, cols, amax, ts);
  const int blocks = n / kBlock;
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> row(static_cast<size_t>(n));
    for (int j = 0; j < n; ++j) row[static_cast<size_t>(j)] = dead[static_cast<size_t>(j)] ? 0.0 : w[static_cast<size_t>(r * n + j)];
    std::vector<uint8_t> scale(static_cast<size_t>(blocks));
    std::vector<float> enc(static_cast<size_t>(blocks));
    float x[kBlock];
    const auto fix_block = [&](int b) {  // the block's scale from the row's current values
      for (int j = 0; j < kBlock; ++j) x[j] = static_cast<float>(row[static_cast<size_t>(b * kBlock + j)]);
      scale[static_cast<size_t>(b)] = block_scale(x, o.rule, ts);
      enc[static_cast<size_t>(b)] = fmt::nvfp4_block_encode_factor(scale[static_cast<size_t>(b)], ts.t);
    };
    if (o.act_order) {
      for (int b = 0; b < blocks; ++b) fix_block(b);  // static groups: from the original weights
    }
    for (int i = 0; i < n; ++i) {
      const int j = perm[static_cast<size_t>(i)], b = j / kBlock;
      if (!o.act_order && j % kBlock == 0) fix_block(b);
      const float v = static_cast<float>(row[static_cast<size_t>(j)]);
      const uint8_t code = fmt::nvfp4_encode_rne(v, enc[static_cast<size_t>(b)]);
      put_code(q.codes, r * n + j, code);
      const double qv = fmt::nvfp4_decode(code, scale[static_cast<size_t>(b)], ts.decode);
      const double err = (row[static_cast<size_t>(j)] - qv) / u(i, i);
      for (int k = i + 1; k < n; ++k) row[static_cast<size_t>(perm[static_cast<size_t>(k)])] -= err * u(i, k);
    }
    for (int b = 0; b < blocks; ++b) q.scales[static_cast<size_t>(r * blocks + b)] = scale[static_cast<size_t>(b)];
  }
  return result;
}

}  // namespace nvfp4::ptq

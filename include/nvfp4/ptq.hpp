// Post-training quantization of linear weights to NVFP4 (src/ptq/, docs/ptq.md): round to nearest
// under a block-scale rule, or GPTQ on the NVFP4 grid. Every result is standard NVFP4 — codes,
// E4M3 block scales (1x16 along the input dimension), one FP32 tensor decode factor — which any
// engine decodes as e2m1(code) x fp32(scale) x decode.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace nvfp4::ptq {

// How each block's E4M3 scale is chosen (src/format/nvfp4.hpp, "Block-scale rules"):
//   max            the block amax onto 6, tensor range 2688 (the training recipe's rule)
//   mse            the least squared error among 13 scales around it, tensor range 1536
//   four_over_six  the better of the block amax onto 6 or onto 4, tensor range 1536
enum class ScaleRule : uint8_t { max, mse, four_over_six };
std::string_view scale_rule_name(ScaleRule r);
ScaleRule parse_scale_rule(std::string_view name, std::string_view option = "--scales");
// The tensor range of a rule: the tensor decode factor is amax / range.
float scale_rule_range(ScaleRule r);

// An NVFP4 weight (rows = output features, cols = input features, a multiple of 16).
struct Nvfp4Weight {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes;   // (rows, cols / 2): element 2j in the low nibble
  std::vector<uint8_t> scales;  // (rows, cols / 16) E4M3, row-major
  float amax = 0.0f;            // the tensor amax the scales were derived from
  float decode = 0.0f;          // the FP32 tensor decode factor: amax / range
  float encode = 0.0f;          // the FP32 tensor encode factor the codes were made with: range / amax
};

// The values the weight represents, (rows, cols) row-major: e2m1 x scale x decode, left to right.
std::vector<float> dequantize(const Nvfp4Weight& w);

// Round-to-nearest quantization of w (rows, cols) under `rule`. amax: the tensor amax to derive the
// scales from — max |w| (pass a negative value), or a larger one shared by fused siblings (q/k/v,
// gate/up: one tensor scale for the group, as vLLM and TensorRT-LLM require). Throws nvfp4::Error
// for a bad shape or an amax below max |w|, NonFiniteError for NaN/Inf in w.
Nvfp4Weight quantize_weight(std::span<const float> w, int64_t rows, int64_t cols, ScaleRule rule, float amax = -1.0f);

// GPTQ (Frantar et al., 2022) on the NVFP4 grid: the columns are quantized one at a time and each
// one's rounding error, weighted by the inverse Hessian, is pushed onto the columns not yet
// quantized. H: the layer input's Hessian X^T X, (cols, cols) row-major, accumulated over the
// calibration tokens (its scale does not matter). Each 16-column block's scales (under `rule`) are
// fixed from the block's updated values just before its first column is rounded; with act_order,
// columns go in decreasing order of diag(H) and every block's scales are fixed up front from the
// original weights (static groups). Rows are independent, so the result does not depend on the
// thread count.
struct GptqOptions {
  ScaleRule rule = ScaleRule::max;
  double damp = 0.01;      // diag(H) += damp x mean(diag(H))
  bool act_order = false;
};
struct GptqResult {
  Nvfp4Weight weight;
  int64_t dead_columns = 0;  // inputs that were zero on every calibration token (their weights set to 0)
};
GptqResult gptq_quantize(std::span<const float> w, int64_t rows, int64_t cols, std::span<const double> H,
                         const GptqOptions& options, float amax = -1.0f);

// ---- calibration statistics (src/ptq/calib_stats.cpp) ---------------------------------------------

// |x| of a layer's inputs seen over calibration: the maximum exactly, and any percentile from a
// histogram of 64 equal bins per power of two (2^-64 ... 2^64; zeros counted apart), so a
// percentile is at most one bin — 1/64 of its power of two, 1.6 % — above the exact order
// statistic, never below it: `--act-scale percentile:P`.
class AbsStats {
 public:
  void add(std::span<const float> x);  // NaN/Inf are counted apart and ignored (non_finite())
  void merge(const AbsStats& other);
  int64_t count() const { return count_; }
  int64_t non_finite() const { return non_finite_; }
  float amax() const { return amax_; }
  // The value v with at least p % of the finite values <= v (the upper edge of the bin holding that
  // order statistic, clamped to amax); p in (0, 100]; 100 gives amax. 0 when nothing was added.
  float percentile(double p) const;

 private:
  static constexpr int kBinsPerOctave = 64, kMinExp = -64, kMaxExp = 64;
  std::vector<int64_t> bins_ = std::vector<int64_t>(static_cast<size_t>((kMaxExp - kMinExp) * kBinsPerOctave + 2), 0);
  int64_t count_ = 0, zeros_ = 0, non_finite_ = 0;
  float amax_ = 0.0f;
  static int bin_of(float a);
  static double upper_edge(int bin);
};

// How well calibration tokens cover evaluation tokens (the guides' check against narrow
// calibration sets): sizes, distinct tokens, the share of evaluation tokens whose id never occurs
// in the calibration set, and the Jensen-Shannon divergence (bits, 0 = the same unigram
// distribution, 1 = disjoint) between the two token distributions.
struct Coverage {
  int64_t calib_tokens = 0, calib_distinct = 0, eval_tokens = 0, eval_distinct = 0;
  double eval_unseen_share = 0;
  double js_divergence_bits = 0;
};
Coverage token_coverage(std::span<const int32_t> calib, std::span<const int32_t> eval);

}  // namespace nvfp4::ptq

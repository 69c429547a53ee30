// What a format costs a tensor: error, storage and CPU throughput of a quantization, the block
// scale statistics of a quantized copy, and the standard synthetic tensors they are measured on
// (`nvfp4 formats`, `nvfp4 inspect`, and any library user asking the same question).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <string>

#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"

namespace nvfp4 {

std::span<const std::string_view> synthetic_kinds() {
  static constexpr std::string_view kKinds[] = {"gaussian", "laplace", "heavy-tailed"};
  return kKinds;
}

std::vector<float> synthetic_tensor(std::string_view kind, int64_t n, uint64_t seed) {
  if (n < 0) throw Error("synthetic_tensor: negative size");
  std::mt19937_64 rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  if (kind == "gaussian") {
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (auto& v : x) v = d(rng);
  } else if (kind == "laplace") {
    std::exponential_distribution<float> e(1.0f);
    std::bernoulli_distribution s(0.5);
    for (auto& v : x) v = s(rng) ? e(rng) : -e(rng);
  } else if (kind == "heavy-tailed") {  // Student-t with 3 degrees of freedom, plus 0.1% outliers 50x larger
    std::student_t_distribution<float> t(3.0f);
    std::bernoulli_distribution outlier(0.001);
    for (auto& v : x) v = outlier(rng) ? 50.0f * t(rng) : t(rng);
  } else {
    throw Error("synthetic_tensor: unknown kind '" + std::string(kind) + "'; use gaussian, laplace or heavy-tailed");
  }
  return x;
}

FormatCost measure_format(std::span<const float> x, int64_t rows, int64_t cols, const QuantizeOptions& options,
                          int timed_repeats) {
  QuantizeOptions o = options;
  o.rowwise = true;
  o.columnwise = false;
  FormatCost c;
  const QuantizedTensor q = quantize(x, rows, cols, o);  // throws for what the format cannot do
  c.error = error_stats(x, dequantize(*q.row, q.options));
  c.bits_per_value = storage_bits_per_value(format_traits(o.format), *q.options.block, rows, cols);
  if (timed_repeats > 0) {
    std::vector<double> secs;
    for (int i = 0; i < timed_repeats; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const QuantizedTensor t = quantize(x, rows, cols, o);
      const auto t1 = std::chrono::steady_clock::now();
      secs.push_back(std::chrono::duration<double>(t1 - t0).count() + 0.0 * t.row->amax);
    }
    std::sort(secs.begin(), secs.end());
    c.cpu_gbps = static_cast<double>(x.size()) * 4.0 / secs[secs.size() / 2] / 1e9;
  }
  return c;
}

ScaleStats scale_stats(const QuantizedCopy& c, Format f) {
  ScaleStats s;
  double sum = 0;
  auto add = [&](double v, bool sat, bool sub) {
    ++s.count;
    sum += v;
    if (v == 0) ++s.zero;
    else s.min_nonzero = std::min(s.min_nonzero, v);
    s.max = std::max(s.max, v);
    s.saturated += sat;
    s.subnormal += sub;
  };
  const FormatTraits& t = format_traits(f);
  if (t.scale_decode) {
    for (uint8_t b : c.scales) add(t.scale_decode(b), t.scale_saturated(b), t.scale_subnormal(b));
  } else {
    for (float v : c.scale_inv) add(v, false, false);
  }
  s.mean = s.count ? sum / s.count : 0;
  return s;
}

}  // namespace nvfp4

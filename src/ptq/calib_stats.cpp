// Calibration statistics (include/nvfp4/ptq.hpp): |x| histograms for activation scales, and the
// token coverage of a calibration set.
#include <algorithm>
#include <cmath>
#include <map>

#include "nvfp4/error.hpp"
#include "nvfp4/ptq.hpp"

namespace nvfp4::ptq {

int AbsStats::bin_of(float a) {
  int e = 0;
  const float m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1): a's power of two is 2^(e - 1)
  const int octave = e - 1;
  if (octave < kMinExp) return 0;
  if (octave >= kMaxExp) return (kMaxExp - kMinExp) * kBinsPerOctave - 1;
  const int sub = std::min(kBinsPerOctave - 1, static_cast<int>((2.0f * m - 1.0f) * kBinsPerOctave));
  return (octave - kMinExp) * kBinsPerOctave + sub;
}

double AbsStats::upper_edge(int bin) {
  const int octave = bin / kBinsPerOctave + kMinExp, sub = bin % kBinsPerOctave;
  return std::ldexp(1.0 + static_cast<double>(sub + 1) / kBinsPerOctave, octave);
}

void AbsStats::add(std::span<const float> x) {
  for (float v : x) {
    if (!std::isfinite(v)) {
      ++non_finite_;
      continue;
    }
    const float a = std::fabs(v);
    ++count_;
    amax_ = std::max(amax_, a);
    if (a == 0.0f) ++zeros_;
    else ++bins_[static_cast<size_t>(bin_of(a))];
  }
}

void AbsStats::merge(const AbsStats& o) {
  for (size_t i = 0; i < bins_.size(); ++i) bins_[i] += o.bins_[i];
  count_ += o.count_;
  zeros_ += o.zeros_;
  non_finite_ += o.non_finite_;
  amax_ = std::max(amax_, o.amax_);
}

float AbsStats::percentile(double p) const {
  if (!(p > 0.0 && p <= 100.0)) throw Error("percentile " + std::to_string(p) + ": must be in (0, 100]");
  if (count_ == 0) return 0.0f;
  if (p == 100.0) return amax_;
  const auto rank = static_cast<int64_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
  int64_t seen = zeros_;
  if (seen >= rank) return 0.0f;
  for (size_t b = 0; b < bins_.size(); ++b) {
    seen += bins_[b];
    if (seen >= rank) return std::min(amax_, static_cast<float>(upper_edge(static_cast<int>(b))));
  }
  return amax_;
}

Coverage token_coverage(std::span<const int32_t> calib, std::span<const int32_t> eval) {
  std::map<int32_t, int64_t> c, e;
  for (int32_t t : calib) ++c[t];
  for (int32_t t : eval) ++e[t];
  Coverage r;
  r.calib_tokens = static_cast<int64_t>(calib.size());
  r.eval_tokens = static_cast<int64_t>(eval.size());
  r.calib_distinct = static_cast<int64_t>(c.size());
  r.eval_distinct = static_cast<int64_t>(e.size());
  if (calib.empty() || eval.empty()) {
    r.eval_unseen_share = eval.empty() ? 0.0 : 1.0;
    r.js_divergence_bits = calib.empty() && eval.empty() ? 0.0 : 1.0;
    return r;
  }
  int64_t unseen = 0;
  for (const auto& [t, n] : e) unseen += c.count(t) ? 0 : n;
  r.eval_unseen_share = static_cast<double>(unseen) / static_cast<double>(eval.size());
  // JS = H(M) - (H(P) + H(Q)) / 2 written term by term over the union of ids, in id order.
  const double nc = static_cast<double>(calib.size()), ne = static_cast<double>(eval.size());
  double js = 0;
  auto ic = c.begin(), ie = e.begin();
  while (ic != c.end() || ie != e.end()) {
    double p = 0, q = 0;
    if (ie == e.end() || (ic != c.end() && ic->first < ie->first)) {
      p = static_cast<double>((ic++)->second) / nc;
    } else if (ic == c.end() || ie->first < ic->first) {
      q = static_cast<double>((ie++)->second) / ne;
    } else {
      p = static_cast<double>((ic++)->second) / nc;
      q = static_cast<double>((ie++)->second) / ne;
    }
    const double m = 0.5 * (p + q);
    if (p > 0) js += 0.5 * p * std::log2(p / m);
    if (q > 0) js += 0.5 * q * std::log2(q / m);
  }
  r.js_divergence_bits = std::clamp(js, 0.0, 1.0);
  return r;
}

}  // namespace nvfp4::ptq

// Calibration statistics of linear-layer inputs (include/nvfp4/calibrate.hpp).
#include "nvfp4/calibrate.hpp"

#include <cblas.h>

#include <string>

#include "nvfp4/error.hpp"

namespace nvfp4::ptq {

Calibrator::Calibrator(size_t n_linear, bool hessians) : layers_(n_linear), hessians_(hessians) {
  if (n_linear == 0 || (n_linear - 1) % 7 != 0) {
    throw Error("Calibrator: " + std::to_string(n_linear) + " linear layers is not 7 per block plus the head");
  }
}

std::pair<size_t, size_t> fused_group(size_t i, size_t n_linear) {
  if (i + 1 >= n_linear) return {i, i + 1};  // the head
  const size_t kind = i % 7, base = i - kind;
  if (kind <= 2) return {base, base + 3};
  if (kind == 4 || kind == 5) return {base + 4, base + 6};
  return {i, i + 1};
}

void Calibrator::observe(size_t linear, const float* x, int64_t N, int64_t C) {
  if (linear >= layers_.size()) throw Error("Calibrator: linear layer " + std::to_string(linear) + " is out of range");
  const size_t i = canonical(linear);
  if (i != linear) return;  // the same rows as its group's first layer
  Layer& L = layers_[i];
  if (L.C != 0 && L.C != C) {
    throw Error("Calibrator: linear layer " + std::to_string(i) + " had inputs of " + std::to_string(L.C) + " and now " +
                std::to_string(C));
  }
  L.C = C;
  L.rows += N;
  L.stats.add(std::span<const float>(x, static_cast<size_t>(N * C)));
  if (!hessians_ || i + 1 == layers_.size() || N == 0) return;
  if (L.upper.empty()) L.upper.assign(static_cast<size_t>(C * C), 0.0);
  scratch_.assign(x, x + N * C);
  openblas_set_num_threads(1);  // deterministic (see src/kernels/cpu/gemm.cpp)
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(C), static_cast<int>(N), 1.0, scratch_.data(),
              static_cast<int>(C), 1.0, L.upper.data(), static_cast<int>(C));
}

const AbsStats& Calibrator::input_stats(size_t linear) const { return layers_.at(canonical(linear)).stats; }

int64_t Calibrator::rows(size_t linear) const { return layers_.at(canonical(linear)).rows; }

std::vector<double> Calibrator::hessian(size_t linear) const {
  const Layer& L = layers_.at(canonical(linear));
  std::vector<double> H = L.upper;
  for (int64_t r = 0; r < L.C && !H.empty(); ++r) {
    for (int64_t c = 0; c < r; ++c) H[r * L.C + c] = H[c * L.C + r];
  }
  return H;
}

}  // namespace nvfp4::ptq

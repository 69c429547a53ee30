// Calibration statistics of linear-layer inputs (include/nvfp4/calibrate.hpp).
#include "nvfp4/calibrate.hpp"

#include <cblas.h>

#include <algorithm>
#include <string>

#include "kernels/cpu/ops_common.hpp"  // NVFP4_OMP
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
  // X^T X's upper triangle in tiles of kTile x kTile columns, each tile one single-threaded BLAS call
  // (dsyrk on the diagonal, dgemm above it), the tiles spread over OpenMP threads: every element's
  // sum is made by the same call whatever the thread count, so the bits do not depend on it
  // (OpenBLAS's own threading is not bit-stable, src/kernels/cpu/gemm.cpp).
  openblas_set_num_threads(1);
  constexpr int64_t kTile = 128;
  const int64_t tiles = (C + kTile - 1) / kTile;
  const int n = static_cast<int>(N), ld = static_cast<int>(C);
  const double* X = scratch_.data();
  double* U = L.upper.data();
  NVFP4_OMP("omp parallel for schedule(dynamic)")
  for (int64_t t = 0; t < tiles * (tiles + 1) / 2; ++t) {
    int64_t bi = 0, rest = t;  // tile t of the upper triangle, row by row: (bi, bj) with bj >= bi
    while (rest >= tiles - bi) rest -= tiles - bi, ++bi;
    const int64_t bj = bi + rest, r0 = bi * kTile, c0 = bj * kTile;
    const int rows = static_cast<int>(std::min(kTile, C - r0)), cols = static_cast<int>(std::min(kTile, C - c0));
    if (bi == bj) {
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, rows, n, 1.0, X + r0, ld, 1.0, U + r0 * C + r0, ld);
    } else {
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rows, cols, n, 1.0, X + r0, ld, X + c0, ld, 1.0,
                  U + r0 * C + c0, ld);
    }
  }
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

// Calibration statistics of a model's linear-layer inputs (src/ptq/calibrate.cpp): run the
// unquantized model over calibration tokens on an engine whose EngineOptions::observer is a
// Calibrator, then read each layer's input |x| statistics (the W4A4 activation scale: its amax or
// a percentile) and, for GPTQ, the Hessian X^T X of its inputs.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "nvfp4/engine.hpp"
#include "nvfp4/ptq.hpp"

namespace nvfp4::ptq {

// The fused group of linear layer `linear` (model::linear_refs() order: q, k, v, o, gate, up, down
// per block, the head last, n_linear in all) as [first, end): q/k/v, gate/up, or the layer alone.
// A group's members read the same input rows and share their tensor scales.
std::pair<size_t, size_t> fused_group(size_t linear, size_t n_linear);

class Calibrator final : public infer::LinearInputObserver {
 public:
  // n_linear: the engine's linear layers (linear_plan().size(), the head last); hessians: also
  // accumulate X^T X for every block projection (not the head).
  Calibrator(size_t n_linear, bool hessians);

  void observe(size_t linear, const float* rows, int64_t N, int64_t C) override;

  // q/k/v of a block share their input and so their statistics, as do gate/up (one accumulation).
  const AbsStats& input_stats(size_t linear) const;
  int64_t rows(size_t linear) const;
  // X^T X of the layer's inputs, (C, C) row-major, both triangles; empty before any input, or for
  // the head, or without `hessians`.
  std::vector<double> hessian(size_t linear) const;

 private:
  size_t canonical(size_t linear) const { return fused_group(linear, layers_.size()).first; }
  struct Layer {
    AbsStats stats;
    int64_t rows = 0, C = 0;
    std::vector<double> upper;  // X^T X, the upper triangle accumulated (row-major)
  };
  std::vector<Layer> layers_;
  bool hessians_;
  std::vector<double> scratch_;
};

}  // namespace nvfp4::ptq

// Shared by the CPU model's tests (test_model.cpp, test_model_features.cpp): the tiny config,
// token batches, finite-difference gradient checks of whole-model gradients, and a few AdamW
// steps on one batch.
//
// The gradient checks run the FP32 model as it is (no double-precision twin): each step is
// chosen so the loss moves far above the FP32 rounding of the loss (~1e-7 relative), where
// the central difference's truncation error (O(h^2)) is also small. A wrong gradient is off by
// O(1), far outside the tolerances.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "nvfp4/model.hpp"

namespace model_test {

using nvfp4::model::CpuModel;
using nvfp4::model::ModelConfig;

inline ModelConfig tiny() {
  ModelConfig c;
  c.n_layer = 2;
  c.d_model = 32;
  c.n_head = 4;
  c.n_kv_head = 2;  // grouped-query attention exercised
  c.d_ffn = 48;
  c.vocab = 23;
  c.seq_len = 8;
  c.init_std = 0.2f;  // large enough that every tensor's gradient is well above FP32 noise
  return c;
}

inline std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

// Moves every vector parameter (norm gains, initialized to 1; biases, initialized to 0) to a
// random value near its start, so the checks do not run at a special point (a zero bias, a
// unit gain) where a wrong formula can still give the right number.
inline void perturb_vectors(CpuModel& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (const auto& s : m.specs()) {
    if (s.shape.size() != 1) continue;
    for (int64_t i = 0; i < s.numel; ++i) m.params()[s.offset + i] += nd(rng);
  }
}

struct Batch {
  std::vector<int32_t> tokens, targets;
  int B = 0, T = 0;
};

inline Batch random_batch(const ModelConfig& c, int B, int T, uint64_t seed) {
  return {random_tokens(size_t(B) * T, c.vocab, seed), random_tokens(size_t(B) * T, c.vocab, seed + 1), B, T};
}

// The analytic gradient of the mean loss on `batch` (grads zeroed first), as a copy.
inline std::vector<float> model_gradient(CpuModel& m, const Batch& batch) {
  m.zero_grad();
  m.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  m.backward();
  return {m.grads().begin(), m.grads().end()};
}

// Directional derivative along a random unit direction d inside each tensor, analytic (d . g)
// vs central difference. The step h (a parameter-space distance) moves the loss by ~1e-3, but
// is at most 0.02, where the truncation error is < 0.2 % (at 0.1 attention's curvature costs
// up to 5 %); the FP32 noise of the loss (~1e-6) then costs < 3e-5 of the difference.
// Returns the number of tensors checked.
inline int expect_directional_gradients(CpuModel& m, const Batch& batch, uint64_t seed) {
  const std::vector<float> grad = model_gradient(m, batch);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  int checked = 0;
  for (const auto& s : m.specs()) {
    std::vector<double> d(static_cast<size_t>(s.numel));
    double norm = 0;
    for (int64_t i = 0; i < s.numel; ++i) norm += (d[i] = nd(rng)) * d[i];
    double analytic = 0;
    for (int64_t i = 0; i < s.numel; ++i) analytic += (d[i] /= std::sqrt(norm)) * grad[s.offset + i];
    const double h = std::min(0.02, 1e-3 / std::abs(analytic));
    const std::vector<float> saved(m.params().begin() + s.offset, m.params().begin() + s.offset + s.numel);
    auto loss_at = [&](double sign) {
      for (int64_t i = 0; i < s.numel; ++i) m.params()[s.offset + i] = static_cast<float>(saved[i] + sign * h * d[i]);
      return static_cast<double>(m.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T));
    };
    const double numeric = (loss_at(1) - loss_at(-1)) / (2 * h);
    std::copy(saved.begin(), saved.end(), m.params().begin() + s.offset);
    EXPECT_NEAR(analytic, numeric, 0.02 * std::abs(numeric) + 5e-5) << s.name;
    ++checked;
  }
  return checked;
}

// Single elements with central differences: in each tensor the element of the largest
// gradient and `random_picks` more at random. The step h = 1e-2 moves the loss by
// |g| * 1e-2 against an FP32 loss noise of ~1e-6, so the difference is good to ~1e-4
// absolute, plus a relative O(h^2) truncation term. Returns the number of elements checked.
inline int expect_element_gradients(CpuModel& m, const Batch& batch, int random_picks, uint64_t seed) {
  const std::vector<float> grad = model_gradient(m, batch);
  std::mt19937_64 rng(seed);
  int checked = 0;
  constexpr double h = 1e-2;
  for (const auto& s : m.specs()) {
    std::vector<int64_t> picks;
    int64_t largest = 0;
    for (int64_t i = 1; i < s.numel; ++i) {
      if (std::abs(grad[s.offset + i]) > std::abs(grad[s.offset + largest])) largest = i;
    }
    picks.push_back(largest);
    for (int r = 0; r < random_picks; ++r) picks.push_back(static_cast<int64_t>(rng() % uint64_t(s.numel)));
    EXPECT_GT(std::abs(grad[s.offset + largest]), 1e-3) << s.name << ": no gradient to check";
    for (int64_t i : picks) {
      float& p = m.params()[s.offset + i];
      const float saved = p;
      p = static_cast<float>(saved + h);
      const double up = m.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
      p = static_cast<float>(saved - h);
      const double down = m.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
      p = saved;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grad[s.offset + i], numeric, 0.03 * std::abs(numeric) + 2e-4) << s.name << " element " << i;
      ++checked;
    }
  }
  return checked;
}

// Steps of AdamW (lr 1e-2) on one batch of next-token targets; the loss before each step.
inline std::vector<float> fit_one_batch(const ModelConfig& c, int steps, uint64_t seed) {
  CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), seed);
  std::vector<float> mom(m.params().size(), 0.0f), var(m.params().size(), 0.0f);
  const auto tokens = random_tokens(size_t(4) * c.seq_len, c.vocab, seed + 12);
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(0);
  std::vector<float> losses;
  for (int s = 1; s <= steps; ++s) {
    m.zero_grad();
    losses.push_back(m.forward(tokens.data(), targets.data(), 4, c.seq_len));
    m.backward();
    nvfp4::cpu::adamw_update(m.params().data(), m.grads().data(), mom.data(), var.data(),
                             static_cast<int64_t>(m.params().size()), 1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f, s);
  }
  return losses;
}

}  // namespace model_test

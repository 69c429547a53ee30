// Calibration on the CPU engine (src/ptq/calibrate.cpp): the Calibrator's statistics equal those
// computed directly from the input rows the engine hands every linear layer (recorded here), the
// q/k/v and gate/up groups really see one input each, and the Hessians are X^T X.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "../infer/tiny_hf_model.hpp"
#include "kernels/cpu/ops.hpp"  // cpu::set_num_threads
#include "nvfp4/calibrate.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/hf_model.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
constexpr char kPrefix[] = "nvfp4_calibrate_test_";
using PtqCalibrate = nvfp4::test::ScratchDirTest<kPrefix>;

// Records every layer's rows and passes them on.
struct Tee final : nvfp4::infer::LinearInputObserver {
  nvfp4::infer::LinearInputObserver* next = nullptr;
  std::map<size_t, std::vector<float>> rows;
  std::map<size_t, int64_t> width;
  void observe(size_t i, const float* x, int64_t N, int64_t C) override {
    rows[i].insert(rows[i].end(), x, x + N * C);
    width[i] = C;
    next->observe(i, x, N, C);
  }
};

TEST_F(PtqCalibrate, StatisticsAreThoseOfTheLayersInputs) {
  const fs::path& dir = dir_;
  for (const auto& arch : nvfp4::test::kTinyArchs) {
    SCOPED_TRACE(arch);
    const auto c = nvfp4::test::tiny_config(arch);
    nvfp4::test::write_tiny_hf_model(dir / arch, arch, c, 61);
    const auto m = nvfp4::infer::HfModel::open((dir / arch).string());
    const size_t n_linear = static_cast<size_t>(7 * c.n_layer + 1);
    nvfp4::ptq::Calibrator cal(n_linear, true);
    Tee tee;
    tee.next = &cal;
    nvfp4::infer::EngineOptions o;
    o.max_context = 40;
    o.max_sequences = 2;
    o.observer = &tee;
    const auto e = nvfp4::infer::make_cpu_engine(m, o);
    const auto a = nvfp4::test::some_tokens(30, c.vocab, 62), b = nvfp4::test::some_tokens(17, c.vocab, 63);
    std::vector<float> logits;
    e->forward(std::vector<nvfp4::infer::SeqChunk>{{0, a}, {1, b}}, logits);
    e->forward(std::vector<nvfp4::infer::SeqChunk>{{0, std::vector<int32_t>{5}}}, logits);
    ASSERT_EQ(tee.rows.size(), n_linear);
    for (size_t i = 0; i < n_linear; ++i) {
      const auto& x = tee.rows[i];
      const int64_t C = tee.width[i], N = static_cast<int64_t>(x.size()) / C;
      EXPECT_EQ(cal.rows(i), N) << i;
      float amax = 0;
      for (float v : x) amax = std::max(amax, std::fabs(v));
      EXPECT_EQ(cal.input_stats(i).amax(), amax) << i;
      const size_t kind = i % 7;
      if (i + 1 < n_linear && (kind == 1 || kind == 2 || kind == 5)) {
        EXPECT_EQ(x, tee.rows[kind == 5 ? i - 1 : i - kind]) << i << ": the group's layers share one input";
      }
      const auto H = cal.hessian(i);
      if (i + 1 == n_linear) {
        EXPECT_TRUE(H.empty());
        continue;
      }
      ASSERT_EQ(static_cast<int64_t>(H.size()), C * C) << i;
      double worst = 0;
      for (int64_t r = 0; r < C; ++r) {
        for (int64_t k = 0; k < C; ++k) {
          double want = 0, mag = 0;
          for (int64_t n = 0; n < N; ++n) {
            want += double(x[n * C + r]) * x[n * C + k];
            mag += std::fabs(double(x[n * C + r]) * x[n * C + k]);
          }
          worst = std::max(worst, std::fabs(H[r * C + k] - want) / (mag + 1e-300));
          EXPECT_EQ(H[r * C + k], H[k * C + r]);
        }
      }
      EXPECT_LT(worst, 1e-13) << i;
    }
  }
}

// The Hessian is accumulated in tiles spread over threads: the same bits with 1 and 3 threads, and
// X^T X of every observed batch (three tiles a side and a partial one: C = 300), checked in FP64.
TEST(PtqCalibrator, HessianTilesDoNotDependOnTheThreadCount) {
  constexpr int64_t C = 300;
  const auto x1 = nvfp4::test::randn(40 * C, 301), x2 = nvfp4::test::randn(25 * C, 302);
  auto run = [&](int threads) {
    nvfp4::cpu::set_num_threads(threads);
    nvfp4::ptq::Calibrator cal(8, true);
    cal.observe(0, x1.data(), 40, C);
    cal.observe(0, x2.data(), 25, C);
    return cal.hessian(1);  // k_proj: its group's (q_proj's) Hessian
  };
  const auto one = run(1), three = run(3);
  nvfp4::cpu::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  ASSERT_EQ(one.size(), static_cast<size_t>(C * C));
  EXPECT_EQ(one, three);
  double worst = 0;
  for (int64_t r = 0; r < C; ++r) {
    for (int64_t k = 0; k < C; ++k) {
      double want = 0;
      for (int64_t n = 0; n < 40; ++n) want += double(x1[n * C + r]) * x1[n * C + k];
      for (int64_t n = 0; n < 25; ++n) want += double(x2[n * C + r]) * x2[n * C + k];
      worst = std::max(worst, std::fabs(one[static_cast<size_t>(r * C + k)] - want) / (1 + std::fabs(want)));
    }
  }
  EXPECT_LT(worst, 1e-12);
}

}  // namespace

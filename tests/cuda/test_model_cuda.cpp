// The CUDA model against the CPU reference model: loss and every parameter gradient, a short
// training run through the trainer on both devices, determinism. Skips cleanly without a GPU.
//
// Tolerances: both models get the same BF16-representable weights, so the differences come
// from the CUDA model storing activations and activation gradients in BF16 (unit roundoff
// u = 2^-9 per rounding) and from summation order. A gradient passes a few dozen roundings from
// the loss back to the first layer, so its relative L2 error is held to 32 u = 2^-4; the loss,
// a mean over N positions of values each through the whole network, to 8 u relative.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "nvfp4/checkpoint.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/model_cuda.hpp"
#include "support/cuda_test.hpp"
#include "support/tiny_run.hpp"
#include "train/trainer.hpp"

namespace {


constexpr double kU = 1.0 / 512.0;  // BF16 unit roundoff

nvfp4::model::ModelConfig config() {
  nvfp4::model::ModelConfig c;
  c.n_layer = 2;
  c.d_model = 128;
  c.n_head = 4;     // head size 32
  c.n_kv_head = 2;  // grouped-query attention
  c.d_ffn = 256;
  c.vocab = 257;
  c.seq_len = 80;
  c.init_std = 0.05f;
  return c;
}

std::vector<int32_t> tokens(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % 257);
  return t;
}

TEST(CudaModel, LossAndEveryGradientMatchTheCpuModel) {
  REQUIRE_GPU();
  const auto c = config();
  nvfp4::model::CpuModel cpu(c);
  nvfp4::model::init_params(c, cpu.params(), 4);
  for (float& p : cpu.params()) p = nvfp4::fmt::bf16_round(p);  // weights both sides hold exactly
  nvfp4::model::CudaModel gpu(c);
  gpu.set_params(cpu.params());
  for (int T : {80, 50}) {  // a full window and one that is not a multiple of the attention tile
    SCOPED_TRACE("T = " + std::to_string(T));
    const int B = 3;
    const auto in = tokens(size_t(B) * T, 1), tgt = tokens(size_t(B) * T, 2);
    cpu.zero_grad();
    gpu.zero_grad();
    const double lc = cpu.forward(in.data(), tgt.data(), B, T);
    const double lg = gpu.forward(in.data(), tgt.data(), B, T);
    cpu.backward();
    gpu.backward();
    EXPECT_NEAR(lg, lc, 8 * kU * lc);
    std::vector<float> g(cpu.grads().size());
    gpu.get_grads(g);
    double worst = 0;
    std::string worst_name;
    for (const auto& s : cpu.specs()) {
      double num = 0, den = 0;
      for (int64_t i = 0; i < s.numel; ++i) {
        const double d = double(g[s.offset + i]) - cpu.grads()[s.offset + i];
        num += d * d;
        den += double(cpu.grads()[s.offset + i]) * cpu.grads()[s.offset + i];
      }
      const double rel = std::sqrt(num / std::max(den, 1e-30));
      EXPECT_LT(rel, 32 * kU) << s.name;
      if (rel > worst) worst = rel, worst_name = s.name;
    }
    std::printf("T=%d loss cpu %.6f gpu %.6f; worst gradient relative L2 error %.4f (%s)\n", T, lc, lg, worst,
                worst_name.c_str());
  }
  // Logits without targets agree too (sampling, export checks).
  const auto in = tokens(80, 3);
  cpu.forward(in.data(), nullptr, 1, 80);
  gpu.forward(in.data(), nullptr, 1, 80);
  const auto lg = gpu.logits();
  double num = 0, den = 0;
  for (size_t i = 0; i < lg.size(); ++i) {
    const double d = double(lg[i]) - cpu.logits()[i];
    num += d * d;
    den += double(cpu.logits()[i]) * cpu.logits()[i];
  }
  EXPECT_LT(std::sqrt(num / den), 32 * kU);
}

nvfp4::train::TrainOptions run(const std::string& device, const std::string& out) {
  return nvfp4::test::tiny_run(device, out);
}

std::string fresh(const std::string& name) { return nvfp4::test::fresh_run_dir("nvfp4_cudamodel_", name); }

TEST(CudaModel, TrainingTracksTheCpuAndIsDeterministic) {
  REQUIRE_GPU();
  const auto cpu = nvfp4::train::train(run("cpu", fresh("cpu")));
  const auto gpu = nvfp4::train::train(run("cuda", fresh("gpu")));
  const auto again = nvfp4::train::train(run("cuda", fresh("gpu2")));
  ASSERT_EQ(cpu.history.size(), 30u);
  ASSERT_EQ(gpu.history.size(), 30u);
  EXPECT_EQ(gpu.device, "cuda");
  for (size_t i = 0; i < 30; ++i) {
    // BF16 activations: the runs drift apart slowly; 5% over 30 steps at lr 3e-3.
    EXPECT_NEAR(gpu.history[i].loss, cpu.history[i].loss, 0.05 * cpu.history[i].loss) << "step " << i + 1;
    EXPECT_EQ(gpu.history[i].loss, again.history[i].loss) << "CUDA run not deterministic at step " << i + 1;
  }
  EXPECT_NEAR(gpu.history.back().val_loss, cpu.history.back().val_loss, 0.05 * cpu.history.back().val_loss);
  EXPECT_LT(gpu.history.back().val_loss, gpu.unigram_val_loss - 0.2);  // it learned (CPU: 2.6535 vs 2.9515)
  std::printf("final val loss cpu %.4f cuda %.4f (unigram %.4f)\n", cpu.history.back().val_loss,
              gpu.history.back().val_loss, gpu.unigram_val_loss);
}

TEST(CudaModel, ResumeContinuesBitIdentically) {
  REQUIRE_GPU();
  auto whole_opt = run("cuda", fresh("whole"));
  whole_opt.steps = 12;
  whole_opt.schedule = nvfp4::train::parse_schedule("cosine", 3e-3, 3, 12);
  const auto whole = nvfp4::train::train(whole_opt);
  const std::string dir = fresh("resumed");
  auto o = whole_opt;
  o.out_dir = dir;
  o.ckpt_every = 6;
  nvfp4::train::train(o);
  std::filesystem::remove(nvfp4::io::checkpoint_path(dir, 12));  // "interrupted" after step 6
  o.resume = true;
  const auto rest = nvfp4::train::train(o);
  ASSERT_EQ(rest.history.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(rest.history[i].loss, whole.history[6 + i].loss) << "step " << 7 + i;
}

TEST(CudaModel, RejectsHeadSizesTheKernelsDoNotTake) {
  REQUIRE_GPU();
  auto c = config();
  c.n_head = 8;  // head size 16
  EXPECT_THROW(nvfp4::model::CudaModel m(c), nvfp4::Error);
}

}  // namespace

// The inference engine's fused row ops (include/nvfp4/cuda_ops.hpp) against the separate CUDA ops
// they replace, bit for bit: qkv_rows = rmsnorm_forward over heads + rope_rows + kv_append (fused
// q/k/v rows and separate buffers in place, with and without q/k norms, GQA, HS 10 to 256, bad
// cache positions flagged), swiglu_rows = swiglu_forward on the two halves of each row,
// residual_rmsnorm_forward = residual_forward + rmsnorm_forward. (The separate ops are tested
// against the CPU ops in their own files.)
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace cuda_ops_test;

// Columns [c0, c0 + w) of each of the N rows of a (N, ld) matrix.
std::vector<float> columns(const std::vector<float>& m, int64_t N, int64_t ld, int64_t c0, int64_t w) {
  std::vector<float> out;
  out.reserve(static_cast<size_t>(N * w));
  for (int64_t n = 0; n < N; ++n) out.insert(out.end(), m.begin() + n * ld + c0, m.begin() + n * ld + c0 + w);
  return out;
}

std::vector<float> rope_table(int64_t HS, double theta) {
  std::vector<float> f(static_cast<size_t>(HS / 2));
  for (int64_t i = 0; i < HS / 2; ++i) f[i] = static_cast<float>(1.0 / std::pow(theta, 2.0 * i / HS));
  return f;
}

TEST(CudaOpsFusedRows, QkvRowsEqualTheSeparateOps) {
  REQUIRE_GPU();
  struct Shape {
    int64_t NH, NKV, HS;
  };
  uint64_t seed = 900;
  for (const auto& sh : {Shape{32, 8, 128}, Shape{4, 2, 48}, Shape{4, 1, 64}, Shape{3, 3, 10}, Shape{2, 1, 256}}) {
    for (const bool norms : {false, true}) {
      for (const bool fused : {true, false}) {
        SCOPED_TRACE("NH=" + std::to_string(sh.NH) + " NKV=" + std::to_string(sh.NKV) + " HS=" +
                     std::to_string(sh.HS) + (norms ? " q/k norms" : "") + (fused ? " fused rows" : " in place"));
        const int64_t NH = sh.NH, NKV = sh.NKV, HS = sh.HS, QD = NH * HS, KD = NKV * HS, W = QD + 2 * KD;
        const int64_t slots = 3, max_ctx = 40;
        // Rows of three sequences at scattered positions (decode steps and a prefill piece).
        const std::vector<int32_t> slot = {1, 0, 2, 2, 2, 0, 1}, pos = {39, 0, 5, 6, 7, 17, 3};
        const int64_t N = static_cast<int64_t>(slot.size());
        const auto qkv = randn_bf16(static_cast<size_t>(N * W), ++seed, 2.0f);
        const auto qw = randn_bf16(static_cast<size_t>(HS), ++seed), kw = randn_bf16(static_cast<size_t>(HS), ++seed);
        const auto cache0 = randn_bf16(static_cast<size_t>(slots * max_ctx * KD), ++seed);
        const auto inv = rope_table(HS, 500000.0);
        const float eps = 1e-6f;
        DeviceBuffer<int32_t> d_slot(slot), d_pos(pos);
        DeviceBuffer<float> d_inv(inv);
        DeviceBuffer<uint16_t> d_qw(to_bits(qw)), d_kw(to_bits(kw));
        const uint16_t* qn = norms ? d_qw.ptr : nullptr;
        const uint16_t* kn = norms ? d_kw.ptr : nullptr;

        // The separate ops.
        DeviceBuffer<uint16_t> rq(to_bits(columns(qkv, N, W, 0, QD))), rk(to_bits(columns(qkv, N, W, QD, KD))),
            rv(to_bits(columns(qkv, N, W, QD + KD, KD))), tq(N * QD), tk(N * KD);
        DeviceBuffer<float> rstd(N * NH);
        DeviceBuffer<uint16_t> rkc(to_bits(cache0)), rvc(to_bits(cache0));
        DeviceBuffer<uint32_t> rstatus(std::vector<uint32_t>{0});
        uint16_t* q_ref = rq.ptr;
        uint16_t* k_ref = rk.ptr;
        if (norms) {
          cu::rmsnorm_forward(tq.ptr, rstd.ptr, rq.ptr, d_qw.ptr, N * NH, HS, eps, nullptr);
          cu::rmsnorm_forward(tk.ptr, rstd.ptr, rk.ptr, d_kw.ptr, N * NKV, HS, eps, nullptr);
          q_ref = tq.ptr;
          k_ref = tk.ptr;
        }
        cu::rope_rows(q_ref, d_pos.ptr, d_inv.ptr, N, NH, HS, nullptr);
        cu::rope_rows(k_ref, d_pos.ptr, d_inv.ptr, N, NKV, HS, nullptr);
        cu::kv_append(rkc.ptr, rvc.ptr, k_ref, rv.ptr, d_slot.ptr, d_pos.ptr, N, NKV, HS, slots, max_ctx,
                      rstatus.ptr, nullptr);
        const auto want_q = norms ? tq.download() : rq.download();
        const auto want_k = norms ? tk.download() : rk.download();
        const auto want_v = rv.download();

        // One qkv_rows.
        DeviceBuffer<uint16_t> kc(to_bits(cache0)), vc(to_bits(cache0));
        DeviceBuffer<uint32_t> status(std::vector<uint32_t>{0});
        std::vector<uint16_t> got_q, got_k, got_v;
        if (fused) {
          DeviceBuffer<uint16_t> in(to_bits(qkv)), q(N * QD), k(N * KD), v(N * KD);
          cu::qkv_rows(q.ptr, k.ptr, v.ptr, in.ptr, in.ptr + QD, in.ptr + QD + KD, W, W, qn, kn, eps, d_pos.ptr,
                       d_inv.ptr, kc.ptr, vc.ptr, d_slot.ptr, N, NH, NKV, HS, slots, max_ctx, status.ptr, nullptr);
          got_q = q.download(), got_k = k.download(), got_v = v.download();
          EXPECT_EQ(first_diff(in.download(), to_bits(qkv)), -1) << "the input was written";
        } else {
          DeviceBuffer<uint16_t> q(to_bits(columns(qkv, N, W, 0, QD))), k(to_bits(columns(qkv, N, W, QD, KD))),
              v(to_bits(columns(qkv, N, W, QD + KD, KD)));
          cu::qkv_rows(q.ptr, k.ptr, v.ptr, q.ptr, k.ptr, v.ptr, QD, KD, qn, kn, eps, d_pos.ptr, d_inv.ptr, kc.ptr,
                       vc.ptr, d_slot.ptr, N, NH, NKV, HS, slots, max_ctx, status.ptr, nullptr);
          got_q = q.download(), got_k = k.download(), got_v = v.download();
        }
        EXPECT_EQ(first_diff(got_q, want_q), -1) << "q";
        EXPECT_EQ(first_diff(got_k, want_k), -1) << "k";
        EXPECT_EQ(first_diff(got_v, want_v), -1) << "v";
        EXPECT_EQ(first_diff(kc.download(), rkc.download()), -1) << "k cache";
        EXPECT_EQ(first_diff(vc.download(), rvc.download()), -1) << "v cache";
        EXPECT_EQ(status.download()[0], 0u);
        // The rotation did something and the norms were applied: q differs from its input.
        EXPECT_NE(first_diff(got_q, to_bits(columns(qkv, N, W, 0, QD))), -1);

        // Rows 2 and 5 outside the cache: q/k/v still written, those cache rows untouched, flagged.
        if (fused) {
          DeviceBuffer<int32_t> bad_slot(std::vector<int32_t>{1, 0, 3, 2, 2, 0, 1}),
              bad_pos(std::vector<int32_t>{39, 0, 5, 6, 7, 40, 3});
          DeviceBuffer<uint16_t> in(to_bits(qkv)), q(N * QD), k(N * KD), v(N * KD), kc2(to_bits(cache0)),
              vc2(to_bits(cache0));
          cu::qkv_rows(q.ptr, k.ptr, v.ptr, in.ptr, in.ptr + QD, in.ptr + QD + KD, W, W, qn, kn, eps, bad_pos.ptr,
                       d_inv.ptr, kc2.ptr, vc2.ptr, bad_slot.ptr, N, NH, NKV, HS, slots, max_ctx, status.ptr,
                       nullptr);
          EXPECT_EQ(status.download()[0], cu::kStatusBadPosition);
          const auto got = kc2.download();
          const auto good = kc.download();  // the good rows' cache rows as before, the others cache0's
          for (int64_t r = 0; r < slots * max_ctx; ++r) {
            const int32_t s = static_cast<int32_t>(r / max_ctx), p = static_cast<int32_t>(r % max_ctx);
            const bool dropped = (s == 2 && p == 5) || (s == 0 && p == 17);
            const auto& want = dropped ? to_bits(cache0) : good;
            for (int64_t c = 0; c < KD; ++c) {
              if (got[r * KD + c] != want[r * KD + c]) {
                ADD_FAILURE() << "k cache row (" << s << ", " << p << ") element " << c;
                r = slots * max_ctx;
                break;
              }
            }
          }
          EXPECT_EQ(first_diff(v.download(), want_v), -1) << "v with bad rows";
        }
      }
    }
  }
}

TEST(CudaOpsFusedRows, SwigluRowsEqualsSwigluOnTheHalves) {
  REQUIRE_GPU();
  uint64_t seed = 950;
  for (const auto& [N, F] : {std::pair<int64_t, int64_t>{1, 14336}, {37, 8192}, {5, 13}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " F=" + std::to_string(F));
    const auto gu = randn_bf16(static_cast<size_t>(N * 2 * F), ++seed, 3.0f);
    DeviceBuffer<uint16_t> d_g(to_bits(columns(gu, N, 2 * F, 0, F))), d_u(to_bits(columns(gu, N, 2 * F, F, F))),
        want(N * F), d_gu(to_bits(gu)), got(N * F);
    cu::swiglu_forward(want.ptr, d_g.ptr, d_u.ptr, N * F, nullptr);
    cu::swiglu_rows(got.ptr, d_gu.ptr, N, F, nullptr);
    EXPECT_EQ(first_diff(got.download(), want.download()), -1);
  }
}

TEST(CudaOpsFusedRows, ResidualRmsnormEqualsTheTwoOps) {
  REQUIRE_GPU();
  uint64_t seed = 970;
  for (const auto& [N, C] : {std::pair<int64_t, int64_t>{1, 4096}, {300, 2048}, {17, 1000}}) {
    SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C));
    const auto x = randn_bf16(static_cast<size_t>(N * C), ++seed, 4.0f), d = randn_bf16(N * C, ++seed);
    const auto w = randn_bf16(static_cast<size_t>(C), ++seed);
    DeviceBuffer<uint16_t> rx(to_bits(x)), dd(to_bits(d)), dw(to_bits(w)), rout(N * C), fx(to_bits(x)), fout(N * C);
    DeviceBuffer<float> rrstd(N), frstd(N);
    cu::residual_forward(rx.ptr, rx.ptr, dd.ptr, N * C, nullptr);
    cu::rmsnorm_forward(rout.ptr, rrstd.ptr, rx.ptr, dw.ptr, N, C, 1e-5f, nullptr);
    cu::residual_rmsnorm_forward(fout.ptr, frstd.ptr, fx.ptr, dd.ptr, dw.ptr, N, C, 1e-5f, nullptr);
    EXPECT_EQ(first_diff(fx.download(), rx.download()), -1) << "x";
    EXPECT_EQ(first_diff(fout.download(), rout.download()), -1) << "out";
    EXPECT_EQ(first_diff(frstd.download(), rrstd.download()), -1) << "rstd";
  }
}

}  // namespace

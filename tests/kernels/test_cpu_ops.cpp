// Across the CPU reference ops (src/kernels/cpu/): the gradient harness rejects wrong gradients,
// and every op gives the same bits run to run and for any thread count. The ops' own tests:
// test_<family>.cpp; the harness: test_cpu_ops_support.hpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/test_cpu_ops_support.hpp"
#include "nvfp4/error.hpp"

namespace {

using namespace cpu_ops_test;

// The harness must be able to fail: a gradient off by 0.1% in one element, a gradient with
// the wrong sign, a backward that overwrites instead of accumulating are all rejected.
TEST(CpuOpsGrad, HarnessRejectsWrongGradients) {
  const Vf inp = randn(N * C, 1), w = randn(12 * C, 2), dout = randn(N * 12, 3);
  Vf dinp(N * C, 0.0f);
  cpu::matmul_backward(dinp.data(), nullptr, dout.data(), inp.data(), w.data(), N, C, 12);
  Vd want = to_double(dinp);
  EXPECT_LE(compare(dinp, want, C).worst, 1.0);
  double scale = 0.0;
  for (double x : want) scale = std::max(scale, std::abs(x));
  Vf off = dinp;
  off[17] += static_cast<float>(1e-3 * scale);
  EXPECT_GT(compare(off, want, C).worst, 1.0);
  Vf neg = dinp;
  for (auto& x : neg) x = -x;
  EXPECT_GT(compare(neg, want, C).worst, 1.0);
  Vf nan = dinp;
  nan[3] = NAN;
  EXPECT_GT(compare(nan, want, C).worst, 1.0);
}

// ---- determinism ------------------------------------------------------------------------------------------

// Every op's outputs and gradients, flattened into one list, on shapes large enough for OpenMP
// to split the work. The matmul is above OpenBLAS's threading threshold: a threaded sgemm
// failed this test on the GPU host (Prescott kernels), which is why gemm.cpp pins BLAS to one.
std::vector<Vf> run_everything() {
  constexpr int64_t b = 2, t = 33, nh = 8, nkv = 2, hs = 16, c = 96, f = 160, vocab = 301, n = b * t;
  std::vector<Vf> r;
  const Vf x = randn(n * c, 71), w = randn(f * c, 72), dy = randn(n * f, 73);
  Vf y(n * f), dx(n * c, 0.0f), dw(f * c, 0.0f);
  cpu::matmul_forward(y.data(), x.data(), w.data(), n, c, f);
  cpu::matmul_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), n, c, f);
  r.insert(r.end(), {y, dx, dw});

  const Vf nw = randn(c, 74), dn = randn(n * c, 75);
  Vf yn(n * c), rstd(n), dxn(n * c, 0.0f), dnw(c, 0.0f);
  cpu::rmsnorm_forward(yn.data(), rstd.data(), x.data(), nw.data(), n, c, 1e-5f);
  cpu::rmsnorm_backward(dxn.data(), dnw.data(), dn.data(), x.data(), nw.data(), rstd.data(), n, c);
  r.insert(r.end(), {yn, rstd, dxn, dnw});

  const Vf q = randn(n * nh * hs, 76), k = randn(n * nkv * hs, 77), v = randn(n * nkv * hs, 78);
  const Vf da = randn(n * nh * hs, 79);
  Vf qr(q.size()), dqr(q.size(), 0.0f), ya(q.size()), att(b * nh * t * t), scratch(att.size());
  Vf dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
  cpu::rope_forward(qr.data(), q.data(), b, t, nh, hs);
  cpu::rope_backward(dqr.data(), da.data(), b, t, nh, hs);
  cpu::attention_forward(ya.data(), att.data(), qr.data(), k.data(), v.data(), b, t, nh, nkv, hs);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), scratch.data(), da.data(), qr.data(), k.data(),
                          v.data(), att.data(), b, t, nh, nkv, hs);
  r.insert(r.end(), {qr, dqr, ya, att, scratch, dq, dk, dv});

  // inference: the same rows through the KV cache (sequence i in slot i), rows at positions
  Ints slot(n), pos(n);
  for (int64_t i = 0; i < n; ++i) slot[i] = static_cast<int32_t>(i / t), pos[i] = static_cast<int32_t>(i % t);
  Vf kc(b * t * nkv * hs), vc(kc.size()), yc(q.size()), qrows = q, inv_freq(hs / 2, 0.01f);
  cpu::kv_append(kc.data(), vc.data(), k.data(), v.data(), slot.data(), pos.data(), n, nkv, hs, b, t);
  cpu::attention_cache(yc.data(), qr.data(), kc.data(), vc.data(), slot.data(), pos.data(), n, nh, nkv, hs, b, t, 5,
                       0.25f);
  cpu::rope_rows(qrows.data(), pos.data(), inv_freq.data(), n, nh, hs);
  Vf xq(n * c), xf(n), xb(n * c);
  cpu::nvfp4_quantize_rows(xq.data(), xf.data(), nullptr, x.data(), n, c, {}, true);
  cpu::scale_rows_bias(xb.data(), xq.data(), xf.data(), nw.data(), n, c);
  r.insert(r.end(), {kc, vc, yc, qrows, xq, xf, xb});

  const Vf up = randn(n * f, 80);
  Vf ys(n * f), dg(n * f, 0.0f), du(n * f, 0.0f), res(n * f);
  cpu::swiglu_forward(ys.data(), y.data(), up.data(), n * f);
  cpu::swiglu_backward(dg.data(), du.data(), dy.data(), y.data(), up.data(), n * f);
  cpu::residual_forward(res.data(), ys.data(), up.data(), n * f);
  r.insert(r.end(), {ys, dg, du, res});

  const Ints tokens = randint(n, vocab, 81);
  const Vf wte = randn(vocab * c, 82);
  Vf emb(n * c), dwte(vocab * c, 0.0f);
  cpu::encoder_forward(emb.data(), tokens.data(), wte.data(), b, t, c, vocab);
  cpu::encoder_backward(dwte.data(), dn.data(), tokens.data(), b, t, c, vocab);
  r.insert(r.end(), {emb, dwte});

  const Vf logits = randn(n * vocab, 83, 2.0f);
  Vf losses(n), dlogits(n * vocab, 0.0f);
  cpu::crossentropy_forward(losses.data(), logits.data(), tokens.data(), n, vocab);
  cpu::crossentropy_softmax_backward(dlogits.data(), logits.data(), tokens.data(), n, vocab, 1.0f / n);
  r.insert(r.end(), {losses, dlogits});

  Vf p = w, m(w.size(), 0.0f), vv(w.size(), 0.0f);
  for (int step = 1; step <= 3; ++step)
    cpu::adamw_update(p.data(), dw.data(), m.data(), vv.data(), int64_t(p.size()), 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
  const double norm = cpu::global_norm(dlogits.data(), int64_t(dlogits.size()));
  Vf norm_bits(2);  // the double's bits, compared like the rest
  std::memcpy(norm_bits.data(), &norm, sizeof norm);
  r.insert(r.end(), {p, m, vv, norm_bits});
  return r;
}

TEST(CpuOpsDeterminism, SameBitsRunToRunAndForAnyThreadCount) {
  cpu::set_num_threads(2);
  const auto a = run_everything();
  const auto a2 = run_everything();
  cpu::set_num_threads(1);
  const auto one = run_everything();
  cpu::set_num_threads(2);
  ASSERT_EQ(a.size(), one.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(same_bits(a[i], a2[i])) << "result " << i << " differs between two runs";
    EXPECT_TRUE(same_bits(a[i], one[i])) << "result " << i << " differs between 1 and 2 threads";
  }
  EXPECT_THROW(cpu::set_num_threads(0), nvfp4::Error);
}

}  // namespace

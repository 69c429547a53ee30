"""torch's scaled_dot_product_attention, causal, BF16, forward and forward + backward, on the shapes
bench/bench_attention_train.cu times (issue 18's same-run baseline; run both in one device call).

    python3 tests/hf/bench_sdpa.py [--shapes "16,1024,12,12,64;4,4096,16,16,128;1,4096,32,8,128"]
                                   [--reps 20] [--warmup 5]

Prints the same columns as bench_attention_train and the backend torch picked. Median of CUDA-event
timings after warm-up; the same (B, T, NH, NKV, HS) layout: q (B, NH, T, HS), k, v (B, NKV, T, HS)
with enable_gqa where this torch has it, else k and v expanded to NH heads before the timed part.
"""
import argparse
import statistics
import sys

import torch
import torch.nn.functional as F


def parse_shapes(text):
    shapes = []
    for part in text.split(";"):
        b, t, nh, nkv, hs = (int(x) for x in part.split(","))
        if nh % nkv:
            sys.exit(f"bench_sdpa: NKV {nkv} does not divide NH {nh}")
        shapes.append((b, t, nh, nkv, hs))
    return shapes


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="16,1024,12,12,64;4,4096,16,16,128;1,4096,32,8,128")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_sdpa: no CUDA device")
    try:  # enable_gqa came with torch 2.5
        x = torch.zeros(1, 2, 1, 8, device="cuda", dtype=torch.bfloat16)
        F.scaled_dot_product_attention(x, x[:, :1], x[:, :1], enable_gqa=True)
        gqa = True
    except TypeError:
        gqa = False
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
          f"GQA {'enable_gqa' if gqa else 'k, v expanded before timing'}")
    print(f"{'B':>3} {'T':>6} {'NH':>4} {'NKV':>4} {'HS':>4} {'fwd ms':>12} {'fwd+bwd ms':>12} "
          f"{'fwd TFLOP/s':>12} {'bwd/fwd':>10}")
    gen = torch.Generator(device="cuda").manual_seed(7)
    for b, t, nh, nkv, hs in parse_shapes(a.shapes):
        def rnd(heads):
            return torch.randn(b, heads, t, hs, device="cuda", dtype=torch.bfloat16, generator=gen)
        q = rnd(nh).requires_grad_()
        k, v = rnd(nkv), rnd(nkv)
        if not gqa and nkv != nh:
            k, v = (x.repeat_interleave(nh // nkv, dim=1) for x in (k, v))
        k.requires_grad_()
        v.requires_grad_()
        dout = rnd(nh)
        kw = {"enable_gqa": True} if gqa and nkv != nh else {}

        def fwd():
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)

        def both():
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, **kw)
            out.backward(dout)

        # Check: row 0 sees key 0 only, so its output is v's row 0.
        out = fwd()
        rep = nh // (k.shape[1])
        want = v[:, :, 0, :].repeat_interleave(rep, dim=1)
        if not torch.equal(out[:, :, 0, :], want):
            sys.exit(f"bench_sdpa: CHECK FAILED at B {b} T {t}: row 0 is not v's row 0")
        t_fwd = median_ms(fwd, a.warmup, a.reps)
        t_both = median_ms(both, a.warmup, a.reps)
        flops = 4.0 * b * nh * t * t * hs / 2.0
        print(f"{b:>3} {t:>6} {nh:>4} {nkv:>4} {hs:>4} {t_fwd:>12.4f} {t_both:>12.4f} "
              f"{flops / (t_fwd * 1e-3) / 1e12:>12.1f} {(t_both - t_fwd) / t_fwd:>10.2f}")


if __name__ == "__main__":
    main()

"""Checks `nvfp4 eval` on NVFP4 checkpoints (ModelOpt or compressed-tensors, W4A16 or W4A4, as
`nvfp4 quantize` writes them) against an independent PyTorch reading of the same files: the packed
codes, E4M3 block scales and tensor factors decoded here from the published layouts (not by
nvfp4), loaded into a transformers model, and for W4A4 each quantized layer's input quantized in
torch with the checkpoint's input factor. Run where torch and transformers are installed (the GPU
machine); not part of the product or of CI.

    python3 tests/hf/check_nvfp4_checkpoint.py --nvfp4 build/nvfp4 --out /tmp/q4check CKPT [CKPT ...]
        [--json RESULT.json]

The layouts (docs/ptq.md): ModelOpt <m>.weight U8 [out, in/2] (element 2j in the low nibble),
<m>.weight_scale F8_E4M3 [out, in/16], <m>.weight_scale_2 F32 = decode factor, <m>.input_scale F32 =
activation decode factor; compressed-tensors <m>.weight_packed, <m>.weight_scale, and the encode
factors <m>.weight_global_scale and <m>.input_global_scale (reciprocals). A weight is
e2m1(code) * fp32(scale) * decode. W4A4 inputs, per row and 16-value block (the serving engines'
use of the factors, TE's reference steps): encode E (ModelOpt 1 / input_scale, compressed-tensors
input_global_scale), s = e4m3_rne(min(block_amax * (E * fp32(1/6)), 448)), values
e2m1_rne(clamp(x / (s * (1 / E)), -6, 6)) * s, the GEMM output times the decode factor.

For each checkpoint, on 4 lines of 64 random ids (fixed seed) in FP32 on the CPU: nvfp4
(`eval --ids --device cpu --fallback off --save-logits`) against this reading: max |difference|
<= 1e-4 of each line's logit range for W4A16 (the same weights; FP32 sums in another order),
<= 0.02 for W4A4 (an activation a rounding apart can take the neighbouring code), top-1 agreement
>= 99 %, perplexity within 0.1 %. Exits 1 if any check fails.
"""
import argparse
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
LINES, LENGTH, SEED = 4, 64, 4321
TOL = {"w4a16": 1e-4, "w4a4": 0.02}


def load_tensors(folder):
    t = {}
    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        t.update(load_file(f))
    return t


def scheme_of(config):
    q = config["quantization_config"]
    if q["quant_method"] == "modelopt":
        return "modelopt", ("w4a4" if q["quant_algo"] == "NVFP4" else "w4a16")
    group = next(iter(q["config_groups"].values()))
    return "compressed-tensors", ("w4a4" if group.get("input_activations") else "w4a16")


def decode_weight(codes_u8, scales_f8, decode):
    """e2m1(code) * fp32(scale) * decode, float32, left to right."""
    low = (codes_u8 & 0x0F).long()
    high = (codes_u8 >> 4).long()
    codes = torch.stack([low, high], dim=-1).reshape(codes_u8.shape[0], -1)  # element 2j: low nibble
    scales = scales_f8.to(torch.float32).repeat_interleave(16, dim=1)
    return (E2M1[codes] * scales) * torch.tensor(decode, dtype=torch.float32)


def e2m1_rne(v):
    """|v| <= 6 onto the E2M1 grid, ties to the even code (its index in GRID), sign kept."""
    a = v.abs()
    hi = torch.bucketize(a, GRID).clamp(max=7)  # first grid value >= a
    lo = (hi - 1).clamp(min=0)
    dlo, dhi = a - GRID[lo], GRID[hi] - a
    pick = torch.where(dlo < dhi, lo, torch.where(dhi < dlo, hi, torch.where(lo % 2 == 0, lo, hi)))
    return torch.sign(v) * GRID[pick]


def fake_quant_rows(x, encode):
    """x (..., K) float32: each 16-value block quantized with the tensor encode factor; the values
    code * block scale (without the tensor decode factor)."""
    shape = x.shape
    b = x.reshape(-1, shape[-1] // 16, 16)
    enc = torch.tensor(encode, dtype=torch.float32)
    mult = enc * torch.tensor(1.0 / 6.0, dtype=torch.float32)
    s_dec = torch.tensor(1.0, dtype=torch.float32) / enc
    bamax = b.abs().amax(dim=-1, keepdim=True)
    s = (bamax * mult).clamp(max=448.0).to(torch.float8_e4m3fn).to(torch.float32)
    e = torch.where(s > 0, 1.0 / (s * s_dec), torch.zeros_like(s))
    q = e2m1_rne((b * e).clamp(-6.0, 6.0))
    return (q * s).reshape(shape)


def reference_model(folder, out):
    config = json.load(open(os.path.join(folder, "config.json")))
    fmt, scheme = scheme_of(config)
    tensors = load_tensors(folder)
    ct = fmt == "compressed-tensors"
    codes_name = ".weight_packed" if ct else ".weight"
    modules = sorted({n[: -len(codes_name)] for n, t in tensors.items() if n.endswith(codes_name) and t.dtype == torch.uint8})
    state, inputs = {}, {}
    for m in modules:
        codes = tensors.pop(m + codes_name)
        scales = tensors.pop(m + ".weight_scale")
        if ct:
            decode = float(torch.tensor(1.0, dtype=torch.float32) / tensors.pop(m + ".weight_global_scale").float().reshape(()))
        else:
            decode = float(tensors.pop(m + ".weight_scale_2").float().reshape(()))
        state[m + ".weight"] = decode_weight(codes, scales, decode)
        if scheme == "w4a4":
            if ct:
                enc = tensors.pop(m + ".input_global_scale").float().reshape(())
                inputs[m] = (float(enc), float(torch.tensor(1.0, dtype=torch.float32) / enc))
            else:
                dec = tensors.pop(m + ".input_scale").float().reshape(())
                inputs[m] = (float(torch.tensor(1.0, dtype=torch.float32) / dec), float(dec))
    for n, t in tensors.items():
        state[n] = t.to(torch.float32)
    plain = dict(config)
    plain.pop("quantization_config")
    plain_dir = os.path.join(out, os.path.basename(os.path.normpath(folder)) + "-plain-config")
    os.makedirs(plain_dir, exist_ok=True)
    with open(os.path.join(plain_dir, "config.json"), "w") as f:
        json.dump(plain, f)
    cfg = AutoConfig.from_pretrained(plain_dir)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(torch.float32).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings) and "rotary_emb" not in k]
    if missing or unexpected:
        raise RuntimeError(f"{folder}: missing {missing}, unexpected {unexpected}")
    if cfg.tie_word_embeddings:
        model.tie_weights()
    for m, (enc, dec) in inputs.items():
        mod = model.get_submodule(m)
        mod.register_forward_pre_hook(lambda _mod, args, enc=enc, dec=dec: (fake_quant_rows(args[0], enc) * dec,))
    return model, fmt, scheme, len(modules)


def check(nvfp4, folder, out):
    model, fmt, scheme, n_modules = reference_model(folder, out)
    vocab = model.config.vocab_size
    rng = np.random.default_rng(SEED)
    ids = [rng.integers(0, vocab, LENGTH).tolist() for _ in range(LINES)]
    ids_path = os.path.join(out, "ids.jsonl")
    with open(ids_path, "w") as f:
        for line in ids:
            f.write(json.dumps(line) + "\n")
    logits_path = os.path.join(out, os.path.basename(os.path.normpath(folder)) + "-logits.safetensors")
    r = subprocess.run([nvfp4, "eval", folder, "--ids", ids_path, "--device", "cpu", "--fallback", "off", "--json",
                        "--save-logits", logits_path], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"nvfp4 eval failed: {r.stdout}{r.stderr}")
    ours = json.loads(r.stdout)
    saved = load_file(logits_path)
    worst, agree, total, nll = 0.0, 0, 0, 0.0
    with torch.no_grad():
        for i, line in enumerate(ids):
            ref = model(torch.tensor([line])).logits[0].to(torch.float32)
            got = saved[f"logits.{i}"]
            rng_ = float(ref.max() - ref.min())
            worst = max(worst, float((got - ref).abs().max()) / rng_)
            agree += int((got[:-1].argmax(-1) == ref[:-1].argmax(-1)).sum())
            total += len(line) - 1
            logp = torch.log_softmax(ref.double(), -1)
            nll -= float(logp[torch.arange(len(line) - 1), torch.tensor(line[1:])].sum())
    ppl_ref = math.exp(nll / total)
    ppl_diff = abs(ours["ppl"] - ppl_ref) / ppl_ref
    ok = worst <= TOL[scheme] and agree >= 0.99 * total and ppl_diff <= 1e-3 and ours["tokens"] == total
    return {"checkpoint": folder, "format": fmt, "scheme": scheme, "quantized_layers": n_modules,
            "max_diff_of_range": worst, "top1_agree": agree / total, "ppl_nvfp4": ours["ppl"], "ppl_torch": ppl_ref,
            "ppl_rel_diff": ppl_diff, "pass": ok}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nvfp4", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--json")
    ap.add_argument("checkpoints", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(SEED)
    results, failed = [], False
    for c in a.checkpoints:
        try:
            res = check(a.nvfp4, c, a.out)
        except Exception as e:  # one line per checkpoint, the others still run
            res = {"checkpoint": c, "pass": False, "error": str(e)}
        results.append(res)
        failed |= not res["pass"]
        if "error" in res:
            print(f"{c}: ERROR {res['error']}")
        else:
            print(f"{c}: {res['format']} {res['scheme']} ({res['quantized_layers']} layers): max diff "
                  f"{res['max_diff_of_range']:.3g} of the range, top-1 {100 * res['top1_agree']:.2f} %, perplexity "
                  f"{res['ppl_nvfp4']:.5f} (nvfp4) vs {res['ppl_torch']:.5f} (torch), {res['ppl_rel_diff']:.2e} apart: "
                  f"{'PASS' if res['pass'] else 'FAIL'}")
    if a.json:
        json.dump(results, open(a.json, "w"), indent=2)
    print("all checks passed" if not failed else "FAILED")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

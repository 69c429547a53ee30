"""Checks an `nvfp4 export-hf` folder with Hugging Face transformers (run where torch and
transformers are installed, e.g. the GPU machine; not part of the product or of CI).

    python3 tests/hf/check_hf_export.py EXPORT_DIR [--tolerance 1e-3]

Loads EXPORT_DIR as LlamaForCausalLM in float32 on the CPU (no TF32), runs it on the token ids
stored in EXPORT_DIR/nvfp4_reference_logits.safetensors, and compares its logits with the ones
nvfp4's CPU model computed from the same BF16 weights. Prints the max absolute and relative
differences and exits 1 if the max absolute difference exceeds the tolerance.
"""
import argparse
import sys

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    a = ap.parse_args()
    ref = load_file(f"{a.export_dir}/nvfp4_reference_logits.safetensors")
    ids = ref["input_ids"].long()
    want = ref["logits"].float()
    model = LlamaForCausalLM.from_pretrained(a.export_dir, torch_dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        got = model(input_ids=ids).logits.float()
    diff = (got - want).abs()
    max_abs = diff.max().item()
    rel = max_abs / want.abs().max().item()
    argmax_same = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    print(f"tokens {ids.shape[1]}, vocab {want.shape[-1]}: max |hf - nvfp4| = {max_abs:.3e} "
          f"(relative to max |logit| {rel:.3e}), same argmax at {100 * argmax_same:.1f}% of positions")
    return 0 if max_abs <= a.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())

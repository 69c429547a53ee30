"""Checks an `nvfp4 export-hf` folder with Hugging Face transformers (run where torch and
transformers are installed, e.g. the GPU machine; not part of the product or of CI).

    python3 tests/hf/check_hf_export.py EXPORT_DIR [--tolerance 1e-3]

Loads EXPORT_DIR with AutoModelForCausalLM (the architecture of its config.json: LlamaForCausalLM,
or Qwen2 / Qwen3 / MistralForCausalLM for models with their features) in float32 on the CPU (no
TF32), with eager attention (the sliding window is a mask there), runs it on the token ids
stored in EXPORT_DIR/nvfp4_reference_logits.safetensors, and compares its logits with the ones
nvfp4's CPU model computed from the same BF16 weights. Prints the max absolute and relative
differences and exits 1 if the max absolute difference exceeds the tolerance.

When the export holds a tokenizer.json (a model trained on Hugging Face tokenizer shards), also
loads it with AutoTokenizer and checks that its ids for the check text are the ones nvfp4 used
(the stored input ids after the leading end-of-text token); --text-ids FILE additionally compares
`nvfp4 tokenize EXPORT_DIR TEXT --jsonl` output (one JSON array per line of --text) with
AutoTokenizer's ids for each line.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--check-text", help="the --check-text given to export-hf (default: its default)")
    ap.add_argument("--text", help="a text file whose lines nvfp4 encoded into --text-ids")
    ap.add_argument("--text-ids", help="`nvfp4 tokenize EXPORT_DIR TEXT --jsonl` output")
    a = ap.parse_args()
    ok = True
    if os.path.exists(f"{a.export_dir}/tokenizer.json"):
        ok = check_tokenizer(a) and ok
    ref = load_file(f"{a.export_dir}/nvfp4_reference_logits.safetensors")
    ids = ref["input_ids"].long()
    want = ref["logits"].float()
    model = AutoModelForCausalLM.from_pretrained(a.export_dir, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        got = model(input_ids=ids).logits.float()
    diff = (got - want).abs()
    max_abs = diff.max().item()
    rel = max_abs / want.abs().max().item()
    argmax_same = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    print(f"tokens {ids.shape[1]}, vocab {want.shape[-1]}: max |hf - nvfp4| = {max_abs:.3e} "
          f"(relative to max |logit| {rel:.3e}), same argmax at {100 * argmax_same:.1f}% of positions")
    return 0 if max_abs <= a.tolerance and ok else 1


def check_tokenizer(a) -> bool:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.export_dir)
    ok = True
    if a.check_text is not None:
        ref = load_file(f"{a.export_dir}/nvfp4_reference_logits.safetensors")["input_ids"][0].tolist()
        got = tok(a.check_text, add_special_tokens=False)["input_ids"][: len(ref) - 1]
        same = got == ref[1:]
        print(f"AutoTokenizer on the check text: {len(got)} ids, {'identical' if same else 'DIFFERENT'} to nvfp4's")
        ok = ok and same
    if a.text and a.text_ids:
        with open(a.text, "rb") as f:
            lines = f.read().decode("utf-8", errors="replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        with open(a.text_ids) as f:
            ours = [json.loads(l) for l in f.read().splitlines()]
        bad = [i for i, (l, o) in enumerate(zip(lines, ours)) if tok(l, add_special_tokens=False)["input_ids"] != o]
        same = len(lines) == len(ours) and not bad
        print(f"AutoTokenizer on {len(lines)} lines: {'identical' if same else f'{len(bad)} lines differ, first {bad[:3]}'}")
        ok = ok and same
    return ok


if __name__ == "__main__":
    sys.exit(main())

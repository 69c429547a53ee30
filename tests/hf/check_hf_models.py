"""Checks that `nvfp4 eval` computes Hugging Face transformers' logits and perplexity for small
random models of every architecture nvfp4 reads (run where torch and transformers are installed,
e.g. the GPU machine; not part of the product or of CI).

    python3 tests/hf/check_hf_models.py --nvfp4 build/nvfp4 --out /tmp/hfcheck [--device cpu|cuda|both]
        [--json RESULT.json] [--export EXPORT_DIR ...] [--allow-skip]

Builds, with transformers and fixed seeds, five random 2-layer models (vocabulary 512, hidden 128):
llama (GQA, llama3 RoPE scaling, tied embeddings), llama-linear (head_dim 64 != hidden/heads,
linear RoPE scaling, saved in 200 KB shards with model.safetensors.index.json), mistral (MQA,
sliding window 16), qwen2 (q/k/v biases, tied) and qwen3 (q/k RMSNorm, head_dim 48). Weights are
N(0, 0.02) (q_proj and k_proj N(0, 0.1), so attention is far from uniform and RoPE and the window
matter), RMSNorm weights U[0.5, 1.5], biases N(0, 0.02). Each is saved as OUT/<name>-f32 and
OUT/<name>-bf16 (no tokenizer). OUT/ids.jsonl holds 8 random lines of 40, 17, 64, 3 and 4 x 64
token ids (380 positions).

For each model and device, runs `nvfp4 eval FOLDER --ids OUT/ids.jsonl --json --save-logits ...`
and the same folder in transformers (AutoModelForCausalLM, attn_implementation="eager") on the
same ids, and checks:
  cpu  (f32 folder, nvfp4 fp32 vs torch fp32 on the CPU): max |ours - hf| <= 1e-4 of each line's
       logit range;
  cuda (bf16 folder, nvfp4 bf16 vs torch bf16 on CUDA): max |ours - hf| <= 0.05 of the range;
  both: top-1 agreement >= 99 % of all positions, where our argmax counts as agreeing when the
       reference ranks it within 1 % of the logit range of its own top logit (bf16 logits of a
       random model have exact and near ties; the strict agreement is reported too); perplexity
       within 0.1 % of the one computed from the reference logits (token-weighted mean NLL over all
       lines, float64) and nvfp4's token count equal to the number of predicted tokens;
  cuda, reported (not checked): the top-1 agreement of our BF16 logits and of transformers' own BF16
       logits with transformers' FP32 logits of the same weights — how often BF16 itself moves the
       argmax of a random model;
  mistral on cpu: transformers itself applies the window (its logits with sliding_window=None are
       the same before position 16 and differ after it).
Each --export DIR (a folder from `nvfp4 export-hf`) gets the cpu check, on its own random ids.

Prints one line per (model, device) and writes them to --json; exits 1 if any check fails or a
model could not be built with this transformers version (unless --allow-skip).
"""
import argparse
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import traceback

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

SEED = 1234
IDS_LENGTHS = (40, 17, 64, 3, 64, 64, 64, 64)
COMMON = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
          "max_position_embeddings": 512}
INIT_STD = 0.02  # every weight matrix (transformers' initializer_range)
QK_STD = 0.1     # q_proj, k_proj: attention scores of order 1
BIAS_STD = 0.02
SHARD_SIZE = "200KB"
CPU_TOLERANCE = 1e-4   # of the logit range
CUDA_TOLERANCE = 0.05  # of the logit range (BF16)
ARGMAX_MIN = 0.99
ARGMAX_TIE = 0.01      # of the logit range: a near-tie in the reference
PPL_TOLERANCE = 1e-3   # relative
WINDOW_SAME = 1e-5     # of the range: windowed and full logits before the window fills
WINDOW_DIFFERS = 1e-3  # of the range: ... and after

MODELS = [
    {"name": "llama", "config": "LlamaConfig", "shard": False, "rope_theta": 500000.0,
     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64},
     "kwargs": {"num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}},
    {"name": "llama-linear", "config": "LlamaConfig", "shard": True, "rope_theta": 10000.0,
     "rope_scaling": {"rope_type": "linear", "factor": 2.0},
     "kwargs": {"num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 64, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": False}},
    {"name": "mistral", "config": "MistralConfig", "shard": False, "rope_theta": 10000.0, "rope_scaling": None,
     "kwargs": {"num_attention_heads": 4, "num_key_value_heads": 1, "sliding_window": 16, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": False}},
    {"name": "qwen2", "config": "Qwen2Config", "shard": False, "rope_theta": 1000000.0, "rope_scaling": None,
     "kwargs": {"num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}},
    {"name": "qwen3", "config": "Qwen3Config", "shard": False, "rope_theta": 1000000.0, "rope_scaling": None,
     "kwargs": {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 48, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": False}},
]


class Unsupported(Exception):
    """This transformers version cannot build the model (reported as SKIP)."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nvfp4", required=True, help="the nvfp4 binary")
    ap.add_argument("--out", required=True, help="work folder (created)")
    ap.add_argument("--device", choices=["cpu", "cuda", "both"], default="both")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--export", action="append", default=[], help="an `nvfp4 export-hf` folder to check on the CPU")
    ap.add_argument("--allow-skip", action="store_true", help="exit 0 even if a model could not be built")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}")
    devices = ["cpu", "cuda"] if a.device == "both" else [a.device]
    if "cuda" in devices:
        if not torch.cuda.is_available():
            print("torch sees no CUDA device; use --device cpu", file=sys.stderr)
            return 2
        print(f"cuda: {torch.cuda.get_device_name(0)}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    nvfp4 = os.path.abspath(a.nvfp4)
    os.makedirs(a.out, exist_ok=True)

    lines = random_ids(COMMON["vocab_size"], IDS_LENGTHS, SEED)
    ids_path = os.path.join(a.out, "ids.jsonl")
    write_ids(ids_path, lines)

    rows = []
    for spec in MODELS:
        print(f"building {spec['name']}", flush=True)
        try:
            built = build_model(spec, a.out)
        except Unsupported as e:
            rows.extend(skip_row(spec["name"], dev, str(e)) for dev in devices)
            continue
        except Exception as e:
            traceback.print_exc()
            rows.extend({"model": spec["name"], "device": dev, "status": "FAIL",
                         "failures": [f"building: {type(e).__name__}: {e}"]} for dev in devices)
            continue
        for dev in devices:
            print(f"checking {spec['name']} on {dev}", flush=True)
            rows.append(check(nvfp4, a.out, spec["name"], built["folders"]["f32" if dev == "cpu" else "bf16"], dev,
                              ids_path, lines, built["sliding_window"], built["problems"]))

    for k, d in enumerate(a.export):
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        name = "export:" + os.path.basename(os.path.normpath(d))
        lengths = [min(n, cfg["max_position_embeddings"]) for n in IDS_LENGTHS]
        export_lines = random_ids(cfg["vocab_size"], lengths, SEED + 1 + k)
        export_ids = os.path.join(a.out, f"ids-export-{k}.jsonl")
        write_ids(export_ids, export_lines)
        print(f"checking {name} on cpu", flush=True)
        rows.append(check(nvfp4, a.out, name, d, "cpu", export_ids, export_lines, None, []))

    print_table(rows)
    failed = [r for r in rows if r["status"] == "FAIL" or (r["status"] == "SKIP" and not a.allow_skip)]
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                       "ok": not failed, "rows": rows}, f, indent=2)
            f.write("\n")
    if failed:
        print("FAILED:")
        for r in failed:
            print(f"  {r['model']} on {r['device']}: {r['status']}: {'; '.join(r['failures'])}")
        return 1
    print(f"all {len(rows)} checks passed")
    return 0


def transformers_version():
    return tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])


def dtype_kwargs(dtype):
    # transformers 5 renamed from_pretrained's torch_dtype to dtype.
    return {"dtype": dtype} if transformers_version() >= (5, 0) else {"torch_dtype": dtype}


def random_ids(vocab, lengths, seed):
    rng = np.random.default_rng(seed)
    return [[int(x) for x in rng.integers(0, vocab, size=n)] for n in lengths]


def write_ids(path, lines):
    with open(path, "w") as f:
        for ids in lines:
            f.write(json.dumps(ids) + "\n")


# ---------------------------------------------------------------------------------------------
# Building the models


def build_model(spec, out):
    """Makes the random model of `spec` and saves OUT/<name>-f32 and OUT/<name>-bf16."""
    config_cls = getattr(transformers, spec["config"], None)
    model_cls = getattr(transformers, spec["config"].replace("Config", "ForCausalLM"), None)
    if config_cls is None or model_cls is None:
        raise Unsupported(f"transformers {transformers.__version__} has no {spec['config']}")
    torch.manual_seed(SEED)
    config = make_config(config_cls, spec)
    try:
        model = model_cls(config).float()
    except Exception as e:  # e.g. an older version that cannot build this head_dim or RoPE
        raise Unsupported(f"{model_cls.__name__}(config) failed: {type(e).__name__}: {e}")
    problems = verify_built(model, spec)
    if problems:
        raise Unsupported("; ".join(problems))
    randomize(model, SEED)
    folders = {}
    notes = []
    for tag, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        folder = os.path.join(out, f"{spec['name']}-{tag}")
        shutil.rmtree(folder, ignore_errors=True)
        save_model(model.to(dtype), folder, spec["shard"])
        folders[tag] = folder
        index = os.path.exists(os.path.join(folder, "model.safetensors.index.json"))
        if not index and not os.path.exists(os.path.join(folder, "model.safetensors")):
            notes.append(f"save_pretrained wrote no model.safetensors in {folder}")
        if spec["shard"] and not index:
            notes.append(f"save_pretrained wrote no model.safetensors.index.json in {folder}: shards not exercised")
    return {"folders": folders, "sliding_window": spec["kwargs"].get("sliding_window"), "problems": notes}


def make_config(config_cls, spec):
    """The config with the spec's RoPE: transformers 4 takes rope_theta + rope_scaling, 5 one
    rope_parameters object; tries both (the native one first) and keeps one whose to_dict() really
    holds the RoPE asked for."""
    base = dict(COMMON, **spec["kwargs"])
    theta, scaling = spec["rope_theta"], spec["rope_scaling"]
    old = {"rope_theta": theta, "rope_scaling": copy.deepcopy(scaling)}
    new = {"rope_parameters": dict(copy.deepcopy(scaling) or {"rope_type": "default"}, rope_theta=theta)}
    attempts = [new, old] if transformers_version() >= (5, 0) else [old, new]
    tried = []
    for extra in attempts:
        try:
            config = config_cls(**base, **extra)
        except Exception as e:
            tried.append(f"{'/'.join(sorted(extra))}: {type(e).__name__}: {e}")
            continue
        got = rope_of(config)
        if rope_matches(got, theta, scaling):
            return config
        tried.append(f"{'/'.join(sorted(extra))} gave RoPE {got}")
    raise Unsupported(f"{config_cls.__name__} of transformers {transformers.__version__} did not take RoPE "
                      f"theta {theta} scaling {scaling}: " + " | ".join(tried))


def rope_of(config):
    """The RoPE the config describes, as one dict (rope_type, rope_theta and the scaling fields)."""
    d = config.to_dict()
    if transformers_version() >= (5, 0):
        r = d.get("rope_parameters") or d.get("rope_scaling") or {}
    else:
        r = d.get("rope_scaling") or {}
    r = dict(r) if isinstance(r, dict) else {}
    r["rope_type"] = r.get("rope_type", r.get("type", "default"))
    r.setdefault("rope_theta", d.get("rope_theta"))
    return r


def rope_matches(got, theta, scaling):
    want = dict(scaling or {"rope_type": "default"}, rope_theta=theta)
    for k, v in want.items():
        if k not in got or got[k] is None:
            return False
        if isinstance(v, str):
            if got[k] != v:
                return False
        elif not math.isclose(float(got[k]), float(v), rel_tol=1e-9):
            return False
    return True


def verify_built(model, spec):
    """What this transformers version made differently from the spec (an old version ignores
    head_dim, for instance)."""
    kw = spec["kwargs"]
    hidden = COMMON["hidden_size"]
    heads, kv = kw["num_attention_heads"], kw["num_key_value_heads"]
    head_dim = kw.get("head_dim") or hidden // heads
    attn = model.model.layers[0].self_attn
    problems = []
    if tuple(attn.q_proj.weight.shape) != (heads * head_dim, hidden):
        problems.append(f"q_proj is {tuple(attn.q_proj.weight.shape)}, expected {(heads * head_dim, hidden)}")
    if tuple(attn.k_proj.weight.shape) != (kv * head_dim, hidden):
        problems.append(f"k_proj is {tuple(attn.k_proj.weight.shape)}, expected {(kv * head_dim, hidden)}")
    want_bias = spec["config"] == "Qwen2Config"
    if (attn.q_proj.bias is not None) != want_bias:
        problems.append(f"q_proj {'has no' if want_bias else 'has a'} bias")
    if attn.o_proj.bias is not None:
        problems.append("o_proj has a bias")
    want_qk_norm = spec["config"] == "Qwen3Config"
    if (getattr(attn, "q_norm", None) is not None) != want_qk_norm:
        problems.append(f"self_attn {'has no' if want_qk_norm else 'has a'} q_norm")
    if kw["tie_word_embeddings"] and not tied(model):
        model.tie_weights()
    if tied(model) != kw["tie_word_embeddings"]:
        problems.append(f"lm_head {'is not' if kw['tie_word_embeddings'] else 'is'} tied to embed_tokens")
    if "sliding_window" in kw and getattr(model.config, "sliding_window", None) != kw["sliding_window"]:
        problems.append(f"config.sliding_window is {getattr(model.config, 'sliding_window', None)}")
    return problems


def tied(model):
    return model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def randomize(model, seed):
    """Weight matrices N(0, 0.02) (q/k N(0, 0.1)), RMSNorm weights U[0.5, 1.5], biases N(0, 0.02)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied lm_head is listed once
            if name.endswith("norm.weight"):  # input_layernorm, post_attention_layernorm, norm, q_norm, k_norm
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * BIAS_STD)
            else:
                std = QK_STD if name.endswith(("q_proj.weight", "k_proj.weight")) else INIT_STD
                p.copy_(torch.randn(p.shape, generator=g) * std)


def save_model(model, folder, shard):
    kw = {}
    if shard:
        kw["max_shard_size"] = SHARD_SIZE
    if transformers_version() < (5, 0):
        kw["safe_serialization"] = True  # transformers 5 always writes safetensors and has no such argument
    model.save_pretrained(folder, **kw)


# ---------------------------------------------------------------------------------------------
# Checking one folder on one device


def check(nvfp4, out, name, folder, device, ids_path, lines, window, problems):
    """One table row: nvfp4 against transformers for `folder` on `device`."""
    row = {"model": name, "device": device, "folder": folder, "status": "FAIL", "failures": list(problems)}
    dtype, precision = (torch.float32, "fp32") if device == "cpu" else (torch.bfloat16, "bf16")
    tolerance = CPU_TOLERANCE if device == "cpu" else CUDA_TOLERANCE
    logits_path = os.path.join(out, f"{name.replace(':', '-')}-{device}.safetensors")
    try:
        ours_json, ours = run_ours(nvfp4, folder, ids_path, device, precision, logits_path, len(lines))
        summary = {"ppl": float(ours_json["ppl"]), "nll": float(ours_json["nll"]), "tokens": int(ours_json["tokens"])}
        model = load_reference(folder, device, dtype)
        ref = hf_logits(model, lines, device)
        del model
        ref32 = None
        if device == "cuda" and folder.endswith("-bf16") and os.path.isdir(folder[:-5] + "-f32"):
            model = load_reference(folder[:-5] + "-f32", "cpu", torch.float32)
            ref32 = hf_logits(model, lines, "cpu")
            del model
    except subprocess.CalledProcessError as e:
        row["failures"].append(f"nvfp4 exited {e.returncode}: {(e.stderr or '').strip()[-2000:]}")
        return row
    except Exception as e:
        traceback.print_exc()
        row["failures"].append(f"{type(e).__name__}: {e}")
        return row

    m = compare(ours, ref, lines)
    shape_problems = m.pop("shape_problems")
    if ref32 is not None:
        m["argmax_ours_vs_fp32"] = top1_agreement(ours, ref32)
        m["argmax_hf_bf16_vs_fp32"] = top1_agreement(ref, ref32)
    row.update(m)
    row.update(summary)
    row["ppl_rel"] = abs(row["ppl"] - m["ref_ppl"]) / m["ref_ppl"]
    f = row["failures"]
    f.extend(shape_problems)
    if m["diff_over_range"] > tolerance:
        f.append(f"max |diff| is {m['diff_over_range']:.3e} of the logit range (> {tolerance:g})")
    if m["argmax_near"] < ARGMAX_MIN:
        f.append(f"top-1 agreement (near-ties allowed) {100 * m['argmax_near']:.2f} % (< {100 * ARGMAX_MIN:g} %)")
    if row["ppl_rel"] > PPL_TOLERANCE:
        f.append(f"perplexity {row['ppl']:.6f} vs transformers' {m['ref_ppl']:.6f}: {row['ppl_rel']:.3e} relative "
                 f"(> {PPL_TOLERANCE:g})")
    if row["tokens"] != m["ref_tokens"]:
        f.append(f"nvfp4 scored {row['tokens']} tokens, expected {m['ref_tokens']}")
    if device == "cpu" and window:
        try:
            row["window"] = window_effect(folder, lines, ref, window)
        except Exception as e:
            traceback.print_exc()
            f.append(f"window check: {type(e).__name__}: {e}")
        else:
            w = row["window"]
            if w["before"] > WINDOW_SAME:
                f.append(f"transformers with and without sliding_window differ before position {window} "
                         f"({w['before']:.3e} of the range)")
            if w["after"] < WINDOW_DIFFERS:
                f.append(f"transformers' sliding_window {window} changes nothing after position {window} "
                         f"({w['after']:.3e} of the range): the reference does not apply the window")
    row["status"] = "FAIL" if f else "PASS"
    return row


def skip_row(name, device, why):
    return {"model": name, "device": device, "status": "SKIP", "failures": [why]}


def run_ours(nvfp4, folder, ids_path, device, precision, logits_path, n):
    if os.path.exists(logits_path):
        os.remove(logits_path)
    cmd = [nvfp4, "eval", folder, "--ids", ids_path, "--device", device, "--precision", precision, "--json",
           "--save-logits", logits_path]
    r = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    result = json.loads(r.stdout)
    saved = load_file(logits_path)
    return result, [saved[f"logits.{i}"].float() for i in range(n)]


def load_reference(folder, device, dtype, config=None):
    kw = dict(dtype_kwargs(dtype), attn_implementation="eager")
    if config is not None:
        kw["config"] = config
    model = AutoModelForCausalLM.from_pretrained(folder, **kw).to(device).eval()
    got = next(model.parameters()).dtype
    if got != dtype:
        raise RuntimeError(f"transformers loaded {folder} as {got}, not {dtype}")
    return model


def hf_logits(model, lines, device):
    out = []
    with torch.no_grad():
        for ids in lines:
            x = torch.tensor([ids], dtype=torch.long, device=device)
            out.append(model(input_ids=x, use_cache=False).logits[0].float().cpu())
    return out


def compare(ours, ref, lines):
    max_abs = diff_over_range = 0.0
    agree = near = positions = 0
    nll_sum = 0.0
    predicted = 0
    shape_problems = []
    for i, (o, r, ids) in enumerate(zip(ours, ref, lines)):
        if o.shape != r.shape:
            shape_problems.append(f"line {i}: nvfp4's logits are {tuple(o.shape)}, transformers' {tuple(r.shape)}")
            continue
        span = max((r.max() - r.min()).item(), 1e-30)
        d = (o - r).abs().max().item()
        max_abs = max(max_abs, d)
        diff_over_range = max(diff_over_range, d / span)
        ours_top = o.argmax(-1)
        agree += (ours_top == r.argmax(-1)).sum().item()
        # How far below its own top logit the reference puts our top token.
        gap = r.max(-1).values - r.gather(-1, ours_top[:, None])[:, 0]
        near += (gap <= ARGMAX_TIE * span).sum().item()
        positions += len(ids)
        t = torch.tensor(ids, dtype=torch.long)
        nll_sum += F.cross_entropy(r[:-1].double(), t[1:], reduction="sum").item()
        predicted += len(ids) - 1
    ref_nll = nll_sum / max(predicted, 1)
    return {"max_abs": max_abs, "diff_over_range": diff_over_range,
            "argmax": agree / max(positions, 1), "argmax_near": near / max(positions, 1),
            "ref_nll": ref_nll, "ref_ppl": math.exp(ref_nll), "ref_tokens": predicted,
            "shape_problems": shape_problems}


def top1_agreement(a, b):
    """The fraction of positions where two lists of (positions, vocab) logits have the same argmax."""
    same = total = 0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            continue
        same += (x.argmax(-1) == y.argmax(-1)).sum().item()
        total += x.shape[0]
    return same / max(total, 1)


def window_effect(folder, lines, windowed, window):
    """Max |windowed - full| / range of transformers' own logits before and from position `window`
    (full: the same weights with sliding_window=None)."""
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "sliding_window", None) != window:
        raise RuntimeError(f"{folder}/config.json has sliding_window {getattr(config, 'sliding_window', None)}")
    config.sliding_window = None
    model = load_reference(folder, "cpu", torch.float32, config=config)
    full = hf_logits(model, lines, "cpu")
    before = after = 0.0
    for w, f in zip(windowed, full):
        span = max((w.max() - w.min()).item(), 1e-30)
        d = (w - f).abs().max(-1).values / span
        before = max(before, d[:window].max().item())
        if d.shape[0] > window:
            after = max(after, d[window:].max().item())
    return {"position": window, "before": before, "after": after}


def print_table(rows):
    print()
    print(f"{'model':<24} {'device':<6} {'max|diff|':>10} {'diff/range':>10} {'argmax':>8} {'near-tie':>8} "
          f"{'ppl nvfp4':>11} {'ppl hf':>11} {'rel ppl':>9}  result")
    for r in rows:
        if "max_abs" in r and "ppl" in r:
            print(f"{r['model']:<24} {r['device']:<6} {r['max_abs']:>10.3e} {r['diff_over_range']:>10.3e} "
                  f"{100 * r['argmax']:>7.2f}% {100 * r['argmax_near']:>7.2f}% {r['ppl']:>11.5f} {r['ref_ppl']:>11.5f} "
                  f"{r['ppl_rel']:>9.2e}  {r['status']}")
        else:
            print(f"{r['model']:<24} {r['device']:<6} {'-':>10} {'-':>10} {'-':>8} {'-':>8} {'-':>11} {'-':>11} "
                  f"{'-':>9}  {r['status']}")
        if "argmax_ours_vs_fp32" in r:
            print(f"{'':<24} {'':<6} top-1 against transformers' FP32 logits: ours (BF16) "
                  f"{100 * r['argmax_ours_vs_fp32']:.2f} %, transformers' BF16 {100 * r['argmax_hf_bf16_vs_fp32']:.2f} %")
        if "window" in r:
            print(f"{'':<24} {'':<6} sliding window in transformers: |windowed - full| / range "
                  f"{r['window']['before']:.2e} before position {r['window']['position']}, "
                  f"{r['window']['after']:.2e} from it")
        for why in r["failures"]:
            print(f"{'':<24} {'':<6} {why}")
    print()


if __name__ == "__main__":
    sys.exit(main())

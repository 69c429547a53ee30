#!/usr/bin/env python3
"""Writes the hand-made seeds of the two tokenizer fuzz targets (docs/fuzzing.md).

    python3 tests/fuzz/make_tokenizer_seeds.py [--data tokenizer-data]

tests/fuzz/corpus_tokenizer_json/:
  trim_<name>.json  each real tokenizer of --data (bash scripts/tokenizer_reference.sh install
                    writes them) cut down to its base symbols (the 256 byte-level characters, or
                    <0xXX> bytes and the characters the kept merges need), the first 300 merges
                    whose parts are kept, and its first 12 added tokens; every other component
                    (normalizer, pre-tokenizer, post-processor, decoder, model options) as it is.
                    Ids are renumbered densely in the original order. Skipped when --data lacks
                    the tokenizer (the checked-in files stay).
  <component>_*.json  small hand-written tokenizers, one per component or option the loader knows;
  bad_*.json          files the loader must reject (and one that loads but back-tracks).
tests/fuzz/corpus_tokenizer_encode/: short texts (prose, code, white space, emoji, invalid UTF-8,
  special-token strings, long runs).

Deterministic: running it again rewrites the same bytes.
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
JSON_DIR = os.path.join(HERE, "corpus_tokenizer_json")
TEXT_DIR = os.path.join(HERE, "corpus_tokenizer_encode")


def dump(obj, ascii_only=False):
    return json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":")).encode("utf-8")


def write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---- trimmed real tokenizers -------------------------------------------------------------------

def byte_level_chars():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


def trim(tok, n_merges=300, n_added=12):
    model = tok["model"]
    vocab = model["vocab"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
    byte_level = all(c in vocab for c in byte_level_chars())
    keep = set(byte_level_chars()) if byte_level else {t for t in vocab if t.startswith("<0x") or vocab[t] < 3}
    if model.get("unk_token"):
        keep.add(model["unk_token"])
    kept_merges = []
    for a, b in merges:
        if len(kept_merges) == n_merges:
            break
        parts_ok = all(p in keep or (not byte_level and len(p) == 1 and p in vocab) for p in (a, b))
        if parts_ok and a + b in vocab:
            keep.update((a, b, a + b))
            kept_merges.append([a, b])
    order = sorted(keep, key=lambda t: vocab[t])
    new_id = {t: i for i, t in enumerate(order)}
    out = dict(tok)
    out["model"] = dict(model)
    out["model"]["vocab"] = {t: new_id[t] for t in order}
    # The file's own form of merges ("a b" strings or [a, b] pairs).
    out["model"]["merges"] = kept_merges if isinstance(model["merges"][0], list) else [" ".join(m) for m in kept_merges]
    added = []
    next_id = len(order)
    for a in tok.get("added_tokens", [])[:n_added]:
        a = dict(a)
        if a["content"] in new_id:
            a["id"] = new_id[a["content"]]
        else:
            a["id"] = next_id
            next_id += 1
        added.append(a)
    out["added_tokens"] = added
    ids = {a["content"]: a["id"] for a in added}
    pp = out.get("post_processor")
    if pp and pp.get("type") == "TemplateProcessing":
        pp = json.loads(json.dumps(pp))
        for name, st in pp.get("special_tokens", {}).items():
            st["ids"] = [ids.get(t, new_id.get(t, 0)) for t in st.get("tokens", [])]
        out["post_processor"] = pp
    return out


# ---- hand-written tokenizers -------------------------------------------------------------------

SP = "\u2581"


def base_model(**options):
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?'-" + SP)
    vocab = {c: i for i, c in enumerate(chars)}
    merges = []
    for a, b in [("t", "h"), ("h", "e"), ("th", "e"), ("i", "n"), ("in", "g"), (SP, "t"), (SP + "t", "he"),
                 ("e", "r"), ("a", "n"), ("an", "d"), ("1", "2"), (" ", "t"), (" t", "he"), ("o", "n")]:
        merges.append([a, b])  # pairs: a merge with the space token cannot be written "a b"
        vocab.setdefault(a + b, len(vocab))
    for special in ["<unk>", "<s>", "</s>"]:
        vocab[special] = len(vocab)
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges}
    model.update(options)
    return model


def added(content, id_, special=True, normalized=False, **flags):
    a = {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": normalized, "special": special}
    a.update(flags)
    return a


def tokenizer(normalizer=None, pre=None, post=None, decoder=None, model=None, added_tokens=None):
    model = model or base_model()
    if added_tokens is None:
        added_tokens = [added("<s>", model["vocab"]["<s>"]), added("</s>", model["vocab"]["</s>"])]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post, "decoder": decoder, "model": model}


def split(pattern, behavior, invert=False, regex=False):
    return {"type": "Split", "pattern": {"Regex" if regex else "String": pattern}, "behavior": behavior, "invert": invert}


def template(*items, specials):
    single = [{"Sequence": {"id": "A", "type_id": 0}} if i == "$A" else {"SpecialToken": {"id": i, "type_id": 0}}
              for i in items]
    return {"type": "TemplateProcessing", "single": single, "pair": single,
            "special_tokens": {k: {"id": k, "ids": [v], "tokens": [k]} for k, v in specials.items()}}


def hand_written():
    m = base_model()
    v = m["vocab"]
    s, e = v["<s>"], v["</s>"]
    seq = lambda key, *parts: {"type": "Sequence", key: list(parts)}
    bytes_model = base_model(byte_fallback=True, unk_token="<unk>", fuse_unk=True)
    for b in range(256):
        bytes_model["vocab"][f"<0x{b:02X}>"] = len(bytes_model["vocab"])
    bl_model = base_model()
    bl_model["vocab"] = {c: i for i, c in enumerate(byte_level_chars())}
    bl_model["merges"] = ["\u0120 t", "h e", "\u0120t he", "i n"]
    for t in ["\u0120t", "he", "\u0120the", "in", "<|endoftext|>"]:
        bl_model["vocab"][t] = len(bl_model["vocab"])
    bl_added = [added("<|endoftext|>", bl_model["vocab"]["<|endoftext|>"])]
    out = {
        "split_removed.json": tokenizer(pre=split(" ", "Removed")),
        "split_isolated_regex.json": tokenizer(pre=split(r"\p{N}+|\s+", "Isolated", regex=True)),
        "split_merged_with_previous.json": tokenizer(pre=split("-", "MergedWithPrevious")),
        "split_merged_with_next.json": tokenizer(pre=split(r"[A-Z]", "MergedWithNext", regex=True)),
        "split_contiguous_invert.json": tokenizer(pre=split(r"\w", "Contiguous", invert=True, regex=True)),
        "split_empty_matches.json": tokenizer(pre=split(r"a*|(?=b)", "Isolated", regex=True)),
        "metaspace_always.json": tokenizer(pre={"type": "Metaspace", "replacement": SP, "prepend_scheme": "always", "split": True},
                                           decoder={"type": "Metaspace", "replacement": SP, "prepend_scheme": "always", "split": True}),
        "metaspace_first_nosplit.json": tokenizer(pre={"type": "Metaspace", "replacement": SP, "prepend_scheme": "first", "split": False},
                                                  decoder={"type": "Metaspace", "replacement": SP, "prepend_scheme": "first"}),
        "metaspace_legacy_no_prefix.json": tokenizer(pre={"type": "Metaspace", "replacement": SP, "add_prefix_space": False},
                                                     decoder={"type": "Metaspace", "replacement": SP, "add_prefix_space": False}),
        "digits_individual.json": tokenizer(pre={"type": "Digits", "individual_digits": True}),
        "digits_sequence_whitespace.json": tokenizer(pre=seq("pretokenizers", {"type": "WhitespaceSplit"},
                                                             {"type": "Digits", "individual_digits": False},
                                                             {"type": "Whitespace"})),
        "normalizer_nfkc_lowercase_strip.json": tokenizer(normalizer=seq("normalizers", {"type": "NFKC"}, {"type": "Lowercase"},
                                                                         {"type": "Strip", "strip_left": True, "strip_right": False})),
        "normalizer_nfd_nfc.json": tokenizer(normalizer=seq("normalizers", {"type": "NFD"}, {"type": "NFKD"}, {"type": "NFC"})),
        "normalizer_replace_regex.json": tokenizer(normalizer={"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "}),
        "normalizer_prepend_replace_llama2.json": tokenizer(
            normalizer=seq("normalizers", {"type": "Prepend", "prepend": SP}, {"type": "Replace", "pattern": {"String": " "}, "content": SP}),
            decoder=seq("decoders", {"type": "Replace", "pattern": {"String": SP}, "content": " "}, {"type": "ByteFallback"},
                        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}),
            post=template("<s>", "$A", specials={"<s>": s}), model=bytes_model,
            added_tokens=[added("<unk>", bytes_model["vocab"]["<unk>"]), added("<s>", s), added("</s>", e)]),
        "model_byte_fallback_unk.json": tokenizer(model=bytes_model, decoder=seq("decoders", {"type": "ByteFallback"}, {"type": "Fuse"})),
        "model_unk_fuse_no_fallback.json": tokenizer(model=base_model(unk_token="<unk>", fuse_unk=True)),
        "model_subword_prefix_suffix.json": tokenizer(model=base_model(
            continuing_subword_prefix="##", end_of_word_suffix="</w>",
            vocab={"a": 0, "##b": 1, "##c": 2, "c</w>": 3, "##c</w>": 4, "ab": 5, "<s>": 6, "</s>": 7},
            merges=["a ##b"]), pre={"type": "Whitespace"}),
        "model_ignore_merges_strings.json": tokenizer(model=base_model(ignore_merges=True, merges=[
            "#version: 0.2"] + [" ".join(p) for p in base_model()["merges"] if " " not in p[0] + p[1]])),
        "added_single_word_strip.json": tokenizer(added_tokens=[
            added("the", v["the"], special=False, single_word=True), added("<s>", s, lstrip=True, rstrip=True),
            added("and", v["and"], special=False, normalized=True), added("NEW", 0, special=False, normalized=True),
            added("<s>", s)], normalizer={"type": "Lowercase"}),
        "post_template_bos_eos.json": tokenizer(post=template("<s>", "$A", "</s>", specials={"<s>": s, "</s>": e})),
        "post_bert.json": tokenizer(post={"type": "BertProcessing", "sep": ["</s>", e], "cls": ["<s>", s]}),
        "post_roberta_sequence.json": tokenizer(post=seq("processors", {"type": "ByteLevel", "trim_offsets": False},
                                                         {"type": "RobertaProcessing", "sep": ["</s>", e], "cls": ["<s>", s],
                                                          "trim_offsets": True, "add_prefix_space": True})),
        "bytelevel_gpt2.json": tokenizer(model=bl_model, added_tokens=bl_added,
                                         pre={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
                                         post={"type": "ByteLevel", "trim_offsets": True}, decoder={"type": "ByteLevel"}),
        "bytelevel_split_sequence.json": tokenizer(model=bl_model, added_tokens=bl_added,
                                                   pre=seq("pretokenizers", split(r"(?i:'s|'t)|\p{L}+|\p{N}{1,3}|\s+(?!\S)|\s+", "Isolated", regex=True),
                                                           {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}),
                                                   decoder={"type": "ByteLevel"}),
        "decoder_replace_regex_strip.json": tokenizer(decoder=seq("decoders", {"type": "Replace", "pattern": {"Regex": "[aeiou]"}, "content": "_"},
                                                                  {"type": "Strip", "content": "_", "start": 2, "stop": 2})),
        "bad_regex.json": tokenizer(pre=split("(unclosed", "Isolated", regex=True)),
        "bad_model_wordpiece.json": tokenizer(model={"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "[UNK]"}, added_tokens=[]),
        "bad_normalizer_bert.json": tokenizer(normalizer={"type": "BertNormalizer", "lowercase": True}),
        "bad_merge_missing_token.json": tokenizer(model=base_model(merges=["a zz"])),
        "bad_vocab_id_string.json": tokenizer(model=base_model(vocab={"a": "zero"}), added_tokens=[]),
        "bad_template_unknown_special.json": tokenizer(post=template("<x>", "$A", specials={"<s>": s})),
        "slow_backtracking_split.json": tokenizer(pre=split("(a+)+$", "Isolated", regex=True)),
        # Regressions: the bugs of docs/fuzzing.md, each as small as it gets.
        "regress_sparse_id.json": tokenizer(model=base_model(vocab=dict(v, big=2147483646))),
        "regress_long_pre_sequence.json": tokenizer(pre=seq("pretokenizers", split("-", "Isolated"),
                                                           *([{"type": "WhitespaceSplit"}] * 40),
                                                           {"type": "Digits", "individual_digits": True})),
        "regress_backslash_c_strip.json": tokenizer(normalizer=seq(
            "normalizers", {"type": "Replace", "pattern": {"Regex": "[^\\x{800}\\x{809}]"}, "content": ""},
            {"type": "Replace", "pattern": {"Regex": "^\\C\\C|(?<=\\x{800})\\C\\C"}, "content": ""},
            {"type": "Strip", "strip_left": False, "strip_right": True})),
        "regress_no_jit.json": tokenizer(pre=split("(*NO_JIT)\\p{N}+|\\s+", "Isolated", regex=True)),
    }
    files = {name: dump(t) for name, t in out.items()}
    # The text the fuzz target encodes is the file's first 200 bytes: put the one that broke Strip there.
    files["regress_backslash_c_strip.json"] = dump({"x": "\u0800\u0809", **out["regress_backslash_c_strip.json"]})
    files["bad_duplicate_key.json"] = b'{"model":{"type":"BPE","vocab":{"a":0},"vocab":{},"merges":[]}}'
    files["bad_lone_surrogate.json"] = b'{"model":{"type":"BPE","vocab":{"\\ud800":0},"merges":[]}}'
    files["bad_not_json.json"] = b'{"model": [1, 2,'
    files["minimal_empty_vocab.json"] = b'{"model":{"type":"BPE","vocab":{},"merges":[]}}'
    files["escaped_ascii_only.json"] = dump(out["metaspace_always.json"], ascii_only=True)
    # 63 Sequences, one inside the other: one more than the loader (and the reference) allows.
    deep = {"type": "Lowercase"}
    for _ in range(63):
        deep = {"type": "Sequence", "normalizers": [deep]}
    files["regress_nesting_63.json"] = dump(tokenizer(normalizer=deep))
    return files


# ---- encode texts ------------------------------------------------------------------------------

def texts():
    t = {
        "prose_en": "The quick brown fox jumps over the lazy dog. It's 9:41 -- isn't it?",
        "prose_contractions": "I'm sure they'll say we've done what she'd've wanted; THEY'RE RIGHT.",
        "prose_de": "Gr\u00fc\u00dfe aus M\u00fcnchen: \u00c4rger, \u00d6l und \u00dcbermut.",
        "prose_fr_nfd": "Cafe\u0301 de\u0301ja\u0300 vu, na\u0131\u0308ve",
        "prose_ru": "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?",
        "prose_el": "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5",
        "prose_zh": "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u5427\u3002",
        "prose_ja": "\u3053\u3093\u306b\u3061\u306f\u3001\u4e16\u754c\uff01\u30ab\u30bf\u30ab\u30ca\u3068\u6f22\u5b57",
        "prose_ko": "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4",
        "prose_ar": "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
        "prose_he": "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "prose_hi": "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
        "prose_th": "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
        "prose_mixed_scripts": "Tokyo\u6771\u4eacMoscow\u041c\u043e\u0441\u043a\u0432\u0430123abc",
        "code_cpp": "template <typename T>\nstd::vector<T> f(const T& x) {\n  return {x, x * 2};  // NOTE\n}\n",
        "code_python": "def f(x):\n    if x is None:\n        return []\n    return [i ** 2 for i in range(x)]\n",
        "code_json": '{"a": [1, 2.5e-3, null], "b": {"c": "d\\n"}}',
        "code_shell": "for f in *.txt; do grep -c 'x' \"$f\" | tee -a out.log; done 2>&1",
        "code_html": "<div class=\"x\"><p>Hi&nbsp;there</p><br/></div>",
        "code_regex": r"(?i:'s|'t)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
        "code_tabs_crlf": "a\tb\r\nc\r\n\r\n\td\r",
        "url_email": "https://example.com/a/b?c=d&e=f#g mailto:someone@example.org",
        "numbers": "3.14159 2,718 1e-10 0x1F -42 1234567890 \u0661\u0662\u0663 \u2167 \u00bd",
        "numbers_long": "12345678901234567890123456789012345678901234567890",
        "ws_single_space": " ",
        "ws_leading_trailing": "   hello   ",
        "ws_spaces_100": " " * 100,
        "ws_spaces_2000": " " * 2000,
        "ws_newlines_500": "\n" * 500,
        "ws_mixed_runs": " \t \n \r\n\u00a0\u2003\u3000 x \u2028\u2029\u0085 y",
        "ws_tabs_then_word": "\t" * 64 + "word",
        "ws_spaces_then_newline": " " * 300 + "\n" + " " * 300 + "x",
        "empty": "",
        "single_a": "a",
        "single_nul": "\x00",
        "control_chars": "".join(chr(c) for c in range(0, 32)) + "\x7f",
        "c1_controls": "".join(chr(c) for c in range(0x80, 0xA0)),
        "latin1_range": "".join(chr(c) for c in range(0xA0, 0x100)),
        "emoji": "\U0001F600\U0001F680\u2764\ufe0f\U0001F44D\U0001F3FD",
        "emoji_zwj_family": "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
        "emoji_flags": "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F",
        "emoji_run": "\U0001F525" * 200,
        "combining_marks": "e\u0301\u0302\u0303\u0304\u0305\u0306\u0307 Z\u0351\u0352\u0357\u035b",
        "hangul_jamo": "\u1100\u1161\u11a8 \uac00",
        "ligatures_nfkc": "\ufb01\ufb02 \u2460 \u33a1 \uff21\uff22\uff23 \u2126",
        "fullwidth": "\uff28\uff45\uff4c\uff4c\uff4f\uff0c\u3000\uff37\uff4f\uff52\uff4c\uff44",
        "rtl_marks": "a\u200fb\u200ec\u202ed\u202c",
        "bom_zero_width": "\ufeffa\u200bb\u200cc\u2060d",
        "private_use": "\ue000\uf8ff\U000F0000\U0010FFFD",
        "noncharacters": "\ufdd0\ufffe\uffff\U0001FFFE",
        "replacement_char": "\ufffd\ufffd x",
        "metaspace_char": "\u2581hello\u2581\u2581world \u2581",
        "bytelevel_chars": "\u0120\u010a\u0100\u0121 \u00c4\u0142",
        "special_begin_of_text": "<|begin_of_text|>Hello<|end_of_text|>",
        "special_llama3_header": "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
        "special_reserved": "<|reserved_special_token_0|><|reserved_special_token_250|>",
        "special_llama2": "<s>[INST] hi [/INST]</s><unk>",
        "special_llama2_spaced": " <s> x </s> ",
        "special_gptoss": "<|start|>user<|message|>hi<|end|><|return|><|channel|><|constrain|><|endoftext|>",
        "special_partial": "<|begin_of_tex <|end <s </ <|",
        "special_nested": "<<s>s></s></s>>",
        "special_repeated": "<|endoftext|>" * 50,
        "byte_tokens_text": "<0x41><0xFF><0x+A>",
        "run_a_4096": "a" * 4096,
        "run_digit_4096": "7" * 4096,
        "run_x_space": "x " * 1000,
        "run_ab_2000": "ab" * 2000,
        "run_apostrophe": "'" * 300 + "s",
        "run_dash": "-" * 1000,
        "run_cjk_1000": "\u4e00" * 1000,
        "run_upper_then_lower": "A" * 500 + "a" * 500,
        "run_letters_digits_alternating": "a1" * 1000,
        "long_word_mixed": "Pneumonoultramicroscopicsilicovolcanoconiosis" * 20,
        "camel_case": "getHTTPResponseCodeXMLParserIOError",
        "snake_case": "__init___private__var_name__",
        "punct_run": "!!!???...;;;:::,,,---___+++===***&&&%%%$$$###@@@",
        "quotes": "\u201cquoted\u201d \u2018single\u2019 \u00abguillemets\u00bb 'ascii' \"double\"",
        "apostrophe_variants": "don't don\u2019t DON'T Don'T 's 'S 'll 'LL",
        "newline_after_punct": "end.\n\nNext,\r\n/path/to\n",
        "math_symbols": "\u2200x\u2208\u211d: x\u00b2 \u2265 0 \u2211\u222b\u221e\u2248\u2260",
    }
    out = {name: s.encode("utf-8") for name, s in t.items()}
    # Invalid UTF-8: each kind of ill-formed sequence the replacement rule distinguishes.
    out.update({
        "invalid_lone_continuation": b"a\x80b\xbf",
        "invalid_truncated_2": b"x\xc3",
        "invalid_truncated_3": b"x\xe2\x82",
        "invalid_truncated_4": b"x\xf0\x9f\x98",
        "invalid_overlong": b"\xc0\xaf\xe0\x80\xaf\xf0\x80\x80\xaf",
        "invalid_surrogates": b"\xed\xa0\x80\xed\xbf\xbf",
        "invalid_above_10ffff": b"\xf4\x90\x80\x80\xf5\xff",
        "invalid_ff_fe": b"\xff\xfe\xfd",
        "invalid_mixed_valid": b"ok \xc3\xa9 \xc3 \xe2\x82\xac \xe2\x82 end",
        "invalid_latin1_text": "Gr\u00fc\u00dfe caf\u00e9".encode("latin-1"),
        "invalid_utf16le": "hi there".encode("utf-16-le"),
        "invalid_in_special": b"<|begin_of_text\xff|><s\x80>",
        "invalid_run": b"\x80" * 500,
        "invalid_between_spaces": b"   \xc3   \xa9   ",
        "binary_random": bytes((i * 197 + 13) % 256 for i in range(512)),
    })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "tokenizer-data"))
    args = ap.parse_args()
    for name in ["llama3", "llama2", "gptoss"]:
        path = os.path.join(args.data, name, "tokenizer.json")
        if not os.path.exists(path):
            print(f"make_tokenizer_seeds.py: {path} not found; trim_{name}.json left as it is")
            continue
        with open(path, encoding="utf-8") as f:
            write(JSON_DIR, f"trim_{name}.json", dump(trim(json.load(f))))
    for name, data in hand_written().items():
        write(JSON_DIR, name, data)
    for name, data in texts().items():
        write(TEXT_DIR, name, data)


if __name__ == "__main__":
    main()

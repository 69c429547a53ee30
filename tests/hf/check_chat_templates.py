#!/usr/bin/env python3
"""Chat templates: nvfp4's renderer against the real jinja2, byte for byte.

    python3 tests/hf/check_chat_templates.py build/tests/render_chat_template [--repo .] [-v] [--template PATH]...

jinja2 is configured as Hugging Face transformers configures it for apply_chat_template:
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loop-controls
extension and a {% generation %} block, the globals raise_exception and strftime_now (its clock
fixed here, and on our side with ChatTemplate::set_now), a tojson filter that is json.dumps with
ensure_ascii=False, and the variables messages, tools, documents, add_generation_prompt, the
special tokens and the extra ones. (transformers itself is not needed: Debian's python3-jinja2 is.)

Cases:
  - tokenizer-data/*/tokenizer_config.json (scripts/tokenizer_reference.sh install puts them there;
    skipped with a note when absent): their chat_template and special tokens through
    ChatTemplate::from_tokenizer_config, or, with no chat_template in the file, "none" on both sides;
  - tests/hf/chat_templates/*.jinja, templates written for this test in the styles of the common
    model families;
  - tests/hf/chat_templates/snippets.txt: short templates, one construct each ("## name" starts
    one; "## name [unsupported]" marks one our parser must refuse with "unsupported");
  - --template PATH: any other template (a model's chat_template.jinja or tokenizer_config.json).
each against a set of conversations with add_generation_prompt false and true. A case passes when
both sides give the same bytes, or both fail — at parse time on both sides, or when rendering on
both sides, with the same message when the template called raise_exception. The first difference
is printed. Exit status 1 on any failure.
"""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys

try:
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    sys.exit("check_chat_templates.py: jinja2 is not importable by " + sys.executable +
             "; install Debian's python3-jinja2 (scripts/test.sh does)")

NOW = datetime.datetime(2024, 7, 26, 10, 30, 15)
NOW_TEXT = "2024-07-26T10:30:15"
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class GenerationBlock(Extension):
    """transformers' {% generation %} tag: outside its assistant-mask mode the body renders as is."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_body", []), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def make_environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: NOW.strftime(fmt)
    return env


ENV = make_environment()


def reference(template, messages, add_generation_prompt, variables, extra):
    """jinja2's result: ("text", s) | ("parse", msg) | ("raised", msg) | ("error", msg)."""
    try:
        compiled = ENV.from_string(template)
    except Exception as e:  # TemplateSyntaxError, TemplateAssertionError, ...
        return ("parse", f"{type(e).__name__}: {e}")
    extra = dict(extra or {})
    kwargs = dict(variables)
    kwargs.update({k: v for k, v in extra.items() if k not in ("tools", "documents")})
    try:
        return ("text", compiled.render(messages=messages, tools=extra.get("tools"), documents=extra.get("documents"),
                                        add_generation_prompt=add_generation_prompt, **kwargs))
    except jinja2.exceptions.TemplateError as e:
        if type(e) is jinja2.exceptions.TemplateError:  # raise_exception's
            return ("raised", str(e))
        return ("error", f"{type(e).__name__}: {e}")
    except Exception as e:
        return ("error", f"{type(e).__name__}: {e}")


def special_tokens(config):
    """transformers' special_tokens_map: the tokens set and non-empty, AddedToken objects as content."""
    out = {}
    for name in SPECIAL_TOKENS:
        v = config.get(name)
        if isinstance(v, dict):
            v = v.get("content")
        if v:
            out[name] = v
    extra = [t["content"] if isinstance(t, dict) else t for t in config.get("additional_special_tokens") or []]
    if extra:
        out["additional_special_tokens"] = extra
    return out


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Zürich"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Adds two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]}}},
]

CONVERSATIONS = {
    "system_user": ([{"role": "system", "content": "You are a terse assistant."},
                     {"role": "user", "content": "What is 2+2?"}], None),
    "user_only": ([{"role": "user", "content": "Hello!"}], None),
    "multi_turn": ([{"role": "system", "content": "Answer in one line."},
                    {"role": "user", "content": "Name a prime."},
                    {"role": "assistant", "content": "7"},
                    {"role": "user", "content": "  Another one, please.  \n"}], None),
    "unicode": ([{"role": "user", "content": "Grüße aus Zürich — 日本語もOK? 🚀🤖 \u2028 nbsp:\u00a0end"},
                 {"role": "assistant", "content": "Ja! 🎉 “quoted” «text» ½ ∑"},
                 {"role": "user", "content": "emoji only: 👍🏽👨‍👩‍👧"}], None),
    "template_text": ([{"role": "user", "content": "Show me {{ messages }} and {% if x %} and {# c #} }} {{"},
                       {"role": "assistant", "content": "{%- raw %}{{ bos_token }}{% endraw %}"},
                       {"role": "user", "content": "\\n is not a newline; \"quotes\" and 'single'"}], None),
    "empty": ([{"role": "system", "content": ""}, {"role": "user", "content": ""},
               {"role": "assistant", "content": ""}, {"role": "user", "content": " "}], None),
    "with_tools": ([{"role": "system", "content": "Use tools when useful."},
                    {"role": "user", "content": "Weather in Paris? And 3+4."}], {"tools": TOOLS}),
    "tool_calls": ([{"role": "user", "content": "What's 3+4, and the weather in Zürich?"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": {"a": 3, "b": 4}}},
                        {"id": "call_2", "type": "function",
                         "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}}]},
                    {"role": "tool", "tool_call_id": "call_1", "name": "add", "content": "7"},
                    {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": "{\"temp\": 21.5}"},
                    {"role": "assistant", "content": "3+4 is 7; Zürich is 21.5 °C."}], {"tools": TOOLS}),
    "reasoning": ([{"role": "user", "content": "Is 91 prime?"},
                   {"role": "assistant", "content": "<think>\n91 = 7 × 13.\n</think>\n\nNo: 91 = 7 × 13."},
                   {"role": "user", "content": "And 97?"}], None),
    "not_alternating": ([{"role": "user", "content": "one"}, {"role": "user", "content": "two"}], None),
}

SNIPPET_VARIABLES = {"bos_token": "<s>", "eos_token": "</s>"}
SNIPPET_EXTRA = {
    "tools": TOOLS,
    "data": {"name": "nvfp4", "n": 3, "pi": 3.14159, "ok": True, "nothing": None, "tags": ["b", "a", "C", "a"],
             "nested": {"k": [1, 2, {"deep": "yes"}]}, "users": [{"name": "ann", "age": 31}, {"name": "Bob", "age": 27},
                                                                  {"name": "cy", "age": 31, "admin": True}]},
    "text": "  Hello, World! \t\n",
}


def load_snippets(path):
    snippets, name, lines = [], None, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                if name is not None:
                    snippets.append((name, "".join(lines)))
                name, lines = line[3:].strip(), []
            elif name is not None:
                lines.append(line)
    if name is not None:
        snippets.append((name, "".join(lines)))
    return snippets


def first_difference(a, b):
    n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    line = a.count("\n", 0, n) + 1
    return (f"first difference at character {n} (line {line}):\n"
            f"      jinja2: {a[max(0, n - 40):n + 40]!r}\n"
            f"      nvfp4:  {b[max(0, n - 40):n + 40]!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("renderer", help="the render_chat_template binary")
    ap.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case")
    ap.add_argument("--template", action="append", default=[], metavar="PATH",
                    help="also check this template: a .jinja file, a tokenizer_config.json, or a folder of .jinja "
                         "files (a model's own template, say); repeatable")
    args = ap.parse_args()
    repo = os.path.abspath(args.repo)
    here = os.path.join(repo, "tests", "hf", "chat_templates")

    cases = []  # (label, job for our renderer, expected, expect_unsupported)

    def add_template_cases(label, template, variables, job_base, conversations, unsupported=False):
        for conv_name, (messages, extra) in conversations:
            for agp in (False, True):
                job = dict(job_base, messages=messages, add_generation_prompt=agp, now=NOW_TEXT)
                if extra:
                    job["extra"] = extra
                expected = reference(template, messages, agp, variables, extra) if template is not None else ("none", "")
                cases.append((f"{label} × {conv_name} × agp={agp}", job, expected, unsupported))

    convs = list(CONVERSATIONS.items())
    configs = sorted(glob.glob(os.path.join(repo, "tokenizer-data", "*", "tokenizer_config.json")))
    if not configs:
        print("note: no tokenizer-data/*/tokenizer_config.json (bash scripts/tokenizer_reference.sh install "
              "writes them); checking the templates of tests/hf/chat_templates only")
    for path in configs:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        template = config.get("chat_template")
        if isinstance(template, list):
            template = next(t["template"] for t in template if t["name"] == "default")
        label = os.path.relpath(path, repo)
        add_template_cases(label, template, special_tokens(config), {"tokenizer_config": path}, convs)

    variables = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    extra_templates = []
    for path in args.template:
        if os.path.isdir(path):
            extra_templates += sorted(glob.glob(os.path.join(path, "*.jinja")))
        elif path.endswith(".json"):
            configs.append(path)
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            template = config.get("chat_template")
            if isinstance(template, list):
                template = next(t["template"] for t in template if t["name"] == "default")
            add_template_cases(path, template, special_tokens(config), {"tokenizer_config": os.path.abspath(path)}, convs)
        else:
            extra_templates.append(path)
    for path in sorted(glob.glob(os.path.join(here, "*.jinja"))) + extra_templates:
        with open(path, encoding="utf-8") as f:
            template = f.read()
        label = os.path.relpath(path, repo) if path.startswith(repo) else path
        add_template_cases(label, template, variables,
                           {"template": template, "source": label, "variables": variables}, convs)

    snippets = load_snippets(os.path.join(here, "snippets.txt"))
    for name, template in snippets:
        unsupported = name.endswith("[unsupported]")
        add_template_cases(f"snippet '{name}'", template, SNIPPET_VARIABLES,
                           {"template": template, "source": name, "variables": SNIPPET_VARIABLES},
                           [("multi_turn", (CONVERSATIONS["multi_turn"][0], SNIPPET_EXTRA))], unsupported)

    proc = subprocess.run([args.renderer], input=json.dumps([c[1] for c in cases]).encode(), capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"check_chat_templates.py: {args.renderer} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    results = json.loads(proc.stdout)
    assert len(results) == len(cases)

    failures = 0
    counts = {"text": 0, "none": 0, "parse": 0, "raised": 0, "error": 0, "unsupported": 0}
    for (label, job, (kind, want), unsupported), got in zip(cases, results):
        problem = None
        if unsupported:
            if "error" not in got or not got.get("parse") or "unsupported" not in got["error"]:
                problem = f"expected our parser to refuse it as unsupported, got {got}"
            else:
                counts["unsupported"] += 1
        elif kind == "text":
            if "text" not in got:
                problem = f"jinja2 renders it, we fail: {got.get('error')}"
            elif got["text"] != want:
                problem = first_difference(want, got["text"])
        elif kind == "none":
            if not got.get("none"):
                problem = f"the tokenizer config has no chat_template, we say {got}"
        elif kind == "parse":
            if not got.get("parse"):
                problem = f"jinja2 fails to compile it ({want}), we {'render it' if 'text' in got else 'fail when rendering: ' + got['error']}"
        elif kind == "raised":
            if got.get("raised") != want:
                problem = f"jinja2 raises {want!r} (raise_exception), we give {got}"
        else:  # a runtime error in jinja2
            if "text" in got or got.get("parse"):
                problem = f"jinja2 fails when rendering ({want}), we {'render it' if 'text' in got else 'fail at parse: ' + got['error']}"
        if problem:
            failures += 1
            print(f"FAIL {label}: {problem}")
        else:
            if not unsupported:
                counts[kind] += 1
            if args.verbose:
                detail = (got.get("error") or "") if kind != "text" else f"{len(want)} characters"
                print(f"ok   {label}: {kind} {detail}")
    print(f"check_chat_templates: {len(cases) - failures}/{len(cases)} cases identical to jinja2 {jinja2.__version__} "
          f"({counts['text']} rendered, {counts['raised']} raise_exception, {counts['error']} render errors, "
          f"{counts['parse']} parse errors, {counts['none']} without a template, {counts['unsupported']} refused as unsupported)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

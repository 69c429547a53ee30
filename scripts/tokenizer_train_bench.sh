#!/usr/bin/env bash
# How fast `nvfp4 tokenizer train` learns a 32k byte-level BPE from ~100 MB of varied text, how
# much memory it takes, and how well the result compresses held-out English next to Llama-3's
# tokenizer (docs/tokenizer_training.md records a run).
#
#   scripts/tokenizer_train_bench.sh NVFP4_BIN WORK_DIR [VOCAB]     # VOCAB default 32768
#
# 1. WORK_DIR/corpus/ (built once; kept while WORK_DIR/corpus/.done exists), one file per kind,
#    from this Debian machine's files, each list sorted and strided (every 64th path, then the
#    next offset, ...) so that a cap samples the whole list:
#      python_manual.txt  the Python 3.11 manual (python3.11-doc, GNU info), minus its last 2 MB
#      gnu_info.txt       the other GNU info manuals in /usr/share/info, minus the held-out four
#      man_en.txt         English man pages, roff source (/usr/share/man/man[1-8]), 25 MB
#      changelogs.txt     /usr/share/doc/*/changelog*.gz, 15 MB
#      doc_text.txt       /usr/share/doc/**/*.txt, *.md, README*, 10 MB
#      code_python.txt    /usr/lib/python3.11/**/*.py, 15 MB at most
#      code_c.txt         /usr/include/**/*.h, 15 MB
#      tokcorpus_*.txt    scripts/tokenizer_corpus.sh's 10 MB corpus (prose, code, ja/zh/ru,
#                         white space, emoji, invalid UTF-8)
#    Files that are not valid UTF-8 or hold a NUL byte (GNU info's index marks excepted) are
#    skipped (tokcorpus_edge_cases.txt is invalid on purpose and kept). WORK_DIR/heldout/ (never trained on):
#      python_manual_tail.txt  the manual's last 2 MB (in-domain English)
#      gnu_info_heldout.txt    coreutils, grep, sed and wget's GNU info manuals (other English)
#    sha256sum of every file is printed: the same packages give the same bytes.
# 2. trains: /usr/bin/time -v NVFP4_BIN tokenizer train WORK_DIR/corpus --vocab VOCAB
#      --special '<|endoftext|>' --out WORK_DIR/tok-VOCAB/ --json
# 3. bytes per token of each held-out file under ours and under Llama-3's tokenizer.json
#    (tokenizer-data/llama3/, from scripts/tokenizer_reference.sh install; skipped without it).
# Needs python3 and /usr/bin/time (apt-get install time); installs python3.11-doc and the man
# pages scripts/tokenizer_corpus.sh needs.
set -euo pipefail

die() { echo "tokenizer_train_bench.sh: $*" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: scripts/tokenizer_train_bench.sh NVFP4_BIN WORK_DIR [VOCAB]"
nvfp4=$1 work=$2 vocab=${3:-32768}
root=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$nvfp4" ] || die "$nvfp4 is not an executable; build it first (bash scripts/build.sh)"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
command -v python3 >/dev/null || die "python3 is not on PATH"

corpus=$work/corpus heldout=$work/heldout
if [ ! -f "$corpus/.done" ]; then
  rm -rf "$corpus" "$heldout" "$work/tokcorpus"
  mkdir -p "$corpus" "$heldout"
  bash "$root/scripts/tokenizer_corpus.sh" "$work/tokcorpus" 10 >/dev/null
  for f in "$work"/tokcorpus/*; do cp "$f" "$corpus/tokcorpus_$(basename "$f")"; done
  python3 - "$corpus" "$heldout" <<'PY'
import glob, gzip, os, sys

corpus, heldout = sys.argv[1], sys.argv[2]
HELD_INFO = ("coreutils", "grep", "sed", "wget")


def read(path):
    return gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()


def text_or_none(path, nul_ok):
    try:
        data = read(path)
        data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None
    if b"\0" in data and not nul_ok:
        return None
    return data if data.endswith(b"\n") or not data else data + b"\n"


def strided(paths):
    paths = sorted(p for p in paths if os.path.isfile(p) and not os.path.islink(p))
    stride = max(1, min(len(paths), 64))
    return [p for s in range(stride) for p in paths[s::stride]]


def take(paths, cap, nul_ok=False):
    parts, size = [], 0
    for p in paths:
        if size >= cap:
            break
        data = text_or_none(p, nul_ok)
        if not data:
            continue
        if size + len(data) > cap:
            cut = data.rfind(b"\n", 0, cap - size)
            data = data[:cut + 1] if cut >= 0 else b""
        parts.append(data)
        size += len(data)
    return b"".join(parts)


def write(folder, name, data):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


manual = read("/usr/share/info/python3.11.info.gz")
cut = manual.rfind(b"\n", 0, len(manual) - 2_000_000) + 1
write(corpus, "python_manual.txt", manual[:cut])
write(heldout, "python_manual_tail.txt", manual[cut:])

infos = [p for p in glob.glob("/usr/share/info/*.info*.gz") if "python3.11" not in p]
held = [p for p in infos if os.path.basename(p).split(".")[0] in HELD_INFO]
# GNU info marks index entries with NUL bytes: kept there.
write(corpus, "gnu_info.txt", take(sorted(set(infos) - set(held)), 10**9, nul_ok=True))
write(heldout, "gnu_info_heldout.txt", take(sorted(held), 10**9, nul_ok=True))

write(corpus, "man_en.txt", take(strided(glob.glob("/usr/share/man/man[1-8]/*.gz")), 25_000_000))
write(corpus, "changelogs.txt", take(strided(glob.glob("/usr/share/doc/*/changelog*.gz")), 15_000_000))
docs = [p for p in glob.glob("/usr/share/doc/**/*", recursive=True)
        if p.endswith((".txt", ".md")) or os.path.basename(p).startswith("README") and not p.endswith(".gz")]
write(corpus, "doc_text.txt", take(strided(docs), 10_000_000))
write(corpus, "code_python.txt", take(strided(glob.glob("/usr/lib/python3.11/**/*.py", recursive=True)), 15_000_000))
write(corpus, "code_c.txt", take(strided(glob.glob("/usr/include/**/*.h", recursive=True)), 15_000_000))
PY
  touch "$corpus/.done"
fi
echo "== corpus $corpus ($(du -sb --exclude=.done "$corpus" | cut -f1) bytes), held out $heldout"
(cd "$work" && sha256sum corpus/* heldout/* | sed 's/^/   /')

out=$work/tok-$vocab
echo "== $nvfp4 tokenizer train $corpus --vocab $vocab --special '<|endoftext|>' --out $out/ --json"
/usr/bin/time -v "$nvfp4" tokenizer train "$corpus" --vocab "$vocab" --special '<|endoftext|>' --out "$out/" --json \
  >"$work/train-$vocab.json" 2>"$work/train-$vocab.log" || { cat "$work/train-$vocab.log" >&2; die "training failed"; }
cat "$work/train-$vocab.json"
grep -E "Elapsed \(wall|Maximum resident|User time|System time|Percent of CPU" "$work/train-$vocab.log" | sed 's/^\s*/   /'

echo "== bytes per token on held-out text"
llama3=$root/tokenizer-data/llama3/tokenizer.json
printf '   %-24s %12s %14s %14s\n' file bytes ours llama3
for f in "$heldout"/*; do
  ours=$("$nvfp4" tokenize "$out/tokenizer.json" "$f" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
  if [ -f "$llama3" ]; then
    ref=$("$nvfp4" tokenize "$llama3" "$f" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"])')
  else
    ref=
  fi
  bytes=$(stat -c %s "$f")
  python3 -c "
import sys
b, o, r = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rs = f'{b / int(r):.3f} ({int(r)})' if r else 'n/a'
print(f'   {sys.argv[1]:<24} {b:>12} {b / o:.3f} ({o}) {rs}')" "$(basename "$f")" "$bytes" "$ours" "$ref"
done

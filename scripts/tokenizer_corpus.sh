#!/usr/bin/env bash
# Build the text corpus of the tokenizer-exactness test (scripts/tokenizer_compare.sh).
#
#   scripts/tokenizer_corpus.sh OUT_DIR [MB]      # about MB megabytes in all (default 10)
#   scripts/tokenizer_corpus.sh --small OUT_DIR   # about 300 KB, the same kinds (for CI)
#
# One file per kind in OUT_DIR, shares of the total in brackets:
#   prose_en.txt       [50 %] English: the Python 3.11 manual in GNU info form (python3.11-doc)
#   code_c.txt         [10 %] C/C++ headers from /usr/include
#   code_python.txt    [10 %] Python modules from /usr/lib/python3.11
#   nonlatin_ja.txt    [ 5 %] Japanese man pages, roff source (manpages-ja)
#   nonlatin_zh.txt    [ 5 %] Chinese man pages, simplified then traditional (manpages-zh)
#   nonlatin_ru.txt    [ 5 %] Russian man pages (manpages-ru)
#   whitespace.txt     [ 4 %] generated: tab indents, space runs of every length 1..40, CRLF,
#                             lone CR, trailing blanks, blank and blank-only lines, \v \f, NBSP
#                             and other Unicode spaces
#   emoji_symbols.txt  [ 5 %] generated: emoji (ZWJ sequences, skin tones, flags, keycaps),
#                             CJK, kana, Hangul, Arabic/Hebrew with bidi controls, combining
#                             marks, Devanagari, Thai, Greek, math/arrows/box symbols, plus a
#                             few code points of recent Unicode versions (a Unicode-table probe)
#   edge_cases.txt     [ 6 %] generated, NOT valid UTF-8 on purpose: a BOM, invalid bytes (FF,
#                             stray continuations, truncated and overlong sequences, encoded
#                             surrogates, > U+10FFFF), NUL and other controls, digit runs,
#                             contractions ('s 't 're 've 'm 'll 'd in every letter case),
#                             repeated punctuation, the three tokenizers' special-token strings,
#                             100 KB lines without a newline (8 KB with --small); no final "\n"
# Source files are taken in a fixed order (sorted, strided over the whole list) and cut at a
# line end; generated files come from a fixed-seed xorshift generator. The same installed
# Debian packages give byte-identical files, so reruns are idempotent. Every file but
# edge_cases.txt is checked to be valid UTF-8. Installs python3.11-doc, manpages-ja,
# manpages-zh and manpages-ru when missing (apt-get; sudo when not root). Needs python3.
set -euo pipefail

die() { echo "tokenizer_corpus.sh: $*" >&2; exit 1; }
usage="usage: scripts/tokenizer_corpus.sh OUT_DIR [MB]  |  scripts/tokenizer_corpus.sh --small OUT_DIR"

small=0
args=()
for a in "$@"; do
  case "$a" in
    --small) small=1 ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) die "unknown option $a; $usage" ;;
    *) args+=("$a") ;;
  esac
done
if [ "$small" -eq 1 ]; then
  [ ${#args[@]} -eq 1 ] || die "$usage"
  total=300000
else
  [ ${#args[@]} -ge 1 ] && [ ${#args[@]} -le 2 ] || die "$usage"
  mb=${args[1]:-10}
  [[ "$mb" =~ ^[0-9]+$ ]] && [ "$mb" -ge 1 ] || die "MB must be a whole number >= 1, got '$mb'"
  total=$((mb * 1000000))
fi
out=${args[0]}
command -v python3 >/dev/null || die "python3 is not on PATH (apt-get install python3)"

SECONDS=0
bash "$(dirname "$0")/apt_install.sh" python3.11-doc manpages-ja manpages-zh manpages-ru || exit 1

# The sources, one list per kind, sorted; only regular files (symlinks would repeat pages).
list_pkg() { # PACKAGE REGEX: the package's regular files whose path matches, sorted
  dpkg -L "$1" | grep -E "$2" | while IFS= read -r f; do
    if [ -f "$f" ] && [ ! -L "$f" ]; then echo "$f"; fi
  done | LC_ALL=C sort
}
lists=$(mktemp -d)
trap 'rm -rf "$lists"' EXIT
list_pkg python3.11-doc '^/usr/share/info/python.*\.info(-[0-9]+)?\.gz$' >"$lists/prose_en"
find /usr/include -type f | LC_ALL=C sort >"$lists/code_c"
find /usr/lib/python3.11 -type f -name '*.py' | LC_ALL=C sort >"$lists/code_python"
list_pkg manpages-ja '^/usr/share/man/ja/.*\.gz$' >"$lists/nonlatin_ja"
list_pkg manpages-zh '^/usr/share/man/zh_CN/.*\.gz$' >"$lists/nonlatin_zh_CN"
list_pkg manpages-zh '^/usr/share/man/zh_TW/.*\.gz$' >"$lists/nonlatin_zh_TW"
list_pkg manpages-ru '^/usr/share/man/ru/.*\.gz$' >"$lists/nonlatin_ru"
for l in "$lists"/*; do
  [ -s "$l" ] || die "no source files for $(basename "$l"); check the packages ${pkgs[*]}"
done

mkdir -p "$out"
python3 - "$out" "$total" "$small" "$lists" <<'PY'
import gzip, os, sys

out, total, small, lists = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
SHARES = {  # kind -> share of the total
    "prose_en": 0.50, "code_c": 0.10, "code_python": 0.10,
    "nonlatin_ja": 0.05, "nonlatin_zh": 0.05, "nonlatin_ru": 0.05,
    "whitespace": 0.04, "emoji_symbols": 0.05, "edge_cases": 0.06,
}
LONG_LINE = 8_000 if small else 100_000  # bytes per very long line in edge_cases.txt


class Rng:
    """xorshift64: the same sequence on every Python, unlike the random module's helpers."""
    def __init__(self, seed):
        self.x = seed
    def next(self):
        x = self.x
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        self.x = x
        return x
    def below(self, n):
        return self.next() % n
    def pick(self, seq):
        return seq[self.below(len(seq))]
    def chars(self, ranges, n):
        """n code points drawn from a list of inclusive (lo, hi) ranges."""
        return "".join(chr(self.pick_cp(ranges)) for _ in range(n))
    def pick_cp(self, ranges):
        lo, hi = self.pick(ranges)
        return lo + self.below(hi - lo + 1)


def read_source(path):
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None  # only edge_cases.txt holds invalid UTF-8
    return data if data.endswith(b"\n") or not data else data + b"\n"


def take_files(list_name, budget):
    """Whole files in a fixed order strided over the sorted list, until budget bytes; the
    last one is cut at a line end."""
    paths = open(os.path.join(lists, list_name)).read().split("\n")[:-1]
    # Stride so that a small budget still samples the whole list, not just its first letters.
    stride = max(1, min(len(paths), 64))
    order = [p for s in range(stride) for p in paths[s::stride]]
    parts, size = [], 0
    for p in order:
        if size >= budget:
            break
        data = read_source(p)
        if not data:
            continue
        if size + len(data) > budget:
            cut = data.rfind(b"\n", 0, budget - size)
            data = data[:cut + 1] if cut >= 0 else b""
        parts.append(data)
        size += len(data)
    return b"".join(parts)


WORDS = ("the of and to in is that for it as with was on be by this are from or an which "
         "function return value list string file line token model data error type class "
         "import print self None True False while if else def int char void const struct").split()


def gen_whitespace(budget, rng):
    lines = []
    size = 0
    spaces = ["\u00a0", "\u2009", "\u3000", "\u2003", "\u202f", "\u200b", "\u2028", "\u0085", "\v", "\f"]
    n = 0
    while size < budget:
        k = n % 12
        w = lambda: rng.pick(WORDS)
        if k == 0:    # every run length 1..40 between two words, in turn
            line = w() + " " * (n // 12 % 40 + 1) + w()
        elif k == 1:  # tab indentation, then a statement
            line = "\t" * (1 + rng.below(6)) + w() + " = " + w() + ";"
        elif k == 2:  # mixed tab/space indentation
            line = "".join(rng.pick([" ", "\t", "  ", "    "]) for _ in range(1 + rng.below(8))) + w() + "(" + w() + ")"
        elif k == 3:  # CRLF line (the "\r" stays in the line)
            line = w() + " " + w() + " " + w() + "\r"
        elif k == 4:  # trailing spaces and tabs
            line = w() + " " + w() + rng.pick([" ", "  ", "\t", " \t ", " " * 17, "\t\t"])
        elif k == 5:  # blank line, or blank-only lines
            line = rng.pick(["", "", " ", "\t", " " * (1 + rng.below(40)), "\t \t", "\r", "  \r"])
        elif k == 6:  # several blank lines in a row
            line = "\n" * (1 + rng.below(4)) + w()
        elif k == 7:  # a lone CR inside a line, and CR CR LF
            line = w() + "\r" + w() + rng.pick(["", "\r\r"])
        elif k == 8:  # other whitespace: \v \f and Unicode spaces between words
            line = w() + rng.pick(spaces) + w() + rng.pick(spaces) * (1 + rng.below(3)) + w()
        elif k == 9:  # space runs before punctuation and digits
            line = w() + " " * (1 + rng.below(40)) + rng.pick(["!", ".", "-", "123", "(", "'s"])
        elif k == 10:  # leading spaces of every length 1..40
            line = " " * (n // 12 % 40 + 1) + w() + " " + w()
        else:          # space runs ending the line before CRLF
            line = w() + " " * (1 + rng.below(40)) + "\r"
        lines.append(line)
        size += len(line.encode()) + 1
        n += 1
    return ("\n".join(lines) + "\n").encode()


EMOJI = [(0x1F600, 0x1F64F), (0x1F300, 0x1F5FF), (0x1F680, 0x1F6C5), (0x2600, 0x26FF), (0x2700, 0x27BF),
         (0x1F910, 0x1F93E), (0x1F940, 0x1F94C), (0x1F950, 0x1F96B), (0x1F980, 0x1F997), (0x1F9D0, 0x1F9E6)]
PEOPLE = [0x1F466, 0x1F467, 0x1F468, 0x1F469, 0x1F44B, 0x1F44D, 0x1F44E, 0x1F44F, 0x1F64F, 0x1F485, 0x1F933, 0x1F9D1]
SKIN = (0x1F3FB, 0x1F3FF)
ZWJ_SEQ = ["\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466", "\U0001F469\u200D\U0001F4BB",
           "\U0001F3F3\uFE0F\u200D\U0001F308", "\u2764\uFE0F\u200D\U0001F525", "\U0001F9D1\U0001F3FD\u200D\U0001F680",
           "\U0001F441\uFE0F\u200D\U0001F5E8\uFE0F", "\U0001F468\U0001F3FB\u200D\U0001F91D\u200D\U0001F468\U0001F3FF",
           "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F"]  # last: England tag flag
FLAGS = "US JP DE FR GB CN BR IN KR IL SA EG RU UA MX CA AU ZA NG AR SE FI NO TR VN TH ID GR".split()
SCRIPTS = {
    "cjk": [(0x4E00, 0x9FA5)], "cjk_ext_b": [(0x20000, 0x2A6D6)], "hiragana": [(0x3041, 0x3096)],
    "katakana": [(0x30A1, 0x30FA)], "cjk_punct": [(0x3001, 0x3003), (0x300C, 0x3011), (0xFF01, 0xFF5E)],
    "hangul": [(0xAC00, 0xD7A3)], "arabic": [(0x0621, 0x063A), (0x0641, 0x064A)],
    "hebrew": [(0x05D0, 0x05EA)], "greek": [(0x0391, 0x03A1), (0x03A3, 0x03A9), (0x03B1, 0x03C9)],
    "cyrillic": [(0x0410, 0x044F)], "devanagari": [(0x0905, 0x0939)], "thai": [(0x0E01, 0x0E30)],
    "math": [(0x2200, 0x22FF), (0x2190, 0x21FF), (0x2500, 0x257F), (0x20A0, 0x20B9), (0x1D7CE, 0x1D7FF)],
    "latin": [(0x61, 0x7A), (0xE0, 0xFF)],
}


def gen_emoji_symbols(budget, rng):
    lines, size, n = [], 0, 0
    flag = lambda c: "".join(chr(0x1F1E6 + ord(ch) - ord("A")) for ch in c)
    # A probe of the Unicode version: letters and emoji from Unicode 13..15 (CJK Ext G, a kana
    # extension, new emoji). The pre-tokenizer regex classes (\p{L}, \p{N}, \p{M}) of both sides
    # must agree on them.
    lines.append("recent: \U00030000\U00030001\U0003134A \U0001B132\U0001B155 \U0001FAE8\U0001FA77\U0001FABF \U0001F6DC")
    while size < budget:
        k = n % 10
        if k == 0:    # emoji, some with VS16, skin tones, keycaps
            parts = []
            for _ in range(3 + rng.below(8)):
                r = rng.below(6)
                if r == 0:
                    parts.append(chr(rng.pick(PEOPLE)) + chr(SKIN[0] + rng.below(5)))
                elif r == 1:
                    parts.append(rng.pick("0123456789#*") + "\uFE0F\u20E3")
                elif r == 2:
                    parts.append(chr(rng.pick_cp(EMOJI)) + "\uFE0F")
                else:
                    parts.append(rng.chars(EMOJI, 1 + rng.below(3)))
            line = rng.pick([" ", "", " and "]).join(parts)
        elif k == 1:  # ZWJ sequences and flags, with text around them
            line = " ".join(rng.pick(ZWJ_SEQ) if rng.below(2) else flag(rng.pick(FLAGS)) for _ in range(2 + rng.below(6)))
            line = rng.pick(WORDS) + " " + line + " " + flag(rng.pick(FLAGS)) + flag(rng.pick(FLAGS))
        elif k == 2:  # Chinese/Japanese: ideographs, kana, CJK punctuation, a 4-byte ideograph
            line = "".join(rng.chars(SCRIPTS[rng.pick(["cjk", "cjk", "hiragana", "katakana", "cjk_punct", "cjk_ext_b"])],
                                     1 + rng.below(6)) for _ in range(4 + rng.below(10)))
        elif k == 3:  # Arabic and Hebrew (with harakat / niqqud) inside bidi controls, digits mixed in
            ar = " ".join(rng.chars(SCRIPTS["arabic"], 2 + rng.below(6)) + (chr(0x064B + rng.below(8)) if rng.below(2) else "")
                          for _ in range(2 + rng.below(5)))
            he = " ".join(rng.chars(SCRIPTS["hebrew"], 2 + rng.below(5)) + (chr(0x05B0 + rng.below(10)) if rng.below(2) else "")
                          for _ in range(2 + rng.below(5)))
            line = rng.pick(["\u202B", "\u2067", "\u200F", ""]) + ar + " \u202C" + str(rng.below(100000)) + " " + he + "\u200E ١٢٣"
        elif k == 4:  # combining marks: stacked on Latin letters, and decomposed vs precomposed
            line = " ".join(
                "".join(rng.chars(SCRIPTS["latin"], 1) + rng.chars([(0x0300, 0x036F)], rng.below(4)) for _ in range(2 + rng.below(6)))
                for _ in range(3 + rng.below(6))) + " caf\u00e9 cafe\u0301 \u1e9b\u0323 A\u030A \u212B"
        elif k == 5:  # Hangul syllables and conjoining jamo
            line = " ".join(rng.chars(SCRIPTS["hangul"], 1 + rng.below(5)) for _ in range(3 + rng.below(8)))
            line += " \u1100\u1161\u11A8 \u1112\u1161\u11AB"
        elif k == 6:  # Devanagari (with virama and vowel signs) and Thai (no spaces)
            dv = " ".join(rng.chars(SCRIPTS["devanagari"], 1 + rng.below(3)) + rng.pick(["\u094D", "\u093E", "\u093F", "\u0940", "\u0902", ""])
                          + rng.chars(SCRIPTS["devanagari"], 1) for _ in range(3 + rng.below(6)))
            line = dv + " " + rng.chars(SCRIPTS["thai"], 10 + rng.below(30))
        elif k == 7:  # Greek and Cyrillic words, mixed case
            line = " ".join(rng.chars(SCRIPTS[rng.pick(["greek", "cyrillic"])], 2 + rng.below(9)) for _ in range(4 + rng.below(8)))
        elif k == 8:  # math, arrows, box drawing, currency, math digits
            line = " ".join(rng.chars(SCRIPTS["math"], 1 + rng.below(4)) for _ in range(4 + rng.below(10))) + " \u00bd \u2153 x\u00b2 \u2160\u216b \uFFFD"
        else:         # everything in one line, no spaces
            line = "".join(rng.chars(SCRIPTS[rng.pick(list(SCRIPTS))] if rng.below(3) else EMOJI, 1 + rng.below(3)) for _ in range(8 + rng.below(12)))
        lines.append(line)
        size += len(line.encode()) + 1
        n += 1
    return ("\n".join(lines) + "\n").encode()


def gen_edge_cases(budget, rng):
    B = []  # byte lines
    t = lambda s: s.encode()
    B.append(b"\xef\xbb\xbfthe file starts with a byte-order mark")
    invalid = [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xc1\xbf",
               b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80",
               b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80"]
    for bad in invalid:
        B.append(b"bad " + bad + b" in the middle")
        B.append(bad)                       # alone
        B.append(b"word" + bad + b"word")   # glued to letters
        B.append(b"ends with " + bad)       # truncated at the line end
    B.append(b"\xe2\x82\xe2\x82\xac \xf0\x9f\x98\xf0\x9f\x98\x80 \x80\x80\x80 \xff\xfe\xff caf\xe9 na\xefve")  # Latin-1 too
    B.append(b"NUL\x00inside \x00\x00\x00 \x00")
    B.append(b"\x00")
    B.append(b"controls \x01\x02\x03\x07\x08\x1b[31mred\x1b[0m\x1f\x7f " + t("\u0080\u0085\u009f"))
    for n in range(1, 41):
        B.append(t("".join(str((i * 7 + n) % 10) for i in range(n))))  # digit runs 1..40
    B.append(t("1,234,567.89 3.14159265358979 -0.5e-10 0xDEADBEEF 0b1010 1_000_000 2024-01-31 12:34:56 +1 (555) 123-4567"))
    B.append(t("\u0661\u0662\u0663 \u06f4\u06f5 \u0967\u0968 \uff11\uff12\uff13 \u00b2\u00b3 \u2160\u2161 \u2460\u2461 \U0001D7D8\U0001D7D9"))
    bases = ["it", "don", "they", "we", "I", "you", "she", "IT", "DON", "THEY", "x", "'"]
    for suf in ["s", "t", "re", "ve", "m", "ll", "d"]:
        cases = sorted({"".join(c.upper() if (mask >> i) & 1 else c for i, c in enumerate(suf)) for mask in range(4)})
        for c in cases:
            B.append(t(" ".join(b + "'" + c for b in bases) + " '" + c + " '" + c + "' ''" + c + " " + bases[0] + "\u2019" + c))
    B.append(t("y'all'd've rock'n'roll o'clock 'tis ma'am ''' '' ' 's's't"))
    for p in ["!", "?", ".", "-", "=", "~", "*", "`", "#", "/", "\\", "_", "|", "<>", "()", "[]", "{}", "$", "%", "&", "^", ":", ";", ",", "\"", "'", "\u2026", "\u3002", "\uff01"]:
        B.append(t(" ".join(p * n for n in (1, 2, 3, 4, 5, 8, 16, 33, 64))))
    B.append(t("Wait... what?!?! No!!! Yes??? ok.... -- --- ---- ==> <== <=> != !== ::: ;; ,,,, .!?"))
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|reserved_special_token_0|>", "<s>", "</s>", "<unk>", "<|startoftext|>", "<|endoftext|>",
                "<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>"]
    B.append(t("".join(specials)))
    B.append(t(" ".join(specials)))
    B.append(t(" ".join("x" + s + "y" for s in specials)))
    B.append(t("<|begin_of_text| <|endoftext <s <<s>> </ s> < s > <|BEGIN_OF_TEXT|> <S> <|end|>|>"))
    # Very long lines: prose without a newline, one letter run, one whitespace run, digits.
    words, size = [], 0
    while size < LONG_LINE:
        words.append(rng.pick(WORDS))
        size += len(words[-1]) + 1
    B.append(t(" ".join(words)[:LONG_LINE]))
    B.append(b"a" * LONG_LINE)
    B.append(b" " * (LONG_LINE // 2) + b"x" + b"\t" * (LONG_LINE // 4))
    B.append(t("".join(str(rng.below(10)) for _ in range(LONG_LINE // 2))))
    B.append(t("\u00e9" * (LONG_LINE // 8) + "\u4e2d" * (LONG_LINE // 12) + "\U0001F600" * (LONG_LINE // 16)))
    size = sum(len(b) + 1 for b in B)
    # Fill the rest with random mixes of the pieces above, short lines.
    pool = invalid + [b"\x00", b"'s", b"'LL", b"!!!", b"123456", b"\r", b"  ", b"\t", t("\u00e9"), t("\U0001F600"),
                      b"<s>", b"<|endoftext|>", b"..."]
    while size < budget:
        line = b"".join(rng.pick([rng.pick(pool), t(rng.pick(WORDS)), b" "]) for _ in range(3 + rng.below(20)))
        B.append(line)
        size += len(line) + 1
    return b"\n".join(B)  # no final newline: the last line ends the file


rng_seed = {"whitespace": 0x9E3779B97F4A7C15, "emoji_symbols": 0xD1B54A32D192ED03, "edge_cases": 0x8CB92BA72F3D8DD7}
sizes = {}
for kind, share in SHARES.items():
    budget = int(total * share)
    if kind == "nonlatin_zh":
        data = take_files("nonlatin_zh_CN", budget // 2) + take_files("nonlatin_zh_TW", budget - budget // 2)
    elif kind in ("whitespace", "emoji_symbols", "edge_cases"):
        data = {"whitespace": gen_whitespace, "emoji_symbols": gen_emoji_symbols,
                "edge_cases": gen_edge_cases}[kind](budget, Rng(rng_seed[kind]))
    else:
        data = take_files(kind, budget)
    if kind != "edge_cases":
        data.decode("utf-8")  # raises if a generator or a source broke the UTF-8 promise
    path = os.path.join(out, kind + ".txt")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    sizes[kind] = (len(data), data.count(b"\n") + (not data.endswith(b"\n") and len(data) > 0))
width = max(map(len, sizes)) + 4
for kind, (n, lines) in sizes.items():
    print(f"  {kind + '.txt':<{width}} {n:>12,} bytes {lines:>9,} lines")
print(f"  {'total':<{width}} {sum(n for n, _ in sizes.values()):>12,} bytes")
PY
echo "== corpus in $out ($SECONDS s)"

#!/usr/bin/env bash
# Make the default training corpus: the Python 3.11 documentation in GNU info format (Debian
# package python3.11-doc, /usr/share/info/python3.11.info.gz, ~19 MB of English once
# decompressed) as byte-level token shards in data/python-doc (docs/data.md).
# Safe to run again: skipped when data/python-doc/manifest.json exists (delete the folder to
# remake it). Uses ./build/nvfp4, building it first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

out=data/python-doc
nvfp4=./build/nvfp4
if [ -f "$out/manifest.json" ]; then
  echo "== $out already holds a dataset ($out/manifest.json); delete the folder to remake it"
  exit 0
fi

pkg=python3.11-doc
bash scripts/apt_install.sh "$pkg"

# The package's info files (python3.11.info.gz; split info files would be .info-N.gz), sorted.
mapfile -t inputs < <(dpkg -L "$pkg" | grep -E '/usr/share/info/.*\.info(-[0-9]+)?\.gz$' | LC_ALL=C sort)
if [ ${#inputs[@]} -eq 0 ]; then
  echo "corpus.sh: $pkg is installed but ships no .info.gz files under /usr/share/info; check 'dpkg -L $pkg'" >&2
  exit 1
fi

[ -x "$nvfp4" ] || bash scripts/build.sh

# A folder without a manifest is an interrupted earlier run: ours to replace.
force=()
[ -d "$out" ] && force=(--force)
mkdir -p data
"$nvfp4" data "${inputs[@]}" --out "$out" "${force[@]}"

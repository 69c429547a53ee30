#!/usr/bin/env bash
# Checks the README's main-job numbers against the current code: runs the main job's CPU path
# (`bash scripts/main.sh --cpu`: build, corpus, `nvfp4 compare`, the quantization table; 6 minutes
# on a 2-core machine) and compares the final validation losses it reports with the README's
# sentence "(final validation loss: bf16 X, nvfp4 Y, mxfp4 Z)", to the README's 4 decimals, the
# quantization table's perplexity, change, KL and top-1 columns with the README's, and that it
# showed its progress. Exit 1 on any difference, naming it. With a folder argument it checks
# that main-job output instead of running one.
#
#   bash scripts/check_readme.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='final validation loss: bf16 [0-9.]+, nvfp4 [0-9.]+, mxfp4 [0-9.]+'
line=$(grep -oE "$pattern" README.md | head -1) || true
[ -n "$line" ] || { echo "check_readme: README.md has no '(final validation loss: bf16 X, nvfp4 Y, mxfp4 Z)'" >&2; exit 1; }

if [ $# -ge 1 ]; then
  dir=$1
else
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  bash scripts/main.sh --cpu 2>&1 | tee "$log"
  dir=$(sed -n 's|^summary: \(.*\)/summary.json$|\1|p' "$log" | tail -1)
  # A newcomer must see the job move: progress lines ("[====>   ] 12/120 10% loss ...") per recipe.
  progress=$(grep -cE '^\[[=> ]+\] [0-9]+/[0-9]+ ' "$log" || true)
  [ "$progress" -ge 3 ] || { echo "check_readme: the main job printed $progress progress lines" >&2; exit 1; }
fi
summary=$dir/summary.json
[ -f "$summary" ] || { echo "check_readme: $summary not found" >&2; exit 1; }

# summary.json (summary_json(), 2-space indent) holds one object per recipe with "recipe" before
# "final_val_mean".
final_of() {
  awk -v r="\"$1\"" '$1 == "\"recipe\":" { this = ($2 == r || $2 == r ",") }
                     this && $1 == "\"final_val_mean\":" { v = $2; sub(",", "", v); print v; exit }' "$summary"
}
bad=0
for recipe in bf16 nvfp4 mxfp4; do
  want=$(sed -E "s/.* $recipe ([0-9.]+).*/\1/; s/,$//" <<<" $line")
  raw=$(final_of "$recipe")
  if [ -z "$raw" ] || [ "$raw" = "null" ]; then
    echo "check_readme: $summary has no final validation loss for $recipe" >&2
    bad=1
    continue
  fi
  got=$(printf '%.4f' "$raw")
  if [ "$got" = "$want" ]; then
    echo "  $recipe: $got (README $want)"
  else
    echo "  $recipe: the run gives $got, README.md says $want" >&2
    bad=1
  fi
done
if [ "$bad" -ne 0 ]; then
  echo "check_readme: README.md's main-job losses do not match $dir; update the README from this run" >&2
  exit 1
fi
echo "check_readme: README.md's main-job losses match $dir"

# The post-training quantization table (scripts/ptq_table.sh's table.md): each method's perplexity,
# its change, KL, top-1 agreement and held-out saturated blocks as the README's table gives them
# (the quantize time, column 7, varies).
table=$dir/ptq/table.md
[ -f "$table" ] || { echo "check_readme: $table not found (the main job's quantization table)" >&2; exit 1; }
columns() { awk -F'|' '{ for (i = 3; i <= 8; ++i) if (i != 7) { gsub(/^ +| +$/, "", $i); printf "%s|", $i } }'; }
while IFS= read -r row; do
  method=$(awk -F'|' '{ gsub(/^ +| +$/, "", $2); print $2 }' <<<"$row")
  case "$method" in method|---*|"") continue ;; esac
  readme=$(grep -E "^\| $method( \(|  *\|)" README.md | head -n 1 || true)
  if [ -z "$readme" ]; then
    echo "  $method: not in README.md's quantization table" >&2
    bad=1
  elif [ "$(columns <<<"$row")" != "$(columns <<<"$readme")" ]; then
    echo "  $method: the run gives |$(columns <<<"$row")|, README.md says |$(columns <<<"$readme")|" >&2
    bad=1
  else
    echo "  $method: $(columns <<<"$row")"
  fi
done < "$table"
if [ "$bad" -ne 0 ]; then
  echo "check_readme: README.md's quantization table does not match $table; update the README from this run" >&2
  exit 1
fi
echo "check_readme: README.md's quantization table matches $table"

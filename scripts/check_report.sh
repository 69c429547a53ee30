#!/usr/bin/env bash
# Renders a comparison report (`nvfp4 compare` / `nvfp4 report` output folder) in headless
# Chromium — Debian's `chromium` (about 395 MiB with its dependencies; installed here if
# missing) — checks that the rendered page shows its four charts and every recipe of its
# summary.json in the summary table, and writes a screenshot, DIR/report.png.
#
#   bash scripts/check_report.sh DIR
set -euo pipefail
dir=${1:?usage: scripts/check_report.sh DIR (a folder holding report.html and summary.json)}
[ -f "$dir/report.html" ] || { echo "check_report: $dir/report.html not found" >&2; exit 1; }
[ -f "$dir/summary.json" ] || { echo "check_report: $dir/summary.json not found" >&2; exit 1; }
command -v chromium >/dev/null 2>&1 || bash "$(dirname "$0")/apt_install.sh" chromium
page="file://$(cd "$dir" && pwd)/report.html"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars)
dom=$(timeout 120 chromium "${flags[@]}" --dump-dom "$page" 2>/dev/null)
charts=$(grep -o '<svg' <<<"$dom" | wc -l)
[ "$charts" -ge 4 ] || { echo "check_report: the rendered page has $charts charts, expected 4" >&2; exit 1; }
missing=0
while IFS= read -r recipe; do
  # The summary table's first cell of the recipe's row (a colour swatch, then the name),
  # HTML-escaped as the page writes it.
  cell=$(sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' <<<"$recipe")
  if grep -qF "</span> $cell</td>" <<<"$dom"; then
    echo "  shown: $recipe"
  else
    echo "  MISSING from the rendered table: $recipe" >&2
    missing=1
  fi
done < <(grep -o '"recipe": *"[^"]*"' "$dir/summary.json" | sed 's/"recipe": *"\(.*\)"/\1/')
[ "$missing" -eq 0 ] || exit 1
timeout 120 chromium "${flags[@]}" --window-size=1200,3200 --screenshot="$dir/report.png" "$page" >/dev/null 2>&1
echo "check_report: $charts charts, every recipe shown; screenshot $dir/report.png"

#!/usr/bin/env bash
# Build, then run the main job: `nvfp4 formats` on its built-in distributions (or on FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/nvfp4 formats "$@"

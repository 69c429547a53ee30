#!/usr/bin/env bash
# Build, then run every test suite (ctest). CUDA tests report "Skipped" without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
# Debian's jinja2, the reference of the chat-template comparison (tests/hf/check_chat_templates.py).
bash scripts/apt_install.sh python3-jinja2
# The reference tokenizers library (npm) and real tokenizer.json files, for the exactness test.
bash scripts/tokenizer_reference.sh install
# The official OpenAI Node client (npm) and curl, for the server's interop test.
bash scripts/apt_install.sh curl
bash scripts/serve_reference.sh install
jobs=$(nproc 2>/dev/null || echo 2)
ctest --test-dir build --output-on-failure -j "$jobs" "$@"

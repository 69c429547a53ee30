#!/usr/bin/env bash
# `nvfp4 serve` measured by `nvfp4 bench-serve`: for each precision, start the server on the model
# folder, run bench-serve at each concurrency, stop the server; print one table, keep every JSON.
#
#   bench/bench_serve.sh NVFP4_BIN MODEL_DIR OUT_DIR [--device cuda] [--precisions bf16,w4a16]
#       [--concurrency 1,8,32,64] [--prompt-tokens 512] [--output-tokens 128] [--requests-per-client 4]
#       [--max-batch 64] [--max-context 1024]
#
# Each run sends concurrency x requests-per-client requests (at least 8) of exactly prompt-tokens
# random token ids, generating exactly output-tokens each (ignore_eos). The server's own log and
# metrics at the end of each precision are kept in OUT_DIR too.
set -uo pipefail
. "$(dirname "$0")/../scripts/serve_port.sh"
bin=${1:?usage: bench_serve.sh NVFP4_BIN MODEL_DIR OUT_DIR [options]}
model=${2:?model folder}
out=${3:?output folder}
shift 3
device=cuda precisions=bf16,w4a16 concurrency=1,8,32,64 prompt=512 output=128 per_client=4 max_batch=64 context=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2 ;;
    --precisions) precisions=$2 ;;
    --concurrency) concurrency=$2 ;;
    --prompt-tokens) prompt=$2 ;;
    --output-tokens) output=$2 ;;
    --requests-per-client) per_client=$2 ;;
    --max-batch) max_batch=$2 ;;
    --max-context) context=$2 ;;
    *) echo "bench_serve.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
mkdir -p "$out"
table="$out/table.txt"
printf '%-8s %5s %8s %10s %9s %9s %9s %9s %7s\n' precision conc 'req/s' 'out tok/s' 'TTFT p50' 'TTFT p99' 'ITL p50' 'ITL p99' failed > "$table"
for p in ${precisions//,/ }; do
  err="$out/serve-$p.err"
  "$bin" serve "$model" --device "$device" --precision "$p" --port 0 --max-batch "$max_batch" \
    --max-context "$context" --log "$out/serve-$p.jsonl" > /dev/null 2> "$err" &
  pid=$!
  port=$(serve_port "$err" "$pid" 6000)
  if [ -z "$port" ]; then
    echo "bench_serve.sh: the $p server did not start:" >&2; cat "$err" >&2; continue
  fi
  for c in ${concurrency//,/ }; do
    n=$((c * per_client)); [ "$n" -lt 8 ] && n=8
    j="$out/bench-$p-c$c.json"
    "$bin" bench-serve "http://127.0.0.1:$port" --concurrency "$c" --requests "$n" --prompt-tokens "$prompt" \
      --output-tokens "$output" --json > "$j" 2> "$out/bench-$p-c$c.err"
    python3 - "$j" "$p" "$c" >> "$table" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("%-8s %5s %8.2f %10.1f %9.1f %9.1f %9.2f %9.2f %7d" % (sys.argv[2], sys.argv[3], r["request_throughput"],
      r["output_tokens_per_s"], r["ttft_ms"]["p50"], r["ttft_ms"]["p99"], r["itl_ms"]["p50"], r["itl_ms"]["p99"], r["failed"]))
EOF
  done
  curl -s "http://127.0.0.1:$port/metrics" > "$out/metrics-$p.txt"
  kill -TERM "$pid"
  wait "$pid"
done
cat "$table"

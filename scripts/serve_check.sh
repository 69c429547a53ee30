#!/usr/bin/env bash
# `nvfp4 serve` against real clients, on loopback: the official OpenAI Node client
# (tests/serve/client, installed from npm by scripts/serve_reference.sh) and curl, then SIGTERM.
#
#   scripts/serve_check.sh NVFP4_BIN MAKE_SERVE_MODEL_BIN
#
# Makes a tiny random model with the Llama-3 tokenizer and chat template (tokenizer-data/llama3,
# from scripts/tokenizer_reference.sh), starts `nvfp4 serve` on a free port with an API key,
# runs the client checks and the curl checks, sends SIGTERM and checks that the server exits 0
# and logged valid JSON lines. Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/serve_port.sh
bin=${1:?usage: serve_check.sh NVFP4_BIN MAKE_SERVE_MODEL_BIN}
make_model=${2:?usage: serve_check.sh NVFP4_BIN MAKE_SERVE_MODEL_BIN}
command -v curl >/dev/null || { echo "serve_check.sh: curl is not installed (apt-get install curl)" >&2; exit 1; }
if [ ! -d tests/serve/client/node_modules/openai ]; then bash scripts/serve_reference.sh install || exit 1; fi
if [ ! -f tokenizer-data/llama3/tokenizer_config.json ]; then bash scripts/tokenizer_reference.sh install || exit 1; fi

work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }

"$make_model" "$work/model" tokenizer-data/llama3 > /dev/null || { echo "serve_check.sh: could not make the model"; exit 1; }
key=sk-nvfp4-check
"$bin" serve "$work/model" --device cpu --port 0 --api-key "$key" --max-batch 8 --served-model-name tiny-llama3 \
  --log "$work/requests.jsonl" --shutdown-grace 20 --canary "$work/model" --canary-precision w4a16 \
  --canary-fraction 0.25 > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
port=$(serve_port "$work/server.err" "$server_pid")
if [ -z "$port" ]; then
  echo "serve_check.sh: the server did not start:"; cat "$work/server.err"
  echo "0 passed, 1 failed"; exit 1
fi
url="http://127.0.0.1:$port"
echo "== nvfp4 serve on $url"

# The official OpenAI client.
if node tests/serve/client/openai_client_check.mjs "$url/v1" "$key" > "$work/client.log" 2>&1; then
  ok "OpenAI Node client: $(tail -1 "$work/client.log")"
else
  bad "OpenAI Node client:"; cat "$work/client.log"
fi

# curl: non-streaming, streaming, health, metrics, auth.
auth=(-H "Authorization: Bearer $key" -H "Content-Type: application/json")
body=$(curl -s "${auth[@]}" "$url/v1/completions" -d '{"model": "tiny-llama3", "prompt": "Hello", "max_tokens": 5, "temperature": 0}')
if echo "$body" | grep -q '"object":"text_completion"' && echo "$body" | grep -q '"completion_tokens":'; then
  ok "curl completion"
else
  bad "curl completion: $body"
fi
stream=$(curl -sN "${auth[@]}" "$url/v1/chat/completions" \
  -d '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": true}')
if echo "$stream" | grep -q '^data: {' && [ "$(echo "$stream" | grep -v '^$' | tail -1)" = "data: [DONE]" ]; then
  ok "curl chat stream ends with data: [DONE]"
else
  bad "curl chat stream: $stream"
fi
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/models")
[ "$code" = 401 ] && ok "curl without the key: 401" || bad "curl without the key: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/health")
[ "$code" = 200 ] && ok "curl /health: 200" || bad "curl /health: $code"
metrics=$(curl -s "$url/metrics")
if echo "$metrics" | grep -q '^nvfp4_time_to_first_token_seconds_count [1-9]' &&
   echo "$metrics" | grep -q '^# TYPE nvfp4_inter_token_latency_seconds histogram'; then
  ok "curl /metrics: Prometheus text with the latency histograms"
else
  bad "curl /metrics: $(echo "$metrics" | head -20)"
fi

# The canary (the same model with W4A16 weights) compared a quarter of the requests.
canary=$(curl -s "$url/metrics" | grep -E '^nvfp4_canary_(requests_total\{outcome="compared"\}|token_agreement_ratio|mean_kl) ')
if echo "$canary" | grep -q 'outcome="compared"} [1-9]' && echo "$canary" | grep -q '^nvfp4_canary_mean_kl [0-9]'; then
  ok "canary fp32 vs w4a16: $(echo "$canary" | tr '\n' ' ')"
else
  bad "canary: $canary"
fi

# SIGTERM while a request runs: it finishes, the server exits 0.
curl -sN "${auth[@]}" "$url/v1/completions" \
  -d '{"prompt": "x", "max_tokens": 120, "ignore_eos": true, "stream": true}' > "$work/inflight.txt" &
curl_pid=$!
sleep 0.3
kill -TERM "$server_pid"
wait "$curl_pid"
if wait "$server_pid"; then ok "SIGTERM: the server exits 0"; else bad "SIGTERM: exit status $?"; fi
server_pid=""
if grep -q '"finish_reason":"length"' "$work/inflight.txt" && [ "$(grep -v '^$' "$work/inflight.txt" | tail -1)" = "data: [DONE]" ]; then
  ok "SIGTERM: the request in flight finished"
else
  bad "SIGTERM: the request in flight: $(tail -c 400 "$work/inflight.txt")"
fi
if python3 -c '
import json, sys
n = c = 0
for line in open(sys.argv[1]):
    j = json.loads(line)
    if "canary" in j:
        assert "agreement" in j and "mean_kl" in j and "latency_ratio" in j, line; c += 1
    else:
        assert "status" in j and "e2e_ms" in j, line; n += 1
assert n >= 70 and c >= 1, (n, c)
' "$work/requests.jsonl"; then
  ok "request log: one JSON line per request ($(wc -l < "$work/requests.jsonl") lines)"
else
  bad "request log"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

# Sourced by the scripts that start `nvfp4 serve --port 0` (scripts/serve_check.sh,
# bench/bench_serve.sh): the port it printed once listening.
#
#   port=$(serve_port STDERR_FILE PID [TENTHS_OF_SECONDS])   # empty when the server died or timed out

serve_port() {
  local err=$1 pid=$2 tries=${3:-600} port=""
  for _ in $(seq 1 "$tries"); do
    port=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$err" | head -1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "$port"
}

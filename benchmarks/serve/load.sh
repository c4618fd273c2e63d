#!/usr/bin/env bash
# Bounded loopback load test of `mnistnative serve` with wrk: fixed duration and connections, stops by itself.
#   benchmarks/serve/load.sh [--model F.npz] [--seconds 10] [--connections 8] [--rounds 3]
# Runs, interleaved, ROUNDS times each: single-image JSON, batches of 100, and single-image JSON while the model
# file is replaced every 0.5 s. Prints one line per run (req/s, p50/p99 ms, errors, server CPU in cores) and the
# server's resident memory. Installs Debian's wrk when missing. Needs the built CLI (./build.sh --target=Build).
set -euo pipefail
cd "$(dirname "$0")/../.."

model="" seconds=10 connections=8 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) echo "load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$model" ]; then
  for candidate in model.npz "${MNISTNATIVE_SHARED:-../shared}/fixtures/seed-parity/final.npz"; do
    if [ -f "$candidate" ]; then model="$candidate"; break; fi
  done
fi
[ -f "$model" ] || { echo "load.sh: no model; give --model F.npz (./build.sh --target=Train writes model.npz)" >&2; exit 2; }
cli=src/MnistNative.Cli/bin/Release/net10.0/mnistnative.dll
[ -f "$cli" ] || { echo "load.sh: $cli is not built; run ./build.sh --target=Build" >&2; exit 2; }
images=data/mnist/t10k-images-idx3-ubyte
[ -f "$images" ] || { echo "load.sh: $images is missing; run ./build.sh --target=Data" >&2; exit 2; }
if ! command -v wrk >/dev/null 2>&1; then
  echo "load.sh: installing Debian's wrk (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends wrk >/dev/null
fi

work=$(mktemp -d)
cp "$model" "$work/model.npz"
dotnet "$cli" serve --model "$work/model.npz" --urls http://127.0.0.1:0 2>"$work/serve.log" &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q "listening on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/serve.log" | head -1)
[ -n "$url" ] || { cat "$work/serve.log" >&2; echo "load.sh: the server did not start" >&2; exit 1; }

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
rss_kb() { awk "/^$1:/ { print \$2 }" "/proc/$server/status"; }

run() { # NAME COUNT RELOAD
  local name=$1 count=$2 reload=$3 reloader=""
  local before after result
  if [ "$reload" = 1 ]; then
    ( while true; do cp "$model" "$work/next.npz"; mv "$work/next.npz" "$work/model.npz"; sleep 0.5; done ) &
    reloader=$!
  fi
  before=$(cpu_ticks)
  result=$(wrk -t1 -c"$connections" -d"${seconds}s" --latency -s benchmarks/serve/predict.lua "$url" -- "$images" "$count" | grep '^RESULT')
  after=$(cpu_ticks)
  if [ -n "$reloader" ]; then kill "$reloader"; wait "$reloader" 2>/dev/null || true; fi
  local cores
  cores=$(awk -v t=$((after - before)) -v hz="$ticks" -v s="$seconds" 'BEGIN { printf "%.2f", t / hz / s }')
  echo "$name ${result#RESULT } server_cpu_cores=$cores load=$(cut -d' ' -f1 /proc/loadavg)"
}

echo "server $url, model $model, $connections connections, ${seconds}s per run, $(nproc) cores"
echo "rss_after_start_kb=$(rss_kb VmRSS)"
wrk -t1 -c"$connections" -d2s -s benchmarks/serve/predict.lua "$url" -- "$images" 1 >/dev/null # warm-up (JIT tiers)
for round in $(seq "$rounds"); do
  run single 1 0
  run batch100 100 0
  run single+reload 1 1
done
echo "rss_kb=$(rss_kb VmRSS) peak_rss_kb=$(rss_kb VmHWM) reloads=$(curl -s "$url/v1/model" | grep -o '"reloads":[0-9]*')"
grep -c "model reload failed" "$work/serve.log" | sed 's/^/reload_failures=/' || true

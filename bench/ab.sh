#!/usr/bin/env bash
# bench/ab.sh: two or more popstate builds and the limit probe, interleaved round by round, on
# the two loads where popstate's CPU is the limit: RETR of the 100 MB message and sessions with
# 16 clients (by default; see CLIENTS and RETRS below). For each run it prints the rate and the server's CPU per MB or per session (from
# /proc/PID/stat), which is steadier on a shared machine than the rate itself.
#
#   bench/ab.sh OLD-BINARY NEW-BINARY ...      # after bench/mkmaildrop.py
#
# Use it to decide whether a change is worth a bench/run.sh sitting; it does not replace one.
# env: DATA (/tmp/popstate-bench)   ROUNDS (5)   SECONDS_EACH (4)   LOADS ("retr sessions")
#      CLIENTS (16) and RETRS (every message) for the sessions load: CLIENTS=1, or RETRS=0 for
#      login and listings alone, show where a session's cost comes from (docs/performance.md).
# Everything on 127.0.0.1:12130 and up; every process it starts is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-/tmp/popstate-bench}"
ROUNDS="${ROUNDS:-5}"
SECONDS_EACH="${SECONDS_EACH:-4}"
LOADS="${LOADS:-retr sessions}"
CLIENTS="${CLIENTS:-16}"
SESSION_FLAGS=(--clients "$CLIENTS")
[ -n "${RETRS:-}" ] && SESSION_FLAGS+=(--retrs "$RETRS")
[ $# -ge 1 ] || { echo "usage: bench/ab.sh BINARY [BINARY...]" >&2; exit 2; }
[ -f "$DATA/users" ] || { echo "ab.sh: no maildrops in $DATA: run bench/mkmaildrop.py" >&2; exit 1; }
cargo build --release --quiet --example loadgen
RUN="$DATA/run/ab"
mkdir -p "$RUN"
cp target/release/examples/loadgen "$RUN/loadgen"
LOADGEN="$RUN/loadgen"
ulimit -n "$(ulimit -Hn)"

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
declare -A PORT PID
PORT[probe]=12130
"$LOADGEN" probe --listen 127.0.0.1:12130 --maildir-root "$DATA/maildirs" --preload big \
  --seconds 3600 2> "$RUN/probe.log" &
PID[probe]=$!; PIDS+=($!)
NAMES=(probe)
i=0
for binary in "$@"; do
  i=$((i + 1)); name="build$i"
  cp "$binary" "$RUN/$name"
  "$RUN/$name" --listen "127.0.0.1:$((12130 + i))" --maildir-root "$DATA/maildirs" \
    --users "$DATA/users" --max-sessions 2000 --max-sessions-per-ip 2000 --idle-timeout 600 \
    > /dev/null 2> "$RUN/$name.log" &
  PID[$name]=$!; PIDS+=($!); PORT[$name]=$((12130 + i)); NAMES+=("$name")
  echo "$name = $binary" >&2
done
sleep 2

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# measure NAME ROUND MODE ARGS...: one run, one line: rate and server CPU per unit.
measure() {
  local name=$1 round=$2 mode=$3; shift 3
  local before after out
  before=$(ticks "${PID[$name]}")
  out=$("$LOADGEN" "$mode" --addr "127.0.0.1:${PORT[$name]}" --seconds "$SECONDS_EACH" "$@" 2>> "$RUN/loadgen.log")
  after=$(ticks "${PID[$name]}")
  printf '%s' "$out" | python3 -c '
import json, sys
name, round_, mode, cpu_s, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
d = json.load(sys.stdin)
if mode == "retr":
    mb = d["mb_per_s"]
    print(f"{round_} retr     {name:8} {mb:7.0f} MB/s        server CPU {cpu_s * 1000 / (mb * secs):.3f} ms per MB")
else:
    s = d["sessions_per_s"]
    # The server also served the one-second warm-up of the generator, at about the same rate.
    print(f"{round_} sessions {name:8} {s:7.0f} sessions/s  server CPU {cpu_s * 1000 / (s * (secs + 1)):.3f} ms per session")
' "$name" "$round" "$mode" "$(awk -v a="$after" -v b="$before" -v t="$(getconf CLK_TCK)" 'BEGIN { print (a - b) / t }')" "$SECONDS_EACH"
}

for name in "${NAMES[@]}"; do   # warm-up: page cache, listings, the probe's preload
  "$LOADGEN" retr --addr "127.0.0.1:${PORT[$name]}" --user big --seconds 1 --min-count 1 > /dev/null 2>&1 || true
  "$LOADGEN" sessions --addr "127.0.0.1:${PORT[$name]}" --clients 16 --seconds 2 > /dev/null 2>&1 || true
done
for r in $(seq "$ROUNDS"); do
  for name in "${NAMES[@]}"; do
    case " $LOADS " in *" retr "*) measure "$name" "round$r" retr --user big ;; esac
    case " $LOADS " in *" sessions "*) measure "$name" "round$r" sessions "${SESSION_FLAGS[@]}" ;; esac
  done
done

#!/usr/bin/env bash
# bench/profile.sh: where popstate spends its CPU, with perf (Debian: linux-perf), for three
# workloads: sessions with 16 clients, RETR of the 100 MB message, warm login on m100000.
#
#   bench/profile.sh            # after bench/mkmaildrop.py; writes bench/results/<commit>/profile-*.txt
#
# A flat profile (self time per function, kernel included) and, for popstate's own code, the
# callers (DWARF call graphs). Sampling uses the cpu-clock software event, which works in VMs
# without a hardware PMU. Starts one popstate on 127.0.0.1:12120 and stops it by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-/tmp/popstate-bench}"
SECONDS_EACH="${SECONDS_EACH:-8}"
PORT=12120
command -v perf > /dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
COMMIT=$(git log -1 --format=%h)
OUT="bench/results/$COMMIT"
RUN="$DATA/run"
mkdir -p "$OUT" "$RUN"
cargo build --release --quiet --bin popstate --example loadgen
cp target/release/popstate "$RUN/popstate-profiled"
cp target/release/examples/loadgen "$RUN/loadgen-profile"
LOADGEN="$RUN/loadgen-profile"

ulimit -n "$(ulimit -Hn)"
"$RUN/popstate-profiled" --listen 127.0.0.1:$PORT --maildir-root "$DATA/maildirs" --users "$DATA/users" \
  --max-sessions 2000 --max-sessions-per-ip 2000 --idle-timeout 600 2> "$RUN/popstate-profiled.log" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
sleep 1
"$LOADGEN" retr --addr 127.0.0.1:$PORT --user big --seconds 1 --min-count 1 > /dev/null 2>&1
"$LOADGEN" login --addr 127.0.0.1:$PORT --user m100000 --repeat 1 > /dev/null 2>&1

profile() {  # profile NAME LOADGEN-ARGS...: perf on the server while the load runs
  local name=$1; shift
  perf record -q -e cpu-clock -F 999 --call-graph dwarf,8192 -p $PID -o "$RUN/perf-$name.data" \
    -- sleep "$SECONDS_EACH" 2> /dev/null &
  local perf_pid=$!
  "$LOADGEN" "$@" --addr 127.0.0.1:$PORT > "$RUN/profile-$name.json" 2>> "$RUN/profile.log" || true
  wait $perf_pid || true
  {  # (grep finding nothing is not a failure here)
    set +o pipefail
    echo "# $name: loadgen $*  (commit $COMMIT, load $(cut -d' ' -f1-3 /proc/loadavg))"
    cat "$RUN/profile-$name.json"
    echo "## self time per function"
    perf report -i "$RUN/perf-$name.data" --no-children --sort symbol --stdio -g none 2> /dev/null |
      grep -v '^#' | grep -v '^$' | head -40
    echo "## popstate functions with their children (inclusive time)"
    perf report -i "$RUN/perf-$name.data" --children --sort symbol --stdio -g none 2> /dev/null |
      grep -E 'popstate::|std::|core::|alloc::' | head -30
    set -o pipefail
  } > "$OUT/profile-$name.txt"
  echo "profile.sh: $OUT/profile-$name.txt" >&2
}

profile sessions sessions --clients 16 --seconds "$SECONDS_EACH" --warmup 0
profile retr retr --user big --seconds "$SECONDS_EACH"
profile login login --user m100000 --repeat 50 --seconds "$SECONDS_EACH"

#!/usr/bin/env bash
# bench/run.sh: popstate, the limit probe and a private Dovecot, measured side by side on
# 127.0.0.1 with examples/loadgen.rs. See docs/performance.md for what comes out.
#
#   python3 bench/mkmaildrop.py --out /tmp/popstate-bench --chown 20000:20000   # once, ~30 s
#   bench/run.sh                                                                # ~20 minutes
#
# It builds popstate and loadgen (release), starts the three servers once, runs the phases with
# the targets interleaved inside every round (machine noise hits all alike), writes one JSON
# line per run to bench/results/<commit>/results.jsonl plus summary.md, and stops every process
# it started, by PID. Needs root for Dovecot (it drops privileges itself) and for dropping the
# page cache before cold logins.
#
# env: DATA (/tmp/popstate-bench)   ROUNDS (5)   SCALE_ROUNDS (3)   IDLE_ROUNDS (2)
#      TARGETS ("popstate probe dovecot")   PHASES ("core scale retrsize idle login")
#      SESSION_SECONDS (8)   CLIENT_COUNTS ("1 16 64 256")   LOGIN_SIZES ("100 1000 10000 100000")
#      RETR_USERS ("sz1k sz10k sz100k sz1m sz10m big")   IDLE_SESSIONS ("5000 10000")
#      COLD (3: cold logins per maildrop; 0 to leave the page cache alone)
#      FIRST_ROUNDS (3: first logins on m100000 after a restart, phase first)
#      POP3LOAD (../shared/bench/pop3load: the yardstick generator, built here when present)
#
# Phases beyond the reference table: `gencheck` reads RETR of the 100 MB message from the probe
# and from popstate with both generators (loadgen and, when it is there, pop3load), so the
# table can say how fast each generator reads and that neither is the limit; `first` restarts
# popstate and Dovecot and times one login on m100000 (the first after a start). Every run of
# a single-process server (popstate, the probe) also records the CPU seconds the server used.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=$PWD

DATA="${DATA:-/tmp/popstate-bench}"
ROUNDS="${ROUNDS:-5}"
SCALE_ROUNDS="${SCALE_ROUNDS:-3}"
IDLE_ROUNDS="${IDLE_ROUNDS:-2}"
TARGETS="${TARGETS:-popstate probe dovecot}"
PHASES="${PHASES:-core gencheck scale retrsize idle login first}"
FIRST_ROUNDS="${FIRST_ROUNDS:-3}"
POP3LOAD_SRC="${POP3LOAD:-$MAIN/../shared/bench/pop3load}"
SESSION_SECONDS="${SESSION_SECONDS:-8}"
CLIENT_COUNTS="${CLIENT_COUNTS:-1 16 64 256}"
LOGIN_SIZES="${LOGIN_SIZES:-100 1000 10000 100000}"
RETR_USERS="${RETR_USERS:-sz1k sz10k sz100k sz1m sz10m big}"
IDLE_SESSIONS="${IDLE_SESSIONS:-5000 10000}"
COLD="${COLD:-3}"
PORT_POPSTATE=12110 PORT_DOVECOT=12111 PORT_PROBE=12112

die() { echo "run.sh: $*" >&2; exit 1; }
[ -f "$DATA/users" ] || die "no maildrops in $DATA: run python3 bench/mkmaildrop.py --out $DATA --chown 20000:20000"

COMMIT=$(git -C "$MAIN" log -1 --format=%h)
DIRTY=$(git -C "$MAIN" status --porcelain -- src Cargo.toml | wc -l)
OUT="$MAIN/bench/results/$COMMIT"
RUN="$DATA/run"              # binaries, logs, pid files, Dovecot's config: never in the repo
mkdir -p "$OUT" "$RUN"
RESULTS="$OUT/results.jsonl"

echo "== build ($COMMIT, $DIRTY changed files under src/)" >&2
cargo build --release --quiet --bin popstate --example loadgen
# Copies, so that others rebuilding target/ during the run cannot change what is measured.
cp target/release/popstate "$RUN/popstate"
cp target/release/examples/loadgen "$RUN/loadgen"
LOADGEN="$RUN/loadgen"
# The shared yardstick generator, when this checkout sits beside ../shared (the project does not
# need it: without it, gencheck uses loadgen alone).
P3=""
if [ -f "$POP3LOAD_SRC/Cargo.toml" ]; then
  if CARGO_TARGET_DIR="$RUN/pop3load-target" cargo build --release --quiet \
      --manifest-path "$POP3LOAD_SRC/Cargo.toml" 2>> "$RUN/build.log"; then
    cp "$RUN/pop3load-target/release/pop3load" "$RUN/pop3load"
    P3="$RUN/pop3load"
  fi
fi

# The open-file limit: each popstate session holds its socket (the Maildir lock holds no file), and
# popstate refuses to start when --max-sessions cannot fit (main.rs checks).
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# One descriptor per Maildir session (its socket: the lock holds no file, maildir/lock.rs).
MAX_SESSIONS=$(( NOFILE - 64 )); [ "$MAX_SESSIONS" -gt 20000 ] && MAX_SESSIONS=20000

PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT

stop_one() {  # stop_one PID: TERM, wait up to 5 s, KILL; then forget the PID
  local pid=$1 keep=() p
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

wait_port() {  # wait_port PORT: until a +OK greeting arrives (at most 20 s)
  for _ in $(seq 200); do
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 3 <&3" 2>/dev/null | grep -q '+OK'; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

start_popstate() {
  "$RUN/popstate" --listen 127.0.0.1:$PORT_POPSTATE --maildir-root "$DATA/maildirs" \
    --users "$DATA/users" --max-sessions "$MAX_SESSIONS" --max-sessions-per-ip "$MAX_SESSIONS" \
    --idle-timeout 600 2> "$RUN/popstate.log" &
  PID_POPSTATE=$!; PIDS+=("$PID_POPSTATE")
  wait_port $PORT_POPSTATE || die "popstate did not start: $(tail -3 "$RUN/popstate.log")"
}

start_probe() {
  "$LOADGEN" probe --listen 127.0.0.1:$PORT_PROBE --maildir-root "$DATA/maildirs" \
    --preload big --seconds 14400 2> "$RUN/probe.log" &
  PID_PROBE=$!; PIDS+=("$PID_PROBE")
  wait_port $PORT_PROBE || die "probe did not start: $(tail -3 "$RUN/probe.log")"
}

start_dovecot() {
  command -v dovecot > /dev/null || die "dovecot is not installed: apt-get install dovecot-pop3d"
  local D="$RUN/dovecot"
  mkdir -p "$D/run" "$D/state"
  chmod 755 "$RUN" "$D"
  cp "$DATA/dovecot-passwd" "$D/passwd"
  chgrp dovecot "$D/passwd" && chmod 640 "$D/passwd"   # read by the auth process (user dovecot)
  local uid; uid=$(stat -c %u "$DATA/maildirs/u0001")
  cat > "$D/dovecot.conf" <<EOF
# A private Dovecot for bench/run.sh: loopback only, its own state; the same Maildirs as popstate.
instance_name = popstate-bench
base_dir = $D/run
state_dir = $D/state
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = $D/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = $uid
mail_location = maildir:~
# RFC 1939: the maildrop is locked for the whole session, as popstate does.
pop3_lock_session = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $D/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $D/passwd
}
default_process_limit = 6000
default_client_limit = 12000
default_vsz_limit = 512M
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $PORT_DOVECOT
  }
  inet_listener pop3s {
    port = 0
  }
  # high-performance login mode: a few long-lived login processes
  service_count = 0
  process_min_avail = 2
  client_limit = 6000
}
service pop3 {
  process_limit = 6000
  client_limit = 1
}
service anvil {
  client_limit = 12100
}
service auth {
  client_limit = 12100
}
EOF
  dovecot -c "$D/dovecot.conf" -n > "$D/config.txt" 2>&1 || die "bad dovecot config: $(tail -3 "$D/config.txt")"
  dovecot -F -c "$D/dovecot.conf" > "$D/stdout.log" 2>&1 < /dev/null &
  PID_DOVECOT=$!; PIDS+=("$PID_DOVECOT")
  wait_port $PORT_DOVECOT || die "dovecot did not start: $(tail -3 "$D/dovecot.log")"
}

port_of() { case $1 in popstate) echo $PORT_POPSTATE ;; probe) echo $PORT_PROBE ;; dovecot) echo $PORT_DOVECOT ;; esac; }
pid_of() { case $1 in popstate) echo "$PID_POPSTATE" ;; probe) echo "$PID_PROBE" ;; dovecot) echo "$PID_DOVECOT" ;; esac; }

# The CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# run TARGET ROUND MODE ARGS...: one measurement, its JSON line appended to results.jsonl. For
# popstate and the probe (one process each) the line also gets server_cpu_s, the CPU seconds
# the server used during the run.
run() {
  local target=$1 round=$2 mode=$3; shift 3
  local line before after pid
  pid=$(pid_of "$target"); before=$(cpu_ticks "$pid")
  if line=$("$LOADGEN" "$mode" --addr "127.0.0.1:$(port_of "$target")" --label "$target" \
      --round "$round" "$@" 2>> "$RUN/loadgen.log"); then
    after=$(cpu_ticks "$pid")
    if [ "$target" != dovecot ] && [ "$mode" != idle ]; then
      line="${line%\}},\"server_cpu_s\":$(awk -v a="$after" -v b="$before" -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", (a - b) / t }')}"
    fi
    echo "$line" >> "$RESULTS"
    echo "  $target $round $mode $*: $(tail -1 "$RUN/loadgen.log")" >&2
  else
    echo "  $target $round $mode $* FAILED: $(tail -1 "$RUN/loadgen.log")" >&2
  fi
}

{
  echo "# $(date -u +%FT%TZ) commit $COMMIT ($DIRTY changed files under src/), nofile $NOFILE, popstate --max-sessions $MAX_SESSIONS"
  echo "# $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
} >> "$OUT/machine.txt"

for t in $TARGETS; do "start_$t"; done
echo "== servers up: popstate ${PID_POPSTATE:-} probe ${PID_PROBE:-} dovecot ${PID_DOVECOT:-}" >&2

# Warm-up, not recorded: Dovecot builds its index files on each user's first login, and every
# server's page cache gets the messages. Every user the later phases use logs in once here.
echo "== warm-up" >&2
for t in $TARGETS; do
  "$LOADGEN" sessions --addr "127.0.0.1:$(port_of "$t")" --clients 256 --seconds 3 --warmup 0 > /dev/null 2>> "$RUN/loadgen.log" || true
  "$LOADGEN" retr --addr "127.0.0.1:$(port_of "$t")" --user big --seconds 1 --min-count 1 > /dev/null 2>> "$RUN/loadgen.log" || true
done

for phase in $PHASES; do
  case $phase in
  core)  # the reference table: NOOP latency, RETR 100 MB, sessions with 16 clients
    for r in $(seq "$ROUNDS"); do
      echo "== core round $r/$ROUNDS, load $(cut -d' ' -f1 /proc/loadavg)" >&2
      for t in $TARGETS; do
        run "$t" "core$r" latency --seconds 5
        run "$t" "core$r" retr --user big --seconds 6
        run "$t" "core$r" sessions --clients 16 --seconds "$SESSION_SECONDS"
      done
    done ;;
  gencheck)  # how fast each generator reads: RETR of big from the probe and from popstate
    for r in $(seq "$ROUNDS"); do
      echo "== generator check round $r/$ROUNDS" >&2
      for t in probe popstate; do
        run "$t" "gen-loadgen$r" retr --user big --seconds 6
        [ -n "$P3" ] || continue
        if out=$("$P3" retr --host 127.0.0.1 --port "$(port_of "$t")" --user big --pass benchpass \
            --msg 1 --duration 6 2>> "$RUN/pop3load.log"); then
          mb=$(printf '%s' "$out" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["payload_mb_per_s"])')
          echo "{\"mode\":\"retr\",\"label\":\"$t\",\"round\":\"gen-pop3load$r\",\"user\":\"big\",\"mb_per_s\":$mb,\"generator\":\"pop3load\"}" >> "$RESULTS"
          echo "  $t gen-pop3load$r retr big: $mb MB/s (pop3load)" >&2
        fi
      done
    done ;;
  first)  # the first login after a start, on 100,000 messages: each server restarted first
    for r in $(seq "$FIRST_ROUNDS"); do
      for t in $TARGETS; do
        [ "$t" = probe ] && continue
        stop_one "$(pid_of "$t")"; "start_$t"
        echo "== first login m100000, $t, round $r (fresh server)" >&2
        run "$t" "first$r" login --user m100000 --cold 0 --repeat 1 --seconds 300
      done
    done ;;
  scale)  # sessions/s against the number of clients
    for r in $(seq "$SCALE_ROUNDS"); do
      echo "== scale round $r/$SCALE_ROUNDS" >&2
      for c in $CLIENT_COUNTS; do
        for t in $TARGETS; do run "$t" "scale$r" sessions --clients "$c" --seconds 6; done
      done
    done ;;
  retrsize)  # RETR MB/s against the message size
    for r in $(seq "$SCALE_ROUNDS"); do
      echo "== retr-size round $r/$SCALE_ROUNDS" >&2
      for u in $RETR_USERS; do
        for t in $TARGETS; do run "$t" "size$r" retr --user "$u" --seconds 3; done
      done
    done ;;
  idle)  # memory per idle logged-in session, each time in a freshly started server: a
         # process keeps memory its earlier sessions freed (malloc arenas, cached thread
         # stacks), so a server that served other phases first would look cheaper than it is
    for r in $(seq "$IDLE_ROUNDS"); do
      for n in $IDLE_SESSIONS; do
        for t in $TARGETS; do
          [ "$t" = dovecot ] && [ "$n" -gt 5000 ] && continue   # one process each: 5,000 is plenty
          if [ "$t" != dovecot ]; then stop_one "$(pid_of "$t")"; "start_$t"; fi
          echo "== idle $n, $t, round $r (fresh server)" >&2
          run "$t" "idle$r" idle --sessions "$n" --hold 10 --server-pid "$(pid_of "$t")"
          sleep 3   # let the server wind the sessions down before the next target
        done
      done
    done ;;
  login)  # greeting to STAT on maildrops of 100 ... 100,000 messages, cold and warm
    for m in $LOGIN_SIZES; do
      for t in $TARGETS; do
        [ "$t" = probe ] && continue   # the probe keeps maildrops in memory: no cold or warm
        echo "== login m$m, $t" >&2
        run "$t" login login --user "m$m" --cold "$COLD" --repeat 10 --seconds 300
      done
    done ;;
  *) die "unknown phase $phase" ;;
  esac
done

echo "# finished $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
python3 bench/summarize.py "$RESULTS" > "$OUT/summary.md"
echo "== results: $RESULTS, summary: $OUT/summary.md" >&2

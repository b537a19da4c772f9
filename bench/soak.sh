#!/bin/sh
# bench/soak.sh — soak tools/iou-echo with churning, checked connections.
#
# Run (after make):       sh bench/soak.sh
#                         SOAK_SECONDS=600 SOAK_SEED=42 sh bench/soak.sh
# Not part of make check (it takes SOAK_SECONDS + about 10 s).
#
# What it does
#   * Starts tools/iou-echo -p 0 -q on 127.0.0.1 (pinned to CPU 0 and the
#     client to CPU 1 when there are 2 CPUs and taskset), records the idle
#     server's fd count and VmRSS ("idle").
#   * Runs bench/soak: SOAK_CONNS (1000) connections open at any time for
#     SOAK_SECONDS (60); each does a random number of exchanges of random
#     length (1 B..64 KiB), every echoed byte checked, then closes, resets
#     (SO_LINGER 0), resets with data in flight, or half-closes and reads to
#     EOF, and is replaced (see bench/soak.c).
#   * Samples the server's fd count (ls /proc/PID/fd | wc -l) and VmRSS once
#     the first connections are up ("start") and every 10 s.
#   * After the client has exited, waits up to 10 s for the server to close
#     its side, samples again ("end"), then stops the server (SIGTERM: it
#     must shut down cleanly, exit 0, with nothing on stderr).
#
# It fails (exit 1) if
#   * the client reports an error or a mismatched byte, exits non-zero or
#     times out;
#   * the server's fd count at the end differs from the idle server's (every
#     connection's fd must be closed once the clients are gone);
#   * any sample's VmRSS exceeds the reference sample (the first one taken
#     10 s or more into the run, i.e. after warm-up; the start sample for
#     runs shorter than that) by more than SOAK_RSS_SLACK_KB (default 16384).
#     Why 16 MiB: the loop's provided-buffer ring is 1024 x 16 KiB = 16 MiB
#     of address space that becomes resident only as buffers get used, so
#     up to 16 MiB of growth can be legitimate after warm-up (plus malloc's
#     arenas settling); a leak of only 64 bytes per connection over the
#     several hundred thousand connections of a 60 s run exceeds it.  The
#     growth per churned connection is printed as well;
#   * the server does not start, dies, or does not exit cleanly.
#
# Environment
#   SOAK_SECONDS      seconds of churn (default 60)
#   SOAK_CONNS        connections open at a time (default 1000)
#   SOAK_SEED         client random seed (default: time and pid; printed)
#   SOAK_MAXLEN       largest message in bytes (default 65536)
#   SOAK_RSS_SLACK_KB allowed VmRSS growth over the reference (default 16384)
#   SOAK_PIN          1 (default): pin server and client to CPUs 0 and 1
#   SOAK_ECHO_ARGS    more iou-echo options, e.g. --tasks (a task per
#                     connection)
#   IOU_BUILD         directory holding the built tools/ and bench/
#                     (default: this script's parent directory)

set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 1
B=${IOU_BUILD:-$ROOT}
SECS=${SOAK_SECONDS:-60}
CONNS=${SOAK_CONNS:-1000}
MAXLEN=${SOAK_MAXLEN:-65536}
SLACK=${SOAK_RSS_SLACK_KB:-16384}
SEED=${SOAK_SEED:-}
ECHO_ARGS=${SOAK_ECHO_ARGS:-}
ECHO=$B/tools/iou-echo
CLIENT=$B/bench/soak

for f in "$ECHO" "$CLIENT"; do
	[ -x "$f" ] || { echo "soak: $f not built (make)" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/iou-soak.XXXXXX") || exit 1
SPID=
CPID=
cleanup() {
	for p in $CPID $SPID; do kill -TERM "$p" 2>/dev/null; done
	sleep 0.2
	for p in $CPID $SPID; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

# nproc counts the CPUs this job may use (affinity, cpusets), and taskset
# must accept CPUs 0 and 1 too.
if [ "${SOAK_PIN:-1}" = 1 ] && [ "$(nproc 2>/dev/null || echo 1)" -ge 2 ] &&
	command -v taskset >/dev/null 2>&1 && taskset -c 0 true 2>/dev/null &&
	taskset -c 1 true 2>/dev/null; then
	PIN_S="taskset -c 0" PIN_C="taskset -c 1" PINNING="server CPU 0, client CPU 1"
else
	PIN_S='' PIN_C='' PINNING="not pinned"
fi

running() {
	read -r line 2>/dev/null <"/proc/$1/stat" || return 1
	rest=${line##*) }
	case ${rest%% *} in Z | X | x | "") return 1 ;; esac
	return 0
}
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
now() { date +%s; }

FAIL=0
fail() { echo "FAIL: $*"; FAIL=1; }

# ---- server ------------------------------------------------------------------
# shellcheck disable=SC2086 # ECHO_ARGS: several words
$PIN_S "$ECHO" -p 0 -q $ECHO_ARGS >"$TMP/server.out" 2>"$TMP/server.err" </dev/null &
SPID=$!
PORT=
i=0
while [ $i -lt 200 ]; do
	PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)[[:space:]]*$/\1/p' "$TMP/server.out" | head -n 1)
	[ -n "$PORT" ] && break
	running "$SPID" || break
	sleep 0.025
	i=$((i + 1))
done
if [ -z "$PORT" ]; then
	echo "FAIL: iou-echo did not start: $(head -c 300 "$TMP/server.err")"
	exit 1
fi
sleep 0.2
FD_IDLE=$(fds "$SPID")
RSS_IDLE=$(rss "$SPID")

echo "## soak: iou-echo $ECHO_ARGS, $CONNS churning connections for $SECS s"
echo "kernel $(uname -r), $PINNING, port $PORT"
echo "idle server: fds $FD_IDLE, VmRSS $RSS_IDLE kB"

# ---- client ------------------------------------------------------------------
T0=$(now)
# shellcheck disable=SC2086
$PIN_C timeout -k 5 $((SECS + 90)) "$CLIENT" -p "$PORT" -c "$CONNS" -d "$SECS" \
	-m "$MAXLEN" ${SEED:+-s "$SEED"} >"$TMP/client.out" 2>"$TMP/client.err" </dev/null &
CPID=$!

# "start": the first connections are up (server fds reach idle + 90 % of
# CONNS), at most 10 s
i=0
while [ $i -lt 100 ] && running "$CPID"; do
	[ "$(fds "$SPID")" -ge $((FD_IDLE + CONNS * 9 / 10)) ] && break
	sleep 0.1
	i=$((i + 1))
done
FD_START=$(fds "$SPID")
RSS_START=$(rss "$SPID")
printf '%-8s %6s %10s\n' "sample" "fds" "VmRSS kB"
printf '%-8s %6s %10s\n' "start" "$FD_START" "$RSS_START"
RSS_REF=$RSS_START REF_AT=start
RSS_MAX=$RSS_START
next=$((T0 + 10))
while running "$CPID"; do
	if [ "$(now)" -ge "$next" ]; then
		f=$(fds "$SPID") r=$(rss "$SPID")
		t=$(($(now) - T0))
		printf '%-8s %6s %10s\n' "t=${t}s" "$f" "$r"
		if [ "$REF_AT" = start ]; then RSS_REF=$r REF_AT="t=${t}s"; fi
		[ -n "$r" ] && [ "$r" -gt "$RSS_MAX" ] && RSS_MAX=$r
		next=$((next + 10))
	fi
	running "$SPID" || break
	sleep 0.2
done
wait "$CPID"
CRC=$?
CPID=
running "$SPID" || fail "iou-echo died during the soak"

# "end": the clients are gone; the server closes its side at once
i=0
while [ $i -lt 100 ] && [ "$(fds "$SPID")" -ne "$FD_IDLE" ]; do
	sleep 0.1
	i=$((i + 1))
done
FD_END=$(fds "$SPID")
RSS_END=$(rss "$SPID")
printf '%-8s %6s %10s\n' "end" "$FD_END" "$RSS_END"
[ -n "$RSS_END" ] && [ "$RSS_END" -gt "$RSS_MAX" ] && RSS_MAX=$RSS_END

# ---- stop the server ---------------------------------------------------------
kill -TERM "$SPID" 2>/dev/null
i=0
while running "$SPID" && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
if running "$SPID"; then
	fail "iou-echo ignored SIGTERM"
	kill -KILL "$SPID" 2>/dev/null
fi
wait "$SPID"
SRC=$?
SPID=
[ "$SRC" -eq 0 ] || fail "iou-echo exited with status $SRC"
# (but for its start-up line naming the backend)
grep -v '^backend: ' "$TMP/server.err" >"$TMP/server.err2"
[ -s "$TMP/server.err2" ] && fail "iou-echo wrote to stderr: $(head -c 300 "$TMP/server.err2")"

# ---- verdict -----------------------------------------------------------------
SUMMARY=$(grep '^soak:' "$TMP/client.out" | tail -n 1)
echo
cat "$TMP/client.err"
echo "${SUMMARY:-client printed no summary}"
[ "$CRC" -eq 0 ] || fail "client exited with status $CRC$([ "$CRC" -eq 124 ] && echo ' (timed out)')"
case $SUMMARY in
*"errors 0 mismatches 0") ;;
*) fail "client reported errors or mismatches" ;;
esac
[ "$FD_END" = "$FD_IDLE" ] || fail "server fds at the end $FD_END != idle $FD_IDLE (leak)"
GROWTH=$((RSS_MAX - RSS_REF))
NCONN=$(printf '%s\n' "$SUMMARY" | sed -n 's/.*connections \([0-9][0-9]*\).*/\1/p')
echo "server fds: idle $FD_IDLE, start $FD_START, end $FD_END"
echo "server VmRSS: idle $RSS_IDLE kB, start $RSS_START kB, reference ($REF_AT) $RSS_REF kB, max $RSS_MAX kB, end $RSS_END kB"
awk -v g="$GROWTH" -v n="${NCONN:-0}" -v s="$SLACK" 'BEGIN {
	printf "VmRSS growth over the reference: %d kB (bound %d kB)", g, s
	if (n > 0) printf ", %.2f bytes per connection served", g * 1024 / n
	printf "\n" }'
[ "$GROWTH" -le "$SLACK" ] || fail "server VmRSS grew by $GROWTH kB (> $SLACK kB)"
echo "total time: $(($(now) - T0)) s"
if [ "$FAIL" -ne 0 ]; then
	echo "soak: FAILED"
	exit 1
fi
echo "soak: PASS"
exit 0

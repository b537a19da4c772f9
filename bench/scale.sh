#!/bin/bash
# bench/scale.sh — 20 000 concurrent connections to one tools/iou-echo, all
# served while all are open.
#
# Run (after make, as root or with a hard fd limit of at least 20 100):
#                         bench/scale.sh
#                         SCALE_CONNS=5000 SCALE_SECONDS=3 bench/scale.sh
# Not part of make check (it takes about 20 s here).
#
# Closing all 20 000 connections takes about 0.25 s on each side (iou_close
# cancels by user_data, a hash lookup in the kernel; cancelling by fd scanned
# every armed poll request and took ~8 s).  The script allows 60 s for it.
#
# What it does
#   * Raises the fd limit (ulimit -n 65536; works as root with
#     CAP_SYS_RESOURCE).  If the hard limit cannot be raised and is below
#     SCALE_CONNS + 64, the run uses hard limit - 64 connections and says so
#     (one process cannot hold more fds than its limit), unless
#     SCALE_STRICT=1, where that is a failure.
#   * Starts tools/iou-echo -p 0 -q on 127.0.0.1 (it raises its soft fd
#     limit to the hard one) and records its idle fd count and VmRSS.
#   * Runs bench/soak -S: opens all connections (256 connects in flight at a
#     time, from SCALE_NSRC source addresses 127.0.0.x), then every
#     connection does one 64-byte echo exchange while all are open, then all
#     ping-pong for SCALE_SECONDS (closed loop, req/s measured), every byte
#     checked; then they are held open while the server's fd count and VmRSS
#     are read, then closed.
#   * Waits for the server to drop back to its idle fd count, stops it with
#     SIGTERM (it must exit 0).
#
# Fails (exit 1) if the client reports errors, mismatches or fewer
# connections than asked, the server holds fewer than that many connection
# fds while all are open, its fd count does not return to idle, or it does
# not start / exit cleanly.  Bounded: the client's phases are limited to
# SCALE_LIMIT seconds (default 90), the whole script to about 2 minutes.
#
# Environment
#   SCALE_CONNS    connections (default 20000)
#   SCALE_SECONDS  timed ping-pong with all connections (default 5)
#   SCALE_LEN      message length (default 64)
#   SCALE_NSRC     source addresses 127.0.0.1..N, round-robin (default 4;
#                  1 also works for 20 000, as the ephemeral range
#                  32768-60999 has ~28 000 ports, but the kernel's port
#                  search then makes the connects ~10x slower: 5 s vs 0.5 s)
#   SCALE_LIMIT    seconds the client's phases may take (default 90)
#   SCALE_STRICT   1: fail instead of lowering SCALE_CONNS to the fd limit
#   IOU_BUILD      directory holding the built tools/ and bench/

set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 1
B=${IOU_BUILD:-$ROOT}
N=${SCALE_CONNS:-20000}
SECS=${SCALE_SECONDS:-5}
LEN=${SCALE_LEN:-64}
NSRC=${SCALE_NSRC:-4}
LIMIT=${SCALE_LIMIT:-90}
ECHO=$B/tools/iou-echo
CLIENT=$B/bench/soak

for f in "$ECHO" "$CLIENT"; do
	[ -x "$f" ] || { echo "scale: $f not built (make)" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/iou-scale.XXXXXX") || exit 1
SPID=
CPID=
cleanup() {
	exec 3>&-
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
T0=$(now)

# ---- fd limit ----------------------------------------------------------------
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
HARD=$(ulimit -Hn)
ASKED=$N
if [ "$HARD" != unlimited ] && [ "$HARD" -lt $((N + 64)) ]; then
	if [ "${SCALE_STRICT:-0}" = 1 ]; then
		echo "FAIL: fd hard limit $HARD < $N + 64 and cannot be raised (needs CAP_SYS_RESOURCE)"
		exit 1
	fi
	N=$((HARD - 64))
	echo "NOTE: fd hard limit is $HARD and cannot be raised here (no CAP_SYS_RESOURCE):"
	echo "      one process cannot hold $ASKED sockets; testing $N connections instead"
fi

# ---- server ------------------------------------------------------------------
"$ECHO" -p 0 -q >"$TMP/server.out" 2>"$TMP/server.err" </dev/null &
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
echo "## scale: $N connections to one iou-echo (kernel $(uname -r), fd limit $(ulimit -n))"
echo "idle server: fds $FD_IDLE, VmRSS $RSS_IDLE kB"

# ---- client ------------------------------------------------------------------
mkfifo "$TMP/hold" || exit 1
timeout -k 5 $((LIMIT + 60)) "$CLIENT" -S -p "$PORT" -c "$N" -l "$LEN" -d "$SECS" \
	-n "$NSRC" -T "$LIMIT" <"$TMP/hold" >"$TMP/client.out" 2>"$TMP/client.err" &
CPID=$!
exec 3>"$TMP/hold"

HELD=0
while running "$CPID"; do
	if grep -q '^holding' "$TMP/client.out" 2>/dev/null; then HELD=1; break; fi
	sleep 0.1
done
FD_OPEN='' RSS_OPEN=''
if [ $HELD = 1 ]; then
	sleep 0.2
	FD_OPEN=$(fds "$SPID")
	RSS_OPEN=$(rss "$SPID")
fi
exec 3>&- # the client closes every connection and exits
wait "$CPID"
CRC=$?
CPID=
running "$SPID" || fail "iou-echo died"

# the server closes its side as the EOFs arrive: wait up to 60 s
i=0
while [ $i -lt 600 ] && [ "$(fds "$SPID")" -ne "$FD_IDLE" ]; do
	sleep 0.1
	i=$((i + 1))
done
SRV_CLOSE_S=$(awk -v i=$i 'BEGIN { printf "%.1f", i / 10 }')
FD_END=$(fds "$SPID")
RSS_END=$(rss "$SPID")

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
grep -v '^holding' "$TMP/client.out"
cat "$TMP/client.err"
SUMMARY=$(grep '^scale:' "$TMP/client.out" | tail -n 1)
[ "$CRC" -eq 0 ] || fail "client exited with status $CRC$([ "$CRC" -eq 124 ] && echo ' (timed out)')"
[ $HELD = 1 ] || fail "the client never had all $N connections served"
case $SUMMARY in
"scale: connections $N,"*"errors 0 mismatches 0") ;;
*) fail "client: not all $N connections served without errors" ;;
esac
if [ -n "$FD_OPEN" ] && [ "$FD_OPEN" -lt $((FD_IDLE + N)) ]; then
	fail "server held $FD_OPEN fds with all open, expected >= $((FD_IDLE + N))"
fi
[ "$FD_END" = "$FD_IDLE" ] || fail "server fds after the clients left: $FD_END != idle $FD_IDLE"
echo "server fds: idle $FD_IDLE, all $N open $FD_OPEN, after close $FD_END (back to idle ${SRV_CLOSE_S} s after the client exited)"
awk -v a="$RSS_IDLE" -v b="${RSS_OPEN:-0}" -v e="${RSS_END:-0}" -v n="$N" 'BEGIN {
	printf "server VmRSS: idle %d kB, all open %d kB (%.0f bytes/conn over idle), after close %d kB\n",
		a, b, (b - a) * 1024 / n, e }'
echo "total time: $(($(now) - T0)) s"
if [ "$FAIL" -ne 0 ]; then
	echo "scale: FAILED"
	exit 1
fi
echo "scale: PASS$([ "$N" != "$ASKED" ] && echo " ($N connections: fd limit, see NOTE)")"
exit 0

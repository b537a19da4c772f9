#!/bin/sh
# bench/syscalls.sh — system calls per request of each echo server, counted
# by the kernel's tracepoints (perf stat), which barely slows the server
# (strace -c stops it at every call and changes how much each call batches).
#
# For every configuration and server: the server is started pinned to CPU 0,
# perf stat starts counting its syscalls, iou-bench (CPU 1, no warm-up, so
# that it counts every request) loads it for SYSCALLS_DURATION seconds, and
# the counts are divided by the requests the client completed (the
# connections' set-up is in the counts too: a few syscalls per connection).
# Prints one line per server and configuration: all syscalls, then the ones
# that occur, per request.
#
# Environment
#   SYSCALLS_SERVERS   default "epoll-echo iou-echo-epoll uring-echo iou-echo"
#   SYSCALLS_CONFIGS   default "c50 c1 c50x16k" (as bench/run.sh)
#   SYSCALLS_DURATION  client seconds per run (default 3)
#   SYSCALLS_ROUNDS    runs per server and configuration (default 1)
#   IOU_BUILD          directory of the built tools/ and bench/ (default: here)
# Needs perf with tracepoint access (Debian: linux-perf); without it, says so
# and exits 0.  Exit status 1 if a server or a client run failed.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 1
B=${IOU_BUILD:-$ROOT}
SERVERS=${SYSCALLS_SERVERS:-"epoll-echo iou-echo-epoll uring-echo iou-echo"}
CONFIGS=${SYSCALLS_CONFIGS:-"c50 c1 c50x16k"}
DUR=${SYSCALLS_DURATION:-3}
ROUNDS=${SYSCALLS_ROUNDS:-1}
EVENTS=raw_syscalls:sys_enter
for sc in recvmsg read recvfrom sendto sendmsg write epoll_wait epoll_ctl io_uring_enter; do
	EVENTS="$EVENTS,syscalls:sys_enter_$sc"
done

if ! perf stat -e "$EVENTS" -- true >/dev/null 2>&1; then
	echo "note: perf cannot count syscall tracepoints here: skipped"
	exit 0
fi
TMP=$(mktemp -d) || exit 1
trap 'rm -rf "$TMP"; [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null' EXIT
PIN_S="taskset -c 0" PIN_C="taskset -c 1"
command -v taskset >/dev/null 2>&1 || PIN_S='' PIN_C=''
FAILED=0

server_cmd() {
	case $1 in
	iou-echo) echo "$B/tools/iou-echo --backend uring" ;;
	iou-echo-epoll) echo "$B/tools/iou-echo --backend epoll" ;;
	*) echo "$B/bench/$1" ;;
	esac
}

cfg_set() {
	case $1 in
	c50) C=50 L=512 P=1 ;;
	c1) C=1 L=512 P=1 ;;
	c50x16k) C=50 L=16384 P=1 ;;
	pipe16) C=50 L=512 P=16 ;;
	*) echo "unknown configuration $1" >&2; exit 2 ;;
	esac
}

one() { # server: prints its line
	# shellcheck disable=SC2046
	$PIN_S $(server_cmd "$1") -p 0 >"$TMP/out" 2>"$TMP/err" </dev/null &
	SPID=$!
	port='' i=0
	while [ -z "$port" ] && [ $i -lt 200 ]; do
		sleep 0.025
		port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)[[:space:]]*$/\1/p' "$TMP/out")
		i=$((i + 1))
	done
	if [ -z "$port" ]; then
		echo "$1: did not start: $(head -c 200 "$TMP/err")"
		FAILED=1
		kill "$SPID" 2>/dev/null
		return
	fi
	perf stat -x, -e "$EVENTS" -p "$SPID" -o "$TMP/perf" &
	ppid=$!
	sleep 0.3 # perf attached
	$PIN_C "$B/tools/iou-bench" -p "$port" -c "$C" -l "$L" -P "$P" -d "$DUR" \
		--warmup 0 --json >"$TMP/json" 2>/dev/null || FAILED=1
	kill -INT "$ppid" 2>/dev/null
	wait "$ppid" 2>/dev/null
	kill "$SPID" 2>/dev/null
	wait "$SPID" 2>/dev/null
	SPID=
	rps=$(sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' "$TMP/json" | tail -n 1)
	req=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' "$TMP/json" | tail -n 1)
	if [ -z "$rps" ] || [ -z "$req" ]; then
		echo "$1: client failed"
		FAILED=1
		return
	fi
	awk -F, -v srv="$1" -v rps="$rps" -v req="$req" '
		$1 ~ /^[0-9]+$/ {
			name = $3
			sub(/^raw_syscalls:sys_enter$/, "all", name)
			sub(/^syscalls:sys_enter_/, "", name)
			if ($1 > 0) out = out sprintf(" %s=%.3f", name, $1 / req)
		}
		END { printf "%-15s %8.0f req/s%s\n", srv, rps, out }' "$TMP/perf"
}

for cfg in $CONFIGS; do
	cfg_set "$cfg"
	echo "== $cfg: $C connections x $L B, pipeline $P; syscalls per request"
	r=1
	while [ $r -le "$ROUNDS" ]; do
		for srv in $SERVERS; do
			one "$srv"
		done
		r=$((r + 1))
	done
done
exit $FAILED

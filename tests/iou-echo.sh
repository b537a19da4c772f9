#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Tests of the built tools/iou-echo: the listening line, byte-exact echo,
# many clients, half-close, threads, graceful and forced shutdown, usage
# errors, a busy port, fd exhaustion, --max-conns, --idle-timeout, the
# per-connection log lines, -H ::1, addresses it cannot listen on, and
# --backend (the backend line, an unavailable backend).  Every server is
# started here with -p 0 and killed by the EXIT trap.  The clients are
# tests/progs/echo-clients.c.
#
# IOU_BACKEND=uring|epoll (as make check sets it for each backend's pass)
# runs every server with --backend NAME, and the backend line must name it;
# the variable itself is kept from the servers, so the option alone decides.
#
# Exit status: 0 pass, 1 fail, 77 skip (the backend unavailable).
# Run by `make check` with IOU_BUILD=<repo root>; also runs stand-alone.

set -u

TOP=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
ECHO_BIN=$TOP/tools/iou-echo
TMP=$(mktemp -d "${TMPDIR:-/tmp}/iou-echo-test.XXXXXX") || exit 1
PIDS=()
FAILS=0
START=$SECONDS

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

say() { printf '%s\n' "$*"; }
fail() {
	say "FAIL: ${MODE_ARGS:+[$MODE_ARGS] }$*"
	FAILS=$((FAILS + 1))
}
pass() { say "ok: ${MODE_ARGS:+[$MODE_ARGS] }$*"; }

if [ ! -x "$ECHO_BIN" ]; then
	say "FAIL: $ECHO_BIN not built"
	exit 1
fi

# ---- the backend --------------------------------------------------------------

BACKEND=${IOU_BACKEND:-}
unset IOU_BACKEND
case $BACKEND in
"") BACKEND_ARGS='' BACKEND_NAME='' ;;
uring | io_uring) BACKEND_ARGS="--backend uring" BACKEND_NAME=io_uring ;;
epoll) BACKEND_ARGS="--backend epoll" BACKEND_NAME=epoll ;;
*)
	say "FAIL: IOU_BACKEND='$BACKEND': want uring or epoll"
	exit 1
	;;
esac

# ---- the client program ----------------------------------------------------

EC=$TOP/tests/progs/echo-clients
if [ ! -x "$EC" ]; then
	say "FAIL: $EC not built"
	exit 1
fi

# ---- server helpers ---------------------------------------------------------

SPID=
PORT=
MODE_ARGS=

# start_server NAME [iou-echo args...]: starts iou-echo -p 0 with the args,
# output in $TMP/NAME.out and .err; sets SPID and PORT.  Returns 1 if no
# listening line came within 5 s.
start_server() {
	local name=$1 i
	shift
	: >"$TMP/$name.out" # exists before the child opens it
	"$ECHO_BIN" -p 0 $BACKEND_ARGS $MODE_ARGS "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null &
	SPID=$!
	PIDS+=("$SPID")
	PORT=
	for ((i = 0; i < 250; i++)); do
		PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$TMP/$name.out")
		[ -n "$PORT" ] && return 0
		kill -0 "$SPID" 2>/dev/null || break
		sleep 0.02
	done
	return 1
}

# wait_exit PID MS: waits up to MS ms for PID to exit; sets STATUS (its exit
# status, or "running").
wait_exit() {
	local pid=$1 ms=$2 i
	STATUS=running
	for ((i = 0; i < ms / 20; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			STATUS=$?
			return 0
		fi
		# a zombie still answers kill -0: look at its state
		if [ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
			wait "$pid"
			STATUS=$?
			return 0
		fi
		sleep 0.02
	done
	return 1
}

stop_server() { # pid: SIGTERM, expect exit 0 within 5 s
	kill -TERM "$1" 2>/dev/null
	wait_exit "$1" 5000
	[ "$STATUS" = 0 ]
}

cpu_ticks() { # pid: utime+stime in clock ticks
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

ms_now() { echo $(($(date +%s%N) / 1000000)); }

# ---- the backend available? -------------------------------------------------

if ! start_server probe -q; then
	# io_uring may be unavailable here (the suites skip then too); an
	# epoll server that cannot start is a failure.
	if grep -q "cannot create the event loop" "$TMP/probe.err" &&
		[ "$BACKEND_NAME" != epoll ]; then
		say "SKIP: $(head -n 1 "$TMP/probe.err")"
		exit 77
	fi
	say "FAIL: iou-echo did not start: $(head -c 300 "$TMP/probe.err")"
	exit 1
fi
stop_server "$SPID" || fail "probe server: exit status $STATUS on SIGTERM"

# ---- tests ------------------------------------------------------------------

test_listening_line() {
	local line
	if ! start_server listen -q; then
		fail "listening line: none"
		return
	fi
	line=$(head -n 1 "$TMP/listen.out")
	if [[ "$line" =~ ^listening\ on\ 127\.0\.0\.1:([0-9]+)$ ]] &&
		[ "${BASH_REMATCH[1]}" -gt 0 ] && [ "${BASH_REMATCH[1]}" -le 65535 ]; then
		pass "listening line '$line'"
	else
		fail "listening line '$line'"
	fi
	# the port is real: a client gets its byte back
	if "$EC" echo "$PORT" 1 1 >/dev/null 2>"$TMP/listen.ec"; then
		pass "port $PORT from the listening line serves"
	else
		fail "port $PORT from the listening line: $(cat "$TMP/listen.ec")"
	fi
	stop_server "$SPID" || fail "listening line: exit status $STATUS on SIGTERM"
}

test_echo_sizes() {
	local size
	start_server sizes -q || { fail "echo sizes: server did not start"; return; }
	for size in 1 65536 4194304; do
		if "$EC" echo "$PORT" "$size" 1 >"$TMP/sizes.ec" 2>&1; then
			pass "byte-exact echo of $size B"
		else
			fail "echo of $size B: $(cat "$TMP/sizes.ec")"
		fi
	done
	stop_server "$SPID" || fail "echo sizes: exit status $STATUS on SIGTERM"
}

test_concurrent() {
	start_server conc -q || { fail "concurrent: server did not start"; return; }
	if "$EC" echo "$PORT" 16384 200 >"$TMP/conc.ec" 2>&1; then
		pass "200 concurrent clients x 16 KiB echoed"
	else
		fail "200 concurrent clients: $(head -c 500 "$TMP/conc.ec")"
	fi
	stop_server "$SPID" || fail "concurrent: exit status $STATUS on SIGTERM"
}

test_half_close() {
	start_server half -q || { fail "half-close: server did not start"; return; }
	if "$EC" halfclose "$PORT" 32768 >"$TMP/half.ec" 2>&1; then
		pass "half-close: all bytes back, then EOF"
	else
		fail "half-close: $(cat "$TMP/half.ec")"
	fi
	stop_server "$SPID" || fail "half-close: exit status $STATUS on SIGTERM"
}

test_threads() {
	local f n=0 busy=0 tail
	start_server threads -q -t 2 || { fail "-t 2: server did not start"; return; }
	if "$EC" echo "$PORT" 4096 200 >"$TMP/threads.ec" 2>&1; then
		pass "-t 2: 200 clients echoed"
	else
		fail "-t 2: $(head -c 500 "$TMP/threads.ec")"
	fi
	if grep -qx 'backend: epoll' "$TMP/threads.err"; then
		# epoll's fdinfo shows no counters: one epoll instance per loop
		for f in /proc/"$SPID"/fd/*; do
			[ "$(readlink "$f" 2>/dev/null)" = "anon_inode:[eventpoll]" ] && n=$((n + 1))
		done
		if [ "$n" -ge 3 ]; then
			pass "-t 2: $n epoll instances (no fdinfo counters to check their use)"
		else
			fail "-t 2: $n epoll fds for 3 loops"
		fi
		stop_server "$SPID" || fail "-t 2: exit status $STATUS on SIGTERM"
		return
	fi
	# Each thread has its own ring: both must have completed work (the main
	# thread's, for the signals, only waits).
	for f in /proc/"$SPID"/fd/*; do
		[ "$(readlink "$f" 2>/dev/null)" = "anon_inode:[io_uring]" ] || continue
		n=$((n + 1))
		tail=$(awk '$1 == "CqTail:" { print $2 }' "/proc/$SPID/fdinfo/${f##*/}" 2>/dev/null)
		if [ -z "$tail" ]; then
			busy=-1 # no ring statistics in fdinfo: cannot tell
			break
		fi
		[ "$tail" -gt 20 ] && busy=$((busy + 1))
	done
	if [ "$busy" = -1 ]; then
		if [ "$n" -ge 2 ]; then
			pass "-t 2: $n rings (no fdinfo counters to check their use)"
		else
			fail "-t 2: $n io_uring fds"
		fi
	elif [ "$n" = 3 ] && [ "$busy" = 2 ]; then
		pass "-t 2: both threads' rings served connections"
	else
		fail "-t 2: $n rings, $busy of them busy"
	fi
	stop_server "$SPID" || fail "-t 2: exit status $STATUS on SIGTERM"
}

# Many threads ending at once: every one is counted (their wake-up signals
# may merge), so a SIGTERM ends the process with the counts line.
test_threads_exit() {
	local k
	for k in 1 2 3; do
		start_server texit -q -t 8 || { fail "-t 8: server did not start"; return; }
		if ! stop_server "$SPID"; then
			fail "-t 8: exit status $STATUS on SIGTERM (round $k)"
			kill -KILL "$SPID" 2>/dev/null
			return
		fi
		if ! grep -q '^shutdown: 0 connections finished, 0 cut$' "$TMP/texit.out"; then
			fail "-t 8: no counts line: $(cat "$TMP/texit.out")"
			return
		fi
	done
	pass "-t 8: SIGTERM exits 0 with the counts line (3 rounds)"
}

# SIGTERM with 100 clients streaming: exit 0 soon after the 1 s grace limit,
# with the counts line; the clients all see their connection end.
test_sigterm_busy() {
	local cpid t0 took line fin cut
	start_server term -q -g 1 || { fail "SIGTERM: server did not start"; return; }
	rm -f "$TMP/term.ready" # an earlier round's
	"$EC" busy "$PORT" 100 15 "$TMP/term.ready" >"$TMP/term.ec" 2>&1 &
	cpid=$!
	PIDS+=("$cpid")
	for ((i = 0; i < 250; i++)); do
		[ -e "$TMP/term.ready" ] && break
		sleep 0.02
	done
	[ -e "$TMP/term.ready" ] || fail "SIGTERM: busy clients never all streaming"
	sleep 0.2
	t0=$(ms_now)
	kill -TERM "$SPID"
	wait_exit "$SPID" 6000
	took=$(($(ms_now) - t0))
	line=$(grep '^shutdown:' "$TMP/term.out")
	say "   iou-echo -g 1, 100 busy clients, SIGTERM: '$line' after $took ms"
	if [ "$STATUS" != 0 ]; then
		fail "SIGTERM: exit status $STATUS after $took ms"
	elif [ "$took" -gt 2500 ]; then
		fail "SIGTERM: took $took ms with a 1 s grace limit"
	elif ! [[ "$line" =~ ^shutdown:\ ([0-9]+)\ connections\ finished,\ ([0-9]+)\ cut$ ]]; then
		fail "SIGTERM: counts line '$line'"
	else
		fin=${BASH_REMATCH[1]} cut=${BASH_REMATCH[2]}
		if [ $((fin + cut)) = 100 ] && [ "$cut" -gt 0 ]; then
			pass "SIGTERM with busy clients: exit 0 in $took ms, $fin finished, $cut cut"
		else
			fail "SIGTERM: $fin finished + $cut cut != 100 busy clients"
		fi
	fi
	wait_exit "$cpid" 5000
	if [ "$STATUS" = 0 ]; then
		pass "busy clients all saw the end: $(cat "$TMP/term.ec")"
	else
		fail "busy clients (status $STATUS): $(head -c 300 "$TMP/term.ec")"
	fi
}

# A second signal while the grace period runs ends the process at once,
# with 128 + its number: test_second_signal SIGNAL STATUS [iou-echo args].
test_second_signal() {
	local sig=$1 want=$2 name=sig2$1 cpid t0 took
	shift 2
	start_server "$name" -q -g 20 "$@" || { fail "second signal: server did not start"; return; }
	rm -f "$TMP/$name.ready" # an earlier round's
	"$EC" busy "$PORT" 10 15 "$TMP/$name.ready" >"$TMP/$name.ec" 2>&1 &
	cpid=$!
	PIDS+=("$cpid")
	for ((i = 0; i < 250; i++)); do
		[ -e "$TMP/$name.ready" ] && break
		sleep 0.02
	done
	kill -TERM "$SPID"
	sleep 0.3
	if ! kill -0 "$SPID" 2>/dev/null; then
		wait_exit "$SPID" 100
		fail "second signal: server gone before the second signal (status $STATUS, stderr '$(tail -c 300 "$TMP/$name.err")', clients '$(tail -c 200 "$TMP/$name.ec")')"
		return
	fi
	t0=$(ms_now)
	kill -"$sig" "$SPID"
	wait_exit "$SPID" 3000
	took=$(($(ms_now) - t0))
	if [ "$STATUS" = running ]; then
		fail "second SIG$sig${*:+ ($*)}: still running after 3 s"
	elif [ "$took" -gt 1000 ] || [ "$STATUS" != "$want" ]; then
		fail "second SIG$sig${*:+ ($*)}: exit status $STATUS after $took ms, want $want"
	elif ! grep -q '^iou-echo: second signal, exiting now$' "$TMP/$name.err"; then
		fail "second SIG$sig${*:+ ($*)}: stderr '$(head -c 300 "$TMP/$name.err")'"
	else
		pass "second SIG$sig${*:+ ($*)} in the grace period: exit $want after $took ms"
	fi
	kill "$cpid" 2>/dev/null
	wait "$cpid" 2>/dev/null
}

# Bad usage: exit 2 and exactly one line on stderr, nothing on stdout.
test_bad_usage() {
	local args n st
	while IFS= read -r args; do
		# shellcheck disable=SC2086
		timeout 5 "$ECHO_BIN" $args >"$TMP/usage.out" 2>"$TMP/usage.err" </dev/null
		st=$?
		n=$(wc -l <"$TMP/usage.err")
		if [ "$st" = 2 ] && [ "$n" = 1 ] && [ ! -s "$TMP/usage.out" ]; then
			pass "usage '$args': exit 2, '$(cat "$TMP/usage.err")'"
		else
			fail "usage '$args': exit $st, $n stderr lines: $(head -c 300 "$TMP/usage.err")"
		fi
	done <<-'EOF'
		--no-such-flag
		-x
		-p 70000
		-p -1
		-p abc
		-p
		-t 0
		-t abc
		-g abc
		-g -1
		--idle-timeout abc
		--max-conns abc
		--backend
		--backend io-uring
		--backend EPOLL
		-p 0 extra
	EOF
}

# A port in use (without reuseport: -t 1): exit 1, one line naming it.
test_busy_port() {
	local first st err
	start_server held -q || { fail "busy port: first server did not start"; return; }
	first=$SPID
	timeout 5 "$ECHO_BIN" -p "$PORT" -t 1 -q $BACKEND_ARGS >"$TMP/busy.out" 2>"$TMP/busy.err" </dev/null
	st=$?
	err=$(cat "$TMP/busy.err")
	if [ "$st" = 1 ] && [ "$(wc -l <"$TMP/busy.err")" = 1 ] &&
		[[ "$err" == *127.0.0.1* ]] && [[ "$err" == *"$PORT"* ]]; then
		pass "busy port: exit 1, '$err'"
	else
		fail "busy port: exit $st, stderr '$err'"
	fi
	stop_server "$first" || fail "busy port: first server exit $STATUS"
}

test_help_version() {
	local st
	timeout 5 "$ECHO_BIN" -h >"$TMP/h.out" 2>&1
	st=$?
	if [ "$st" = 0 ] && grep -q '^usage: iou-echo' "$TMP/h.out"; then
		pass "-h: exit 0 with usage"
	else
		fail "-h: exit $st"
	fi
	timeout 5 "$ECHO_BIN" -V >"$TMP/v.out" 2>&1
	st=$?
	if [ "$st" = 0 ] && grep -Eq '^iou-echo [0-9]+\.[0-9]+\.[0-9]+$' "$TMP/v.out"; then
		pass "-V: exit 0, '$(cat "$TMP/v.out")'"
	else
		fail "-V: exit $st, '$(cat "$TMP/v.out")'"
	fi
}

# With ulimit -n 64 the server cannot hold 100 connections at once: it must
# stay up, not spin, and serve the rest as clients hang up.
test_fd_limit() {
	local pid i t0 c0 c1 wall cpu hz st
	hz=$(getconf CLK_TCK)
	: >"$TMP/fd.out"
	(ulimit -n 64 && exec "$ECHO_BIN" -p 0 -q $BACKEND_ARGS $MODE_ARGS) >"$TMP/fd.out" 2>"$TMP/fd.err" </dev/null &
	pid=$!
	PIDS+=("$pid")
	PORT=
	for ((i = 0; i < 250; i++)); do
		PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$TMP/fd.out")
		[ -n "$PORT" ] && break
		sleep 0.02
	done
	if [ -z "$PORT" ]; then
		fail "ulimit -n 64: server did not start: $(head -c 300 "$TMP/fd.err")"
		return
	fi
	t0=$(ms_now)
	c0=$(cpu_ticks "$pid")
	"$EC" wave "$PORT" 100 1000 25 >"$TMP/fd.ec" 2>&1
	st=$?
	c1=$(cpu_ticks "$pid")
	wall=$(($(ms_now) - t0))
	cpu=$(((c1 - c0) * 1000 / hz))
	if [ "$st" = 0 ]; then
		pass "ulimit -n 64: $(cat "$TMP/fd.ec")"
	else
		fail "ulimit -n 64: client status $st: $(head -c 300 "$TMP/fd.ec")"
	fi
	if [ "$wall" -lt 1500 ]; then
		fail "ulimit -n 64: done in $wall ms: the fd limit was never hit?"
	fi
	if [ $((cpu * 4)) -gt "$wall" ]; then
		fail "ulimit -n 64: server used $cpu ms CPU in $wall ms (spinning?)"
	else
		pass "ulimit -n 64: server CPU $cpu ms in $wall ms"
	fi
	if kill -0 "$pid" 2>/dev/null; then
		pass "ulimit -n 64: server still running"
		stop_server "$pid" || fail "ulimit -n 64: exit status $STATUS on SIGTERM"
	else
		wait "$pid"
		fail "ulimit -n 64: server exited with status $?: $(head -c 300 "$TMP/fd.err")"
	fi
}

# --max-conns 2 with 4 clients connected at once: the server closes 2 of
# them at once (before they send anything) and echoes on the other 2; the
# slots come back when those hang up.
test_max_conns() {
	local out i ok=
	start_server maxc -q --max-conns 2 || { fail "--max-conns: server did not start"; return; }
	if ! "$EC" limit "$PORT" 4 500 >"$TMP/maxc.ec" 2>&1; then
		fail "--max-conns 2: $(head -c 300 "$TMP/maxc.ec")"
	else
		out=$(cat "$TMP/maxc.ec")
		if [[ "$out" =~ ^limit:\ 2\ of\ 4\ closed\ .*\ after\ ([0-9]+)\ ms\),\ 2\ served,\ 0\ bad$ ]]; then
			pass "--max-conns 2, 4 clients at once: 2 closed by the server (the last after ${BASH_REMATCH[1]} ms), 2 echoed"
		else
			fail "--max-conns 2, 4 clients at once: '$out'"
		fi
	fi
	# the 4 closed connections gave their slots back
	for ((i = 0; i < 20; i++)); do
		if "$EC" echo "$PORT" 1024 2 >"$TMP/maxc2.ec" 2>&1; then
			ok=1
			break
		fi
		sleep 0.05
	done
	if [ -n "$ok" ]; then
		pass "--max-conns 2: 2 new clients served once the first ones closed"
	else
		fail "--max-conns 2: slots not freed: $(head -c 300 "$TMP/maxc2.ec")"
	fi
	stop_server "$SPID" || fail "--max-conns: exit status $STATUS on SIGTERM"
}

# --idle-timeout 1: a silent client is closed after about 1 s; one that
# sends a line every 100 ms is served throughout (2.5 s).
test_idle_timeout() {
	local out t n last
	start_server idle -q --idle-timeout 1 || { fail "--idle-timeout: server did not start"; return; }
	if ! "$EC" idle "$PORT" 2500 >"$TMP/idle.ec" 2>&1; then
		fail "--idle-timeout 1: $(head -c 300 "$TMP/idle.ec")"
	else
		out=$(cat "$TMP/idle.ec")
		if [[ "$out" =~ closed\ after\ (-?[0-9]+)\ ms.*:\ ([0-9]+)\ lines\ echoed,\ the\ last\ after\ (-?[0-9]+)\ ms$ ]]; then
			t=${BASH_REMATCH[1]} n=${BASH_REMATCH[2]} last=${BASH_REMATCH[3]}
			if [ "$t" -ge 900 ] && [ "$t" -le 1800 ]; then
				pass "--idle-timeout 1: silent client closed after $t ms"
			else
				fail "--idle-timeout 1: silent client closed after $t ms (-1: never), want about 1000"
			fi
			if [ "$n" -ge 15 ] && [ "$last" -ge 2000 ]; then
				pass "--idle-timeout 1: active client served for 2.5 s ($n lines, the last after $last ms)"
			else
				fail "--idle-timeout 1: active client: $n lines, the last after $last ms"
			fi
		else
			fail "--idle-timeout 1: client said '$out'"
		fi
	fi
	stop_server "$SPID" || fail "--idle-timeout: exit status $STATUS on SIGTERM"
}

# check_conn_log NAME ADDR-RE COUNT WHAT: $TMP/NAME.err holds, for COUNT
# distinct clients, one "client ADDR:PORT connected" and one "client
# ADDR:PORT disconnected" line each, and nothing else.
check_conn_log() {
	local name=$1 re=$2 count=$3 what=$4 err=$TMP/$1.err n_conn n_disc n_all
	n_all=$(grep -vc '^backend: ' "$err")
	n_conn=$(grep -Ec "^client $re:[0-9]+ connected\$" "$err")
	n_disc=$(grep -Ec "^client $re:[0-9]+ disconnected\$" "$err")
	sed -n 's/^client \(.*\) connected$/\1/p' "$err" | sort >"$TMP/$name.conn"
	sed -n 's/^client \(.*\) disconnected$/\1/p' "$err" | sort >"$TMP/$name.disc"
	if [ "$n_conn" = "$count" ] && [ "$n_disc" = "$count" ] &&
		[ "$n_all" = $((2 * count)) ] &&
		[ "$(sort -u "$TMP/$name.conn" | wc -l)" = "$count" ] &&
		cmp -s "$TMP/$name.conn" "$TMP/$name.disc"; then
		pass "$what: one connected and one disconnected line per client ($(grep -m 1 '^client' "$err"))"
	else
		fail "$what: $n_conn connected, $n_disc disconnected, $n_all lines for $count clients: $(head -c 400 "$err")"
	fi
}

# Without -q: "client ADDR:PORT connected" / "... disconnected" on stderr,
# one each per connection, the second when the client hangs up (not at
# shutdown).
test_conn_log() {
	local i
	start_server log || { fail "log lines: server did not start"; return; }
	if ! "$EC" echo "$PORT" 100 3 >"$TMP/log.ec" 2>&1; then
		fail "log lines: clients: $(head -c 300 "$TMP/log.ec")"
	fi
	for ((i = 0; i < 50; i++)); do
		[ "$(grep -c ' disconnected$' "$TMP/log.err")" -ge 3 ] && break
		sleep 0.02
	done
	check_conn_log log '127\.0\.0\.1' 3 "log lines, 3 clients"
	stop_server "$SPID" || fail "log lines: exit status $STATUS on SIGTERM"
}

# -H ::1 serves over IPv6 (when the loopback has ::1).
test_ipv6() {
	local line i
	if ! grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6 2>/dev/null; then
		say "skip: -H ::1: no IPv6 loopback address here (not in /proc/net/if_inet6)"
		return
	fi
	start_server v6 -H ::1 || { fail "-H ::1: server did not start: $(head -c 300 "$TMP/v6.err")"; return; }
	line=$(head -n 1 "$TMP/v6.out")
	if [[ "$line" =~ ^listening\ on\ \[::1\]:[0-9]+$ ]]; then
		pass "-H ::1: listening line '$line'"
	else
		fail "-H ::1: listening line '$line'"
	fi
	if EC_HOST=::1 "$EC" echo "$PORT" 65536 2 >"$TMP/v6.ec" 2>&1; then
		pass "-H ::1: 2 clients x 64 KiB echoed over IPv6"
	else
		fail "-H ::1: $(head -c 300 "$TMP/v6.ec")"
	fi
	for ((i = 0; i < 50; i++)); do
		[ "$(grep -c ' disconnected$' "$TMP/v6.err")" -ge 2 ] && break
		sleep 0.02
	done
	check_conn_log v6 '\[::1\]' 2 "-H ::1 log lines"
	stop_server "$SPID" || fail "-H ::1: exit status $STATUS on SIGTERM"
}

# An address that is not local here, or not numeric: exit 1 with one line
# naming it, and no listening line.
test_bad_host() {
	local host hosts="198.51.100.1 localhost" st err
	if [ "$(cat /proc/sys/net/ipv4/ip_nonlocal_bind 2>/dev/null)" = 1 ]; then
		say "skip: -H 198.51.100.1: net.ipv4.ip_nonlocal_bind is 1, binding would succeed"
		hosts=localhost
	elif command -v ip >/dev/null && ip -o addr | grep -q ' 198\.51\.100\.1/'; then
		say "skip: -H 198.51.100.1: this host owns that address"
		hosts=localhost
	fi
	for host in $hosts; do
		timeout 5 "$ECHO_BIN" -H "$host" -p 0 -q $BACKEND_ARGS >"$TMP/host.out" 2>"$TMP/host.err" </dev/null
		st=$?
		err=$(cat "$TMP/host.err")
		if [ "$st" = 1 ] && [ "$(wc -l <"$TMP/host.err")" = 1 ] && [ ! -s "$TMP/host.out" ] &&
			[[ "$err" == "iou-echo: cannot listen on $host "* ]]; then
			pass "-H $host: exit 1, '$err'"
		else
			fail "-H $host: exit $st, stdout '$(head -c 100 "$TMP/host.out")', stderr '$err'"
		fi
	done
}

# One "backend: NAME" line on stderr, before the listening line, naming
# the backend asked for (IOU_BACKEND); the listening line stays alone on
# stdout.
test_backend_line() {
	local line
	start_server bline -q || { fail "backend line: server did not start"; return; }
	line=$(grep '^backend: ' "$TMP/bline.err")
	if [ "$(grep -c '^backend: ' "$TMP/bline.err")" != 1 ] ||
		! [[ "$line" =~ ^backend:\ (io_uring|epoll)$ ]]; then
		fail "backend line: stderr '$(head -c 300 "$TMP/bline.err")'"
	elif [ -n "$BACKEND_NAME" ] && [ "$line" != "backend: $BACKEND_NAME" ]; then
		fail "backend line '$line' with $BACKEND_ARGS"
	elif [ "$(wc -l <"$TMP/bline.out")" != 1 ]; then
		fail "backend line: stdout '$(head -c 300 "$TMP/bline.out")'"
	else
		pass "backend line '$line'${BACKEND_ARGS:+ with $BACKEND_ARGS}, the listening line alone on stdout"
	fi
	stop_server "$SPID" || fail "backend line: exit status $STATUS on SIGTERM"
}

# --backend uring and --backend epoll: the server runs on that backend
# (stderr: "backend: io_uring" / "backend: epoll"), or, where it is
# unavailable, exits 1 at once with one line that names the option.
test_backend_option() {
	local b want st line saved=$BACKEND_ARGS
	BACKEND_ARGS=
	for b in uring epoll auto; do
		case $b in
		uring) want='backend: io_uring' ;;
		epoll) want='backend: epoll' ;;
		auto) want='backend: \(io_uring\|epoll\)' ;;
		esac
		if start_server "bopt$b" -q --backend "$b"; then
			line=$(grep '^backend: ' "$TMP/bopt$b.err")
			if grep -qx "$want" "$TMP/bopt$b.err"; then
				pass "--backend $b: '$line'"
			else
				fail "--backend $b: stderr '$(head -c 300 "$TMP/bopt$b.err")'"
			fi
			stop_server "$SPID" || fail "--backend $b: exit status $STATUS on SIGTERM"
			continue
		fi
		wait_exit "$SPID" 5000
		st=$STATUS
		line=$(cat "$TMP/bopt$b.err")
		if [ "$st" = 1 ] && [ "$(wc -l <"$TMP/bopt$b.err")" = 1 ] && [ ! -s "$TMP/bopt$b.out" ] &&
			[[ "$line" == "iou-echo: cannot create the event loop (--backend $b): "* ]]; then
			pass "--backend $b unavailable here: exit 1, '$line'"
		else
			fail "--backend $b: exit $st, stdout '$(head -c 100 "$TMP/bopt$b.out")', stderr '$(head -c 300 "$TMP/bopt$b.err")'"
		fi
	done
	BACKEND_ARGS=$saved
}

# The server's behaviour, with callbacks and with a task per connection
# (--tasks): the same checks.
for MODE_ARGS in "" --tasks; do
	test_listening_line
	test_echo_sizes
	test_concurrent
	test_half_close
	test_threads
	test_threads_exit
	test_sigterm_busy
	test_second_signal TERM 143
	test_second_signal INT 130 -t 2
	test_fd_limit
	test_max_conns
	test_idle_timeout
	test_conn_log
	test_ipv6
done
MODE_ARGS=
test_backend_line
test_backend_option
test_bad_usage
test_busy_port
test_help_version
test_bad_host

say "iou-echo.sh: $FAILS failed, $((SECONDS - START)) s"
[ "$FAILS" = 0 ]

#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Tests of the programs in examples/: http-get against a small HTTP
# responder (tests/progs/http-responder.c), echo-server
# with tcp-client, and tcp-client against tools/iou-echo.  Every server is
# started here on 127.0.0.1 port 0 and killed by the EXIT trap.
#
# Exit status: 0 pass, 1 fail, 77 skip (io_uring unavailable).
# Run by `make check` with IOU_BUILD=<repo root>; also runs stand-alone.

set -u

TOP=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
EX=$TOP/examples
ECHO_BIN=$TOP/tools/iou-echo
TMP=$(mktemp -d "${TMPDIR:-/tmp}/iou-examples-test.XXXXXX") || exit 1
PIDS=()
FAILS=0

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null # reaped quietly: no "Killed" line
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

say() { printf '%s\n' "$*"; }
fail() {
	say "FAIL: $*"
	FAILS=$((FAILS + 1))
}
pass() { say "ok: $*"; }

for b in http-get http-get-task echo-server echo-server-task tcp-client tcp-client-task; do
	if [ ! -x "$EX/$b" ]; then
		say "FAIL: $EX/$b not built"
		exit 1
	fi
done

# ---- the HTTP responder ------------------------------------------------------

R=$TOP/tests/progs/http-responder
if [ ! -x "$R" ]; then
	say "FAIL: $R not built"
	exit 1
fi

# ---- helpers ----------------------------------------------------------------

# wait_port FILE PID: waits up to 5 s for a port number (last field of the
# first line) in FILE; prints it.  Fails if PID exits first.
wait_port() {
	local file=$1 pid=$2 i port
	for ((i = 0; i < 250; i++)); do
		port=$(sed -n '1s/^\(.*[^0-9]\)\{0,1\}\([0-9][0-9]*\)$/\2/p' "$file")
		if [ -n "$port" ]; then
			printf '%s\n' "$port"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.02
	done
	return 1
}

# wait_exit PID MS: waits up to MS ms for PID (a child) to exit; sets STATUS
# (its exit status, or "running").
wait_exit() {
	local pid=$1 ms=$2 i
	STATUS=running
	for ((i = 0; i < ms / 20; i++)); do
		if ! kill -0 "$pid" 2>/dev/null ||
			[ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
			wait "$pid"
			STATUS=$?
			return 0
		fi
		sleep 0.02
	done
	return 1
}

# run NAME CMD...: runs CMD (15 s limit) with stdout/stderr in $TMP/NAME.out
# and .err; sets RC.
run() {
	local name=$1
	shift
	timeout -k 2 15 "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null
	RC=$?
}

# expect NAME RC: checks the exit status of the last run.
expect_rc() {
	if [ "$RC" -ne "$2" ]; then
		fail "$1: exit status $RC, want $2 (stderr: $(head -c 300 "$TMP/$1.err"))"
		return 1
	fi
	return 0
}

ms_now() { echo $(($(date +%s%N) / 1000000)); }

# ---- io_uring available? ----------------------------------------------------

"$EX/echo-server" 0 >"$TMP/es.out" 2>"$TMP/es.err" </dev/null &
ESPID=$!
PIDS+=("$ESPID")
if ! EPORT=$(wait_port "$TMP/es.out" "$ESPID"); then
	if grep -q "cannot create the event loop" "$TMP/es.err"; then
		say "SKIP: $(head -n 1 "$TMP/es.err")"
		exit 77
	fi
	say "FAIL: echo-server did not start: $(head -c 300 "$TMP/es.err")"
	exit 1
fi
if [[ "$(head -n 1 "$TMP/es.out")" =~ ^listening\ on\ 127\.0\.0\.1:[0-9]+$ ]]; then
	pass "echo-server: listening line"
else
	fail "echo-server: listening line '$(head -n 1 "$TMP/es.out")'"
fi

# ---- http-get ----------------------------------------------------------------

mkdir "$TMP/req"
"$R" serve "$TMP/req" >"$TMP/r.out" 2>"$TMP/r.err" </dev/null &
RPID=$!
PIDS+=("$RPID")
if ! RPORT=$(wait_port "$TMP/r.out" "$RPID"); then
	say "FAIL: the responder did not start: $(head -c 300 "$TMP/r.err")"
	exit 1
fi

# get_ok NAME PATH STATUSLINE BODYNAME [HOST]: http-get succeeds (exit 0) and
# prints the status line, a newline, and the body byte for byte.
get_ok() {
	local name=$1 path=$2 status=$3 body=$4 host=${5:-127.0.0.1}
	run "$name" "$EX/$GET" "$host" "$RPORT" $path
	expect_rc "$name" 0 || return
	{ printf '%s\n' "$status"; [ -n "$body" ] && "$R" body "$body"; } >"$TMP/$name.exp"
	if cmp -s "$TMP/$name.out" "$TMP/$name.exp"; then
		pass "$GET $name"
	else
		fail "$GET $name: stdout differs from the expected $(wc -c <"$TMP/$name.exp") bytes ($(wc -c <"$TMP/$name.out") bytes)"
	fi
}

# get_fail NAME PATH STDERR-PATTERN STDOUT-BODYNAME STATUSLINE: exit 1 with a
# one-line message matching the pattern (empty: no message) and the expected
# stdout.
get_fail() {
	local name=$1 path=$2 pattern=$3 body=$4 status=$5
	run "$name" "$EX/$GET" 127.0.0.1 "$RPORT" "$path"
	expect_rc "$name" 1 || return
	if [ -z "$pattern" ]; then
		if [ -s "$TMP/$name.err" ]; then
			fail "$GET $name: unexpected stderr '$(head -c 200 "$TMP/$name.err")'"
			return
		fi
	elif [ "$(wc -l <"$TMP/$name.err")" -ne 1 ] ||
		! grep -q -- "$pattern" "$TMP/$name.err"; then
		fail "$GET $name: stderr '$(head -c 200 "$TMP/$name.err")', want one line matching '$pattern'"
		return
	fi
	{ printf '%s\n' "$status"; [ -n "$body" ] && "$R" body "$body"; } >"$TMP/$name.exp"
	if cmp -s "$TMP/$name.out" "$TMP/$name.exp"; then
		pass "$GET $name: exit 1${pattern:+, '$(cat "$TMP/$name.err")'}"
	else
		fail "$GET $name: stdout differs from the expected"
	fi
}

# Both programs, the callback one and the task one, pass the same checks.
for GET in http-get http-get-task; do
	get_ok ok /ok "HTTP/1.1 200 OK" ok
	printf 'GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >"$TMP/req.exp"
	if cmp -s "$TMP/req/req_ok" "$TMP/req.exp"; then
		pass "$GET sends the request byte for byte"
	else
		fail "$GET request: got '$(cat -v "$TMP/req/req_ok" 2>/dev/null)'"
	fi
	get_ok default-path "" "HTTP/1.1 200 OK" ok
	if [ -f "$TMP/req/req_" ] && head -n 1 "$TMP/req/req_" | grep -q '^GET / HTTP/1.1'; then
		pass "$GET without PATH asks for /"
	else
		fail "$GET without PATH: request '$(head -n 1 "$TMP/req/req_" 2>/dev/null | cat -v)'"
	fi
	get_ok lower /lower "HTTP/1.0 201 Created" lower
	get_ok big /big "HTTP/1.1 200 OK" big
	get_ok empty /empty "HTTP/1.1 204 No Content" ""
	get_ok split /split "HTTP/1.1 200 OK" split
	get_ok localhost /ok "HTTP/1.1 200 OK" ok localhost
	if grep -q '^Host: localhost' "$TMP/req/req_ok"; then
		pass "$GET sends the host name it was given"
	else
		fail "$GET localhost: request '$(cat -v "$TMP/req/req_ok")'"
	fi

	get_fail 404 /404 "" 404 "HTTP/1.1 404 Not Found"
	get_fail nolen /nolen "no Content-Length" "" "HTTP/1.1 200 OK"
	get_fail nohead /nohead "no Content-Length" "" "HTTP/1.0 200 OK"
	get_fail badlen /badlen "malformed Content-Length" "" "HTTP/1.1 200 OK"
	get_fail short /short "short body" short "HTTP/1.1 200 OK"
	get_fail bighead /bighead "header section longer than 65536 bytes" "" "HTTP/1.1 200 OK"

	FREE=$("$R" freeport)
	run refused "$EX/$GET" 127.0.0.1 "$FREE" /
	if expect_rc refused 1; then
		if [ "$(wc -l <"$TMP/refused.err")" -eq 1 ] &&
			grep -q "cannot connect to 127.0.0.1 port $FREE: .*refused" "$TMP/refused.err"; then
			pass "$GET to a closed port: '$(cat "$TMP/refused.err")'"
		else
			fail "$GET to a closed port: stderr '$(cat "$TMP/refused.err")'"
		fi
	fi
	# A first label of 64 bytes (DNS allows 63): glibc rejects the name without
	# sending a query, so nothing leaves the host and no resolver timeout waits.
	NOHOST=$(printf 'a%.0s' $(seq 64)).invalid
	run nohost "$EX/$GET" "$NOHOST" 80 /
	expect_rc nohost 1 && pass "$GET to an unknown host: '$(cat "$TMP/nohost.err")'"
done

# ---- echo-server and tcp-client ---------------------------------------------

# Both servers, the callback one and the task one, pass the same checks.
for ES in echo-server echo-server-task; do
	if [ "$ES" != echo-server ]; then
		"$EX/$ES" 0 >"$TMP/es.out" 2>"$TMP/es.err" </dev/null &
		ESPID=$!
		PIDS+=("$ESPID")
		if ! EPORT=$(wait_port "$TMP/es.out" "$ESPID"); then
			fail "$ES did not start: $(head -c 300 "$TMP/es.err")"
			continue
		fi
	fi

	# Both clients, the callback one and the task one, pass the same checks.
	for CLIENT in tcp-client tcp-client-task; do
		run hello "$EX/$CLIENT" 127.0.0.1 "$EPORT" "hello, iou ✓"
		if expect_rc hello 0; then
			if [ "$(cat "$TMP/hello.out")" = "hello, iou ✓" ]; then
				pass "$CLIENT via $ES"
			else
				fail "$CLIENT via $ES: got '$(cat -v "$TMP/hello.out")'"
			fi
		fi
		LONG=$(printf 'line %05d of a message longer than the 1 KiB echo buffer\n' $(seq 1 200))
		run long "$EX/$CLIENT" 127.0.0.1 "$EPORT" "$LONG"
		if expect_rc long 0; then
			if [ "$(cat "$TMP/long.out")" = "$LONG" ]; then
				pass "$CLIENT via $ES: ${#LONG} bytes"
			else
				fail "$CLIENT via $ES, ${#LONG} bytes: got $(wc -c <"$TMP/long.out")"
			fi
		fi
	done
	if grep -q '^client 127\.0\.0\.1:[0-9][0-9]* connected$' "$TMP/es.err"; then
		pass "$ES logs '$(head -n 1 "$TMP/es.err")'"
	else
		fail "$ES log: '$(head -c 200 "$TMP/es.err")'"
	fi
	# Graceful shutdown: a client still connected is served to its end, new
	# connections are refused, and the server then exits 0.
	rm -f "$TMP/grace.out" # the last round's: not this client's answer
	timeout -k 2 15 "$EX/tcp-client" 127.0.0.1 "$EPORT" "still here" \
		>"$TMP/grace.out" 2>"$TMP/grace.err" </dev/null &
	CPID=$!
	PIDS+=("$CPID")
	for ((i = 0; i < 100; i++)); do
		[ -s "$TMP/grace.out" ] && break
		sleep 0.02
	done
	kill -TERM "$ESPID"
	sleep 0.2
	if kill -0 "$ESPID" 2>/dev/null && [ "$(awk '{ print $3 }' "/proc/$ESPID/stat")" != Z ]; then
		pass "$ES waits for a connected client after SIGTERM"
	else
		fail "$ES exited with a client still connected"
	fi
	run after "$EX/tcp-client" 127.0.0.1 "$EPORT" x
	expect_rc after 1 && pass "$ES refuses new clients while shutting down"
	wait_exit "$CPID" 5000
	if [ "$STATUS" = 0 ] && [ "$(cat "$TMP/grace.out")" = "still here" ]; then
		pass "the connected client was served to its end"
	else
		fail "client during shutdown: status $STATUS, got '$(cat -v "$TMP/grace.out")'"
	fi
	wait_exit "$ESPID" 5000
	if [ "$STATUS" = 0 ] && grep -q '^shutdown: 1 connections finished, 0 cut$' "$TMP/es.err"; then
		pass "$ES: graceful shutdown, exit 0"
	else
		fail "$ES shutdown: status $STATUS, stderr '$(tail -n 2 "$TMP/es.err")'"
	fi

	# A second signal during the grace period ends it at once, with 128 + the
	# signal's number (SIGINT: 130).  A connection held open keeps it in grace.
	"$EX/$ES" 0 >"$TMP/es2.out" 2>"$TMP/es2.err" </dev/null &
	ES2PID=$!
	PIDS+=("$ES2PID")
	if E2PORT=$(wait_port "$TMP/es2.out" "$ES2PID") &&
		exec 3<>"/dev/tcp/127.0.0.1/$E2PORT"; then
		for ((i = 0; i < 100; i++)); do
			grep -q connected "$TMP/es2.err" && break
			sleep 0.02
		done
		kill -TERM "$ES2PID"
		for ((i = 0; i < 100; i++)); do
			grep -q '^shutting down' "$TMP/es2.err" && break
			sleep 0.02
		done
		kill -INT "$ES2PID"
		wait_exit "$ES2PID" 3000
		exec 3>&-
		if [ "$STATUS" = 130 ] && grep -q '^echo-server: second signal, exiting now$' "$TMP/es2.err"; then
			pass "$ES: second signal in the grace period, exit 130"
		else
			fail "$ES second signal: status $STATUS, stderr '$(tail -n 2 "$TMP/es2.err")'"
		fi
	else
		fail "$ES did not start or take a connection: $(head -c 300 "$TMP/es2.err")"
	fi
done

# ---- tcp-client against tools/iou-echo and the responder --------------------

if [ -x "$ECHO_BIN" ]; then
	"$ECHO_BIN" -p 0 -q >"$TMP/ie.out" 2>"$TMP/ie.err" </dev/null &
	IEPID=$!
	PIDS+=("$IEPID")
	if IEPORT=$(wait_port "$TMP/ie.out" "$IEPID"); then
		for CLIENT in tcp-client tcp-client-task; do
			run ie "$EX/$CLIENT" 127.0.0.1 "$IEPORT" "echo through iou-echo"
			if expect_rc ie 0 && [ "$(cat "$TMP/ie.out")" = "echo through iou-echo" ]; then
				pass "$CLIENT via tools/iou-echo"
			else
				fail "$CLIENT via tools/iou-echo: got '$(cat -v "$TMP/ie.out")'"
			fi
		done
	else
		fail "tools/iou-echo did not start: $(head -c 300 "$TMP/ie.err")"
	fi
	kill -TERM "$IEPID" 2>/dev/null
	wait_exit "$IEPID" 5000
else
	fail "$ECHO_BIN not built"
fi

# The peer closes: tcp-client ends at once, not after a second of silence.
for CLIENT in tcp-client tcp-client-task; do
	t0=$(ms_now)
	run closing "$EX/$CLIENT" 127.0.0.1 "$RPORT" $'GET /404 HTTP/1.1\r\n\r\n'
	t1=$(ms_now)
	printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nno such page\n' >"$TMP/closing.exp"
	if expect_rc closing 0; then
		if ! cmp -s "$TMP/closing.out" "$TMP/closing.exp"; then
			fail "$CLIENT, peer closes: got '$(cat -v "$TMP/closing.out")'"
		elif [ $((t1 - t0)) -ge 900 ]; then
			fail "$CLIENT, peer closes: took $((t1 - t0)) ms"
		else
			pass "$CLIENT ends when the peer closes ($((t1 - t0)) ms)"
		fi
	fi
	run crefused "$EX/$CLIENT" 127.0.0.1 "$FREE" x
	if expect_rc crefused 1 && [ "$(wc -l <"$TMP/crefused.err")" -eq 1 ]; then
		pass "$CLIENT to a closed port: '$(cat "$TMP/crefused.err")'"
	fi
done

# ---- bad usage ----------------------------------------------------------------

usage_case() {
	run usage "$@"
	if [ "$RC" -eq 2 ] && [ -s "$TMP/usage.err" ]; then
		pass "usage: ${*#"$EX"/} -> 2"
	else
		fail "usage: ${*#"$EX"/}: exit status $RC, want 2"
	fi
}
usage_case "$EX/http-get-task"
usage_case "$EX/http-get-task" 127.0.0.1 0
usage_case "$EX/tcp-client-task" 127.0.0.1 80
usage_case "$EX/http-get"
usage_case "$EX/http-get" 127.0.0.1
usage_case "$EX/http-get" 127.0.0.1 http
usage_case "$EX/http-get" 127.0.0.1 0
usage_case "$EX/http-get" 127.0.0.1 80 no-slash
usage_case "$EX/http-get" 127.0.0.1 80 / extra
usage_case "$EX/echo-server-task" nope
usage_case "$EX/echo-server" nope
usage_case "$EX/echo-server" 70000
usage_case "$EX/echo-server" 1 2
usage_case "$EX/tcp-client" 127.0.0.1 80
usage_case "$EX/tcp-client" 127.0.0.1 x msg

if [ "$FAILS" -gt 0 ]; then
	say "$FAILS failed"
	exit 1
fi
say "all passed"
exit 0

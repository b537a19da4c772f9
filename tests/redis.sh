#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# examples/redis-task (a Redis-protocol server with a task per connection)
# against the real clients: redis-cli (RESP arrays, inline commands on
# stdin) and redis-benchmark (SET/GET, plain and pipelined 16 deep, 50
# connections).  Skips with a reason when redis-tools is not installed
# (Debian: redis-tools).  The server is started here on 127.0.0.1 port 0
# and stopped with SIGTERM (exit 0 expected).
#
# Exit status: 0 pass, 1 fail, 77 skip.
TOP=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
RT=$TOP/examples/redis-task
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }

for tool in redis-cli redis-benchmark; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "SKIP: $tool not installed (apt-get install redis-tools)"
		exit 77
	fi
done
[ -x "$RT" ] || { echo "FAIL: $RT not built"; exit 1; }
TMP=$(mktemp -d) || exit 1
SPID=
cleanup() {
	[ -n "$SPID" ] && kill -KILL "$SPID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

"$RT" 0 >"$TMP/out" 2>"$TMP/err" </dev/null &
SPID=$!
PORT=
for ((i = 0; i < 250; i++)); do
	PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$TMP/out")
	[ -n "$PORT" ] && break
	if ! kill -0 "$SPID" 2>/dev/null; then
		if grep -q "cannot create the event loop" "$TMP/err"; then
			echo "SKIP: $(head -n 1 "$TMP/err")"
			exit 77
		fi
		break
	fi
	sleep 0.02
done
[ -n "$PORT" ] || { echo "FAIL: redis-task did not start: $(head -c 300 "$TMP/err")"; exit 1; }

cli() { timeout 10 redis-cli -h 127.0.0.1 -p "$PORT" "$@" 2>&1; }
expect() { # NAME WANT GOT
	if [ "$3" = "$2" ]; then pass "$1: '$3'"; else fail "$1: got '$3', want '$2'"; fi
}

expect "PING" "PONG" "$(cli ping)"
expect "PING msg" "hello" "$(cli ping hello)"
expect "SET" "OK" "$(cli set greeting 'hello, iou')"
expect "GET" "hello, iou" "$(cli get greeting)"
expect "GET missing" "" "$(cli get nope)"
expect "DEL 2 keys, 1 there" "1" "$(cli del greeting nope)"
expect "GET after DEL" "" "$(cli get greeting)"
# A value above the stream's 256 KiB buffer (read straight into the
# argument's memory), sent from a file: too long for a command line.
head -c 300000 /dev/zero | tr '\0' 'x' >"$TMP/big"
expect "SET of a 300 000-byte value" "OK" "$(timeout 10 redis-cli -h 127.0.0.1 -p "$PORT" -x set big <"$TMP/big" 2>&1)"
got=$(cli get big)
expect "GET of a 300 000-byte value" "300000" "${#got}"
expect "unknown command" "ERR unknown command or wrong arguments 'fly'" "$(cli fly)"
# Inline commands (no RESP), several in one write.
got=$(printf 'SET k1 v1\r\nGET k1\r\nPING\r\n' | timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT; cat >&3; timeout 1 cat <&3" | tr -d '\r' | tr '\n' ' ')
expect "inline, pipelined" "+OK \$2 v1 +PONG " "$got"

for p in 1 16; do
	out=$(timeout 60 redis-benchmark -h 127.0.0.1 -p "$PORT" -t set,get -n 20000 -c 50 -P "$p" -q 2>&1 | tr '\r' '\n' | grep -E '^(SET|GET): [0-9.]+ requests per second')
	if [ "$(printf '%s\n' "$out" | grep -c 'requests per second')" = 2 ]; then
		pass "redis-benchmark -P $p: $(printf '%s' "$out" | sed 's/, p50=.*//' | tr '\n' ';')"
	else
		fail "redis-benchmark -P $p: '$out'"
	fi
done
expect "GET after the benchmark" "OK" "$(cli set after 1)"

kill -TERM "$SPID"
for ((i = 0; i < 250; i++)); do
	kill -0 "$SPID" 2>/dev/null || break
	sleep 0.02
done
if kill -0 "$SPID" 2>/dev/null; then
	fail "redis-task still running 5 s after SIGTERM"
else
	wait "$SPID"
	rc=$?
	SPID=
	[ "$rc" = 0 ] && pass "SIGTERM: exit 0" || fail "SIGTERM: exit $rc"
fi
echo "redis.sh: $FAILS failed"
[ "$FAILS" = 0 ]

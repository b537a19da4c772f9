#!/bin/bash
# SPDX-License-Identifier: MIT
#
# tests/iou-bench.sh: tools/iou-bench against tools/iou-echo and against
# deliberately faulty echo servers (tests/progs/faulty-server.c):
#   corrupt N      flips one byte of every N echoed
#   stall P S      echoes, but sits still for the first S ms of every P ms
#   stallat D S    echoes, but sits still from D ms after the first accept,
#                  for S ms
#   close N        closes a connection once it received N bytes
#   blackhole      reads and never answers
#
# Checks: usage errors exit 2 with one line on stderr; nothing listening
# exits 1 with one line; correct counts and well-formed JSON (every key)
# against iou-echo, closed and open loop, pipelined, multi-threaded;
# mismatches detected (exit 1); open-loop p50 near the round trip (the
# client's 1 ms tick adds nothing); open-loop p99 grows when the server
# stalls, also when the stall runs past the end of the window (answered in
# the drain: exit 0) or past the drain limit (timeouts: exit 1); connection
# errors and timeouts counted (exit 1); --backend: the backend named in the
# summary and the JSON, an unavailable one exits 1 with one line.
#
# IOU_BACKEND=uring|epoll (as make check sets it for each backend's pass)
# runs iou-bench and iou-echo with --backend NAME; the variable itself is
# kept from them, so the option alone decides.
#
# Exit 0 on success, 1 on failure, 77 when the backend is unavailable.
# Every server listens on 127.0.0.1 port 0 and is killed on exit.  About
# 20 s, never more than about 60 s.  IOU_BENCH=path tests another build of
# iou-bench (e.g. one with sanitizers).

set -u

ROOT=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
BENCH=${IOU_BENCH:-$ROOT/tools/iou-bench}
ECHO=$ROOT/tools/iou-echo

TMP=$(mktemp -d "${TMPDIR:-/tmp}/iou-bench-test.XXXXXX") || exit 1
PIDS=
# shellcheck disable=SC2317 # (called by the trap)
cleanup() {
	for p in $PIDS; do
		kill -9 "$p" 2>/dev/null
	done
	wait 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

FAILS=0
DEADLINE=$(($(date +%s) + 55))
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }

for f in "$BENCH" "$ECHO"; do
	if [ ! -x "$f" ]; then
		echo "FAIL $f not built"
		exit 1
	fi
done

BACKEND=${IOU_BACKEND:-}
unset IOU_BACKEND
case $BACKEND in
"") BACKEND_ARGS='' BACKEND_NAME='' ;;
uring | io_uring) BACKEND_ARGS="--backend uring" BACKEND_NAME=io_uring ;;
epoll) BACKEND_ARGS="--backend epoll" BACKEND_NAME=epoll ;;
*)
	echo "FAIL IOU_BACKEND='$BACKEND': want uring or epoll"
	exit 1
	;;
esac

# start_server NAME CMD...: sets PORT (empty on failure) and SPID
start_server() {
	local name=$1 i
	shift
	: >"$TMP/$name.out"
	"$@" >>"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null &
	SPID=$!
	PIDS="$PIDS $SPID"
	PORT=
	for i in $(seq 100); do
		PORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$TMP/$name.out")
		[ -n "$PORT" ] && return 0
		kill -0 "$SPID" 2>/dev/null || break
		sleep 0.05
	done
	return 1
}

stop_server() {
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# bench NAME ARGS...: runs iou-bench, sets RC, OUT (stdout), ERR (stderr), JS
bench() {
	local name=$1 left limit=15
	shift
	OUT=$TMP/$name.bout
	ERR=$TMP/$name.berr
	: >"$OUT"
	: >"$ERR"
	JS=
	# Each run gets at most 15 s, and the whole script at most 55 s.
	left=$((DEADLINE - $(date +%s)))
	[ "$left" -lt "$limit" ] && limit=$left
	if [ "$limit" -le 0 ]; then
		RC=124
		echo "time budget used up" >"$ERR"
		return
	fi
	# shellcheck disable=SC2086
	timeout -k 2 "$limit" "$BENCH" $BACKEND_ARGS "$@" >"$OUT" 2>"$ERR" </dev/null
	RC=$?
	JS=$(tail -n 1 "$OUT")
}

jnum() { # key: first numeric value of "key" in $JS
	printf '%s\n' "$JS" | sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" | head -n 1
}

# awk-evaluated condition on numbers: check "a > b" a b
check() {
	awk -v a="$2" -v b="${3:-0}" -v c="${4:-0}" "BEGIN { exit !($1) }"
}

KEYS="connections length duration_s requests rps bytes_per_s errors mismatches pipeline threads rate"
LKEYS="p50 p90 p99 p999 max"

json_ok() { # the last line of stdout is one JSON object with every key
	if command -v python3 >/dev/null 2>&1; then
		python3 - "$JS" "$KEYS" "$LKEYS" "$BACKEND_NAME" <<'EOF' 2>"$TMP/json.err"
import json, sys
d = json.loads(sys.argv[1])
assert isinstance(d, dict)
for k in sys.argv[2].split():
    assert isinstance(d[k], (int, float)) and not isinstance(d[k], bool), k
lat = d["latency_us"]
for k in sys.argv[3].split():
    assert isinstance(lat[k], (int, float)), "latency_us." + k
assert d["backend"] in ("io_uring", "epoll"), "backend"
if sys.argv[4]:
    assert d["backend"] == sys.argv[4], "backend is not " + sys.argv[4]
EOF
		return $?
	fi
	case $JS in
	'{'*'}') ;;
	*) return 1 ;;
	esac
	for k in $KEYS latency_us $LKEYS; do
		printf '%s\n' "$JS" | grep -q "\"$k\":" || return 1
	done
	printf '%s\n' "$JS" | grep -Eq "\"backend\":\"(${BACKEND_NAME:-io_uring|epoll})\"" || return 1
}

jstr() { # key: the string value of "key" in $JS
	printf '%s\n' "$JS" | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1
}

# ---- the backend available? -------------------------------------------------

# shellcheck disable=SC2086
if ! start_server echo0 "$ECHO" -p 0 -q $BACKEND_ARGS; then
	# io_uring may be unavailable here (the suites skip then too); an
	# epoll server that cannot start is a failure.
	if grep -q 'cannot create the event loop' "$TMP/echo0.err" &&
		[ "$BACKEND_NAME" != epoll ]; then
		echo "SKIP: backend unavailable: $(head -n 1 "$TMP/echo0.err")"
		exit 77
	fi
	echo "FAIL iou-echo did not start: $(head -n 3 "$TMP/echo0.err")"
	exit 1
fi
stop_server "$SPID"

# ---- usage ------------------------------------------------------------------

bench help -h
if [ $RC -eq 0 ] && grep -q '^usage: iou-bench' "$OUT"; then pass "-h"; else fail "-h: status $RC"; fi
bench version -V
if [ $RC -eq 0 ] && grep -q '^iou-bench [0-9]*\.[0-9]*\.[0-9]*$' "$OUT"; then pass "-V"; else fail "-V: status $RC"; fi

i=0
for args in "--bogus" "-x" "-c 0" "-c -5" "-d -1" "-d 0" "-d abc" "-l abc" "-l 0" \
	"-P 0" "-t 0" "-r -1" "-r x" "-p 0" "-p 70000" "-c" "--warmup -1" "extra" \
	"--backend io-uring" "--backend"; do
	i=$((i + 1))
	# shellcheck disable=SC2086
	bench usage$i -p 1 $args
	lines=$(wc -l <"$ERR")
	if [ $RC -eq 2 ] && [ "$lines" -eq 1 ] && [ ! -s "$OUT" ] && grep -q '^iou-bench: ' "$ERR"; then
		pass "bad usage '$args': exit 2, $(cat "$ERR")"
	else
		fail "bad usage '$args': status $RC, $lines stderr line(s): $(head -c 300 "$ERR")"
	fi
done

# ---- nothing listening ------------------------------------------------------

# shellcheck disable=SC2086
start_server echo1 "$ECHO" -p 0 -q $BACKEND_ARGS || fail "iou-echo did not start"
DEAD=$PORT
stop_server "$SPID"
bench refused -p "$DEAD" -c 4 -d 1
lines=$(wc -l <"$ERR")
if [ $RC -eq 1 ] && [ "$lines" -eq 1 ] &&
	grep -q "^iou-bench: cannot connect to 127.0.0.1:$DEAD: Connection refused$" "$ERR"; then
	pass "nothing listening: exit 1, $(cat "$ERR")"
else
	fail "nothing listening: status $RC, $lines stderr line(s): $(head -c 300 "$ERR")"
fi

# ---- against iou-echo -------------------------------------------------------

# shellcheck disable=SC2086
start_server echo "$ECHO" -p 0 -q $BACKEND_ARGS || { fail "iou-echo did not start"; exit 1; }
EPORT=$PORT

# good_run NAME what: exit 0, JSON with every key, requests > 0, no errors
good_run() {
	local name=$1
	if [ $RC -ne 0 ]; then
		fail "$name: status $RC: $(head -c 300 "$ERR")"
		return 1
	fi
	if ! json_ok; then
		fail "$name: bad JSON on the last line: $JS $(cat "$TMP/json.err" 2>/dev/null)"
		return 1
	fi
	if ! check 'a > 0' "$(jnum requests)" || [ "$(jnum errors)" != 0 ] ||
		[ "$(jnum mismatches)" != 0 ]; then
		fail "$name: requests $(jnum requests), errors $(jnum errors), mismatches $(jnum mismatches)"
		return 1
	fi
	# rps = requests / duration_s, bytes_per_s = rps * length
	if ! check 'a > 0 && (a - b / c) < 0.01 * a && (a - b / c) > -0.01 * a' \
		"$(jnum rps)" "$(jnum requests)" "$(jnum duration_s)" ||
		! check '(a - b * c) < 0.01 * a && (a - b * c) > -0.01 * a' \
			"$(jnum bytes_per_s)" "$(jnum rps)" "$(jnum length)"; then
		fail "$name: inconsistent figures: $JS"
		return 1
	fi
	return 0
}

bench closed -p "$EPORT" -c 8 -d 1 --warmup 0.2 --json --progress
if good_run "closed loop"; then
	if [ "$(jnum connections)" = 8 ] && [ "$(jnum length)" = 512 ] &&
		[ "$(jnum pipeline)" = 1 ] && [ "$(jnum threads)" = 1 ] &&
		[ "$(jnum rate)" = 0 ] && check 'a == 1' "$(jnum duration_s)" &&
		grep -q '^  requests  ' "$OUT" && grep -q '^  latency us  *p50 ' "$OUT" &&
		grep -qx "  backend      $(jstr backend)" "$OUT" && grep -q 'req/s' "$ERR"; then
		pass "closed loop against iou-echo: $(jnum requests) requests, $(jnum rps) req/s, p99 $(jnum p99) us"
	else
		fail "closed loop: wrong echo of the settings or no summary/progress: $JS"
	fi
fi

bench pipe -p "$EPORT" -c 6 -t 2 -P 4 -l 5000 -d 1 --warmup 0.2 --json
if good_run "pipelined, 2 threads"; then
	if [ "$(jnum connections)" = 6 ] && [ "$(jnum length)" = 5000 ] &&
		[ "$(jnum pipeline)" = 4 ] && [ "$(jnum threads)" = 2 ]; then
		pass "-P 4 -t 2 -l 5000 against iou-echo: $(jnum requests) requests"
	else
		fail "-P 4 -t 2: wrong settings in JSON: $JS"
	fi
fi

bench big -p "$EPORT" -c 2 -l 300000 -P 2 -d 0.5 --warmup 0.1 --json
good_run "300 kB messages" && pass "-l 300000 -P 2 against iou-echo: $(jnum requests) requests"

RATE=2000
bench open -p "$EPORT" -c 4 -r $RATE -d 1.5 --warmup 0.2 --json
if good_run "open loop"; then
	# the schedule is exact: requests ~= rate * duration
	if check 'a > 0.9 * b * c && a < 1.1 * b * c' "$(jnum requests)" $RATE "$(jnum duration_s)"; then
		pass "open loop at $RATE/s against iou-echo: $(jnum requests) requests, p99 $(jnum p99) us"
	else
		fail "open loop at $RATE/s: $(jnum requests) requests in $(jnum duration_s) s"
	fi
	# requests go out up to a tick early, timed from the real send: the
	# 1 ms timer tick adds no latency (it used to add ~0.5 ms to p50)
	if check 'a < 500' "$(jnum p50)"; then
		pass "open loop at $RATE/s against iou-echo: p50 $(jnum p50) us < 500 us"
	else
		fail "open loop at $RATE/s against iou-echo: p50 $(jnum p50) us, want < 500 us"
	fi
fi
ECHO_P99=$(jnum p99)

# --backend uring / epoll / auto: the JSON names the backend asked for, or
# the run exits 1 at once with one line naming the option.
SAVED_ARGS=$BACKEND_ARGS SAVED_NAME=$BACKEND_NAME
BACKEND_ARGS='' BACKEND_NAME='' # (json_ok: either name)
for b in uring epoll auto; do
	bench "backend$b" -p "$EPORT" -c 1 -d 0.2 --warmup 0 --json --backend "$b"
	case $b in
	uring) want=io_uring ;;
	epoll) want=epoll ;;
	auto) want=$(jstr backend) ;;
	esac
	lines=$(wc -l <"$ERR")
	if [ $RC -eq 0 ] && json_ok && [ -n "$want" ] && [ "$(jstr backend)" = "$want" ]; then
		pass "--backend $b: \"backend\":\"$want\""
	elif [ $RC -eq 1 ] && [ "$lines" -eq 1 ] && [ ! -s "$OUT" ] &&
		grep -q "^iou-bench: cannot create the event loop (--backend $b): " "$ERR"; then
		pass "--backend $b unavailable here: exit 1, $(cat "$ERR")"
	else
		fail "--backend $b: status $RC, JSON '$JS', $lines stderr line(s): $(head -c 300 "$ERR")"
	fi
done
BACKEND_ARGS=$SAVED_ARGS BACKEND_NAME=$SAVED_NAME
stop_server "$SPID"

# ---- faulty servers ---------------------------------------------------------


FAULTY=$ROOT/tests/progs/faulty-server
if [ ! -x "$FAULTY" ]; then
	fail "$FAULTY not built"
	FAULTY=
fi

if [ -n "$FAULTY" ]; then
	# A byte in every 100000 flipped: mismatches counted, exit 1.
	if start_server corrupt "$FAULTY" corrupt 100000; then
		bench corrupt -p "$PORT" -c 4 -d 1 --warmup 0.1 --json
		if [ $RC -eq 1 ] && json_ok && check 'a > 0' "$(jnum mismatches)" &&
			check 'a > 0' "$(jnum requests)" && grep -q 'mismatch' "$ERR"; then
			pass "corrupting server: exit 1, $(jnum mismatches) mismatches in $(jnum requests) requests"
		else
			fail "corrupting server: status $RC, mismatches $(jnum mismatches): $(head -c 300 "$ERR")"
		fi
		stop_server "$SPID"
	else
		fail "corrupting server did not start"
	fi

	# Still for 400 ms of every second: open-loop p99 from the schedule.
	if start_server stall "$FAULTY" stall 1000 400; then
		bench stall -p "$PORT" -c 4 -r $RATE -d 2 --warmup 0.2 --json
		P99=$(jnum p99)
		if [ $RC -eq 0 ] && json_ok && check 'a >= 200000 && a > 2 * b' "$P99" "$ECHO_P99" &&
			[ "$(jnum mismatches)" = 0 ]; then
			pass "stalling server, open loop at $RATE/s: p99 $P99 us (iou-echo: $ECHO_P99 us)"
		else
			fail "stalling server: status $RC, p99 $P99 us vs iou-echo $ECHO_P99 us: $JS $(head -c 300 "$ERR")"
		fi
		stop_server "$SPID"
	else
		fail "stalling server did not start"
	fi

	# Still from 0.7 s to 1.7 s, past the end of a 1 s window: the requests
	# scheduled in the window's last 0.3 s are answered during the drain,
	# and counted with their latency.
	if start_server stallend "$FAULTY" stallat 700 1000; then
		bench stallend -p "$PORT" -c 4 -r $RATE -d 1 --warmup 0 --json
		P99=$(jnum p99)
		if [ $RC -eq 0 ] && json_ok && check 'a >= 500000' "$P99" &&
			[ "$(jnum timeouts)" = 0 ] && [ "$(jnum mismatches)" = 0 ] &&
			check 'a > 0.9 * b * c && a < 1.1 * b * c' "$(jnum requests)" $RATE "$(jnum duration_s)"; then
			pass "server still past the end of the window: exit 0, $(jnum requests) requests, p99 $P99 us"
		else
			fail "server still past the end of the window: status $RC, p99 $P99 us: $JS $(head -c 300 "$ERR")"
		fi
		stop_server "$SPID"
	else
		fail "stalling server did not start"
	fi

	# Still from 0.7 s for 10 s, past the drain limit: every request
	# scheduled in the window's last 0.3 s, sent or not, times out (exit 1)
	# and shows in the percentiles; requests + timeouts = the schedule.
	if start_server stallout "$FAULTY" stallat 700 10000; then
		bench stallout -p "$PORT" -c 4 -r $RATE -d 1 --warmup 0 --json
		P99=$(jnum p99)
		if [ $RC -eq 1 ] && json_ok && check 'a >= 1000000' "$P99" &&
			check 'a >= 0.2 * b * c' "$(jnum timeouts)" $RATE "$(jnum duration_s)" &&
			[ "$(jnum errors)" = "$(jnum timeouts)" ] &&
			check 'a + b > 0.9 * c && a + b < 1.1 * c' "$(jnum requests)" "$(jnum timeouts)" $RATE; then
			pass "server still past the drain limit: exit 1, $(jnum requests) requests, $(jnum timeouts) timeouts, p99 $P99 us"
		else
			fail "server still past the drain limit: status $RC, p99 $P99 us: $JS $(head -c 300 "$ERR")"
		fi
		stop_server "$SPID"
	else
		fail "stalling server did not start"
	fi

	# Connections closed by the server mid-run: counted as errors, exit 1.
	if start_server close "$FAULTY" close 20000; then
		bench close -p "$PORT" -c 3 -d 0.5 --warmup 0 --json
		if [ $RC -eq 1 ] && json_ok && [ "$(jnum errors)" = 3 ] &&
			[ "$(jnum mismatches)" = 0 ]; then
			pass "closing server: exit 1, errors $(jnum errors): $(head -n 1 "$ERR")"
		else
			fail "closing server: status $RC, errors $(jnum errors): $JS $(head -c 300 "$ERR")"
		fi
		stop_server "$SPID"
	else
		fail "closing server did not start"
	fi

	# No answer at all: the outstanding requests time out, exit 1.
	if start_server hole "$FAULTY" blackhole; then
		bench hole -p "$PORT" -c 2 -P 3 -d 0.3 --warmup 0 --json
		if [ $RC -eq 1 ] && json_ok && [ "$(jnum requests)" = 0 ] &&
			[ "$(jnum timeouts)" = 6 ] && [ "$(jnum errors)" = 6 ]; then
			pass "silent server: exit 1, $(jnum timeouts) timeouts"
		else
			fail "silent server: status $RC: $JS"
		fi
		stop_server "$SPID"
	else
		fail "silent server did not start"
	fi
fi

if [ $FAILS -ne 0 ]; then
	echo "$FAILS check(s) failed"
	exit 1
fi
echo "all iou-bench checks passed"
exit 0

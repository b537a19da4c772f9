#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/redis.sh: examples/redis-task (a task per connection) against
# redis-server under the same redis-benchmark load, side by side in one run:
# requests/s and server CPU time per request (utime+stime from
# /proc/PID/stat over the benchmark), at pipeline depth 1 and 16.  Server on
# CPU 0, client on CPU 1 (taskset).  Needs redis-server and redis-tools;
# skips without them.
#
# Environment: REDIS_N requests per test (default 200000), REDIS_ROUNDS
# (default 3; the median is reported), IOU_BUILD (the build directory).
set -u
B=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
N=${REDIS_N:-200000}
ROUNDS=${REDIS_ROUNDS:-3}
CLK_TCK=$(getconf CLK_TCK)
for t in redis-server redis-benchmark taskset; do
	command -v "$t" >/dev/null 2>&1 || { echo "skipped: $t not installed"; exit 0; }
done
TMP=$(mktemp -d) || exit 1
SPID=
trap '[ -n "$SPID" ] && kill -KILL $SPID 2>/dev/null; rm -rf "$TMP"' EXIT

# A port nothing listens on (redis-server cannot take port 0).
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 30000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

start() { # NAME: sets SPID, PORT
	case $1 in
	redis-server)
		PORT=$(free_port)
		taskset -c 0 redis-server --port "$PORT" --bind 127.0.0.1 --save '' \
			--appendonly no --daemonize no >"$TMP/s.out" 2>&1 &
		SPID=$!
		for ((i = 0; i < 250; i++)); do
			redis-cli -p "$PORT" ping >/dev/null 2>&1 && return 0
			sleep 0.02
		done ;;
	redis-task)
		taskset -c 0 "$B/examples/redis-task" 0 >"$TMP/s.out" 2>&1 &
		SPID=$!
		for ((i = 0; i < 250; i++)); do
			PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$TMP/s.out")
			[ -n "$PORT" ] && return 0
			sleep 0.02
		done ;;
	esac
	echo "error: $1 did not start"; exit 1
}

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

echo "| server | pipeline | SET+GET req/s | CPU us/req | CPU vs redis-server |"
echo "|---|---:|---:|---:|---:|"
for P in 1 16; do
	for srv in redis-server redis-task; do
		: >"$TMP/$srv.$P"
		for ((r = 0; r < ROUNDS; r++)); do
			start "$srv"
			t0=$(ticks "$SPID")
			w0=$(date +%s%N)
			out=$(taskset -c 1 redis-benchmark -p "$PORT" -t set,get -n "$N" -c 50 -P "$P" -q 2>/dev/null | tr '\r' '\n')
			w1=$(date +%s%N)
			t1=$(ticks "$SPID")
			kill -TERM "$SPID"; wait "$SPID" 2>/dev/null; SPID=
			rps=$(printf '%s\n' "$out" | sed -n 's/^\(SET\|GET\): \([0-9.]*\) requests per second.*/\2/p' |
			      awk '{ s += 1 / $1 } END { if (NR) printf "%.0f", NR / s }')
			cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$N" 'BEGIN { printf "%.3f", t / hz / (2 * n) * 1e6 }')
			echo "$rps $cpu" >>"$TMP/$srv.$P"
		done
	done
	ref=$(sort -k2 -n "$TMP/redis-server.$P" | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }')
	for srv in redis-server redis-task; do
		sort -k2 -n "$TMP/$srv.$P" | awk -v srv="$srv" -v p="$P" -v ref="$ref" \
			'{ r[NR] = $1; c[NR] = $2 } END { m = int((NR + 1) / 2);
			   printf "| %s | %d | %s | %s | %.2f |\n", srv, p, r[m], c[m], c[m] / ref }'
	done
done

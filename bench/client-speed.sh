#!/bin/sh
# bench/client-speed.sh — is tools/iou-bench fast enough to be a load
# generator?  Against the same iou-echo server, and pinned to the same single
# core, it is compared with bench/tpc-client, a thread-per-connection blocking
# client of rust_echo_bench's design.  The goal is iou-bench >= 1.5x the
# requests/s of tpc-client with 50 connections.
#
# Expects the project built: tools/iou-echo, tools/iou-bench, bench/tpc-client.
#
# Method
#   * One tools/iou-echo -p 0 -q is started pinned to CPU 0 (taskset -c 0)
#     and serves every run; its port is read from "listening on HOST:PORT".
#   * Each round runs both clients, one after the other, pinned to CPU 1:
#       iou-bench  -c CONNS -d DUR -l LEN --json   (req/s: "rps", last line)
#       tpc-client -c CONNS -d DUR -l LEN          (req/s from its one line)
#     Both make all connections, warm up 0.5 s uncounted, then count DUR s.
#     The order alternates from round to round, so drift favours neither.
#   * Printed: each round's req/s and ratio iou-bench/tpc-client, then the
#     medians and the median of the per-round ratios (the figure to report).
#
# Environment
#   CS_ROUNDS    rounds (default 5)
#   CS_DURATION  measured seconds per client run (default 3)
#   CS_CONNS     connections (default 50)
#   CS_LENGTH    message bytes (default 512)
#   CS_BUDGET    wall-clock budget in seconds (default 58): rounds that would
#                overrun it are skipped, so the defaults end in under 60 s
#   IOU_BUILD    directory holding the built tools/ and bench/ (default: the
#                repository root, this script's parent directory)
#
# Exit status: 0; 1 if the server did not start or died, a binary is missing,
# or a client run failed (non-zero status, errors or mismatches; that run is
# left out of the medians).  Missing the 1.5x goal is reported, not an error.

set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 1
cd "$ROOT" || exit 1
B=${IOU_BUILD:-$ROOT}

ROUNDS=${CS_ROUNDS:-5}
DUR=${CS_DURATION:-3}
CONNS=${CS_CONNS:-50}
LEN=${CS_LENGTH:-512}
BUDGET=${CS_BUDGET:-58}
GOAL=1.5
HOST=127.0.0.1
SERVER=$B/tools/iou-echo
IOUB=$B/tools/iou-bench
TPC=$B/bench/tpc-client
T0=$(date +%s)

say() { printf '%s\n' "$*" >&2; }
elapsed() { echo $(($(date +%s) - T0)); }

for v in "$ROUNDS" "$DUR" "$CONNS" "$LEN" "$BUDGET"; do
	case $v in
	'' | *[!0-9]*) say "error: CS_ROUNDS, CS_DURATION, CS_CONNS, CS_LENGTH and CS_BUDGET must be whole numbers"; exit 1 ;;
	esac
done
if [ "$ROUNDS" -lt 1 ] || [ "$DUR" -lt 1 ]; then
	say "error: CS_ROUNDS and CS_DURATION must be >= 1"
	exit 1
fi

for f in "$SERVER" "$IOUB" "$TPC"; do
	[ -x "$f" ] || { say "error: $f not built: build the project first (make)"; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/iou-client-speed.XXXXXX") || exit 1
RESULTS=$TMP/results # round iou_rps tpc_rps
: >"$RESULTS"
SPID=
CPID=
FAILURES=0

cleanup() {
	for p in $CPID $SPID; do
		kill -TERM "$p" 2>/dev/null
	done
	sleep 0.2
	for p in $CPID $SPID; do
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

running() { # pid: is it running (not exited, not a zombie)?
	read -r line 2>/dev/null <"/proc/$1/stat" || return 1
	rest=${line##*) }
	case ${rest%% *} in Z | X | x | "") return 1 ;; esac
	return 0
}

jnum() { # key json: first numeric value of "key"
	printf '%s\n' "$2" | sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" | head -n 1
}

if [ "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
	PIN_S="taskset -c 0"
	PIN_C="taskset -c 1"
	PINNING="server on CPU 0, each client on CPU 1"
else
	PIN_S=
	PIN_C=
	PINNING="not pinned (needs 2 CPUs and taskset)"
fi

# ---- server ----------------------------------------------------------------

$PIN_S "$SERVER" -p 0 -q >"$TMP/server.out" 2>"$TMP/server.err" </dev/null &
SPID=$!
SPORT=
i=0
while [ $i -lt 200 ]; do
	SPORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)[[:space:]]*$/\1/p' "$TMP/server.out" | head -n 1)
	[ -n "$SPORT" ] && break
	running "$SPID" || break
	i=$((i + 1))
	sleep 0.025
done
if [ -z "$SPORT" ]; then
	say "error: iou-echo did not start listening: $(head -c 300 "$TMP/server.err")"
	exit 1
fi

# ---- clients ---------------------------------------------------------------

# run_client iou|tpc ROUND: sets RPS to the client's req/s, or empties it
# and counts a failure
run_client() {
	which=$1 rnd=$2
	RPS=
	if ! running "$SPID"; then
		say "  ! round $rnd: the server is no longer running"
		FAILURES=$((FAILURES + 1))
		return
	fi
	case $which in
	iou) set -- "$IOUB" -H "$HOST" -p "$SPORT" -c "$CONNS" -d "$DUR" -l "$LEN" --json ;;
	tpc) set -- "$TPC" -H "$HOST" -p "$SPORT" -c "$CONNS" -d "$DUR" -l "$LEN" ;;
	esac
	$PIN_C timeout -k 2 $((DUR + 30)) "$@" >"$TMP/client.out" 2>"$TMP/client.err" </dev/null &
	CPID=$!
	wait "$CPID"
	crc=$?
	CPID=
	last=$(tail -n 1 "$TMP/client.out")
	case $which in
	iou)
		rps=$(jnum rps "$last")
		errs=$(jnum errors "$last")
		mism=$(jnum mismatches "$last")
		;;
	tpc)
		rps=$(printf '%s\n' "$last" | sed -n 's/^tpc-client: .* \([0-9][0-9.]*\) req\/s, [0-9][0-9]* mismatches$/\1/p')
		errs=0
		mism=$(printf '%s\n' "$last" | sed -n 's/^tpc-client: .* \([0-9][0-9]*\) mismatches$/\1/p')
		;;
	esac
	if [ $crc -ne 0 ] || [ -z "$rps" ] || [ "${errs:-x}" != 0 ] || [ "${mism:-x}" != 0 ]; then
		FAILURES=$((FAILURES + 1))
		say "  ! round $rnd: $which client failed (status $crc, errors ${errs:-?}, mismatches ${mism:-?}): $(tail -c 300 "$TMP/client.err")"
		return
	fi
	RPS=${rps%.*}
}

echo "## iou-bench vs a thread-per-connection blocking client"
echo
echo "kernel $(uname -r), $(getconf _NPROCESSORS_ONLN) CPUs, $PINNING;"
echo "one iou-echo server; $CONNS connections x $LEN B closed-loop ping-pong;"
echo "$ROUNDS round(s) x ${DUR} s measured (+ 0.5 s warm-up) per client; goal: ratio >= $GOAL."
echo

RUN_COST=$((2 * (DUR + 2)))
skipped=0
r=1
while [ $r -le "$ROUNDS" ]; do
	if [ $(($(elapsed) + RUN_COST)) -gt "$BUDGET" ]; then
		skipped=$((skipped + 1))
		r=$((r + 1))
		continue
	fi
	if [ $((r % 2)) = 1 ]; then
		run_client iou $r; iou=$RPS
		run_client tpc $r; tpc=$RPS
	else
		run_client tpc $r; tpc=$RPS
		run_client iou $r; iou=$RPS
	fi
	echo "$r ${iou:-NA} ${tpc:-NA}" >>"$RESULTS"
	say "  round $r: iou-bench ${iou:-FAILED} req/s, tpc-client ${tpc:-FAILED} req/s"
	r=$((r + 1))
done

awk -v goal="$GOAL" '
	function med(a, n,   i, j, t) {
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	BEGIN {
		printf "| %5s | %15s | %16s | %20s |\n", "round", "iou-bench req/s", "tpc-client req/s", "iou-bench/tpc-client"
		printf "|%s|%s|%s|%s|\n", "------:", "----------------:", "-----------------:", "---------------------:"
	}
	{
		ok = $2 != "NA" && $3 != "NA" && $3 > 0
		printf "| %5d | %15s | %16s | %20s |\n", $1,
			$2 == "NA" ? "failed" : sprintf("%.0f", $2),
			$3 == "NA" ? "failed" : sprintf("%.0f", $3),
			ok ? sprintf("%.2f", $2 / $3) : "-"
		if (ok) { n++; ia[n] = $2; ta[n] = $3; ra[n] = $2 / $3 }
	}
	END {
		if (!n) { print ""; print "no round with both clients ok"; exit }
		mr = med(ra, n)
		printf "| %5s | %15.0f | %16.0f | %20.2f |\n", "median", med(ia, n), med(ta, n), mr
		print ""
		printf "median ratio iou-bench/tpc-client over %d round(s): %.2f (goal >= %.1f: %s)\n",
			n, mr, goal, (mr >= goal ? "met" : "NOT met")
	}' "$RESULTS"

if [ $skipped -gt 0 ]; then
	echo "note: $skipped round(s) skipped to stay within the ${BUDGET} s budget (CS_BUDGET)"
fi
echo "total time: $(elapsed) s"

if ! running "$SPID"; then
	say "error: the server died during the benchmark"
	FAILURES=$((FAILURES + 1))
fi
kill -TERM "$SPID" 2>/dev/null
i=0
while running "$SPID" && [ $i -lt 100 ]; do
	sleep 0.03
	i=$((i + 1))
done
wait "$SPID" 2>/dev/null
SPID=

if [ "$FAILURES" -gt 0 ]; then
	echo "$FAILURES client run(s) failed (see the messages above)"
	exit 1
fi
exit 0

#!/bin/sh
# bench/run.sh — run every echo server under the same iou-bench load and
# print one table per configuration, then the memory per idle connection.
#
# Expects the project built: tools/iou-echo, tools/iou-bench, bench/epoll-echo,
# bench/uring-echo, bench/idle-conns (a missing server is skipped with a note).
# The peers bench/st-echo (State Threads) and bench/go-echo (Go, run with
# GOMAXPROCS=1) are opt-in (BENCH_SERVERS) and built by "make bench-peers"
# when configure found libst-dev / golang-go; otherwise skipped with a note.
#
# Method
#   * For every configuration and every round, each server is started afresh
#     pinned to CPU 0 (taskset -c 0); the client runs pinned to CPU 1. The
#     server order rotates from round to round.
#   * Throughput and latency are the client's (iou-bench --json, last line).
#   * Server CPU per request: while the client runs, the harness samples the
#     server's utime+stime (/proc/PID/stat, clock ticks) and the wall clock
#     (/proc/uptime) every 0.2 s, with shell builtins only (no forks but
#     sleep, so the harness barely perturbs the two pinned CPUs).  Afterwards
#     it takes the samples that lie inside the client's measured window, i.e.
#     the last duration_s seconds before the client exited, less 0.2 s at
#     each end (so warm-up and connection set-up are left out, whatever their
#     length), and computes
#       CPU us/req = (CPU s / wall s between those samples) / (client req/s) * 1e6.
#     Both are steady-state rates, so the two clocks need not line up exactly.
#   * iou-echo-epoll and iou-echo-tasks-epoll are iou-echo (--tasks) on the
#     epoll backend (--backend epoll); iou-echo and iou-echo-tasks run on the
#     library's choice (io_uring where it can).  An iou-echo whose backend
#     cannot be had here is left out with a one-line note (tried once, up
#     front).
#   * Each figure is the median over the rounds, with the range (min-max) of
#     CPU us/req; ratios are to BENCH_REF (uring-echo).  When both ran,
#     iou-echo-tasks' CPU per request over iou-echo's is printed per round.
#   * iou-bench checks every echoed byte: a run with a mismatch fails.
#   * Idle memory: the server is started, IDLE_CONNS idle connections are
#     opened by bench/idle-conns, and (VmRSS after - VmRSS before) / N is
#     reported (user-space resident memory only; kernel socket and io_uring
#     memory is not in RSS), with the growth of /proc/PID/maps in lines.
#     st-echo gets at most 1000: Debian's libst polls with select(2), whose
#     descriptors end at 1024.
#
# Environment
#   BENCH_DURATION  measured seconds per run (default 3; BENCH_QUICK: 1)
#   BENCH_ROUNDS    rounds (default 3; BENCH_QUICK: 1)
#   BENCH_SERVERS   comma-separated subset of
#                   iou-echo,iou-echo-tasks,iou-echo-epoll,iou-echo-tasks-epoll,
#                   epoll-echo,uring-echo,st-echo,go-echo
#                   (default: iou-echo,iou-echo-tasks,iou-echo-epoll,epoll-echo,
#                   uring-echo; iou-echo-tasks: iou-echo --tasks, a task per
#                   connection)
#   BENCH_REF       the server the ratios are to (default uring-echo)
#   BENCH_CONFIGS   subset of c50 c1 c50x16k pipe16 c1000 (space-separated)
#   BENCH_QUICK=1   1 round of 1 s each (CI smoke test)
#   BENCH_WARMUP    about how long the client warms up before counting, used
#                   only for time-outs and the time budget (default 1)
#   BENCH_IDLE_CONNS idle connections for the memory test (default 10000, 0 = skip)
#   BENCH_CLIENT    client binary (default $IOU_BUILD/tools/iou-bench)
#   IOU_BUILD       directory holding the built tools/ and bench/ (default: the
#                   repository root, this script's parent directory)
#   BENCH_BUDGET    wall-clock budget in seconds (default 285): runs that would
#                   overrun it are skipped, so the script always ends in time
#
# Exit status: 0, or 1 if a server failed to start or a client run reported
# errors, mismatches or a non-zero status (that run is left out of the medians).

set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 1
cd "$ROOT" || exit 1
# binaries live under the build directory (make passes IOU_BUILD), else here
B=${IOU_BUILD:-$ROOT}

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	DUR=${BENCH_DURATION:-1}
	ROUNDS=${BENCH_ROUNDS:-1}
else
	DUR=${BENCH_DURATION:-3}
	ROUNDS=${BENCH_ROUNDS:-3}
fi
WARMUP=${BENCH_WARMUP:-1}
CLIENT=${BENCH_CLIENT:-$B/tools/iou-bench}
IDLE_N=${BENCH_IDLE_CONNS:-10000}
BUDGET=${BENCH_BUDGET:-285}
HOST=127.0.0.1
ALL_SERVERS="iou-echo iou-echo-tasks iou-echo-epoll iou-echo-tasks-epoll epoll-echo uring-echo st-echo go-echo"
DEFAULT_SERVERS="iou-echo iou-echo-tasks iou-echo-epoll epoll-echo uring-echo"
WANT=$(printf '%s\n' "${BENCH_SERVERS:-$DEFAULT_SERVERS}" | tr ',' ' ')
REF=${BENCH_REF:-uring-echo}
CONFIGS=${BENCH_CONFIGS:-"c50 c1 c50x16k pipe16 c1000"}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
T0=$(date +%s)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/iou-bench.XXXXXX") || exit 1
RESULTS=$TMP/results
: >"$RESULTS"
SPID=
CPID=
IPID=
FAILURES=0

cleanup() {
	exec 3>&-
	for p in $IPID $CPID $SPID; do
		kill -TERM "$p" 2>/dev/null
	done
	sleep 0.2
	for p in $IPID $CPID $SPID; do
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

say() { printf '%s\n' "$*" >&2; }
elapsed() { echo $(($(date +%s) - T0)); }

# ---- servers ---------------------------------------------------------------

server_bin() {
	case $1 in
	iou-echo*) echo "$B/tools/iou-echo" ;;
	*) echo "$B/bench/$1" ;;
	esac
}

server_args() {
	case $1 in
	iou-echo) echo "-p 0 -q" ;;
	iou-echo-tasks) echo "-p 0 -q --tasks" ;;
	iou-echo-epoll) echo "-p 0 -q --backend epoll" ;;
	iou-echo-tasks-epoll) echo "-p 0 -q --tasks --backend epoll" ;;
	*) echo "-H $HOST -p 0" ;;
	esac
}

server_env() { # for env(1): Go on one OS thread, like the others
	case $1 in
	go-echo) echo "GOMAXPROCS=1" ;;
	esac
}

server_missing() { # why a server is not built
	case $1 in
	st-echo) echo "needs State Threads: apt-get install libst-dev, ./configure, make bench-peers" ;;
	go-echo) echo "needs Go: apt-get install golang-go, ./configure, make bench-peers" ;;
	*) echo "build the project first (make)" ;;
	esac
}

idle_conns_for() { # server: how many idle connections it can hold
	case $1 in
	st-echo) echo $((IDLE_N < 1000 ? IDLE_N : 1000)) ;; # select(2): fds < 1024
	*) echo "$IDLE_N" ;;
	esac
}

if [ "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
	PIN_S="taskset -c 0"
	PIN_C="taskset -c 1"
	PINNING="server on CPU 0, client on CPU 1"
else
	PIN_S=
	PIN_C=
	PINNING="not pinned (needs 2 CPUs and taskset)"
fi

# Builtins only (these run while the benchmark does): no fork.
running() { # pid: is it running (not exited, not a zombie)?
	read -r line 2>/dev/null <"/proc/$1/stat" || return 1
	rest=${line##*) }
	case ${rest%% *} in Z | X | x | "") return 1 ;; esac
	return 0
}

# no_backend NAME: for an iou-echo that cannot create its loops here (its
# backend unavailable: io_uring blocked, no epoll backend in this libiou),
# prints the one line it said, else nothing.
no_backend() {
	case $1 in iou-echo*) ;; *) return 0 ;; esac
	: >"$TMP/probe.out" # not the last probe's
	# shellcheck disable=SC2046
	timeout -k 1 2 "$(server_bin "$1")" $(server_args "$1") -g 0 >"$TMP/probe.out" 2>"$TMP/probe.err" </dev/null &
	ppid=$!
	i=0
	while [ $i -lt 80 ] && ! grep -q '^listening on' "$TMP/probe.out" && running "$ppid"; do
		sleep 0.025
		i=$((i + 1))
	done
	kill -TERM "$ppid" 2>/dev/null
	wait "$ppid" 2>/dev/null
	grep -m 1 'cannot create the event loop' "$TMP/probe.err"
}

SERVERS=
SKIPPED_SERVERS= # the notes
NO_BACKEND= # their names
for s in $WANT; do
	case " $ALL_SERVERS " in
	*" $s "*) ;;
	*) say "note: unknown server '$s' ignored"; continue ;;
	esac
	if [ ! -x "$(server_bin "$s")" ]; then
		say "note: $(server_bin "$s") not built, skipping $s ($(server_missing "$s"))"
	elif why=$(no_backend "$s") && [ -n "$why" ]; then
		SKIPPED_SERVERS="$SKIPPED_SERVERS
note: $s skipped: $why"
		NO_BACKEND="$NO_BACKEND $s"
	else
		SERVERS="$SERVERS $s"
	fi
done
# shellcheck disable=SC2086
NSERVERS=$(echo $SERVERS | wc -w)

# start_server NAME: sets SPID and SPORT; returns 1 on failure
start_server() {
	SPORT=
	: >"$TMP/server.out"
	# shellcheck disable=SC2046,SC2086
	env $(server_env "$1") $PIN_S "$(server_bin "$1")" $(server_args "$1") >"$TMP/server.out" 2>"$TMP/server.err" </dev/null &
	SPID=$!
	i=0
	while [ $i -lt 200 ]; do
		SPORT=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)[[:space:]]*$/\1/p' "$TMP/server.out" | head -n 1)
		[ -n "$SPORT" ] && return 0
		running "$SPID" || break
		i=$((i + 1))
		sleep 0.025
	done
	say "error: $1 did not start listening: $(head -c 300 "$TMP/server.err")"
	stop_server "$1"
	return 1
}

stop_server() {
	[ -n "$SPID" ] || return 0
	kill -TERM "$SPID" 2>/dev/null
	i=0
	while running "$SPID" && [ $i -lt 100 ]; do
		sleep 0.03
		i=$((i + 1))
	done
	if running "$SPID"; then
		say "warning: $1 ignored SIGTERM, killing it"
		kill -KILL "$SPID" 2>/dev/null
	fi
	wait "$SPID" 2>/dev/null
	rc=$?
	[ $rc -eq 0 ] || say "warning: $1 exited with status $rc"
	SPID=
}

cpu_ticks() { # pid: sets TICKS to its utime+stime, in clock ticks
	TICKS=
	read -r line 2>/dev/null <"/proc/$1/stat" || return 1
	# shellcheck disable=SC2086
	set -- ${line##*) }
	TICKS=$((${12} + ${13}))
}

vmrss_kb() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

jnum() { # key json: first numeric value of "key"
	printf '%s\n' "$2" | sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" | head -n 1
}

# ---- configurations --------------------------------------------------------

cfg_set() {
	case $1 in
	c50) C=50 L=512 P=1 LABEL="50 conns x 512 B ping-pong" ;;
	c1) C=1 L=512 P=1 LABEL="1 conn x 512 B (latency)" ;;
	c50x16k) C=50 L=16384 P=1 LABEL="50 conns x 16 KiB" ;;
	pipe16) C=50 L=512 P=16 LABEL="50 conns x 512 B, pipeline depth 16" ;;
	c1000) C=1000 L=512 P=1 LABEL="1000 conns x 512 B" ;;
	esac
}

rotated() { # round: the server list rotated by round
	k=$(($1 % (NSERVERS > 0 ? NSERVERS : 1)))
	pre='' post='' i=0
	for s in $SERVERS; do
		if [ $i -lt $k ]; then pre="$pre $s"; else post="$post $s"; fi
		i=$((i + 1))
	done
	# shellcheck disable=SC2086
	echo $post $pre
}

# run_one CFG SERVER ROUND: appends one line to $RESULTS
run_one() {
	cfg=$1 srv=$2 rnd=$3
	start_server "$srv" || {
		FAILURES=$((FAILURES + 1))
		echo "$cfg $srv $rnd NA NA NA NA fail" >>"$RESULTS"
		return
	}
	: >"$TMP/samples"
	$PIN_C timeout -k 2 $((DUR + WARMUP + 60)) "$CLIENT" -H "$HOST" -p "$SPORT" \
		-c "$C" -d "$DUR" -l "$L" -P "$P" --json >"$TMP/client.out" 2>"$TMP/client.err" </dev/null &
	CPID=$!
	while running "$CPID"; do
		read -r now _ </proc/uptime
		cpu_ticks "$SPID" && echo "$now $TICKS" >>"$TMP/samples"
		sleep 0.2
	done
	wait "$CPID"
	crc=$?
	CPID=
	stop_server "$srv"

	js=$(tail -n 1 "$TMP/client.out")
	rps=$(jnum rps "$js")
	p50=$(jnum p50 "$js")
	p99=$(jnum p99 "$js")
	errs=$(jnum errors "$js")
	mism=$(jnum mismatches "$js")
	status=ok
	if [ $crc -ne 0 ] || [ -z "$rps" ] || [ "${errs:-0}" != 0 ] || [ "${mism:-0}" != 0 ]; then
		status=fail
		FAILURES=$((FAILURES + 1))
		say "  ! $srv $cfg round $rnd: client status $crc, errors ${errs:-?}, mismatches ${mism:-?}: $(tail -c 300 "$TMP/client.err")"
	fi
	dur=$(jnum duration_s "$js")
	cpu=$(awk -v d="${dur:-$DUR}" -v m=0.2 -v r="${rps:-0}" -v hz="$CLK_TCK" '
		{ u[NR] = $1; t[NR] = $2 }
		END {
			if (NR < 2 || r <= 0) { print "NA"; exit }
			te = u[NR]; s = 0; e = 0
			for (i = 1; i <= NR; i++) {
				if (!s && u[i] >= te - d + m) s = i
				if (u[i] <= te - m) e = i
			}
			if (!s || e <= s || u[e] <= u[s]) { print "NA"; exit }
			printf "%.4f\n", (t[e] - t[s]) / hz / (u[e] - u[s]) / r * 1e6
		}' "$TMP/samples")
	echo "$cfg $srv $rnd ${rps:-NA} $cpu ${p50:-NA} ${p99:-NA} $status" >>"$RESULTS"
	say "  $(printf '%-11s' "$srv") round $rnd: ${rps:-NA} req/s, CPU ${cpu} us/req, p50 ${p50:-NA} us, p99 ${p99:-NA} us$([ $status = ok ] || echo " (FAILED)")"
}

median() { # cfg server column
	awk -v c="$1" -v s="$2" -v k="$3" '$1 == c && $2 == s && $8 == "ok" && $k != "NA" { print $k }' "$RESULTS" |
		sort -g | awk '{ a[NR] = $1 } END {
			if (NR == 0) print "NA"
			else if (NR % 2) print a[(NR + 1) / 2]
			else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

range_of() { # cfg server column: min-max over the good runs
	awk -v c="$1" -v s="$2" -v k="$3" '$1 == c && $2 == s && $8 == "ok" && $k != "NA" { print $k }' "$RESULTS" |
		sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.2f-%.2f\n", lo, hi; else print "NA" }'
}

print_table() { # cfg
	cfg=$1
	cfg_set "$cfg"
	ref_rps=$(median "$cfg" "$REF" 4)
	ref_cpu=$(median "$cfg" "$REF" 5)
	ref_p99=$(median "$cfg" "$REF" 7)
	echo
	echo "### $LABEL  (-c $C -l $L -P $P; median of $ROUNDS x ${DUR} s)"
	echo
	{
		echo "server req/s CPU_us/req CPU_range p50_us p99_us req/s_vs_ref CPU_vs_ref p99_vs_ref runs"
		for srv in $SERVERS; do
			okruns=$(awk -v c="$cfg" -v s="$srv" '$1 == c && $2 == s && $8 == "ok"' "$RESULTS" | wc -l)
			allruns=$(awk -v c="$cfg" -v s="$srv" '$1 == c && $2 == s' "$RESULTS" | wc -l)
			[ "$allruns" -gt 0 ] || continue
			echo "$srv $(median "$cfg" "$srv" 4) $(median "$cfg" "$srv" 5) $(range_of "$cfg" "$srv" 5) $(median "$cfg" "$srv" 6) $(median "$cfg" "$srv" 7) $ref_rps $ref_cpu $ref_p99 $okruns/$allruns"
		done
	} | awk -v ref="${REF%-echo}" '
		function num(x) { return x != "NA" && x != "" }
		function ratio(a, b) { return (num(a) && num(b) && b > 0) ? sprintf("%.2f", a / b) : "-" }
		function f(fmt, x) { return num(x) ? sprintf(fmt, x) : "NA" }
		NR == 1 { printf "| %-14s | %10s | %10s | %11s | %8s | %8s | %14s | %12s | %12s | %4s |\n",
				"server", "req/s", "CPU us/req", "CPU range", "p50 us", "p99 us",
				"req/s vs " ref, "CPU vs " ref, "p99 vs " ref, "runs"
			  printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", "----------------", "-----------:", "-----------:",
				"------------:", "---------:", "---------:", "---------------:", "-------------:", "-------------:", "-----:"
			  next }
		{ printf "| %-14s | %10s | %10s | %11s | %8s | %8s | %14s | %12s | %12s | %4s |\n",
			$1, f("%.0f", $2), f("%.2f", $3), $4, f("%.1f", $5), f("%.1f", $6),
			ratio($2, $7), ratio($3, $8), ratio($6, $9), $10 }'
	for srv in $NO_BACKEND; do
		echo "| $srv | skipped: its backend is unavailable here (see the note above) |"
	done
	tasks_vs_callbacks "$cfg"
}

tasks_vs_callbacks() { # cfg: iou-echo-tasks CPU/req over iou-echo's, per round
	per=$(awk -v c="$1" '$1 == c && $8 == "ok" && $5 != "NA" {
			if ($2 == "iou-echo") a[$3] = $5
			if ($2 == "iou-echo-tasks") t[$3] = $5
		}
		END { for (r in t) if (r in a && a[r] > 0) printf "%s %.3f\n", r, t[r] / a[r] }' "$RESULTS" | sort -n)
	[ -n "$per" ] || return 0
	echo
	rounds=$(printf '%s\n' "$per" | awk '{ printf " %.2f", $2 }')
	med=$(printf '%s\n' "$per" | awk '{ print $2 }' | sort -g | awk '{ a[NR] = $1 } END {
		printf "%.2f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
	echo "iou-echo-tasks / iou-echo, CPU per request: ${med}x median; per round:$rounds"
}

# ---- idle memory -----------------------------------------------------------

idle_one() { # server: prints one table row
	srv=$1
	n=$(idle_conns_for "$srv")
	start_server "$srv" || {
		FAILURES=$((FAILURES + 1))
		echo "| $srv | server did not start |"
		return
	}
	sleep 0.2
	rss0=$(vmrss_kb "$SPID")
	fd0=$(ls "/proc/$SPID/fd" 2>/dev/null | wc -l)
	maps0=$(wc -l <"/proc/$SPID/maps")
	rm -f "$TMP/hold"
	mkfifo "$TMP/hold" || { stop_server "$srv"; return; }
	$PIN_C "$B/bench/idle-conns" -H "$HOST" -p "$SPORT" -n "$n" <"$TMP/hold" >"$TMP/idle.out" 2>"$TMP/idle.err" &
	IPID=$!
	exec 3>"$TMP/hold"
	i=0 ok=0
	while [ $i -lt 1200 ]; do # up to 30 s
		if grep -q '^connected' "$TMP/idle.out" 2>/dev/null; then ok=1; break; fi
		running "$IPID" || break
		sleep 0.025
		i=$((i + 1))
	done
	if [ $ok = 1 ]; then
		# wait until the server has accepted them all (fd count), or it
		# stops changing for a second; at most 10 s
		i=0 same=0 last=
		while [ $i -lt 100 ]; do
			fds=$(ls "/proc/$SPID/fd" 2>/dev/null | wc -l)
			[ "$fds" -ge $((fd0 + n)) ] && break
			if [ "$fds" = "$last" ]; then same=$((same + 1)); else same=0; fi
			[ $same -ge 10 ] && break
			last=$fds
			sleep 0.1
			i=$((i + 1))
		done
		sleep 0.3
		rss1=$(vmrss_kb "$SPID")
		fds=$(ls "/proc/$SPID/fd" 2>/dev/null | wc -l)
		maps1=$(wc -l <"/proc/$SPID/maps")
	fi
	exec 3>&-
	wait "$IPID" 2>/dev/null
	IPID=
	stop_server "$srv"
	if [ $ok = 1 ] && [ -n "$rss0" ] && [ -n "$rss1" ]; then
		awk -v s="$srv" -v a="$rss0" -v b="$rss1" -v n="$n" -v f="$((fds - fd0))" \
			-v m="$((maps1 - maps0))" 'BEGIN {
			printf "| %-14s | %6d | %13d | %12d | %12.0f | %8d | %+6d |\n", s, n, a, b, (b - a) * 1024 / n, f, m }'
	else
		FAILURES=$((FAILURES + 1))
		echo "| $srv | idle-conns failed: $(head -c 200 "$TMP/idle.err") |"
	fi
}

# ---- main ------------------------------------------------------------------

echo "## iou echo benchmark"
echo
echo "kernel $(uname -r), $(getconf _NPROCESSORS_ONLN) CPUs, $PINNING;"
echo "servers:${SERVERS:- none}; $ROUNDS round(s) x ${DUR} s measured (+ client warm-up) per run."
echo "CPU us/req: server utime+stime sampled inside the measured window, per client request."
if [ -n "$SKIPPED_SERVERS" ]; then
	echo "$SKIPPED_SERVERS"
fi

if [ "$NSERVERS" -eq 0 ]; then
	echo
	echo "no server binary found: build the project first (make)"
	exit 1
fi

if [ ! -x "$CLIENT" ]; then
	echo
	echo "note: $CLIENT not built: throughput runs skipped"
else
	RUN_COST=$((DUR + WARMUP + 1))
	RESERVE=$([ "$IDLE_N" -gt 0 ] && echo $((NSERVERS * 8)) || echo 0)
	skipped=0
	for cfg in $CONFIGS; do
		cfg_set "$cfg"
		say "== $LABEL"
		r=1
		while [ $r -le "$ROUNDS" ]; do
			for srv in $(rotated $((r - 1))); do
				if [ $(($(elapsed) + RUN_COST + RESERVE)) -gt "$BUDGET" ]; then
					skipped=$((skipped + 1))
					continue
				fi
				run_one "$cfg" "$srv" "$r"
			done
			r=$((r + 1))
		done
		print_table "$cfg"
	done
	if [ $skipped -gt 0 ]; then
		echo
		echo "note: $skipped run(s) skipped to stay within the ${BUDGET} s budget (BENCH_BUDGET)"
	fi
fi

if [ "$IDLE_N" -gt 0 ]; then
	echo
	echo "### Memory per idle connection (up to $IDLE_N idle connections; server VmRSS, user space only)"
	echo
	if [ ! -x "$B/bench/idle-conns" ]; then
		echo "note: $B/bench/idle-conns not built: skipped"
	else
		echo "| server         |  conns | RSS before kB | RSS after kB | bytes / conn | accepted |   maps |"
		echo "|----------------|-------:|--------------:|-------------:|-------------:|---------:|-------:|"
		for srv in $SERVERS; do
			if [ $(($(elapsed) + 10)) -gt "$BUDGET" ]; then
				echo "| $srv | skipped (time budget) |"
				continue
			fi
			idle_one "$srv"
		done
		for srv in $NO_BACKEND; do
			echo "| $srv | skipped: its backend is unavailable here |"
		done
	fi
fi

echo
echo "total time: $(elapsed) s"
if [ "$FAILURES" -gt 0 ]; then
	echo "$FAILURES run(s) failed (see the messages above)"
	exit 1
fi

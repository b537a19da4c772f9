#!/bin/sh
# make demo: start iou-echo on a free port, run iou-bench against it for
# DEMO_SECONDS (default 5), print the summary, shut the server down
# gracefully and show its shutdown line.
set -eu
top=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
secs=${DEMO_SECONDS:-5}
out=$(mktemp)
server=

cleanup() {
	[ -n "$server" ] && kill "$server" 2>/dev/null || true
	rm -f "$out"
}
trap cleanup EXIT INT TERM

"$top/tools/iou-echo" -p 0 -q >"$out" &
server=$!
port=
for _ in $(seq 1 100); do
	port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$out")
	[ -n "$port" ] && break
	kill -0 "$server" 2>/dev/null || { echo "demo: iou-echo did not start" >&2; exit 1; }
	sleep 0.05
done
[ -n "$port" ] || { echo "demo: iou-echo printed no listening line" >&2; exit 1; }
echo "iou-echo: $(head -n 1 "$out")"
echo "iou-bench: 50 connections x 512 B for ${secs}s against port $port"
status=0
"$top/tools/iou-bench" -p "$port" -c 50 -l 512 -d "$secs" || status=$?
kill -TERM "$server"
wait "$server" || status=$?
server=
echo "iou-echo: $(tail -n 1 "$out")"
exit "$status"

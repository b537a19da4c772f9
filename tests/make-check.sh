#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Tests of `make check` itself: a test that skips (exit 77) is reported with
# the reason from its first "SKIP: " line, next to SKIP and in the summary,
# and with "no reason given" when it printed none; every test runs once per
# backend in BACKENDS, with IOU_BACKEND set to it ("auto": unset, whatever
# the caller's environment says), each line labelled with the pass; a skip
# whose reason matches FAIL_SKIPS fails.  Runs make check on throw-away
# scripts in tests/logs/ (the check target's own scratch space).
#
# Exit status: 0 pass, 1 fail.
# Run by `make check` with IOU_BUILD=<repo root>; also runs stand-alone.

TOP=${IOU_BUILD:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$TOP" || exit 1
if [ ! -f Makefile ]; then
	echo "FAIL: no Makefile in $TOP: run ./configure first"
	exit 1
fi
mkdir -p tests/logs
a=tests/logs/t-skip-why.sh
b=tests/logs/t-skip-silent.sh
c=tests/logs/t-skip-backend.sh
d=tests/logs/t-skip-forbidden.sh
out=tests/logs/t-make-check.out
trap 'rm -f "$a" "$b" "$c" "$d" "$out" tests/logs/*/t-skip-*.log' EXIT
printf '#!/bin/sh\necho "some output"\necho "SKIP: no frobnicator here"\necho "SKIP: a second reason"\nexit 77\n' >"$a"
printf '#!/bin/sh\nexit 77\n' >"$b"
printf '#!/bin/sh\necho "SKIP: IOU_BACKEND=${IOU_BACKEND-unset}"\nexit 77\n' >"$c"
printf '#!/bin/sh\necho "SKIP: io_uring is unavailable here"\nexit 77\n' >"$d"
chmod +x "$a" "$b" "$c" "$d"

fails=0
# mk ARGS...: a make check of its own (not the caller's make flags:
# jobserver, -k, ...), its output in $out, its status in rc.
mk() {
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL IOU_BACKEND=epoll \
		make -s check TEST_SCRIPTS= "$@" >"$out" 2>&1
	rc=$?
}
expect() {
	if grep -qxF -- "$1" "$out"; then
		echo "ok: '$1'"
	else
		echo "FAIL: no line '$1'"
		fails=$((fails + 1))
	fi
}
said() {
	echo "---- make check said:"
	cat "$out"
}

mk TESTS="$a $b $c" BACKENDS="uring auto"
[ "$rc" = 0 ] || { echo "FAIL: make check exited $rc"; fails=$((fails + 1)); }
expect "--- SKIP [uring] $a (no frobnicator here)"
expect "--- SKIP [uring] $b (no reason given)"
expect "--- SKIP [uring] $c (IOU_BACKEND=uring)"
expect "--- SKIP [auto] $c (IOU_BACKEND=unset)"
expect "skipped: [uring] $a (no frobnicator here)"
expect "skipped: [uring] $b (no reason given)"
expect "skipped: [auto] $a (no frobnicator here)"
expect "0 passed, 0 failed, 6 skipped"
[ "$fails" = 0 ] || said

f0=$fails
mk TESTS="$a $d" BACKENDS=uring FAIL_SKIPS='io_uring is unavailable'
[ "$rc" != 0 ] || { echo "FAIL: make check with a forbidden skip exited 0"; fails=$((fails + 1)); }
expect "--- SKIP [uring] $a (no frobnicator here)"
expect "--- FAIL [uring] $d (skipped: io_uring is unavailable here; FAIL_SKIPS forbids it)"
expect "0 passed, 1 failed, 1 skipped"
[ "$fails" = "$f0" ] || said

if [ "$fails" != 0 ]; then
	exit 1
fi
echo "make-check.sh: all passed"

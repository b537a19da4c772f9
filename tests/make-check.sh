#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Tests of `make check` itself: a test that skips (exit 77) is reported with
# the reason from its first "SKIP: " line, next to SKIP and in the summary,
# and with "no reason given" when it printed none.  Runs make check on two
# throw-away scripts in tests/logs/ (the check target's own scratch space).
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
out=tests/logs/t-make-check.out
trap 'rm -f "$a" "$b" "$a.log" "$b.log" "$out"' EXIT
printf '#!/bin/sh\necho "some output"\necho "SKIP: no frobnicator here"\necho "SKIP: a second reason"\nexit 77\n' >"$a"
printf '#!/bin/sh\nexit 77\n' >"$b"
chmod +x "$a" "$b"

# Not the caller's make flags (jobserver, -k, ...): a make of its own.
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
	make -s check TESTS="$a $b" TEST_SCRIPTS= >"$out" 2>&1
rc=$?

fails=0
expect() {
	if grep -qxF -- "$1" "$out"; then
		echo "ok: '$1'"
	else
		echo "FAIL: no line '$1'"
		fails=$((fails + 1))
	fi
}
[ "$rc" = 0 ] || { echo "FAIL: make check exited $rc"; fails=$((fails + 1)); }
expect "--- SKIP $a (no frobnicator here)"
expect "--- SKIP $b (no reason given)"
expect "skipped: $a (no frobnicator here)"
expect "skipped: $b (no reason given)"
expect "0 passed, 0 failed, 2 skipped"
if [ "$fails" != 0 ]; then
	echo "---- make check said:"
	cat "$out"
	exit 1
fi
echo "make-check.sh: all passed"
